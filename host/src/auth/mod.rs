//! Identity and access: API keys, console sessions and OAuth access tokens → [`Principal`] (agent id, agent type,
//! roles per namespace pattern), the role rules, and request limits.
//!
//! | role | may |
//! |---|---|
//! | `reader` | get, list, history, recall in the namespace |
//! | `writer` | reader + store; update and forget the memories **it wrote** |
//! | `admin` | writer + update and forget anyone's memories, namespace settings, create the namespace, keys within its patterns |
//! | `admin` on `*` | everything, server-wide: every namespace, every key, the audit log |
//!
//! A writer may not forget or change another agent's memory: in a shared
//! namespace, one agent (or one leaked writer key) must not be able to erase
//! what the others know. Admins can.
//!
//! Patterns are a namespace name (`team-a`), a prefix glob (`team-*`) or
//! `*`. A `*` anywhere but at the end is refused, so whether one pattern
//! covers another is exact, not guessed.

pub mod keys;
pub mod limits;
pub mod oauth;
pub mod sessions;
pub mod users;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Namespace names: 1–63 characters, lowercase letters, digits, `.`, `_`,
/// `-`, starting with a letter or digit.
pub fn valid_namespace_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// The key id of requests served without a key (`--no-auth`).
const NO_AUTH_KEY: &str = "no-auth";

/// Who wrote something, from the caller's credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Agent id.
    pub agent_id: String,
    /// Agent type.
    pub agent_type: String,
}

impl Actor {
    /// The local operator (used until credentials exist).
    pub fn local_operator() -> Actor {
        Actor {
            agent_id: "local-operator".into(),
            agent_type: "human".into(),
        }
    }
}

/// What a role allows; ordered: each includes the ones before it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Get, list, recall.
    Reader,
    /// + store; update and forget own memories.
    Writer,
    /// + everything in the namespace, its settings and keys.
    Admin,
}

impl Role {
    /// `reader`, `writer` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "reader" => Ok(Role::Reader),
            "writer" => Ok(Role::Writer),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "\"{other}\" is not a role: reader, writer or admin"
            )),
        }
    }
}

/// A role on the namespaces a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Grant {
    /// `team-a`, `team-*` or `*`.
    pub pattern: String,
    /// The role there.
    pub role: Role,
}

impl std::str::FromStr for Grant {
    type Err = String;
    /// `PATTERN=ROLE`, e.g. `team-*=writer`.
    fn from_str(s: &str) -> Result<Grant, String> {
        let (pattern, role) = s
            .split_once('=')
            .ok_or_else(|| format!("\"{s}\" is not PATTERN=ROLE, e.g. team-a=writer"))?;
        let pattern = pattern.trim();
        if !valid_pattern(pattern) {
            return Err(format!(
                "\"{pattern}\" is not a namespace pattern: a name, a prefix ending in '*' (team-*), or *"
            ));
        }
        Ok(Grant {
            pattern: pattern.to_string(),
            role: role.trim().parse()?,
        })
    }
}

/// `a=reader, b-*=writer`.
pub fn describe(grants: &[Grant]) -> String {
    grants
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.pattern, self.role.as_str())
    }
}

/// A name, `prefix*` (the prefix made of namespace-name characters) or `*`.
pub fn valid_pattern(p: &str) -> bool {
    match p.strip_suffix('*') {
        Some(prefix) => {
            prefix.len() < 63
                && prefix.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
        }
        None => valid_namespace_name(p),
    }
}

/// Does `pattern` match the namespace `name`?
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Does every name `inner` matches also match `outer`?
pub fn covers(outer: &str, inner: &str) -> bool {
    match (outer.strip_suffix('*'), inner.strip_suffix('*')) {
        (Some(o), Some(i)) => i.starts_with(o),
        (Some(o), None) => inner.starts_with(o),
        (None, Some(_)) => false,
        (None, None) => outer == inner,
    }
}

/// Who is making a request, from the credential it presented.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The API key's public id (`cli` for the operator's command line,
    /// `no-auth` in local development mode, `system` for the host itself).
    pub key_id: String,
    /// The agent the key was issued to.
    pub agent_id: String,
    /// Its type (e.g. `assistant`, `human`, `reviewer`).
    pub agent_type: String,
    /// Roles per namespace pattern.
    pub grants: Vec<Grant>,
    /// When the credential stops working (Unix ms); keys it creates may
    /// not outlive it.
    pub expires_at: Option<i64>,
    /// The agents whose keys minted this one, up the chain (empty for the
    /// operator's keys and the command line).
    pub minted_by: Vec<String>,
    /// Request-scoped: the `Idempotency-Key` the request carried. A
    /// retried change that a policy held returns the same approval.
    pub idempotency_key: Option<String>,
    /// The OAuth scopes of an access token (`None` for every other
    /// credential: its roles are the whole story).
    pub scopes: Option<Vec<oauth::Scope>>,
    /// Held for the length of the request (the per-key concurrency cap).
    pub(crate) _slot: Option<Arc<limits::Slot>>,
}

impl Principal {
    fn with(key_id: &str, agent_id: &str, agent_type: &str, grants: Vec<Grant>) -> Principal {
        Principal {
            key_id: key_id.into(),
            agent_id: agent_id.into(),
            agent_type: agent_type.into(),
            grants,
            expires_at: None,
            minted_by: Vec::new(),
            idempotency_key: None,
            scopes: None,
            _slot: None,
        }
    }

    fn everything() -> Vec<Grant> {
        vec![Grant {
            pattern: "*".into(),
            role: Role::Admin,
        }]
    }

