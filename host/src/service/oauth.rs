//! OAuth 2.1 use cases: register a client (RFC 7591), check an
//! authorization request, record a person's consent as a single-use code,
//! exchange it (PKCE S256), rotate refresh tokens, revoke (RFC 7009), and
//! find the principal an access token acts as. The rows are described in
//! `auth::oauth`.
//!
//! Every step that reads and then changes a code, a connection or a
//! refresh token does both in one write transaction: two exchanges of one
//! code, or two refreshes with one token, cannot both succeed.
//!
//! | replayed | what happens |
//! |---|---|
//! | a code already exchanged | `invalid_grant`, and the connection it made is revoked |
//! | a spent refresh token, within `refresh_grace_seconds` (30) | a new pair (a client whose answer was lost, or that refreshed twice at once) |
//! | a spent refresh token after that | `invalid_grant`, and the connection is revoked |

use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::access::sealed_in;
use super::{Service, ServiceError, model};
use crate::audit::Record;
use crate::auth::oauth::{
    self, AccessToken, AuthMethod, AuthServer, Client, ClientKind, Code, Connection, OAuthSettings,
    RefreshToken, Scope,
};
use crate::auth::sessions;
use crate::auth::users::User;
use crate::auth::{Grant, Principal};
use crate::crypto::DataKey;
use crate::service::access::AuthFailure;
use crate::store::{RwTransaction, StoreError, Tables, WriteFlags, del_in};

/// An OAuth error (RFC 6749 §5.2): its code and what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct OAuthError {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, …
    pub code: &'static str,
    /// For the developer reading it.
    pub description: String,
}

impl OAuthError {
    /// Error `code` with `description`.
    pub fn new(code: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError {
            code,
            description: description.into(),
        }
    }

    /// `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_request", description)
    }

    /// `invalid_client` (401).
    pub fn invalid_client(description: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_client", description)
    }

    /// `server_error` (500).
    pub fn server_error(description: impl Into<String>) -> OAuthError {
        OAuthError::new("server_error", description)
    }

    /// `slow_down` (429).
    pub fn slow_down(description: impl Into<String>) -> OAuthError {
        OAuthError::new("slow_down", description)
    }

    /// The HTTP status it is answered with.
    pub fn status(&self) -> u16 {
        match self.code {
            "invalid_client" => 401,
            "server_error" => 500,
            "slow_down" => 429,
            "temporarily_unavailable" => 503,
            _ => 400,
        }
    }
}

impl From<ServiceError> for OAuthError {
    fn from(e: ServiceError) -> Self {
        tracing::error!(error = %e, "OAuth request failed internally");
        OAuthError::new("server_error", "internal error; see the server log")
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

/// A registration request (RFC 7591 §2), as a client sends it. Other
/// metadata (`client_uri`, `logo_uri`, …) is accepted and not kept: memhost
/// fetches nothing a registration names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Registration {
    /// Where codes may be sent.
    pub redirect_uris: Vec<String>,
    /// Its name.
    pub client_name: Option<String>,
    /// `authorization_code`, `refresh_token`.
    pub grant_types: Option<Vec<String>>,
    /// `code`.
    pub response_types: Option<Vec<String>>,
    /// `none` (default), `client_secret_post`, `client_secret_basic`.
    pub token_endpoint_auth_method: Option<String>,
}

/// A client just registered, with its secret (shown once).
#[derive(Debug, Clone)]
pub struct Registered {
    /// The record.
    pub client: Client,
    /// The secret of a confidential client.
    pub secret: Option<String>,
}

/// The parameters of an authorization request, as sent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthorizeParams {
    /// `code`.
    pub response_type: Option<String>,
    /// The client.
    pub client_id: Option<String>,
    /// Where to send the answer.
    pub redirect_uri: Option<String>,
    /// Echoed.
    pub state: Option<String>,
    /// PKCE.
    pub code_challenge: Option<String>,
    /// `S256`.
    pub code_challenge_method: Option<String>,
    /// RFC 8707.
    pub resource: Option<String>,
    /// Space-separated.
    pub scope: Option<String>,
}

/// An authorization request that may be shown to a person.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// The client.
    pub client: Client,
    /// Where the answer goes (matched against the client's).
    pub redirect_uri: String,
    /// The client's state, echoed.
    pub state: Option<String>,
    /// PKCE S256 challenge.
    pub challenge: String,
    /// The scopes asked for (ones this server knows).
    pub scopes: Vec<Scope>,
}

/// Why an authorization request cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: shown to the person,
    /// never sent anywhere.
    Shown(String),
    /// Sent back to the client at its (checked) redirect URI.
    Redirect {
        /// The client's redirect URI.
        redirect_uri: String,
        /// The error.
        error: OAuthError,
        /// The client's state.
        state: Option<String>,
    },
}

/// The token endpoint's answer (RFC 6749 §5.1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tokens {
    /// `mha_…`.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds.
    pub expires_in: i64,
    /// `mhr_…`, when the client may refresh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// What was granted.
    pub scope: String,
}

