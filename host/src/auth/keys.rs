//! API keys: what is stored (sealed, in `principals`), what is shown, and
//! how a presented key is checked.
//!
//! A key looks like `mhk_<id>_<secret>`: `id` is 16 hex digits, public
//! (it appears in `keys list` and the audit log); `secret` is 32 random
//! bytes in hex. Only SHA-256 of the secret is stored, and it is compared
//! in constant time. (The secret has 256 bits of entropy, so a plain hash
//! is enough: there is nothing to brute-force.)
//!
//! | table | row key | value |
//! |---|---|---|
//! | `principals` | `key/` + id | sealed [`ApiKey`] (system key) |

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Grant, Principal};

/// Every key starts with this.
pub const PREFIX: &str = "mhk_";

/// Most grants one key may carry.
pub const MAX_GRANTS: usize = 32;

/// The `principals` row of key `id`.
pub fn row(id: &str) -> Vec<u8> {
    [b"key/".as_slice(), id.as_bytes()].concat()
}

/// A per-key request rate (overrides the configured default).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rate {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed in a burst.
    pub burst: u32,
}

/// What is known about a key, apart from its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyFields {
    /// Public id.
    pub id: String,
    /// The agent it identifies.
    pub agent_id: String,
    /// The agent's type.
    pub agent_type: String,
    /// Roles.
    pub grants: Vec<Grant>,
    /// Unix ms.
    pub created_at: i64,
    /// Agent id of whoever created it.
    pub created_by: String,
    /// Key id it was created with (`cli` for the command line).
    #[serde(default)]
    pub created_by_key: Option<String>,
    /// The agents whose keys minted this one, up the chain, nearest last
    /// (the operator at the command line is not listed). An agent never
    /// approves through a key it minted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub minted_by: Vec<String>,
    /// Unix ms; none = never.
    pub expires_at: Option<i64>,
    /// Unix ms, once revoked.
    pub revoked_at: Option<i64>,
    /// Own rate limit, if any.
    pub rate: Option<Rate>,
}

/// A key as stored (sealed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Everything but the secret.
    #[serde(flatten)]
    pub fields: KeyFields,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
}

/// A key as shown: never the secret or its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyInfo {
    /// The key.
    #[serde(flatten)]
    pub key: KeyFields,
    /// `active`, `revoked` or `expired`.
    pub status: String,
}

/// The answer to a revocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Revocation {
    /// The revoked key.
    #[serde(flatten)]
    pub key: KeyInfo,
    /// The keys minted with it, or under one of those, revoked with it.
    pub also_revoked: Vec<String>,
}

impl ApiKey {
    /// The public view at time `now`.
    pub fn info(&self, now: i64) -> KeyInfo {
        KeyInfo {
            key: self.fields.clone(),
            status: match self.state(now) {
                Ok(()) => "active",
                Err(KeyState::Revoked) => "revoked",
                Err(KeyState::Expired) => "expired",
            }
            .into(),
        }
    }

    /// Usable at `now`?
    pub fn state(&self, now: i64) -> Result<(), KeyState> {
        if self.fields.revoked_at.is_some() {
            Err(KeyState::Revoked)
        } else if self.fields.expires_at.is_some_and(|t| t <= now) {
            Err(KeyState::Expired)
        } else {
            Ok(())
        }
    }

    /// The principal this key stands for.
    pub fn principal(&self) -> Principal {
        let f = &self.fields;
        Principal {
            key_id: f.id.clone(),
            agent_id: f.agent_id.clone(),
            agent_type: f.agent_type.clone(),
            grants: f.grants.clone(),
            expires_at: f.expires_at,
            minted_by: if f.minted_by.is_empty() && f.created_by_key.as_deref() != Some("cli") {
                // Keys minted before lineage was recorded: their maker.
                vec![f.created_by.clone()]
            } else {
                f.minted_by.clone()
            },
            idempotency_key: None,
            scopes: None,
            _slot: None,
        }
    }

    /// Does `secret` belong to this key? Constant time.
    pub fn verify(&self, secret: &str) -> bool {
        let presented = hex::encode(Sha256::digest(secret.as_bytes()));
        presented
            .as_bytes()
            .ct_eq(self.secret_sha256.as_bytes())
            .into()
    }
}

