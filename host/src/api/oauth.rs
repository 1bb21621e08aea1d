//! The authorization server's endpoints for MCP clients (OAuth 2.1):
//! discovery documents, client registration, the token endpoint and
//! revocation. The consent page, where a person signs in and allows a
//! client, is part of the console (`/console/oauth/authorize`), so it has
//! the console's session, CSRF and framing protections.
//!
//! | route | what |
//! |---|---|
//! | `GET /.well-known/oauth-protected-resource/mcp` (and without `/mcp`) | RFC 9728: the resource `/mcp` and its authorization server |
//! | `GET /.well-known/oauth-authorization-server` | RFC 8414: endpoints, PKCE S256, scopes |
//! | `POST /oauth/register` | RFC 7591 dynamic registration (rate-limited per address, capped) |
//! | `POST /oauth/token` | `authorization_code` (PKCE, `resource`) and `refresh_token` (rotating) |
//! | `POST /oauth/revoke` | RFC 7009 |
//!
//! Everything is built from `issuer` (`[server] public_url`), never from
//! the request's `Host`. The routes exist only while OAuth is on. They
//! answer any origin (CORS `*`): none reads a cookie, so a page gains
//! nothing by calling them from a person's browser.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde_json::json;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::api::listener::ClientAddr;
use crate::auth::limits::Limiter;
use crate::auth::oauth::{AuthServer, Scope, scope_string};
use crate::service::Service;
use crate::service::oauth::{ClientCredentials, OAuthError, Registration};

/// Largest registration or token request.
const MAX_BODY: u64 = 16 * 1024;

/// The protected resource metadata of `/mcp` (RFC 9728).
pub fn resource_metadata(server: &AuthServer) -> serde_json::Value {
    json!({
        "resource": server.resource,
        "authorization_servers": [server.issuer],
        // `memory:admin` exists (the authorization server lists it), but a
        // client asking for everything listed here does not ask for it.
        "scopes_supported": Scope::AGENT.map(Scope::as_str),
        "bearer_methods_supported": ["header"],
        "resource_name": "memhost",
        "resource_documentation": "https://github.com/memhost/memhost/blob/main/docs/mcp.md",
    })
}

/// The authorization server metadata (RFC 8414).
pub fn server_metadata(server: &AuthServer) -> serde_json::Value {
    let at = |path: &str| format!("{}{path}", server.issuer);
    let mut scopes: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    scopes.push("offline_access");
    json!({
        "issuer": server.issuer,
        "authorization_endpoint": at("/console/oauth/authorize"),
        "token_endpoint": at("/oauth/token"),
        "registration_endpoint": at("/oauth/register"),
        "revocation_endpoint": at("/oauth/revoke"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "scopes_supported": scopes,
        "client_id_metadata_document_supported": true,
        "authorization_response_iss_parameter_supported": true,
        "service_documentation": "https://github.com/memhost/memhost/blob/main/docs/mcp.md",
    })
}

/// A JSON answer no cache keeps.
fn no_store(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut r = warp::reply::with_status(warp::reply::json(body), status).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// An RFC 6749 §5.2 error; `invalid_client` is a 401 naming the scheme
/// a client authenticates with here (HTTP Basic).
fn error(e: &OAuthError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = no_store(
        status,
        &json!({"error": e.code, "error_description": e.description}),
    );
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"memhost\""),
        );
    }
    r
}

/// Public metadata, cached a while.
fn public_json(body: serde_json::Value) -> Response {
    let mut r = warp::reply::json(&body).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

fn too_many(retry_after: u64, description: String) -> Response {
    crate::metrics::rate_limited();
    let mut r = error(&OAuthError::slow_down(description));
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    r
}

/// A form body as name → value; a name given twice is an error (RFC 6749
/// §3.2).
fn form(body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|_| {
        OAuthError::invalid_request("the body is not application/x-www-form-urlencoded")
    })?;
    let mut out = HashMap::new();
    for (k, v) in pairs {
        if out.insert(k.clone(), v).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "parameter {k} is given more than once"
            )));
        }
    }
    Ok(out)
}

/// The client's credentials: HTTP Basic, or `client_id` (and
/// `client_secret`) in the form — not both ways at once.
fn credentials(
    authorization: Option<&str>,
    form: &HashMap<String, String>,
) -> Result<ClientCredentials, OAuthError> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .ok()
    };
    let basic = authorization
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, b64)| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|pair| {
                    let (id, secret) = pair.split_once(':')?;
                    Some((decode(id)?, decode(secret)?))
                })
                .ok_or_else(|| {
                    OAuthError::invalid_client("the Basic credentials do not decode as id:secret")
                })
        })
        .transpose()?;
    match basic {
        Some((id, secret)) => {
            if form.contains_key("client_secret") || form.get("client_id").is_some_and(|f| *f != id)
            {
                return Err(OAuthError::invalid_request(
                    "the client authenticates one way: HTTP Basic or the form, not both",
                ));
            }
            Ok(ClientCredentials {
                client_id: Some(id),
                secret: Some(secret),
                basic: true,
            })
        }
        None => Ok(ClientCredentials {
            client_id: form.get("client_id").cloned(),
            secret: form.get("client_secret").cloned(),
            basic: false,
        }),
    }
}

