//! OAuth 2.1 for MCP clients: what is stored about registered clients,
//! codes, connections and tokens; which redirect URIs are accepted; PKCE;
//! scopes; the principal an access token acts as.
//!
//! A **connection** is one consent: a user let a client act for them, on
//! a subset of their roles, for the `/mcp` resource. Its refresh tokens
//! rotate; its access tokens are short-lived. Revoking the connection (or
//! the user's session epoch moving on: sign out everywhere, a new
//! password, a disable) ends every token it minted.
//!
//! | table | row key | value |
//! |---|---|---|
//! | `principals` | `oauth-client/` + sha256(client id) | sealed [`Client`] |
//! | `principals` | `oauth-code/` + sha256(code) | sealed [`Code`] (≤ 60 s, single use) |
//! | `principals` | `oauth-conn/` + connection id | sealed [`Connection`] |
//! | `principals` | `oauth-access/` + sha256(token) | sealed [`AccessToken`] |
//! | `principals` | `oauth-refresh/` + sha256(token) | sealed [`RefreshToken`] |
//!
//! Tokens are 32 random bytes in hex behind a prefix (`mha_` access,
//! `mhr_` refresh, `mho_` code); only their SHA-256 is stored, so a copied
//! database holds nothing a client could present.
//!
//! | redirect URI | accepted |
//! |---|---|
//! | `http://127.0.0.1:*/…`, `http://[::1]:*/…`, `http://localhost:*/…` | always; any port at authorize time (RFC 8252 §7.3) |
//! | `https://claude.ai/api/mcp/auth_callback`, `https://claude.com/api/mcp/auth_callback` | always (Claude's connectors) |
//! | `https://chatgpt.com/connector/oauth/…`, `https://chatgpt.com/connector_platform_oauth_redirect` | always (ChatGPT's connectors) |
//! | anything in `[oauth] redirect_uris` | exactly as listed |
//! | anything else, a fragment, user info, another scheme | refused |
//!
//! | scope | the most a token may do in a namespace |
//! |---|---|
//! | `memory:read` | reader |
//! | `memory:write` | writer |
//! | `memory:admin` | admin |
//!
//! On top of the scope, the user picks on the consent page which of
//! their namespace roles the client gets (and may lower each); a request
//! then gets the least of: the scope, that choice, the user's role today.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Grant, Principal, Role, covers};

/// `[oauth]` in the configuration: the authorization server for MCP
/// clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthSettings {
    /// `true`: must run (start fails without an `https` `public_url` off
    /// loopback); `false`: off; unset: on where it can be.
    pub enabled: Option<bool>,
    /// Access tokens work this many minutes.
    pub access_minutes: u64,
    /// A refresh token works this many days (each refresh starts anew).
    pub refresh_days: u64,
    /// Redirect URIs accepted besides loopback and the hosted connectors'.
    pub redirect_uris: Vec<String>,
    /// Clients known without registering.
    pub clients: Vec<ConfiguredClient>,
    /// Most dynamically registered clients kept at once.
    pub max_clients: usize,
    /// Dynamic registrations per client address per hour.
    pub registrations_per_hour: u32,
    /// A registered client unused this many days is forgotten (one never
    /// used, after a day).
    pub idle_client_days: u64,
    /// A spent refresh token works again for this many seconds (a client
    /// whose answer was lost, or that refreshed twice at once); after it,
    /// presenting it revokes the connection.
    pub refresh_grace_seconds: u64,
}

impl Default for OAuthSettings {
    fn default() -> Self {
        OAuthSettings {
            enabled: None,
            access_minutes: 60,
            refresh_days: 30,
            redirect_uris: Vec::new(),
            clients: Vec::new(),
            max_clients: 10_000,
            registrations_per_hour: 20,
            idle_client_days: 30,
            refresh_grace_seconds: 30,
        }
    }
}

