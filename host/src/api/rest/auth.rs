//! The credential check every `/v1` and `/mcp` request passes once, before
//! any route: `Authorization: Bearer <key>` → [`Principal`], with the
//! per-source limit on failed attempts and the per-key rate and
//! concurrency limits. At `/mcp` an OAuth access token (`mha_…`) is
//! accepted too, and a 401 names where to get one (RFC 9728); `/v1`
//! takes API keys only — a token is for the resource it was issued for.
//!
//! The source address is the TCP peer, or behind a proxy listed in
//! `[server] trusted_proxies`, the address it forwarded (see
//! `api::listener`); no other request header is believed.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use warp::Filter;
use warp::http::StatusCode;

use super::problem::{Problem, ProblemRejection};
use crate::api::listener::ClientAddr;
use crate::audit::Record;
use crate::auth::Principal;
use crate::auth::limits::{Limiter, Refused};
use crate::auth::oauth::{self, AuthServer};
use crate::logging::Sampled;
use crate::service::{AuthFailure, Service};

/// How requests are authenticated.
#[derive(Clone)]
pub struct Gate {
    service: Service,
    limiter: Arc<Limiter>,
    /// `--no-auth`: requests without a key act as the local operator.
    no_auth: bool,
    /// Failed authentications over the audit budget, logged by sample.
    unaudited: Arc<Sampled>,
    /// The authorization server, when OAuth is on.
    oauth: Option<Arc<AuthServer>>,
    /// This gate guards `/mcp`: access tokens are accepted.
    takes_tokens: bool,
}

impl Gate {
    /// A gate over `service` with `limiter`; `no_auth` only for local
    /// development (the server refuses it off loopback).
    pub fn new(service: Service, limiter: Arc<Limiter>, no_auth: bool) -> Gate {
        Gate {
            service,
            limiter,
            no_auth,
            unaudited: Arc::new(Sampled::every(std::time::Duration::from_secs(1))),
            oauth: None,
            takes_tokens: false,
        }
    }

    /// This gate with OAuth on: `server` issues the tokens.
    pub fn with_oauth(mut self, server: Option<Arc<AuthServer>>) -> Gate {
        self.oauth = server;
        self
    }

    /// The authorization server, when OAuth is on.
    pub fn oauth(&self) -> Option<&Arc<AuthServer>> {
        self.oauth.as_ref()
    }

    /// The gate of `/mcp`: OAuth access tokens are accepted there.
    pub fn for_mcp(&self) -> Gate {
        Gate {
            takes_tokens: true,
            ..self.clone()
        }
    }

    /// Does this gate take OAuth access tokens (`/mcp`, OAuth on)?
    fn oauth_here(&self) -> bool {
        self.takes_tokens && self.oauth.is_some()
    }

    /// The `WWW-Authenticate` challenge of a 401 here: at `/mcp` with OAuth
    /// on, where the resource's metadata is and the scopes to ask for, and
    /// `error="invalid_token"` when a credential was presented and refused
    /// (RFC 6750 §3.1).
    fn challenge(&self, invalid: bool) -> String {
        match (&self.oauth, self.takes_tokens) {
            (Some(server), true) => bearer_challenge(
                server,
                invalid.then_some("invalid_token"),
                &oauth::Scope::AGENT,
            ),
            _ => "Bearer realm=\"memhost\"".into(),
        }
    }
}

/// `Bearer [error="…", ]scope="…", resource_metadata="…"` (RFC 6750 §3,
/// RFC 9728 §5.1): where the resource's metadata is, the scopes to ask
/// for, and what was wrong with the token presented, if one was.
pub fn bearer_challenge(
    server: &AuthServer,
    error: Option<&str>,
    scopes: &[oauth::Scope],
) -> String {
    let error = error
        .map(|e| format!("error=\"{e}\", "))
        .unwrap_or_default();
    format!(
        "Bearer {error}scope=\"{}\", resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
        oauth::scope_string(scopes),
        server.issuer
    )
}

fn reject(p: Problem) -> warp::Rejection {
    warp::reject::custom(ProblemRejection(p))
}

fn unauthorized(detail: &str, challenge: String) -> Problem {
    let mut p = Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unauthorized",
        detail,
    );
    p.challenge = Some(challenge);
    p
}

/// Authentication could not be decided (the store failed): logged, 500.
fn internal(e: &str) -> Problem {
    tracing::error!(error = %e, "authentication failed internally");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        "internal error; see the server log",
    )
}

fn too_many(refused: &Refused) -> Problem {
    crate::metrics::rate_limited();
    let mut p = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many requests",
        format!("{}; retry after {} s", refused.reason, refused.retry_after),
    );
    p.retry_after = Some(refused.retry_after);
    p
}

/// Query parameters that look like credentials are refused outright: URLs
/// end up in proxy and access logs.
fn key_in_query(query: &str) -> bool {
    query.split('&').any(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = name.to_ascii_lowercase();
        matches!(
            name.as_str(),
            "key" | "api_key" | "apikey" | "token" | "access_token" | "auth" | "authorization"
        ) || value.starts_with(crate::auth::keys::PREFIX)
    })
}