/// A token request's client credentials, as presented.
#[derive(Debug, Clone, Default)]
pub struct ClientCredentials {
    /// From HTTP Basic or the form.
    pub client_id: Option<String>,
    /// From HTTP Basic or the form.
    pub secret: Option<String>,
    /// Came in HTTP Basic.
    pub basic: bool,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn put_in<T: Serialize>(
    txn: &mut RwTransaction<'_>,
    t: &Tables,
    key: &DataKey,
    row: &[u8],
    value: &T,
) -> Result<(), StoreError> {
    let sealed = super::seal_json(key, "principals", row, value)
        .map_err(|e| StoreError::Storage(e.to_string()))?;
    txn.put(t.principals, &row, &sealed, WriteFlags::empty())?;
    Ok(())
}

/// A new access token (and refresh token, if `refresh`) for `conn`,
/// written in `txn`; `conn` is updated to name the new refresh token.
#[allow(clippy::too_many_arguments)]
fn mint(
    txn: &mut RwTransaction<'_>,
    t: &Tables,
    key: &DataKey,
    conn: &mut Connection,
    refresh: bool,
    scopes: &[Scope],
    server: &AuthServer,
    now: i64,
) -> Result<Tokens, StoreError> {
    let access = sessions::new_token(oauth::ACCESS_PREFIX);
    let expires_at = now + server.settings.access_ms();
    put_in(
        txn,
        t,
        key,
        &oauth::access_row(&access),
        &AccessToken {
            connection: conn.id.clone(),
            expires_at,
            scopes: (scopes != conn.scopes.as_slice()).then(|| scopes.to_vec()),
        },
    )?;
    let refresh_token = if refresh {
        let token = sessions::new_token(oauth::REFRESH_PREFIX);
        put_in(
            txn,
            t,
            key,
            &oauth::refresh_row(&token),
            &RefreshToken {
                connection: conn.id.clone(),
                expires_at: now + server.settings.refresh_ms(),
                spent_at: None,
            },
        )?;
        conn.refresh = Some(oauth::secret_hash(&token));
        conn.renewed_at = now;
        Some(token)
    } else {
        None
    };
    put_in(txn, t, key, &oauth::connection_row(&conn.id), conn)?;
    Ok(Tokens {
        access_token: access,
        token_type: "Bearer".into(),
        expires_in: server.settings.access_ms() / 1000,
        refresh_token,
        scope: oauth::scope_string(scopes),
    })
}

/// Revoke `conn` in `txn` because of `why`.
fn revoke_in(
    txn: &mut RwTransaction<'_>,
    t: &Tables,
    key: &DataKey,
    conn: &mut Connection,
    why: &str,
    now: i64,
) -> Result<(), StoreError> {
    if conn.revoked_at.is_none() {
        conn.revoked_at = Some(now);
        conn.revoked_because = Some(why.into());
        put_in(txn, t, key, &oauth::connection_row(&conn.id), conn)?;
    }
    Ok(())
}

/// Is `user` still the person who consented to `conn`: active, and in
/// the same session epoch?
fn still_consenting(user: Option<&User>, conn: &Connection) -> bool {
    user.is_some_and(|u| u.disabled_at.is_none() && u.session_epoch == conn.user_epoch)
}

impl Service {
    /// Register a client (RFC 7591). `source`: the caller's address, for
    /// the audit log.
    pub fn register_client(
        &self,
        reg: Registration,
        server: &AuthServer,
        source: Option<String>,
    ) -> Result<Registered, OAuthError> {
        let bad = |d: &str| OAuthError::new("invalid_client_metadata", d);
        if reg.redirect_uris.is_empty() || reg.redirect_uris.len() > 10 {
            return Err(OAuthError::new(
                "invalid_redirect_uri",
                "redirect_uris must list 1-10 URIs",
            ));
        }
        // Redirects this server does not allow are left out (RFC 7591
        // §3.2.1 lets it: VS Code lists a web one beside its loopback
        // ones); none left is an error.
        let mut refused = None;
        let redirect_uris: Vec<String> = reg
            .redirect_uris
            .iter()
            .filter(
                |uri| match oauth::redirect_allowed(uri, &server.settings.redirect_uris) {
                    Ok(()) => true,
                    Err(e) => {
                        refused = Some(e);
                        false
                    }
                },
            )
            .cloned()
            .collect();
        if redirect_uris.is_empty() {
            return Err(OAuthError::new(
                "invalid_redirect_uri",
                refused.unwrap_or_default(),
            ));
        }
        if reg
            .response_types
            .as_ref()
            .is_some_and(|r| r.iter().any(|t| t != "code"))
        {
            return Err(bad("response_types may only be [\"code\"]"));
        }
        let grants = reg
            .grant_types
            .unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
        if grants
            .iter()
            .any(|g| g != "authorization_code" && g != "refresh_token")
            || !grants.iter().any(|g| g == "authorization_code")
        {
            return Err(bad(
                "grant_types must include authorization_code and may add refresh_token; nothing else is supported",
            ));
        }
        let method = match reg.token_endpoint_auth_method.as_deref() {
            None => AuthMethod::None,
            Some(m) => AuthMethod::parse(m).ok_or_else(|| {
                bad("token_endpoint_auth_method must be none, client_secret_post or client_secret_basic")
            })?,
        };
        let name = reg.client_name.unwrap_or_default();
        let name = name.trim();
        if name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(bad(
                "client_name must be at most 100 characters, none of them control characters",
            ));
        }
        let (max, rows) = (server.settings.max_clients, self.registered_clients()?);
        if rows >= max {
            return Err(OAuthError::new(
                "temporarily_unavailable",
                format!("this server keeps at most {max} registered clients; try again later"),
            ));
        }
        let now = model::now_ms();
        let secret = (method != AuthMethod::None)
            .then(|| format!("{}{}", oauth::SECRET_PREFIX, random_hex(32)));
        let client = Client {
            client_id: format!("{}{}", oauth::CLIENT_PREFIX, random_hex(16)),
            name: if name.is_empty() {
                "an unnamed client".into()
            } else {
                name.into()
            },
            redirect_uris,
            refresh: grants.iter().any(|g| g == "refresh_token"),
            auth_method: method,
            secret_hash: secret.as_deref().map(oauth::secret_hash),
            kind: ClientKind::Registered,
            created_at: now,
            last_used_at: now,
        };
        let hosts: Vec<String> = client
            .redirect_uris
            .iter()
            .map(|u| oauth::redirect_host(u))
            .collect();
        let record = Record::anonymous("oauth.register", source)
            .target(&client.client_id)
            .outcome(
                "ok",
                Some(format!(
                    "\"{}\", redirects to {}",
                    client.name,
                    hosts.join(", ")
                )),
            );
        self.put_principal_row(oauth::client_row(&client.client_id), &client, record, true)?;
        Ok(Registered { client, secret })
    }