/// A client the operator configured (`[[oauth.clients]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfiguredClient {
    /// Its id.
    pub client_id: String,
    /// Its name on the consent page.
    pub name: String,
    /// Its redirect URIs (any URI the operator lists is allowed).
    pub redirect_uris: Vec<String>,
    /// SHA-256 (hex) of its secret; none: a public client.
    #[serde(default)]
    pub client_secret_sha256: Option<String>,
}

impl OAuthSettings {
    /// The reason these settings cannot be used, if any.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=60).contains(&self.access_minutes) {
            return Err("[oauth] access_minutes must be 1-60 (access tokens are short-lived; refresh tokens carry a connection longer)".into());
        }
        if !(1..=365).contains(&self.refresh_days) {
            return Err("[oauth] refresh_days must be 1-365".into());
        }
        if !(self.refresh_days..=365).contains(&self.idle_client_days) {
            return Err(
                "[oauth] idle_client_days must be at least refresh_days (a client is kept while its refresh tokens work) and at most 365"
                    .into(),
            );
        }
        if self.refresh_grace_seconds > 300 {
            return Err("[oauth] refresh_grace_seconds must be at most 300".into());
        }
        if self.max_clients == 0 || self.registrations_per_hour == 0 {
            return Err(
                "[oauth] max_clients and registrations_per_hour must be at least 1 (to refuse registration, list [[oauth.clients]] and set enabled)"
                    .into(),
            );
        }
        for uri in &self.redirect_uris {
            parse_redirect(uri).map_err(|e| format!("[oauth] redirect_uris: {e}: {uri}"))?;
        }
        for c in &self.clients {
            if c.client_id.is_empty() || c.client_id.len() > 255 || c.redirect_uris.is_empty() {
                return Err(format!(
                    "[[oauth.clients]] \"{}\": needs a client_id of 1-255 characters and at least one redirect URI",
                    c.client_id
                ));
            }
            if c.client_secret_sha256
                .as_ref()
                .is_some_and(|h| h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(format!(
                    "[[oauth.clients]] \"{}\": client_secret_sha256 must be 64 hex digits",
                    c.client_id
                ));
            }
        }
        Ok(())
    }

    /// How long an access token works, in ms.
    pub fn access_ms(&self) -> i64 {
        (self.access_minutes * 60_000) as i64
    }

    /// How long a spent refresh token still works, in ms.
    pub fn grace_ms(&self) -> i64 {
        (self.refresh_grace_seconds * 1000) as i64
    }

    /// How long a refresh token works, in ms.
    pub fn refresh_ms(&self) -> i64 {
        (self.refresh_days * 86_400_000) as i64
    }

    /// The configured client `client_id`, as a client record.
    pub fn configured(&self, client_id: &str) -> Option<Client> {
        self.clients
            .iter()
            .find(|c| c.client_id == client_id)
            .map(|c| Client {
                client_id: c.client_id.clone(),
                name: c.name.clone(),
                redirect_uris: c.redirect_uris.clone(),
                refresh: true,
                auth_method: if c.client_secret_sha256.is_some() {
                    AuthMethod::ClientSecretPost
                } else {
                    AuthMethod::None
                },
                secret_hash: c
                    .client_secret_sha256
                    .as_ref()
                    .map(|h| h.to_ascii_lowercase()),
                kind: ClientKind::Configured,
                created_at: 0,
                last_used_at: 0,
            })
    }
}

/// The authorization server of one running memhost: its issuer and the
/// one resource it issues tokens for.
#[derive(Debug, Clone)]
pub struct AuthServer {
    /// `public_url` (or `http://` + a loopback listen address), without a
    /// trailing slash: the `issuer`, exactly.
    pub issuer: String,
    /// The canonical URI of `/mcp`.
    pub resource: String,
    /// `[oauth]`.
    pub settings: OAuthSettings,
}