/// Why a stored key does not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Revoked.
    Revoked,
    /// Past its expiry.
    Expired,
}

/// A new key: (id, secret, the full token).
pub fn generate() -> (String, String, String) {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let (id, secret) = (hex::encode(id), hex::encode(secret));
    let token = format!("{PREFIX}{id}_{secret}");
    (id, secret, token)
}

/// SHA-256 of a secret, hex.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Split a presented token into (id, secret); `None` if it is not shaped
/// like a memhost key.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex_of = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_of(id, 16) && hex_of(secret, 64)).then_some((id, secret))
}

/// `id` if it is the form of a key's public id (16 hex digits): the
/// command line, the system and `--no-auth` act under other names.
pub fn parse_id(id: &str) -> Option<&str> {
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The ids of every key minted with key `root` or, transitively, with a
/// key minted under it: what revoking `root` revokes too. A leaked key's
/// children are as leaked as it is.
pub fn minted_under<'a>(all: &'a [ApiKey], root: &str) -> Vec<&'a ApiKey> {
    let mut found: Vec<&ApiKey> = Vec::new();
    let mut frontier = vec![root.to_string()];
    while let Some(parent) = frontier.pop() {
        for k in all {
            if k.fields.created_by_key.as_deref() == Some(parent.as_str())
                && k.fields.id != root
                && !found.iter().any(|f| f.fields.id == k.fields.id)
            {
                frontier.push(k.fields.id.clone());
                found.push(k);
            }
        }
    }
    found
}

/// Agent ids: 1–128 printable characters.
pub fn valid_agent_id(s: &str) -> bool {
    (1..=128).contains(&s.len()) && !s.chars().any(char::is_control)
}

/// Agent types (policies name them, e.g. `single:reviewer`): 1–64 of
/// letters, digits, `.`, `_`, `-`.
pub fn valid_agent_type(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(id: &str, expires_at: Option<i64>) -> KeyFields {
        KeyFields {
            id: id.into(),
            agent_id: "a".into(),
            agent_type: "t".into(),
            grants: vec![],
            created_at: 0,
            created_by: "op".into(),
            created_by_key: None,
            minted_by: Vec::new(),
            expires_at,
            revoked_at: None,
            rate: None,
        }
    }

    #[test]
    fn a_generated_key_parses_and_verifies_and_nothing_else_does() {
        let (id, secret, token) = generate();
        assert_eq!(parse(&token), Some((id.as_str(), secret.as_str())));
        let key = ApiKey {
            fields: fields(&id, None),
            secret_sha256: hash(&secret),
        };
        assert!(key.verify(&secret));
        let (_, other, _) = generate();
        assert!(!key.verify(&other));
        for bad in [
            "",
            "Bearer x",
            &token[1..],
            &format!("{token}0"),
            &token.replace('_', "-"),
            "mhk_zzzzzzzzzzzzzzzz_0",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn minted_under_follows_the_chain_and_nothing_beside_it() {
        let key = |id: &str, by: Option<&str>| ApiKey {
            fields: KeyFields {
                created_by_key: by.map(str::to_string),
                ..fields(id, None)
            },
            secret_sha256: String::new(),
        };
        let all = [
            key("root", Some("cli")),
            key("child", Some("root")),
            key("grandchild", Some("child")),
            key("sibling", Some("cli")),
            key("nephew", Some("sibling")),
            key("other-child", Some("root")),
        ];
        let mut ids: Vec<&str> = minted_under(&all, "root")
            .iter()
            .map(|k| k.fields.id.as_str())
            .collect();
        ids.sort();
        assert_eq!(ids, ["child", "grandchild", "other-child"]);
        assert!(minted_under(&all, "nephew").is_empty());
    }

    #[test]
    fn state_follows_revocation_and_expiry() {
        let mut key = ApiKey {
            fields: fields(&"0".repeat(16), Some(100)),
            secret_sha256: String::new(),
        };
        assert_eq!(key.state(99), Ok(()));
        assert_eq!(key.state(100), Err(KeyState::Expired));
        key.fields.revoked_at = Some(50);
        assert_eq!(key.state(60), Err(KeyState::Revoked));
        assert_eq!(key.info(60).status, "revoked");
    }
}