    /// Keep `client`, read from its metadata document (replacing an older
    /// copy).
    pub fn keep_metadata_client(
        &self,
        client: &Client,
        server: &AuthServer,
        source: Option<String>,
    ) -> Result<(), ServiceError> {
        let known = self.oauth_client(&client.client_id, server)?.is_some();
        if !known && self.registered_clients()? >= server.settings.max_clients {
            return Err(ServiceError::Conflict(format!(
                "this server keeps at most {} clients; try again later",
                server.settings.max_clients
            )));
        }
        let record = Record::anonymous("oauth.client-document", source)
            .target(&client.client_id)
            .outcome("ok", Some(format!("\"{}\"", client.name)));
        self.put_principal_row(oauth::client_row(&client.client_id), client, record, false)?;
        Ok(())
    }

    /// How many dynamically registered clients are kept.
    fn registered_clients(&self) -> Result<usize, ServiceError> {
        Ok(self
            .store
            .rows(
                |t| t.principals,
                b"oauth-client/",
                |k| k.starts_with(b"oauth-client/"),
            )?
            .len())
    }

    /// Client `client_id`: configured, or registered here.
    pub fn oauth_client(
        &self,
        client_id: &str,
        server: &AuthServer,
    ) -> Result<Option<Client>, ServiceError> {
        if let Some(c) = server.settings.configured(client_id) {
            return Ok(Some(c));
        }
        if client_id.is_empty() || client_id.len() > 2048 {
            return Ok(None);
        }
        self.principal_row(&oauth::client_row(client_id))
    }