impl AuthServer {
    /// The authorization response (RFC 6749 §4.1.2): `redirect_uri` with
    /// `params` added to its query, the client's `state` and this server's
    /// `iss` (RFC 9207) — on success and on error alike.
    pub fn response(
        &self,
        redirect_uri: &str,
        params: &[(&str, &str)],
        state: Option<&str>,
    ) -> String {
        let Ok(mut url) = url::Url::parse(redirect_uri) else {
            return redirect_uri.to_string();
        };
        {
            let mut q = url.query_pairs_mut();
            q.extend_pairs(params);
            if let Some(s) = state {
                q.append_pair("state", s);
            }
            q.append_pair("iss", &self.issuer);
        }
        url.into()
    }

    /// The authorization server for `public_url` (checked already) or, if
    /// none, the address listened on. `Ok(None)`: off — by the settings, or
    /// because it cannot run safely here (the reason is logged unless
    /// `enabled = true`, which makes it an error).
    pub fn new(
        public_url: Option<&str>,
        listen: std::net::SocketAddr,
        settings: OAuthSettings,
    ) -> Result<Option<AuthServer>, String> {
        if settings.enabled == Some(false) {
            return Ok(None);
        }
        let base = match public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{listen}"),
        };
        let refusal = match url::Url::parse(&base) {
            Ok(u) if u.path() != "/" && !u.path().is_empty() => Some(
                "[server] public_url has a path: the OAuth metadata must be at the root of its origin, so give the origin alone",
            ),
            Ok(u) if u.scheme() == "https" => None,
            // Plain http only where nothing crosses a network: the public
            // name and the listening address both loopback.
            Ok(u) if u.host().as_ref().is_some_and(loopback_host) && listen.ip().is_loopback() => {
                None
            }
            _ => Some(
                "the OAuth authorization server needs [server] public_url with https:// (behind a TLS proxy) unless it listens on loopback",
            ),
        };
        match (refusal, settings.enabled) {
            (None, _) => Ok(Some(AuthServer {
                resource: format!("{base}/mcp"),
                issuer: base,
                settings,
            })),
            (Some(why), Some(true)) => Err(why.into()),
            (Some(why), _) => {
                tracing::warn!("OAuth for MCP clients is off: {why}");
                Ok(None)
            }
        }
    }
}

/// An access token starts with this.
pub const ACCESS_PREFIX: &str = "mha_";
/// A refresh token starts with this.
pub const REFRESH_PREFIX: &str = "mhr_";
/// An authorization code starts with this.
pub const CODE_PREFIX: &str = "mho_";
/// A client id memhost issued (dynamic registration) starts with this.
pub const CLIENT_PREFIX: &str = "mhc_";
/// A client secret starts with this.
pub const SECRET_PREFIX: &str = "mhcs_";
/// The credential id of a connection's requests starts with this
/// (`oauth:<connection id>`).
pub const CREDENTIAL_PREFIX: &str = "oauth:";
/// The agent type a connection acts as: an AI client, never `human`, so
/// a connector cannot cast a person's vote on a held change.
pub const AGENT_TYPE: &str = "assistant";

/// How long a code may wait for its exchange.
pub const CODE_MS: i64 = 60_000;

fn hashed(prefix: &[u8], secret: &str) -> Vec<u8> {
    [prefix, &Sha256::digest(secret.as_bytes())].concat()
}

/// The `principals` row of client `client_id`.
pub fn client_row(client_id: &str) -> Vec<u8> {
    hashed(b"oauth-client/", client_id)
}
/// The `principals` row of code `code`.
pub fn code_row(code: &str) -> Vec<u8> {
    hashed(b"oauth-code/", code)
}
/// The `principals` row of access token `token`.
pub fn access_row(token: &str) -> Vec<u8> {
    hashed(b"oauth-access/", token)
}
/// The `principals` row of refresh token `token`.
pub fn refresh_row(token: &str) -> Vec<u8> {
    hashed(b"oauth-refresh/", token)
}
/// The `principals` row of connection `id`.
pub fn connection_row(id: &str) -> Vec<u8> {
    [b"oauth-conn/".as_slice(), id.as_bytes()].concat()
}

