//! Human users of the console: what is stored about them, their
//! passwords, and the principal a signed-in user acts as.
//!
//! A user is a principal like a key: roles per namespace pattern, agent
//! type `human`, agent id = the user's name. What a user does in the
//! console is recorded under the credential id `console:<name>`, so the
//! audit log and a vote show that a person signed in to the console did
//! it, not a key typed `human`.
//!
//! | table | row key | value |
//! |---|---|---|
//! | `principals` | `user/` + name | sealed [`User`] (system key) |
//!
//! Passwords are hashed with Argon2id (the `argon2` crate's defaults:
//! 19 MiB, 2 passes, 1 lane — OWASP's minimum for Argon2id) into a PHC
//! string; the hash is sealed with the rest of the row.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::{Grant, Principal};

/// The agent type of every console user.
pub const HUMAN: &str = "human";

/// The prefix of a console user's credential id (`console:alice`).
pub const CREDENTIAL_PREFIX: &str = "console:";

/// Shortest password accepted (NIST SP 800-63B: at least 8; we ask 12).
pub const MIN_PASSWORD: usize = 12;
/// Longest password accepted (hashing is bounded work).
pub const MAX_PASSWORD: usize = 256;

/// The `principals` row of user `name`.
pub fn row(name: &str) -> Vec<u8> {
    [b"user/".as_slice(), name.as_bytes()].concat()
}

/// User names: 1–64 of lowercase letters, digits, `.`, `_`, `-`, `@`, `+`,
/// starting with a letter or digit (an e-mail address fits).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '@' | '+')
        })
}

/// A console user as stored (sealed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Its name: also its agent id.
    pub name: String,
    /// Roles.
    pub grants: Vec<Grant>,
    /// Argon2id PHC string; none until a password is set (sign-in links
    /// work without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Agent id of whoever created it.
    pub created_by: String,
    /// Unix ms, once disabled: no sign-in, every session ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<i64>,
    /// Bumped by "sign out everywhere", a new password, a disable: a
    /// session or a sign-in link made under another epoch is over. (A
    /// count, not a time: nothing depends on two clocks or on which
    /// millisecond something happened in.)
    #[serde(default)]
    pub session_epoch: u64,
}

/// A user as shown: never the password hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Its name (and agent id).
    pub name: String,
    /// Roles.
    pub grants: Vec<Grant>,
    /// Whether a password is set.
    pub has_password: bool,
    /// Unix ms.
    pub created_at: i64,
    /// Who created it.
    pub created_by: String,
    /// `active` or `disabled`.
    pub status: String,
}

impl User {
    /// The public view.
    pub fn info(&self) -> UserInfo {
        UserInfo {
            name: self.name.clone(),
            grants: self.grants.clone(),
            has_password: self.password.is_some(),
            created_at: self.created_at,
            created_by: self.created_by.clone(),
            status: if self.disabled_at.is_some() {
                "disabled"
            } else {
                "active"
            }
            .into(),
        }
    }

    /// The principal this user acts as when signed in.
    pub fn principal(&self) -> Principal {
        let mut p = Principal::with(
            &credential_id(&self.name),
            &self.name,
            HUMAN,
            self.grants.clone(),
        );
        p.minted_by = Vec::new();
        p
    }

    /// Does `password` match? Always does the work of one Argon2id
    /// verification, set or not, so timing does not tell which users have
    /// a password.
    pub fn verify_password(&self, password: &str) -> bool {
        match &self.password {
            Some(phc) => verify(phc, password),
            None => {
                let _ = verify(&decoy_hash(), password);
                false
            }
        }
    }
}

/// `console:<name>`.
pub fn credential_id(name: &str) -> String {
    format!("{CREDENTIAL_PREFIX}{name}")
}

/// Is `password` acceptable? The reason if not.
pub fn check_password(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD {
        return Err(format!("is {n} characters; use at least {MIN_PASSWORD}"));
    }
    if n > MAX_PASSWORD {
        return Err(format!("is longer than {MAX_PASSWORD} characters"));
    }
    Ok(())
}

/// Hash `password` with Argon2id and a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn verify(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash of nothing anyone knows, to spend the same time on a user
/// without a password (or no such user) as on a wrong one.
pub fn decoy_hash() -> String {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY
        .get_or_init(|| {
            let mut secret = [0u8; 32];
            rand::rng().fill_bytes(&mut secret);
            hash_password(&hex::encode(secret)).unwrap_or_default()
        })
        .clone()
}

/// Spend the time of one verification (sign-in as an unknown user).
pub fn verify_decoy(password: &str) {
    let _ = verify(&decoy_hash(), password);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_and_a_wrong_one_does_not() {
        let phc = hash_password("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        let user = User {
            name: "alice".into(),
            grants: vec![],
            password: Some(phc.clone()),
            created_at: 0,
            created_by: "op".into(),
            disabled_at: None,
            session_epoch: 0,
        };
        assert!(user.verify_password("correct horse battery"));
        assert!(!user.verify_password("correct horse batterx"));
        // Salted: the same password hashes differently.
        assert_ne!(hash_password("correct horse battery").unwrap(), phc);
        let without = User {
            password: None,
            ..user
        };
        assert!(!without.verify_password(""));
    }

    #[test]
    fn names_and_passwords_are_checked() {
        for ok in ["alice", "a.smith@example.com", "ops-1", "b+c"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Alice", "-x", "a b", "a/b", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(check_password("short").unwrap_err().contains("at least 12"));
        assert!(check_password("twelve chars").is_ok());
        assert!(check_password(&"x".repeat(300)).is_err());
    }
}