/// What the gate looks at.
struct Request {
    authorization: Option<String>,
    host: Option<String>,
    origin: Option<String>,
    source: Option<IpAddr>,
}

/// In `--no-auth` mode only a local client may act as the operator: the
/// `Host` must name loopback (a web page rebinding its own domain to
/// 127.0.0.1 sends its own name) and a browser's `Origin`, if any, must be
/// this server itself — a loopback origin on the `Host`'s port — so a page
/// from anywhere else, another local port included, is refused.
fn local_only(host: Option<&str>, origin: Option<&str>) -> Result<(), &'static str> {
    let (name, port) = host.map(host_and_port).unwrap_or_default();
    if !is_loopback_name(&name) {
        return Err("without a key (--no-auth) only requests to localhost are served");
    }
    if let Some(origin) = origin {
        let same = origin
            .split_once("://")
            .filter(|(scheme, _)| matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https"))
            .map(|(_, authority)| host_and_port(authority))
            .is_some_and(|(o_name, o_port)| is_loopback_name(&o_name) && o_port == port);
        if !same {
            return Err(
                "without a key (--no-auth) requests from web pages of another origin are refused",
            );
        }
    }
    Ok(())
}

/// `name[:port]` or `[v6][:port]`, the name lowercased.
fn host_and_port(authority: &str) -> (String, Option<String>) {
    let (name, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (name, rest) = v6.split_once(']').unwrap_or((v6, ""));
            (name, rest.strip_prefix(':'))
        }
        None => match authority.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        },
    };
    (name.to_ascii_lowercase(), port.map(str::to_string))
}

fn is_loopback_name(name: &str) -> bool {
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

impl Gate {
    fn check(&self, req: Request) -> Result<Principal, Problem> {
        let Some(header) = req.authorization else {
            if self.no_auth {
                return match local_only(req.host.as_deref(), req.origin.as_deref()) {
                    Ok(()) => Ok(Principal::no_auth()),
                    Err(why) => Err(Problem::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        "Forbidden",
                        why,
                    )),
                };
            }
            return Err(self.failed(req.source, &AuthFailure::Missing));
        };
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        if let Some(t) = token.filter(|t| t.starts_with(oauth::ACCESS_PREFIX)) {
            return self.token(t, req.source);
        }
        let key = match token.map(|t| self.service.authenticate(t)) {
            None => return Err(self.failed(req.source, &AuthFailure::Malformed)),
            Some(Err(failure)) => return Err(self.failed(req.source, &failure)),
            Some(Ok(key)) => key,
        };
        self.admit(key.principal(), key.fields.rate)
    }

    /// `principal` within its rate (`own`, or its strongest role's) and
    /// its in-flight cap; the first refusal of an episode is audited.
    fn admit(
        &self,
        mut principal: Principal,
        own: Option<crate::auth::keys::Rate>,
    ) -> Result<Principal, Problem> {
        let rate = self.limiter.rate_for(own, principal.strongest_role());
        match self.limiter.admit(&principal.key_id, rate) {
            Ok(slot) => {
                principal._slot = Some(slot);
                Ok(principal)
            }
            Err(refused) => {
                if refused.first {
                    self.service.record_event(
                        Record::by(&principal, "request")
                            .outcome("rate-limited", Some(refused.reason.clone())),
                    );
                }
                Err(too_many(&refused))
            }
        }
    }

    /// An OAuth access token: good at `/mcp` for this server's resource.
    fn token(&self, token: &str, source: Option<IpAddr>) -> Result<Principal, Problem> {
        let found = match (&self.oauth, self.takes_tokens) {
            (Some(server), true) => self.service.authenticate_access(token, server),
            _ => Err(AuthFailure::NotHere),
        };
        match found {
            Ok(principal) => self.admit(principal, None),
            Err(failure) => Err(self.failed(source, &failure)),
        }
    }

    /// A failed authentication: counted per source, audited within limits,
    /// answered 401 — or 429 once the source has failed too often.
    fn failed(&self, source: Option<IpAddr>, why: &AuthFailure) -> Problem {
        match why {
            // Not the caller's failure: nothing counted against it.
            AuthFailure::Internal(e) => {
                crate::metrics::auth_failure("internal");
                return internal(e);
            }
            AuthFailure::Unavailable(e) => {
                crate::metrics::auth_failure("unavailable");
                tracing::warn!(error = %e, "authentication waits for the store");
                let mut p = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Unavailable",
                    "the database is unavailable (a failover?); retry shortly",
                );
                p.retry_after = Some(1);
                return p;
            }
            _ => {}
        }
        crate::metrics::auth_failure(match why {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Unknown(_) => "unknown",
            AuthFailure::Revoked(_) => "revoked",
            AuthFailure::Expired(_) => "expired",
            AuthFailure::WrongResource(_) => "wrong_resource",
            AuthFailure::NotHere => "token_not_here",
            AuthFailure::Internal(_) | AuthFailure::Unavailable(_) => "internal",
        });
        let src = source.map(|s| s.to_string());
        // Where clients sign in with OAuth, no credential yet (discovery)
        // and an expired token (time to refresh) are the normal course,
        // not guesses: neither counts against the address (behind a proxy
        // every client shares it) nor fills the audit log.
        let routine =
            self.oauth_here() && matches!(why, AuthFailure::Missing | AuthFailure::Expired(_));
        let (audit, refused) = match source {
            _ if routine => (false, None),
            Some(ip) => {
                let f = self.limiter.failed(ip);
                (f.audit, f.refused)
            }
            None => (true, None),
        };
        if audit {
            let mut record = Record::auth_failure(why.key_id(), src, &why.to_string());
            if let Some(r) = &refused {
                record = record.outcome("rate-limited", Some(r.reason.clone()));
            }
            self.service.record_event(record);
        } else if !routine && let Some(left_out) = self.unaudited.take() {
            tracing::warn!(target: "audit", source = src.as_deref().unwrap_or("-"), reason = %why, left_out, "authentication failed (not written to the audit log: over its rate; `left_out` more since the last such line)");
        }
        if let Some(r) = refused {
            return too_many(&r);
        }
        // The caller learns only that it is not authenticated, and how to
        // send a key; which part was wrong is in the audit log.
        match why {
            AuthFailure::Missing | AuthFailure::Malformed | AuthFailure::NotHere => {
                unauthorized(&why.to_string(), self.challenge(false))
            }
            _ => unauthorized(
                "the API key or token is not valid (unknown, revoked, expired or for another resource)",
                self.challenge(true),
            ),
        }
    }
}