/// SHA-256 of a secret, hex (what a client row keeps of its secret).
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A scope this server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// `memory:read`.
    #[serde(rename = "memory:read")]
    Read,
    /// `memory:write`.
    #[serde(rename = "memory:write")]
    Write,
    /// `memory:admin`.
    #[serde(rename = "memory:admin")]
    Admin,
}

impl Scope {
    /// Every scope, weakest first.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];
    /// What an agent needs, and what a client that names no scope gets:
    /// the resource metadata lists these, a `401` asks for them.
    pub const AGENT: [Scope; 2] = [Scope::Read, Scope::Write];

    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "memory:read",
            Scope::Write => "memory:write",
            Scope::Admin => "memory:admin",
        }
    }

    /// The role it allows at most.
    pub fn role(self) -> Role {
        match self {
            Scope::Read => Role::Reader,
            Scope::Write => Role::Writer,
            Scope::Admin => Role::Admin,
        }
    }

    /// What a person reads on the consent page.
    pub fn describe(self) -> &'static str {
        match self {
            Scope::Read => "read and search your memories",
            Scope::Write => "store, change and forget memories",
            Scope::Admin => "manage namespaces and approve held changes",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|sc| sc.as_str() == s)
    }
}

/// The scopes a request asks for, from a space-separated `scope`: the
/// ones this server knows (others, `offline_access` among them, are
/// dropped — the token response says what was granted); none named means
/// read and write.
pub fn requested_scopes(scope: Option<&str>) -> Vec<Scope> {
    let out = named_scopes(scope.unwrap_or(""));
    if out.is_empty() {
        Scope::AGENT.to_vec()
    } else {
        out
    }
}

/// The known scopes named in `scope`, nothing assumed.
pub fn named_scopes(scope: &str) -> Vec<Scope> {
    let mut out: Vec<Scope> = scope.split(' ').filter_map(Scope::parse).collect();
    out.sort();
    out.dedup();
    out
}

/// `memory:read memory:write`.
pub fn scope_string(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The strongest role `scopes` allow.
pub fn scope_cap(scopes: &[Scope]) -> Option<Role> {
    scopes.iter().map(|s| s.role()).max()
}

/// Is `verifier` a PKCE code verifier (RFC 7636 §4.1: 43–128 unreserved
/// characters)?
pub fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Is `challenge` an S256 code challenge (43 characters of base64url)?
pub fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Does `verifier` hash to `challenge` (S256)? Constant time.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    use subtle::ConstantTimeEq;
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    valid_verifier(verifier) && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

/// Is `host` a loopback name or address?
fn loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// A redirect URI parsed and checked for shape: absolute, no fragment, no
/// user info.
fn parse_redirect(uri: &str) -> Result<url::Url, String> {
    if uri.len() > 2000 {
        return Err("a redirect URI is longer than 2,000 characters".into());
    }
    let url =
        url::Url::parse(uri).map_err(|_| "a redirect URI is not an absolute URL".to_string())?;
    if url.fragment().is_some() {
        return Err("a redirect URI must not have a fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a redirect URI must not carry user information".into());
    }
    Ok(url)
}

/// Is `uri` an `http` loopback redirect (any port may be used)?
fn is_loopback_redirect(url: &url::Url) -> bool {
    url.scheme() == "http" && url.host().as_ref().is_some_and(loopback_host)
}

/// May a client register `uri` as a redirect URI? `extra`: the
/// operator's `[oauth] redirect_uris`. The error never repeats the URI
/// (it is the attacker's text).
pub fn redirect_allowed(uri: &str, extra: &[String]) -> Result<(), String> {
    if extra.iter().any(|e| e == uri) {
        return Ok(());
    }
    let url = parse_redirect(uri)?;
    if is_loopback_redirect(&url) {
        return Ok(());
    }
    let host = url.host_str().unwrap_or("");
    let path = url.path();
    let hosted = url.scheme() == "https"
        && url.port().is_none()
        && url.query().is_none()
        && match host {
            "claude.ai" | "claude.com" => path == "/api/mcp/auth_callback",
            "chatgpt.com" => {
                path == "/connector_platform_oauth_redirect"
                    || path
                        .strip_prefix("/connector/oauth/")
                        .is_some_and(|rest| !rest.is_empty() && !rest.contains(".."))
            }
            _ => false,
        };
    if hosted {
        Ok(())
    } else {
        Err("the redirect URI is not allowed: loopback, Claude's and ChatGPT's connector callbacks are, others only when the operator lists them in [oauth] redirect_uris".into())
    }
}

/// Does the redirect URI of an authorization request match one a client
/// registered? Exactly, except the port of a loopback redirect (RFC 8252
/// §7.3: a native app picks a free port each time).
pub fn redirect_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(r), Ok(q)) = (parse_redirect(registered), parse_redirect(requested)) else {
        return false;
    };
    is_loopback_redirect(&r)
        && is_loopback_redirect(&q)
        && r.host() == q.host()
        && r.path() == q.path()
        && r.query() == q.query()
}