    /// The operator at the command line: holds the master key, may do
    /// everything.
    pub fn operator() -> Principal {
        Principal::with("cli", "operator", "human", Principal::everything())
    }

    /// Every request in `--no-auth` local development mode.
    pub fn no_auth() -> Principal {
        Principal::with(
            NO_AUTH_KEY,
            "local-operator",
            "human",
            Principal::everything(),
        )
    }

    /// Is this a user signed in to the console (not an API key)?
    pub fn is_console_user(&self) -> bool {
        self.key_id.starts_with(users::CREDENTIAL_PREFIX)
    }

    /// Is this the `--no-auth` principal (no key was presented)?
    pub fn is_no_auth(&self) -> bool {
        self.key_id == NO_AUTH_KEY
    }

    /// A principal as an earlier request recorded it (the requester of a
    /// held change, when an approval runs it): its identity without roles,
    /// for what was authorized when it asked.
    pub fn recorded(key_id: &str, agent_id: &str, agent_type: &str) -> Principal {
        Principal::with(key_id, agent_id, agent_type, Vec::new())
    }

    /// The host itself (the expiry sweep).
    pub fn system() -> Principal {
        Principal::with("system", "memhost", "system", Principal::everything())
    }

    /// The strongest role this principal holds on any namespace.
    pub fn strongest_role(&self) -> Option<Role> {
        self.grants.iter().map(|g| g.role).max()
    }

    /// The strongest role this principal holds on namespace `name`.
    pub fn role_in(&self, name: &str) -> Option<Role> {
        self.grants
            .iter()
            .filter(|g| matches(&g.pattern, name))
            .map(|g| g.role)
            .max()
    }

    /// May this principal change or forget a memory of namespace `name`
    /// written by agent `author`? A writer its own, an admin any.
    pub fn may_change(&self, name: &str, author: &str) -> bool {
        match self.role_in(name) {
            Some(Role::Admin) => true,
            Some(Role::Writer) => author == self.agent_id,
            _ => false,
        }
    }

    /// Admin on `*`: server-wide operations.
    pub fn is_global_admin(&self) -> bool {
        self.grants
            .iter()
            .any(|g| g.pattern == "*" && g.role == Role::Admin)
    }

    /// Is this principal admin over everything `pattern` matches?
    pub fn admin_over(&self, pattern: &str) -> bool {
        self.grants
            .iter()
            .any(|g| g.role == Role::Admin && covers(&g.pattern, pattern))
    }

    /// May this principal hand out every grant in `grants`? Only an admin
    /// over each pattern may; nobody can give more than they hold.
    pub fn may_grant(&self, grants: &[Grant]) -> bool {
        grants.iter().all(|g| self.admin_over(&g.pattern))
    }

    /// Is `key` acceptable as an `Idempotency-Key`: 1–255 visible ASCII
    /// characters?
    pub fn valid_idempotency_key(key: &str) -> bool {
        (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
    }

    /// The writer identity stamped on memories.
    pub fn actor(&self) -> Actor {
        Actor {
            agent_id: self.agent_id.clone(),
            agent_type: self.agent_type.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(list: &[&str]) -> Vec<Grant> {
        list.iter().map(|g| g.parse().unwrap()).collect()
    }

    #[test]
    fn patterns_match_names_and_prefixes() {
        assert!(matches("team-a", "team-a"));
        assert!(!matches("team-a", "team-ab"));
        assert!(matches("team-*", "team-ab"));
        assert!(!matches("team-*", "tea"));
        assert!(matches("*", "anything"));
        for bad in ["", "Team", "te*am", "**", "a b", "*x"] {
            assert!(!valid_pattern(bad), "{bad}");
        }
        for ok in ["*", "team-*", "team-a", "t*"] {
            assert!(valid_pattern(ok), "{ok}");
        }
    }

    #[test]
    fn covering_is_exact() {
        assert!(covers("*", "team-*"));
        assert!(covers("team-*", "team-a*"));
        assert!(covers("team-*", "team-a"));
        assert!(!covers("team-a", "team-*"));
        assert!(!covers("team-a*", "team-*"));
        assert!(!covers("team-*", "*"));
    }

    #[test]
    fn the_strongest_matching_role_wins() {
        let p = Principal::with(
            "k",
            "a",
            "t",
            grants(&["*=reader", "team-*=writer", "team-a=admin"]),
        );
        assert_eq!(p.role_in("other"), Some(Role::Reader));
        assert_eq!(p.role_in("team-b"), Some(Role::Writer));
        assert_eq!(p.role_in("team-a"), Some(Role::Admin));
        assert!(!p.is_global_admin());
        assert!(p.may_grant(&grants(&["team-a=admin"])));
        assert!(!p.may_grant(&grants(&["team-b=reader"])));
        let none = Principal::with("k", "a", "t", vec![]);
        assert_eq!(none.role_in("team-a"), None);
    }

    #[test]
    fn grants_parse_with_clear_errors() {
        assert_eq!(
            "team-*=writer".parse::<Grant>().unwrap(),
            Grant {
                pattern: "team-*".into(),
                role: Role::Writer
            }
        );
        assert!(
            "team-a"
                .parse::<Grant>()
                .unwrap_err()
                .contains("PATTERN=ROLE")
        );
        assert!(
            "team-a=owner"
                .parse::<Grant>()
                .unwrap_err()
                .contains("not a role")
        );
        assert!(
            "Te*am=reader"
                .parse::<Grant>()
                .unwrap_err()
                .contains("not a namespace pattern")
        );
    }
}