/// The client's address, as the listener noted it.
fn client_addr() -> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Clone {
    warp::ext::optional::<ClientAddr>().map(|a: Option<ClientAddr>| a.map(|a| a.0))
}

/// The authenticated principal of a request, or a 401/429 problem.
pub fn principal(
    gate: Gate,
) -> impl Filter<Extract = (Principal,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(warp::header::optional::<String>("host"))
        .and(warp::header::optional::<String>("origin"))
        .and(client_addr())
        .and(
            warp::query::raw()
                .or(warp::any().map(String::new))
                .unify(),
        )
        .and_then(
            move |authorization: Option<String>,
                  host: Option<String>,
                  origin: Option<String>,
                  addr: Option<SocketAddr>,
                  query: String| {
                let gate = gate.clone();
                async move {
                    if key_in_query(&query) {
                        return Err(reject(Problem::new(
                            StatusCode::BAD_REQUEST,
                            "key-in-query",
                            "Key in query string",
                            "API keys are not accepted in the URL (URLs are logged): send Authorization: Bearer <key>",
                        )));
                    }
                    let req = Request {
                        authorization,
                        host,
                        origin,
                        source: addr.map(|a| a.ip()),
                    };
                    tokio::task::spawn_blocking(move || gate.check(req))
                        .await
                        .map_err(|e| {
                            reject(Problem::new(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                "internal",
                                "Internal error",
                                e.to_string(),
                            ))
                        })?
                        .map_err(reject)
                }
            },
        )
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_auth_serves_only_local_non_browser_requests() {
        use super::local_only;
        for host in [
            "localhost:7077",
            "127.0.0.1:7077",
            "[::1]:7077",
            "LOCALHOST",
        ] {
            assert!(local_only(Some(host), None).is_ok(), "{host}");
        }
        for host in [
            "evil.example:7077",
            "127.0.0.1.evil.example",
            "0.0.0.0:7077",
        ] {
            assert!(local_only(Some(host), None).is_err(), "{host}");
        }
        assert!(local_only(None, None).is_err());
        assert!(local_only(Some("localhost:7077"), Some("http://evil.example")).is_err());
    }

    #[test]
    fn keys_in_queries_are_spotted() {
        use super::key_in_query;
        assert!(key_in_query("api_key=abc"));
        assert!(key_in_query("limit=5&token=x"));
        assert!(key_in_query("q=mhk_0123"));
        assert!(!key_in_query("limit=5&tags=a,b"));
        assert!(!key_in_query(""));
    }

    #[test]
    fn without_a_key_only_this_servers_own_loopback_origin_is_served() {
        use super::local_only;
        for (host, origin) in [
            ("localhost:7077", None),
            ("localhost:7077", Some("http://localhost:7077")),
            ("127.0.0.1:7077", Some("http://127.0.0.1:7077")),
            ("[::1]:7077", Some("http://[::1]:7077")),
            ("localhost", Some("http://localhost")),
        ] {
            assert_eq!(local_only(Some(host), origin), Ok(()), "{host} {origin:?}");
        }
        for (host, origin) in [
            ("evil.example:7077", None),
            ("localhost:7077", Some("https://evil.example")),
            ("localhost:7077", Some("http://localhost:3000")),
            ("localhost:7077", Some("http://localhost")),
            ("localhost:7077", Some("null")),
            ("localhost:7077", Some("file://localhost:7077")),
        ] {
            assert!(local_only(Some(host), origin).is_err(), "{host} {origin:?}");
        }
    }
}