/// The host a redirect sends the browser to (shown large on the consent
/// page).
pub fn redirect_host(uri: &str) -> String {
    url::Url::parse(uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "an unknown site".into())
}

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A public client: PKCE is its proof.
    None,
    /// `client_secret` in the form.
    ClientSecretPost,
    /// HTTP Basic with id and secret.
    ClientSecretBasic,
}

impl AuthMethod {
    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::ClientSecretBasic => "client_secret_basic",
        }
    }

    /// From its name.
    pub fn parse(s: &str) -> Option<AuthMethod> {
        [
            AuthMethod::None,
            AuthMethod::ClientSecretPost,
            AuthMethod::ClientSecretBasic,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// Where a client's record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// Dynamic client registration (RFC 7591): anyone may register, so
    /// its name is shown as unverified.
    Registered,
    /// A client ID metadata document fetched from its `https` URL.
    MetadataDocument,
    /// `[oauth.clients]` in the configuration.
    Configured,
}

/// A client (sealed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Client {
    /// Its id.
    pub client_id: String,
    /// What it calls itself.
    pub name: String,
    /// Exactly these (a loopback one with any port).
    pub redirect_uris: Vec<String>,
    /// Does it get refresh tokens?
    pub refresh: bool,
    /// How it authenticates.
    pub auth_method: AuthMethod,
    /// SHA-256 of its secret, hex (confidential clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    /// Where its record came from.
    pub kind: ClientKind,
    /// Unix ms.
    pub created_at: i64,
    /// The last code it exchanged or token it refreshed (Unix ms; written
    /// at most once an hour): idle registrations expire.
    pub last_used_at: i64,
}

impl Client {
    /// Does `secret` match its secret? Constant time.
    pub fn secret_matches(&self, secret: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.secret_hash
            .as_ref()
            .is_some_and(|h| bool::from(h.as_bytes().ct_eq(secret_hash(secret).as_bytes())))
    }
}

/// An authorization code (sealed); single use, ≤ 60 s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Code {
    /// The client it was issued to.
    pub client_id: String,
    /// The redirect URI of the request (the exchange must repeat it).
    pub redirect_uri: String,
    /// S256 challenge.
    pub challenge: String,
    /// The connection the exchange creates.
    pub connection: Connection,
    /// Unix ms.
    pub expires_at: i64,
    /// Exchanged already: a second exchange revokes the connection.
    #[serde(default)]
    pub used: bool,
}

