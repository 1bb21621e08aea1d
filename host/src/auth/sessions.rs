//! Console sessions and one-time sign-in links: what is stored, how a
//! presented token is found, when a session is over.
//!
//! Tokens are 32 random bytes in hex behind a prefix (`mhs_` a session,
//! `mhl_` a sign-in link). Only SHA-256 of a token is stored, as the row
//! key: a copied database holds no token that signs anyone in, and a
//! lookup is a point read (256 bits of entropy leave nothing to guess).
//!
//! | table | row key | value |
//! |---|---|---|
//! | `principals` | `session/` + sha256(token) | sealed [`Session`] (system key) |
//! | `principals` | `link/` + sha256(token) | sealed [`SignInLink`] (system key) |
//!
//! A session ends at the first of: sign-out, its idle timeout (no request
//! for that long), its absolute timeout (since sign-in), the user's
//! `session_epoch` moving on (sign out everywhere, a new password, the user
//! disabled). A link works once, until it expires or the epoch moves on.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A session token starts with this.
pub const SESSION_PREFIX: &str = "mhs_";
/// A sign-in link token starts with this.
pub const LINK_PREFIX: &str = "mhl_";

/// The `principals` row of the session whose token is `token`.
pub fn session_row(token: &str) -> Vec<u8> {
    [b"session/".as_slice(), &Sha256::digest(token.as_bytes())].concat()
}

/// The `principals` row of the sign-in link whose token is `token`.
pub fn link_row(token: &str) -> Vec<u8> {
    [b"link/".as_slice(), &Sha256::digest(token.as_bytes())].concat()
}

/// A new token with `prefix`.
pub fn new_token(prefix: &str) -> String {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    format!("{prefix}{}", hex::encode(secret))
}

/// Is `token` shaped like a token with `prefix` (so nothing else is
/// looked up)?
pub fn well_formed(token: &str, prefix: &str) -> bool {
    token
        .strip_prefix(prefix)
        .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// How long sessions and links last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSettings {
    /// A session with no request for this many minutes is over.
    pub idle_minutes: u64,
    /// A session is over this many hours after sign-in, however active.
    pub absolute_hours: u64,
    /// A sign-in link works for this many minutes.
    pub link_minutes: u64,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            idle_minutes: 30,
            absolute_hours: 12,
            link_minutes: 15,
        }
    }
}

impl SessionSettings {
    /// The reason these settings cannot be used, if any.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=24 * 60).contains(&self.idle_minutes) {
            return Err("[console] idle_minutes must be 1-1440".into());
        }
        if !(1..=24 * 30).contains(&self.absolute_hours) {
            return Err("[console] absolute_hours must be 1-720".into());
        }
        if !(1..=24 * 60).contains(&self.link_minutes) {
            return Err("[console] link_minutes must be 1-1440".into());
        }
        Ok(())
    }

    fn idle_ms(&self) -> i64 {
        (self.idle_minutes * 60_000) as i64
    }

    fn absolute_ms(&self) -> i64 {
        (self.absolute_hours * 3_600_000) as i64
    }

    /// How long a link works, in ms.
    pub fn link_ms(&self) -> i64 {
        (self.link_minutes * 60_000) as i64
    }
}

/// A signed-in browser (sealed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The user.
    pub user: String,
    /// Sign-in, Unix ms.
    pub created_at: i64,
    /// Last request, Unix ms (written at most once a minute).
    pub last_seen: i64,
    /// The token every form of this session carries (hex).
    pub csrf: String,
    /// `password` or `link`.
    pub method: String,
    /// The address it signed in from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The user's `session_epoch` when it began.
    #[serde(default)]
    pub epoch: u64,
}

/// Why a stored session no longer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// No request for the idle timeout.
    Idle,
    /// Past the absolute timeout.
    Expired,
}

impl Session {
    /// A new session for `user` (in its session epoch `epoch`) at `now`.
    pub fn new(user: &str, epoch: u64, method: &str, source: Option<String>, now: i64) -> Session {
        let mut csrf = [0u8; 32];
        rand::rng().fill_bytes(&mut csrf);
        Session {
            user: user.into(),
            created_at: now,
            last_seen: now,
            csrf: hex::encode(csrf),
            method: method.into(),
            source,
            epoch,
        }
    }

    /// Usable at `now` under `settings`?
    pub fn state(&self, settings: &SessionSettings, now: i64) -> Result<(), Ended> {
        if now >= self.created_at + settings.absolute_ms() {
            Err(Ended::Expired)
        } else if now >= self.last_seen + settings.idle_ms() {
            Err(Ended::Idle)
        } else {
            Ok(())
        }
    }

    /// Is it time to write `last_seen` again?
    pub fn stale(&self, now: i64) -> bool {
        now - self.last_seen >= 60_000
    }
}

/// A one-time sign-in link (sealed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignInLink {
    /// The user it signs in.
    pub user: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub expires_at: i64,
    /// Who made it.
    pub created_by: String,
    /// The user's `session_epoch` when it was made.
    #[serde(default)]
    pub epoch: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_when_idle_or_old() {
        let s = SessionSettings {
            idle_minutes: 30,
            absolute_hours: 12,
            link_minutes: 15,
        };
        let mut session = Session::new("alice", 0, "password", None, 0);
        assert_eq!(session.state(&s, 29 * 60_000), Ok(()));
        assert_eq!(session.state(&s, 30 * 60_000), Err(Ended::Idle));
        // Active all along, still over after 12 hours.
        session.last_seen = 12 * 3_600_000 - 1;
        assert_eq!(session.state(&s, 12 * 3_600_000 - 1), Ok(()));
        assert_eq!(session.state(&s, 12 * 3_600_000), Err(Ended::Expired));
    }

    #[test]
    fn tokens_are_shaped_and_rows_hide_them() {
        let t = new_token(SESSION_PREFIX);
        assert!(well_formed(&t, SESSION_PREFIX));
        assert!(!well_formed(&t, LINK_PREFIX));
        assert!(!well_formed(&t[..t.len() - 1], SESSION_PREFIX));
        assert_ne!(new_token(SESSION_PREFIX), t);
        assert_ne!(session_row(&t), link_row(&t));
    }
}