/// How long a fetched client metadata document is used before it is
/// fetched again.
const DOCUMENT_TTL_MS: i64 = 3_600_000;
/// Largest client metadata document.
const DOCUMENT_MAX: usize = 5 * 1024;
/// How long fetching one may take.
const DOCUMENT_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// When `client_id` is a client ID metadata document URL, make sure its
/// document has been fetched (at most once an hour; each fetch counts
/// against `source`'s registrations) and kept. Other ids: nothing to do.
/// The error says why the document cannot be used.
pub async fn resolve_document(
    service: &Service,
    server: &Arc<AuthServer>,
    limiter: &Limiter,
    client_id: &str,
    source: Option<IpAddr>,
) -> Result<(), String> {
    if !crate::auth::oauth::is_metadata_url(client_id)
        || server.settings.configured(client_id).is_some()
    {
        return Ok(());
    }
    let (s, srv, id) = (service.clone(), server.clone(), client_id.to_string());
    let kept = tokio::task::spawn_blocking(move || s.oauth_client(&id, &srv))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let now = crate::clock::now_ms();
    match &kept {
        Some(c) if now - c.created_at < DOCUMENT_TTL_MS => return Ok(()),
        Some(_) => {}
        // A new client costs a registration of its address.
        None => {
            if let Some(ip) = source {
                limiter
                    .registration(ip, server.settings.registrations_per_hour)
                    .map_err(|r| r.reason)?;
            }
        }
    }
    let fetched = crate::runtime::fetch_public(client_id, DOCUMENT_MAX, DOCUMENT_WITHIN)
        .await
        .map_err(|e| format!("the client's metadata document could not be fetched: {e}"))
        .and_then(|body| {
            crate::auth::oauth::client_from_document(
                client_id,
                &body,
                &server.settings.redirect_uris,
                now,
            )
        });
    let client = match (fetched, kept) {
        (Ok(client), _) => client,
        (Err(why), None) => return Err(why),
        // Its host is down or its document broke: the copy kept an hour
        // ago still says who it is.
        (Err(why), Some(_)) => {
            tracing::warn!(client = client_id, error = %why, "keeping the client's earlier metadata document");
            return Ok(());
        }
    };
    let (s, srv) = (service.clone(), server.clone());
    let src = source.map(|ip| ip.to_string());
    tokio::task::spawn_blocking(move || s.keep_metadata_client(&client, &srv, src))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// What the endpoints share.
#[derive(Clone)]
struct Endpoints {
    service: Service,
    server: Arc<AuthServer>,
    limiter: Arc<Limiter>,
}

impl Endpoints {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Service, Arc<AuthServer>) -> Result<T, OAuthError> + Send + 'static,
    ) -> Result<T, OAuthError> {
        let (service, server) = (self.service.clone(), self.server.clone());
        tokio::task::spawn_blocking(move || f(service, server))
            .await
            .unwrap_or_else(|e| Err(OAuthError::server_error(e.to_string())))
    }

    async fn register(&self, source: Option<IpAddr>, body: Bytes) -> Response {
        if let Some(ip) = source
            && let Err(refused) = self
                .limiter
                .registration(ip, self.server.settings.registrations_per_hour)
        {
            return too_many(refused.retry_after, refused.reason);
        }
        let reg: Registration = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(&OAuthError::new(
                    "invalid_client_metadata",
                    format!("the body is not a registration: {e}"),
                ));
            }
        };
        let src = source.map(|s| s.to_string());
        let done = self
            .blocking(move |s, server| s.register_client(reg, &server, src))
            .await;
        match done {
            Ok(r) => {
                let c = &r.client;
                let mut body = json!({
                    "client_id": c.client_id,
                    "client_id_issued_at": c.created_at / 1000,
                    "client_name": c.name,
                    "redirect_uris": c.redirect_uris,
                    "grant_types": if c.refresh { vec!["authorization_code", "refresh_token"] } else { vec!["authorization_code"] },
                    "response_types": ["code"],
                    "token_endpoint_auth_method": c.auth_method.as_str(),
                    "scope": scope_string(&Scope::ALL),
                });
                if let Some(secret) = r.secret {
                    body["client_secret"] = json!(secret);
                    body["client_secret_expires_at"] = json!(0);
                }
                no_store(StatusCode::CREATED, &body)
            }
            Err(e) => error(&e),
        }
    }

    /// A token or revocation request's form and client credentials, the
    /// client's metadata document fetched if its id is a URL; or the
    /// answer refusing it (an address over its failures, a malformed form).
    async fn client_request(
        &self,
        source: Option<IpAddr>,
        authorization: Option<String>,
        body: &[u8],
    ) -> Result<(HashMap<String, String>, ClientCredentials), Response> {
        // No guessing limit here: codes, tokens and secrets are 256 random
        // bits, and behind a proxy every client shares one address — a
        // stranger's failures must not stop the others' refreshes.
        let params = form(body).map_err(|e| error(&e))?;
        let creds = credentials(authorization.as_deref(), &params).map_err(|e| error(&e))?;
        if let Some(id) = &creds.client_id
            && let Err(why) =
                resolve_document(&self.service, &self.server, &self.limiter, id, source).await
        {
            return Err(error(&OAuthError::invalid_client(why)));
        }
        Ok((params, creds))
    }

    async fn token(
        &self,
        source: Option<IpAddr>,
        authorization: Option<String>,
        body: Bytes,
    ) -> Response {
        let (params, creds) = match self.client_request(source, authorization, &body).await {
            Ok(p) => p,
            Err(r) => return r,
        };
        let done = self
            .blocking(move |s, server| s.token_request(&creds, &params, &server))
            .await;
        match done {
            Ok(tokens) => no_store(StatusCode::OK, &json!(tokens)),
            Err(e) => {
                if matches!(e.code, "invalid_client" | "invalid_grant") {
                    crate::metrics::auth_failure("oauth");
                }
                error(&e)
            }
        }
    }

    async fn revoke(
        &self,
        source: Option<IpAddr>,
        authorization: Option<String>,
        body: Bytes,
    ) -> Response {
        let (params, creds) = match self.client_request(source, authorization, &body).await {
            Ok(p) => p,
            Err(r) => return r,
        };
        let Some(token) = params.get("token").cloned() else {
            return error(&OAuthError::invalid_request("token is missing"));
        };
        let done = self
            .blocking(move |s, server| s.revoke_request(&creds, &token, &server))
            .await;
        match done {
            Ok(()) => no_store(StatusCode::OK, &json!({})),
            Err(e) => error(&e),
        }
    }
}