/// One consent: a user let a client act for them (sealed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    /// Its id (16 random bytes, hex).
    pub id: String,
    /// The client.
    pub client_id: String,
    /// The client's name when consent was given.
    pub client_name: String,
    /// The user who consented.
    pub user: String,
    /// The user's session epoch then: when it moves on, this ends.
    pub user_epoch: u64,
    /// The roles the user chose (each at most the scope's cap).
    pub grants: Vec<Grant>,
    /// The scopes granted.
    pub scopes: Vec<Scope>,
    /// The resource (the canonical `/mcp` URL).
    pub resource: String,
    /// Unix ms.
    pub created_at: i64,
    /// The last time it minted a refresh token (Unix ms): it lives
    /// `refresh_days` from then.
    pub renewed_at: i64,
    /// SHA-256 (hex) of the newest refresh token (none: the client gets
    /// no refresh tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
    /// Unix ms, once revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    /// Why, once revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_because: Option<String>,
}

impl Connection {
    /// The credential id its requests are recorded under.
    pub fn credential_id(&self) -> String {
        format!("{CREDENTIAL_PREFIX}{}", self.id)
    }

    /// The principal a request with one of its access tokens acts as:
    /// the user's name as agent id, typed [`AGENT_TYPE`], with the least
    /// of the chosen roles, the user's roles today (`user_grants`) and what
    /// the token's `scopes` allow.
    pub fn principal(&self, user_grants: &[Grant], expires_at: i64, scopes: &[Scope]) -> Principal {
        let cap = scope_cap(scopes);
        let grants = intersect(&self.grants, user_grants)
            .into_iter()
            .filter_map(|g| {
                let role = g.role.min(cap?);
                Some(Grant { role, ..g })
            })
            .collect();
        let mut p = Principal::with(&self.credential_id(), &self.user, AGENT_TYPE, grants);
        p.expires_at = Some(expires_at);
        p.scopes = Some(scopes.to_vec());
        p
    }
}

/// An access token (sealed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessToken {
    /// Its connection.
    pub connection: String,
    /// Unix ms.
    pub expires_at: i64,
    /// Fewer scopes than the connection's, when a refresh asked for fewer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Scope>>,
}

/// A refresh token (sealed). Kept after it is spent until it expires, so
/// a replay is recognised (and revokes the connection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshToken {
    /// Its connection.
    pub connection: String,
    /// Unix ms.
    pub expires_at: i64,
    /// When it was first exchanged for a new pair (Unix ms): it works
    /// again only within `[oauth] refresh_grace_seconds` of that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent_at: Option<i64>,
}

/// Is `client_id` a client ID metadata document URL: `https`, a path
/// other than `/`, no fragment, user info or dot segments?
pub fn is_metadata_url(client_id: &str) -> bool {
    client_id.len() <= 2000
        && client_id.starts_with("https://")
        && url::Url::parse(client_id).is_ok_and(|u| {
            u.path() != "/"
                && u.fragment().is_none()
                && u.username().is_empty()
                && u.password().is_none()
                && !client_id.contains("/./")
                && !client_id.contains("/../")
        })
}

/// A client ID metadata document, as its client publishes it.
#[derive(Debug, Deserialize)]
struct MetadataDocument {
    client_id: String,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
}

/// The client a metadata document fetched from `url` describes, checked
/// as a registration is: its `client_id` is the URL itself, its redirect
/// URIs are allowed ones (`extra`: the operator's), and it is a public
/// client (a published document holds no secret).
pub fn client_from_document(
    url: &str,
    body: &[u8],
    extra: &[String],
    now: i64,
) -> Result<Client, String> {
    let doc: MetadataDocument = serde_json::from_slice(body)
        .map_err(|e| format!("the client's metadata document is not valid: {e}"))?;
    if doc.client_id != url {
        return Err(
            "the client's metadata document names another client_id than its own URL".into(),
        );
    }
    if !matches!(
        doc.token_endpoint_auth_method.as_deref(),
        None | Some("none")
    ) {
        return Err("the client's metadata document asks for a token_endpoint_auth_method other than none, which memhost does not support for documents".into());
    }
    if doc.redirect_uris.is_empty() || doc.redirect_uris.len() > 10 {
        return Err("the client's metadata document must list 1-10 redirect_uris".into());
    }
    for uri in &doc.redirect_uris {
        redirect_allowed(uri, extra)?;
    }
    let name = doc.client_name.unwrap_or_default();
    let name = name.trim();
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err("the client's metadata document has a client_name over 100 characters".into());
    }
    let host = redirect_host(url);
    Ok(Client {
        client_id: url.to_string(),
        name: if name.is_empty() {
            host
        } else {
            format!("{name} ({host})")
        },
        redirect_uris: doc.redirect_uris,
        refresh: doc
            .grant_types
            .is_none_or(|g| g.iter().any(|t| t == "refresh_token")),
        auth_method: AuthMethod::None,
        secret_hash: None,
        kind: ClientKind::MetadataDocument,
        created_at: now,
        last_used_at: now,
    })
}

