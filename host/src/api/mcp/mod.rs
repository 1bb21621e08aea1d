//! MCP over Streamable HTTP at `/mcp`, with the official Rust SDK (`rmcp`).
//!
//! The request passes the same credential check as `/v1` (the gate), then
//! goes to rmcp's Streamable HTTP service with the caller's [`Principal`]
//! in its extensions. Every tool calls the same `service/` method as the
//! equivalent REST route, so authorization and audit are the same.
//!
//! An OAuth access token is checked against the tool it calls: a token
//! whose scopes do not reach the role the tool needs gets
//! `403 insufficient_scope` naming the scope to ask for (the client can
//! step up), before anything runs.
//!
//! Stateless: no session is kept between requests, so a restart of the
//! server breaks no client — clients on the 2026-07-28 revision send their
//! version with every request; clients on the session-based revisions
//! (2025-06-18, 2025-11-25) still `initialize`, and simply get no
//! `Mcp-Session-Id` to echo.

mod tools;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use warp::http::StatusCode;
use warp::{Filter, Reply};

use crate::api::rest::auth::{Gate, bearer_challenge, principal};
use crate::api::rest::problem::{self, Problem};
use crate::auth::Principal;
use crate::auth::oauth::{self, Scope};
use crate::service::Service;

pub use tools::Tools;

/// Largest MCP request body.
pub const MAX_BODY: u64 = crate::api::rest::MAX_BODY;

/// The `/mcp` route: POST, authenticated by `gate`; other methods get 405. `allowed_origins`: browser origins
/// allowed to call (others, when they send an `Origin`, get 403).
pub fn route(
    service: Service,
    gate: Gate,
    allowed_origins: Vec<String>,
) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        // The gate already refused what it must (keys, and --no-auth off
        // loopback); a key-holder may use any host name.
        .disable_allowed_hosts()
        .with_allowed_origins(allowed_origins)
        .enforce_origin_validation()
        .with_max_request_body_bytes(MAX_BODY as usize);
    let mcp = Arc::new(StreamableHttpService::new(
        move || Ok(Tools::new(service.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    ));
    let oauth_server = gate.oauth().cloned();
    let inner = principal(gate.for_mcp())
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::content_length_limit(MAX_BODY))
        .and(warp::body::bytes())
        .then(
            move |who: Principal,
                  path: warp::path::FullPath,
                  query: String,
                  headers: warp::http::HeaderMap,
                  body: Bytes| {
                let mcp = mcp.clone();
                let oauth_server = oauth_server.clone();
                async move {
                    let call = match serde_json::from_slice::<ToolCall>(&body) {
                        Ok(call) => call,
                        Err(e) => return parse_error(&e),
                    };
                    if let (Some(server), Some(refused)) =
                        (oauth_server, insufficient_scope(&who, &call))
                    {
                        let mut p = Problem::new(
                            StatusCode::FORBIDDEN,
                            "insufficient-scope",
                            "Insufficient scope",
                            format!(
                                "the access token's scopes do not allow {}; authorize again with {}",
                                call.tool_name().unwrap_or_default(),
                                oauth::scope_string(&refused)
                            ),
                        );
                        p.challenge = Some(bearer_challenge(
                            &server,
                            Some("insufficient_scope"),
                            &refused,
                        ));
                        return p.reply();
                    }
                    let uri = if query.is_empty() {
                        path.as_str().to_string()
                    } else {
                        format!("{}?{query}", path.as_str())
                    };
                    let mut request = http::Request::new(Full::new(body));
                    *request.method_mut() = http::Method::POST;
                    *request.headers_mut() = headers;
                    // Without a key the gate has already let through only
                    // this server's own loopback origin.
                    if who.is_no_auth() {
                        request.headers_mut().remove(http::header::ORIGIN);
                    }
                    match uri.parse() {
                        Ok(uri) => *request.uri_mut() = uri,
                        Err(_) => {
                            return Problem::new(
                                StatusCode::BAD_REQUEST,
                                "bad-request",
                                "Bad request",
                                "the request URI does not parse",
                            )
                            .reply();
                        }
                    }
                    request.extensions_mut().insert(who);
                    let response = mcp.handle(request).await;
                    into_warp(response).await
                }
            },
        )
        .recover(problem::recover)
        .unify();
    // Past the path, every refusal (key, body size) is a problem reply;
    // before it, another route may match.
    // Stateless: no stream to GET, no session to DELETE.
    let other = warp::method()
        .and_then(|m: warp::http::Method| async move {
            if m == warp::http::Method::POST {
                Err(warp::reject())
            } else {
                Ok(())
            }
        })
        .untuple_one()
        .map(|| {
            let mut r = Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this MCP server is stateless: send requests with POST (no stream to GET, no session to DELETE)",
            )
            .reply();
            r.headers_mut().insert(
                warp::http::header::ALLOW,
                warp::http::HeaderValue::from_static("POST"),
            );
            r
        });
    warp::path("mcp")
        .and(warp::path::end())
        .and(other.or(warp::post().and(inner)).unify())
        .boxed()
}

/// What the scope check reads of a request: a JSON value of any shape,
/// and the tool a `tools/call` names.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ToolCall {
    Call { method: String, params: CallParams },
    Other(serde::de::IgnoredAny),
}

#[derive(serde::Deserialize)]
struct CallParams {
    name: String,
}

impl ToolCall {
    fn tool_name(&self) -> Option<&str> {
        match self {
            ToolCall::Call { method, params } if method == "tools/call" => Some(&params.name),
            _ => None,
        }
    }
}

/// The scopes to ask for when `who` (an OAuth token) calls a tool its
/// scopes do not reach: its own and the one the tool needs.
fn insufficient_scope(who: &Principal, call: &ToolCall) -> Option<Vec<Scope>> {
    let scopes = who.scopes.as_ref()?;
    let needed = tools::needs(call.tool_name()?);
    if oauth::scope_cap(scopes).is_some_and(|cap| cap >= needed) {
        return None;
    }
    let scope = Scope::ALL.into_iter().find(|s| s.role() == needed)?;
    let mut out = scopes.clone();
    out.push(scope);
    out.sort();
    out.dedup();
    Some(out)
}

/// A body that is not JSON: 400 with a JSON-RPC parse error naming where
/// it broke (rmcp itself would answer 415 in plain text).
fn parse_error(e: &serde_json::Error) -> warp::reply::Response {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": -32700, "message": format!("Parse error: the body is not JSON ({e})")},
    });
    warp::reply::with_status(warp::reply::json(&body), StatusCode::BAD_REQUEST).into_response()
}

/// rmcp's response as warp's. Stateless JSON responses end with the
/// request, so the body is read whole.
async fn into_warp(
    response: http::Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>,
) -> warp::reply::Response {
    let (parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    let mut out = warp::reply::Response::new(bytes.into());
    *out.status_mut() = parts.status;
    *out.headers_mut() = parts.headers;
    out
}