/// The routes, when OAuth is on.
pub fn routes(
    service: Service,
    server: Arc<AuthServer>,
    limiter: Arc<Limiter>,
) -> warp::filters::BoxedFilter<(Response,)> {
    let prm = {
        let body = resource_metadata(&server);
        warp::path!(".well-known" / "oauth-protected-resource" / "mcp")
            .or(warp::path!(".well-known" / "oauth-protected-resource"))
            .unify()
            .and(warp::get())
            .map(move || public_json(body.clone()))
    };
    let asm = {
        let body = server_metadata(&server);
        warp::path!(".well-known" / "oauth-authorization-server")
            .and(warp::get())
            .map(move || public_json(body.clone()))
    };
    let endpoints = Endpoints {
        service,
        server,
        limiter,
    };
    let source = warp::ext::optional::<ClientAddr>()
        .map(|a: Option<ClientAddr>| a.map(|a: ClientAddr| SocketAddr::ip(&a.0)));
    let body = warp::body::content_length_limit(MAX_BODY).and(warp::body::bytes());
    let register = {
        let e = endpoints.clone();
        warp::path!("oauth" / "register")
            .and(warp::post())
            .and(source)
            .and(body)
            .then(move |src, body| {
                let e = e.clone();
                async move { e.register(src, body).await }
            })
    };
    let token = {
        let e = endpoints.clone();
        warp::path!("oauth" / "token")
            .and(warp::post())
            .and(source)
            .and(warp::header::optional::<String>("authorization"))
            .and(body)
            .then(move |src, auth, body| {
                let e = e.clone();
                async move { e.token(src, auth, body).await }
            })
    };
    let revoke = {
        let e = endpoints;
        warp::path!("oauth" / "revoke")
            .and(warp::post())
            .and(source)
            .and(warp::header::optional::<String>("authorization"))
            .and(body)
            .then(move |src, auth, body| {
                let e = e.clone();
                async move { e.revoke(src, auth, body).await }
            })
    };
    // A body over the cap, or a wrong method, at these paths: an OAuth
    // error, not another route's 404.
    let refused = warp::path("oauth")
        .and(warp::path::tail())
        .map(|_| {
            error(
                &OAuthError::invalid_request(format!(
                    "POST a form of at most {MAX_BODY} bytes to /oauth/token, /oauth/revoke, or JSON to /oauth/register"
                )),
            )
        });
    // A browser-based client (the MCP Inspector) calls these from its own
    // origin; none of them reads a cookie, so any origin may.
    let preflight = warp::options()
        .and(warp::path("oauth").or(warp::path(".well-known")).unify())
        .and(warp::path::tail())
        .map(|_| {
            let mut r = Response::new(Default::default());
            *r.status_mut() = StatusCode::NO_CONTENT;
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type, mcp-protocol-version"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            r
        });
    preflight
        .or(prm)
        .unify()
        .or(asm)
        .unify()
        .or(register)
        .unify()
        .or(token)
        .unify()
        .or(revoke)
        .unify()
        .or(refused)
        .unify()
        .map(|mut r: Response| {
            r.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            r
        })
        .boxed()
}