/// Grants holding in both lists: for every pair where one pattern covers
/// the other, the narrower pattern with the weaker role. In any namespace
/// the result's role is the lesser of the two lists' roles there.
pub fn intersect(a: &[Grant], b: &[Grant]) -> Vec<Grant> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let pattern = if covers(&x.pattern, &y.pattern) {
                &y.pattern
            } else if covers(&y.pattern, &x.pattern) {
                &x.pattern
            } else {
                continue;
            };
            let g = Grant {
                pattern: pattern.clone(),
                role: x.role.min(y.role),
            };
            if !out.contains(&g) {
                out.push(g);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(list: &[&str]) -> Vec<Grant> {
        list.iter().map(|g| g.parse().unwrap()).collect()
    }

    #[test]
    fn hosted_connector_and_loopback_redirects_are_accepted_others_are_not() {
        for ok in [
            "http://127.0.0.1:33418/callback",
            "http://localhost/cb",
            "http://[::1]:8080/oauth/callback?x=1",
            "https://claude.ai/api/mcp/auth_callback",
            "https://claude.com/api/mcp/auth_callback",
            "https://chatgpt.com/connector_platform_oauth_redirect",
            "https://chatgpt.com/connector/oauth/abc123",
        ] {
            assert_eq!(redirect_allowed(ok, &[]), Ok(()), "{ok}");
        }
        for bad in [
            "https://evil.example/cb",
            "https://claude.ai/api/mcp/auth_callback/../x",
            "https://claude.ai.evil.example/api/mcp/auth_callback",
            "https://claude.ai:8443/api/mcp/auth_callback",
            "https://claude.ai/api/mcp/auth_callback#frag",
            "https://user@claude.ai/api/mcp/auth_callback",
            "http://claude.ai/api/mcp/auth_callback",
            "https://chatgpt.com/connector/oauth/",
            "http://127.0.0.1.evil.example/cb",
            "javascript:alert(1)",
            "cursor://anysphere.cursor-mcp/oauth/callback",
            "/relative",
        ] {
            let e = redirect_allowed(bad, &[]).unwrap_err();
            assert!(!e.contains(bad), "{e}");
        }
        let extra = vec!["cursor://anysphere.cursor-mcp/oauth/callback".to_string()];
        assert_eq!(
            redirect_allowed("cursor://anysphere.cursor-mcp/oauth/callback", &extra),
            Ok(())
        );
    }

    #[test]
    fn redirects_match_exactly_but_a_loopback_port_may_change() {
        assert!(redirect_matches(
            "https://claude.ai/api/mcp/auth_callback",
            "https://claude.ai/api/mcp/auth_callback"
        ));
        assert!(!redirect_matches(
            "https://claude.ai/api/mcp/auth_callback",
            "https://claude.ai/api/mcp/auth_callback?x"
        ));
        assert!(redirect_matches(
            "http://127.0.0.1:1234/callback",
            "http://127.0.0.1:5678/callback"
        ));
        assert!(!redirect_matches(
            "http://127.0.0.1:1234/callback",
            "http://127.0.0.1:5678/other"
        ));
        assert!(!redirect_matches(
            "http://127.0.0.1:1234/callback",
            "http://localhost:1234/callback"
        ));
    }

    #[test]
    fn pkce_s256_checks_the_verifier() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(valid_challenge(challenge));
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
            challenge
        ));
        assert!(!pkce_matches("short", challenge));
        assert!(!valid_challenge("plain-text-challenge"));
    }

    /// A connection of alice's with `chosen` roles, reading and writing.
    fn connection(chosen: Vec<Grant>) -> Connection {
        Connection {
            id: "c".into(),
            client_id: "x".into(),
            client_name: "x".into(),
            user: "alice".into(),
            user_epoch: 0,
            grants: chosen,
            renewed_at: 0,
            scopes: vec![Scope::Read, Scope::Write],
            resource: "r".into(),
            created_at: 0,
            refresh: None,
            revoked_at: None,
            revoked_because: None,
        }
    }

    #[test]
    fn a_token_gets_the_least_of_what_was_chosen_and_what_the_user_holds() {
        let user = grants(&["team-a=admin", "team-b=reader", "other=admin"]);
        let p = connection(grants(&["team-*=writer", "ops=reader"])).principal(
            &user,
            1,
            &[Scope::Read, Scope::Write],
        );
        assert_eq!(p.role_in("team-a"), Some(Role::Writer));
        assert_eq!(p.role_in("team-b"), Some(Role::Reader));
        assert_eq!(p.role_in("team-c"), None);
        assert_eq!(p.role_in("ops"), None);
        assert_eq!(p.role_in("other"), None);
        assert_eq!(p.agent_type, AGENT_TYPE);
        // A token narrowed to reading reads, whatever was chosen.
        let read = connection(grants(&["team-a=admin"])).principal(
            &grants(&["*=admin"]),
            1,
            &[Scope::Read],
        );
        assert_eq!(read.role_in("team-a"), Some(Role::Reader));
    }

    #[test]
    fn a_metadata_document_must_name_itself_and_allowed_redirects() {
        let url = "https://app.example.com/oauth/client.json";
        assert!(is_metadata_url(url));
        for bad in [
            "https://app.example.com/",
            "http://app.example.com/c.json",
            "https://app.example.com/c.json#x",
            "https://u@app.example.com/c.json",
            "https://app.example.com/a/../c.json",
        ] {
            assert!(!is_metadata_url(bad), "{bad}");
        }
        let doc =
            |v: serde_json::Value| client_from_document(url, v.to_string().as_bytes(), &[], 5);
        let c = doc(serde_json::json!({"client_id": url, "client_name": "App", "redirect_uris": ["http://127.0.0.1/cb"]})).unwrap();
        assert_eq!(c.name, "App (app.example.com)");
        assert_eq!(c.kind, ClientKind::MetadataDocument);
        assert!(c.refresh);
        for (bad, why) in [
            (
                serde_json::json!({"client_id": "https://other.example/c.json", "redirect_uris": ["http://127.0.0.1/cb"]}),
                "another client_id",
            ),
            (
                serde_json::json!({"client_id": url, "redirect_uris": ["https://evil.example/cb"]}),
                "not allowed",
            ),
            (
                serde_json::json!({"client_id": url, "redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "private_key_jwt"}),
                "other than none",
            ),
            (serde_json::json!({"client_id": url}), "1-10 redirect_uris"),
        ] {
            let e = doc(bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn scopes_default_to_read_and_write_and_unknown_ones_are_dropped() {
        assert_eq!(requested_scopes(None), vec![Scope::Read, Scope::Write]);
        assert_eq!(
            requested_scopes(Some("memory:read offline_access openid")),
            vec![Scope::Read]
        );
        assert_eq!(
            scope_cap(&requested_scopes(Some("memory:admin"))),
            Some(Role::Admin)
        );
    }
}