    /// Check an authorization request before it is shown to a person.
    /// `client`: the client it names, found by the caller (a metadata
    /// document is fetched there).
    pub fn check_authorization(
        &self,
        q: &AuthorizeParams,
        client: Option<Client>,
        server: &AuthServer,
    ) -> Result<Authorization, AuthorizeError> {
        let Some(client) = client else {
            return Err(AuthorizeError::Shown(match &q.client_id {
                None => "the request names no client (client_id is missing)".into(),
                Some(_) => "the client is not registered with this server".into(),
            }));
        };
        let Some(redirect_uri) = q.redirect_uri.clone() else {
            return Err(AuthorizeError::Shown(
                "the request has no redirect_uri".into(),
            ));
        };
        if !client
            .redirect_uris
            .iter()
            .any(|r| oauth::redirect_matches(r, &redirect_uri))
        {
            return Err(AuthorizeError::Shown(format!(
                "the redirect URI is not one \"{}\" registered: nothing was sent to it",
                client.name
            )));
        }
        let back = |code: &'static str, d: &str| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.clone(),
            error: OAuthError::new(code, d),
            state: q.state.clone(),
        };
        if q.response_type.as_deref() != Some("code") {
            return Err(back(
                "unsupported_response_type",
                "response_type must be code",
            ));
        }
        let Some(challenge) = q.code_challenge.clone() else {
            return Err(back(
                "invalid_request",
                "code_challenge is required (PKCE with S256)",
            ));
        };
        if q.code_challenge_method.as_deref() != Some("S256") {
            return Err(back(
                "invalid_request",
                "code_challenge_method must be S256 (plain is not accepted)",
            ));
        }
        if !oauth::valid_challenge(&challenge) {
            return Err(back(
                "invalid_request",
                "code_challenge must be 43 characters of base64url (SHA-256 of the verifier)",
            ));
        }
        match q.resource.as_deref() {
            None => {
                return Err(back(
                    "invalid_request",
                    &format!("resource is required (RFC 8707): {}", server.resource),
                ));
            }
            Some(r) if r.trim_end_matches('/') != server.resource => {
                return Err(back(
                    "invalid_target",
                    &format!("this server issues tokens only for {}", server.resource),
                ));
            }
            Some(_) => {}
        }
        Ok(Authorization {
            client,
            redirect_uri,
            state: q.state.clone(),
            challenge,
            scopes: oauth::requested_scopes(q.scope.as_deref()),
        })
    }

    /// User `user` allowed `auth` with roles `chosen`: a code (60 s,
    /// single use), and the URL to send the browser to. Each chosen role
    /// must be one the user holds (or less), within the scopes asked for.
    pub fn consent(
        &self,
        user: &User,
        auth: &Authorization,
        chosen: Vec<Grant>,
        server: &AuthServer,
        source: Option<String>,
    ) -> Result<String, ServiceError> {
        let who = user.principal();
        let cap = oauth::scope_cap(&auth.scopes);
        for g in &chosen {
            let held = user
                .grants
                .iter()
                .any(|u| u.pattern == g.pattern && g.role <= u.role);
            if !held || cap.is_none_or(|c| g.role > c) {
                return Err(self.deny(
                    Record::by(&who, "oauth.consent")
                        .target(&auth.client.client_id)
                        .outcome("denied", Some(format!("asked to give {g}"))),
                    format!(
                        "{} cannot give {g}: only a role it holds on that pattern, within the scopes asked for",
                        user.name
                    ),
                ));
            }
        }
        if chosen.is_empty() {
            return Err(super::invalid(
                "roles",
                "choose at least one namespace to share",
            ));
        }
        let now = model::now_ms();
        let code = sessions::new_token(oauth::CODE_PREFIX);
        let connection = Connection {
            id: random_hex(16),
            client_id: auth.client.client_id.clone(),
            client_name: auth.client.name.clone(),
            user: user.name.clone(),
            user_epoch: user.session_epoch,
            grants: chosen,
            scopes: auth.scopes.clone(),
            resource: server.resource.clone(),
            created_at: now,
            renewed_at: now,
            refresh: None,
            revoked_at: None,
            revoked_because: None,
        };
        let mut record = Record::by(&who, "oauth.consent")
            .target(&auth.client.client_id)
            .outcome(
                "ok",
                Some(format!(
                    "\"{}\" as {}: {}; {}",
                    auth.client.name,
                    connection.credential_id(),
                    crate::auth::describe(&connection.grants),
                    oauth::scope_string(&connection.scopes)
                )),
            );
        record.source = source;
        let row = oauth::code_row(&code);
        let value = Code {
            client_id: auth.client.client_id.clone(),
            redirect_uri: auth.redirect_uri.clone(),
            challenge: auth.challenge.clone(),
            connection,
            expires_at: now + oauth::CODE_MS,
            used: false,
        };
        self.put_principal_row(row, &value, record, true)?;
        Ok(server.response(
            &auth.redirect_uri,
            &[("code", &code)],
            auth.state.as_deref(),
        ))
    }

    /// The person said no: audited; the URL that tells the client.
    pub fn consent_refused(
        &self,
        user: &User,
        auth: &Authorization,
        server: &AuthServer,
    ) -> String {
        self.record_event(
            Record::by(&user.principal(), "oauth.consent")
                .target(&auth.client.client_id)
                .outcome("refused", Some(format!("\"{}\"", auth.client.name))),
        );
        server.response(
            &auth.redirect_uri,
            &[
                ("error", "access_denied"),
                ("error_description", "the person did not allow access"),
            ],
            auth.state.as_deref(),
        )
    }

    /// A token request (RFC 6749 §3.2): its client authenticated by
    /// `creds`, then the grant its form names.
    pub fn token_request(
        &self,
        creds: &ClientCredentials,
        form: &std::collections::HashMap<String, String>,
        server: &AuthServer,
    ) -> Result<Tokens, OAuthError> {
        let client = self.token_client(creds, server)?;
        let p = |k: &str| form.get(k).map(String::as_str);
        match p("grant_type") {
            Some("authorization_code") => self.exchange_code(
                &client,
                p("code").unwrap_or_default(),
                p("redirect_uri"),
                p("code_verifier"),
                p("resource"),
                server,
            ),
            Some("refresh_token") if client.refresh => self.refresh(
                &client,
                p("refresh_token").unwrap_or_default(),
                p("resource"),
                p("scope"),
                server,
            ),
            Some("refresh_token") => Err(OAuthError::new(
                "unauthorized_client",
                "this client did not register for refresh tokens",
            )),
            Some(_) => Err(OAuthError::new(
                "unsupported_grant_type",
                "grant_type must be authorization_code or refresh_token",
            )),
            None => Err(OAuthError::invalid_request("grant_type is missing")),
        }
    }

    /// A revocation request (RFC 7009) of `token` by the client `creds`
    /// authenticate.
    pub fn revoke_request(
        &self,
        creds: &ClientCredentials,
        token: &str,
        server: &AuthServer,
    ) -> Result<(), OAuthError> {
        let client = self.token_client(creds, server)?;
        self.revoke_token(&client, token)
    }

    /// The client a token request comes from, authenticated as it
    /// registered (`invalid_client` otherwise).
    fn token_client(
        &self,
        creds: &ClientCredentials,
        server: &AuthServer,
    ) -> Result<Client, OAuthError> {
        let unknown = || OAuthError::new("invalid_client", "client authentication failed");
        let id = creds.client_id.as_deref().ok_or_else(|| {
            OAuthError::new("invalid_client", "the request names no client (client_id)")
        })?;
        let client = self.oauth_client(id, server)?.ok_or_else(unknown)?;
        match client.auth_method {
            AuthMethod::None => Ok(client),
            AuthMethod::ClientSecretPost | AuthMethod::ClientSecretBasic => {
                match creds.secret.as_deref() {
                    Some(s) if client.secret_matches(s) => Ok(client),
                    _ => Err(unknown()),
                }
            }
        }
    }

    /// Exchange a code (RFC 6749 §4.1.3 with PKCE and RFC 8707).
    fn exchange_code(
        &self,
        client: &Client,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
        resource: Option<&str>,
        server: &AuthServer,
    ) -> Result<Tokens, OAuthError> {
        fn invalid(d: &str) -> OAuthError {
            OAuthError::new("invalid_grant", d)
        }
        fn gone() -> OAuthError {
            invalid("the code is not valid (unknown, used or expired)")
        }
        if !sessions::well_formed(code, oauth::CODE_PREFIX) {
            return Err(gone());
        }
        let verifier = verifier.ok_or_else(|| {
            OAuthError::new("invalid_request", "code_verifier is required (PKCE)")
        })?;
        let resource = resource.ok_or_else(|| {
            OAuthError::new(
                "invalid_request",
                format!("resource is required (RFC 8707): {}", server.resource),
            )
        })?;
        let row = oauth::code_row(code);
        let key = self.system_key()?;
        let (client, server) = (client.clone(), server.clone());
        let (redirect_uri, verifier, resource) = (
            redirect_uri.map(str::to_string),
            verifier.to_string(),
            resource.trim_end_matches('/').to_string(),
        );
        let user_key = key.clone();
        let audit = self.audit.clone();
        let (result, entry) = self.store.write_blocking(move |txn, t| {
            let now = model::now_ms();
            let Some(mut code) = sealed_in::<Code>(txn, t, &key, &row)? else {
                return Ok((Err(gone()), None));
            };
            if code.used {
                // Someone has this code besides the client that used it:
                // whatever it minted is revoked.
                let conn_row = oauth::connection_row(&code.connection.id);
                let entry = match sealed_in::<Connection>(txn, t, &key, &conn_row)? {
                    Some(mut conn) => {
                        revoke_in(txn, t, &key, &mut conn, "its code was presented twice", now)?;
                        let record = Record::by(&conn.principal(&[], 0, &[]), "oauth.revoke")
                            .target(&conn.client_id)
                            .outcome("revoked", Some("the code was presented twice".into()));
                        Some(audit.append(txn, t, &record)?)
                    }
                    None => None,
                };
                return Ok((Err(gone()), entry));
            }
            if code.expires_at <= now || code.client_id != client.client_id {
                return Ok((Err(gone()), None));
            }
            if redirect_uri.as_deref() != Some(code.redirect_uri.as_str()) {
                return Ok((
                    Err(invalid(
                        "redirect_uri must be the one of the authorization request",
                    )),
                    None,
                ));
            }
            if resource != code.connection.resource || resource != server.resource {
                return Ok((
                    Err(OAuthError::new(
                        "invalid_target",
                        format!("this server issues tokens only for {}", server.resource),
                    )),
                    None,
                ));
            }
            if !oauth::pkce_matches(&verifier, &code.challenge) {
                // A wrong verifier spends the code: it cannot be guessed at.
                del_in(txn, t.principals, &row)?;
                return Ok((
                    Err(invalid("code_verifier does not match the code_challenge")),
                    None,
                ));
            }
            let user: Option<User> = sealed_in(
                txn,
                t,
                &user_key,
                &crate::auth::users::row(&code.connection.user),
            )?;
            if !still_consenting(user.as_ref(), &code.connection) {
                return Ok((Err(gone()), None));
            }
            code.used = true;
            put_in(txn, t, &key, &row, &code)?;
            let mut conn = code.connection.clone();
            let scopes = conn.scopes.clone();
            let tokens = mint(
                txn,
                t,
                &key,
                &mut conn,
                client.refresh,
                &scopes,
                &server,
                now,
            )?;
            touch_client(txn, t, &key, &client, now)?;
            // The connection begins: once per consent (refreshes are not
            // written, they would fill the log).
            let record = Record::by(&conn.principal(&[], 0, &[]), "oauth.token")
                .target(&conn.client_id)
                .outcome(
                    "ok",
                    Some(format!("code exchanged by \"{}\"", conn.client_name)),
                );
            let entry = audit.append(txn, t, &record)?;
            Ok((Ok(tokens), Some(entry)))
        })?;
        if let Some(entry) = entry {
            crate::audit::emit(&entry);
        }
        result
    }

    /// Rotate a refresh token (RFC 6749 §6, OAuth 2.1 §4.3.1).
    fn refresh(
        &self,
        client: &Client,
        token: &str,
        resource: Option<&str>,
        scope: Option<&str>,
        server: &AuthServer,
    ) -> Result<Tokens, OAuthError> {
        fn gone() -> OAuthError {
            OAuthError::new(
                "invalid_grant",
                "the refresh token is not valid (unknown, revoked, reused or expired)",
            )
        }
        if !sessions::well_formed(token, oauth::REFRESH_PREFIX) {
            return Err(gone());
        }
        if let Some(r) = resource
            && r.trim_end_matches('/') != server.resource
        {
            return Err(OAuthError::new(
                "invalid_target",
                format!("this server issues tokens only for {}", server.resource),
            ));
        }
        // Only scopes this server knows count (`offline_access` asks for
        // nothing more); none named: the connection's.
        let asked = scope.map(oauth::named_scopes).filter(|s| !s.is_empty());
        let row = oauth::refresh_row(token);
        let key = self.system_key()?;
        let (client, server) = (client.clone(), server.clone());
        let audit = self.audit.clone();
        let (result, entry) = self.store.write_blocking(move |txn, t| {
            let now = model::now_ms();
            let Some(mut stored) = sealed_in::<RefreshToken>(txn, t, &key, &row)? else {
                return Ok((Err(gone()), None));
            };
            let conn_row = oauth::connection_row(&stored.connection);
            let Some(mut conn) = sealed_in::<Connection>(txn, t, &key, &conn_row)? else {
                return Ok((Err(gone()), None));
            };
            if stored.expires_at <= now
                || conn.revoked_at.is_some()
                || conn.client_id != client.client_id
            {
                return Ok((Err(gone()), None));
            }
            match stored.spent_at {
                None => {
                    stored.spent_at = Some(now);
                    put_in(txn, t, &key, &row, &stored)?;
                }
                Some(at) if now - at < server.settings.grace_ms() => {}
                Some(_) => {
                    // A spent token again, after the grace: it was copied.
                    // Every token of the connection stops working.
                    let why = "a spent refresh token was presented again";
                    revoke_in(txn, t, &key, &mut conn, why, now)?;
                    let record = Record::by(&conn.principal(&[], 0, &[]), "oauth.revoke")
                        .target(&conn.client_id)
                        .outcome("revoked", Some(why.into()));
                    let entry = audit.append(txn, t, &record)?;
                    return Ok((Err(gone()), Some(entry)));
                }
            }
            let scopes = match &asked {
                Some(asked) if asked.iter().any(|s| !conn.scopes.contains(s)) => {
                    return Ok((
                        Err(OAuthError::new(
                            "invalid_scope",
                            "a refresh cannot add scopes; authorize again",
                        )),
                        None,
                    ));
                }
                Some(asked) => asked.clone(),
                None => conn.scopes.clone(),
            };
            let user: Option<User> = sealed_in(txn, t, &key, &crate::auth::users::row(&conn.user))?;
            if !still_consenting(user.as_ref(), &conn) {
                return Ok((Err(gone()), None));
            }
            let tokens = mint(txn, t, &key, &mut conn, true, &scopes, &server, now)?;
            touch_client(txn, t, &key, &client, now)?;
            Ok((Ok(tokens), None))
        })?;
        if let Some(entry) = entry {
            crate::audit::emit(&entry);
        }
        result
    }

    /// Revoke a token (RFC 7009): an access token alone; a refresh token
    /// and its whole connection. A token that is unknown or belongs to
    /// another client is left alone, and the answer is the same.
    fn revoke_token(&self, client: &Client, token: &str) -> Result<(), OAuthError> {
        let key = self.system_key()?;
        let client_id = client.client_id.clone();
        let token = token.to_string();
        let audit = self.audit.clone();
        let entry = self.store.write_blocking(move |txn, t| {
            let now = model::now_ms();
            let (conn_id, access) = if sessions::well_formed(&token, oauth::ACCESS_PREFIX) {
                let row = oauth::access_row(&token);
                match sealed_in::<AccessToken>(txn, t, &key, &row)? {
                    Some(a) => (a.connection, Some(row)),
                    None => return Ok(None),
                }
            } else if sessions::well_formed(&token, oauth::REFRESH_PREFIX) {
                match sealed_in::<RefreshToken>(txn, t, &key, &oauth::refresh_row(&token))? {
                    Some(r) => (r.connection, None),
                    None => return Ok(None),
                }
            } else {
                return Ok(None);
            };
            let conn_row = oauth::connection_row(&conn_id);
            let Some(mut conn) = sealed_in::<Connection>(txn, t, &key, &conn_row)? else {
                return Ok(None);
            };
            if conn.client_id != client_id {
                return Ok(None);
            }
            let what = match access {
                Some(row) => {
                    del_in(txn, t.principals, &row)?;
                    "an access token"
                }
                None => {
                    revoke_in(txn, t, &key, &mut conn, "revoked by the client", now)?;
                    "the connection (by its refresh token)"
                }
            };
            let record = Record::by(&conn.principal(&[], 0, &[]), "oauth.revoke")
                .target(&conn.client_id)
                .outcome("ok", Some(format!("{what}, by the client")));
            audit.append(txn, t, &record).map(Some)
        })?;
        if let Some(entry) = entry {
            crate::audit::emit(&entry);
        }
        Ok(())
    }

    /// The principal an access token acts as, if it is good now for
    /// `server`'s resource.
    pub fn authenticate_access(
        &self,
        token: &str,
        server: &AuthServer,
    ) -> Result<Principal, AuthFailure> {
        let internal = AuthFailure::from_store;
        if !sessions::well_formed(token, oauth::ACCESS_PREFIX) {
            return Err(AuthFailure::Malformed);
        }
        let access: AccessToken = self
            .principal_row(&oauth::access_row(token))
            .map_err(internal)?
            .ok_or(AuthFailure::Unknown(None))?;
        let conn: Connection = self
            .principal_row(&oauth::connection_row(&access.connection))
            .map_err(internal)?
            .ok_or(AuthFailure::Unknown(None))?;
        let id = conn.credential_id();
        if conn.revoked_at.is_some() {
            return Err(AuthFailure::Revoked(id));
        }
        if access.expires_at <= model::now_ms() {
            return Err(AuthFailure::Expired(id));
        }
        if conn.resource != server.resource {
            return Err(AuthFailure::WrongResource(id));
        }
        let user: Option<User> = self
            .principal_row(&crate::auth::users::row(&conn.user))
            .map_err(internal)?;
        if !still_consenting(user.as_ref(), &conn) {
            return Err(AuthFailure::Revoked(id));
        }
        let grants = user.map(|u| u.grants).unwrap_or_default();
        let scopes = access.scopes.unwrap_or_else(|| conn.scopes.clone());
        Ok(conn.principal(&grants, access.expires_at, &scopes))
    }

    /// Refuse (audited) unless `who` may see or end the connections of
    /// user `name` (`None`: everyone's): the person itself, signed in to
    /// the console, or a global admin.
    fn connections_of(
        &self,
        who: &Principal,
        name: Option<&str>,
        action: &str,
    ) -> Result<(), ServiceError> {
        let own = who.is_console_user() && name == Some(who.agent_id.as_str());
        if own || who.is_global_admin() {
            return Ok(());
        }
        Err(self.deny(
            Record::by(who, action).outcome("denied", None),
            format!(
                "{} is not a global admin (*=admin): only they see and end other people's connected apps",
                who.key_id
            ),
        ))
    }

    /// The connections that still work, newest first: user `name`'s, or
    /// (`None`) everyone's.
    pub fn connections(
        &self,
        who: &Principal,
        name: Option<&str>,
        settings: &OAuthSettings,
    ) -> Result<Vec<Connection>, ServiceError> {
        self.connections_of(who, name, "oauth.connections")?;
        let now = model::now_ms();
        let users: std::collections::HashMap<String, User> = self
            .all_users()?
            .into_iter()
            .map(|u| (u.name.clone(), u))
            .collect();
        let mut out: Vec<Connection> = self
            .principal_rows(b"oauth-conn/")?
            .into_iter()
            .map(|(_, c)| c)
            .filter(|c: &Connection| {
                name.is_none_or(|n| c.user == n)
                    && c.revoked_at.is_none()
                    && still_consenting(users.get(&c.user), c)
                    && !connection_over(c, settings, now)
            })
            .collect();
        out.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        Ok(out)
    }

    /// End connection `id` (audited): its user may, in the console, and a
    /// global admin. Someone else's, or none by that id: refused the same
    /// way.
    pub fn revoke_connection(&self, who: &Principal, id: &str) -> Result<Connection, ServiceError> {
        let row = oauth::connection_row(id);
        let key = self.system_key()?;
        let (caller, audit) = (who.clone(), self.audit.clone());
        let record = Record::by(who, "oauth.revoke").target(id);
        let done = self.store.write_blocking(move |txn, t| {
            let Some(mut conn) = sealed_in::<Connection>(txn, t, &key, &row)? else {
                return Ok(None);
            };
            let own = caller.is_console_user() && conn.user == caller.agent_id;
            if !own && !caller.is_global_admin() {
                return Ok(None);
            }
            let why = if own {
                "disconnected by its user"
            } else {
                "revoked by an admin"
            };
            revoke_in(txn, t, &key, &mut conn, why, model::now_ms())?;
            let record = record.clone().outcome(
                "ok",
                Some(format!("\"{}\" of {}: {why}", conn.client_name, conn.user)),
            );
            Ok(Some((conn, audit.append(txn, t, &record)?)))
        })?;
        match done {
            Some((conn, entry)) => {
                crate::audit::emit(&entry);
                Ok(conn)
            }
            None => Err(super::invalid(
                "connection",
                format!("there is no connection {id} you may end"),
            )),
        }
    }

    /// Every client known here: registered, from a metadata document, or
    /// configured. Global admins only.
    pub fn oauth_clients(
        &self,
        who: &Principal,
        settings: &OAuthSettings,
    ) -> Result<Vec<Client>, ServiceError> {
        self.connections_of(who, None, "oauth.clients")?;
        let configured = settings
            .clients
            .iter()
            .filter_map(|c| settings.configured(&c.client_id));
        let kept = self
            .principal_rows(b"oauth-client/")?
            .into_iter()
            .map(|(_, c)| c);
        Ok(configured.chain(kept).collect())
    }

    /// Forget client `client_id` and end every connection it has (an app
    /// found misbehaving). Global admins only; how many connections ended.
    pub fn remove_client(&self, who: &Principal, client_id: &str) -> Result<usize, ServiceError> {
        self.connections_of(who, None, "oauth.remove-client")?;
        let key = self.system_key()?;
        let (id, audit) = (client_id.to_string(), self.audit.clone());
        let record = Record::by(who, "oauth.remove-client").target(client_id);
        let done = self.store.write_blocking(move |txn, t| {
            let row = oauth::client_row(&id);
            if crate::store::get_in(txn, t.principals, &row)?.is_none() {
                return Ok(None);
            }
            del_in(txn, t.principals, &row)?;
            let now = model::now_ms();
            let mut ended = 0;
            for (conn_row, _) in crate::store::rows_in(txn, t.principals, b"oauth-conn/")? {
                if let Some(mut conn) = sealed_in::<Connection>(txn, t, &key, &conn_row)?
                    && conn.client_id == id
                    && conn.revoked_at.is_none()
                {
                    revoke_in(txn, t, &key, &mut conn, "its client was removed", now)?;
                    ended += 1;
                }
            }
            let record = record
                .clone()
                .outcome("ok", Some(format!("{ended} connections ended")));
            Ok(Some((ended, audit.append(txn, t, &record)?)))
        })?;
        match done {
            Some((ended, entry)) => {
                crate::audit::emit(&entry);
                Ok(ended)
            }
            None => Err(super::invalid(
                "client",
                format!(
                    "no client {client_id} is registered here (configured clients are removed from the configuration)"
                ),
            )),
        }
    }

    /// Delete what can no longer be used: expired codes and tokens,
    /// connections past their refresh lifetime (revoked ones a day after),
    /// registered clients idle too long (never used: after a day). How
    /// many rows.
    pub fn purge_oauth(&self, server: &AuthServer) -> Result<usize, ServiceError> {
        let now = model::now_ms();
        let s = &server.settings;
        let mut dead = self.dead_rows(b"oauth-code/", |c: &Code| c.expires_at <= now)?;
        dead.extend(self.dead_rows(b"oauth-access/", |a: &AccessToken| a.expires_at <= now)?);
        dead.extend(self.dead_rows(b"oauth-refresh/", |r: &RefreshToken| r.expires_at <= now)?);
        dead.extend(self.dead_rows(b"oauth-conn/", |c: &Connection| {
            c.revoked_at.is_some_and(|at| at + 86_400_000 <= now) || connection_over(c, s, now)
        })?);
        dead.extend(self.dead_rows(b"oauth-client/", |c: &Client| {
            let idle = if c.last_used_at == c.created_at {
                86_400_000
            } else {
                (s.idle_client_days * 86_400_000) as i64
            };
            c.kind != ClientKind::Configured && c.last_used_at + idle <= now
        })?);
        self.delete_principal_rows(dead)
    }
}

/// Has `conn` outlived every token it could still mint or use?
fn connection_over(conn: &Connection, settings: &OAuthSettings, now: i64) -> bool {
    let lives = if conn.refresh.is_some() {
        settings.refresh_ms()
    } else {
        settings.access_ms()
    };
    conn.renewed_at + lives <= now
}

/// Note that `client` was used (at most once an hour: a registered client
/// idle long enough is forgotten).
fn touch_client(
    txn: &mut RwTransaction<'_>,
    t: &Tables,
    key: &DataKey,
    client: &Client,
    now: i64,
) -> Result<(), StoreError> {
    if client.kind == ClientKind::Configured {
        return Ok(());
    }
    let row = oauth::client_row(&client.client_id);
    if let Some(mut stored) = sealed_in::<Client>(txn, t, key, &row)?
        && (stored.last_used_at == stored.created_at || now - stored.last_used_at >= 3_600_000)
    {
        stored.last_used_at = now.max(stored.created_at + 1);
        put_in(txn, t, key, &row, &stored)?;
    }
    Ok(())
}
