//! The network faces of memhost: thin adapters over `crate::service`. No
//! business rules live here.

pub mod console;
pub mod listener;
pub mod mcp;
pub mod oauth;
pub mod rest;

/// A request path as a metrics label: its route template, one of the
/// fixed endpoints, or `other` (so a client cannot mint labels).
pub fn route_label(path: &str) -> &'static str {
    match path {
        "/mcp" => "/mcp",
        "/health" => "/health",
        "/ready" => "/ready",
        "/metrics" => "/metrics",
        p if p == "/console" || p.starts_with("/console/") => "/console",
        p if p.starts_with("/.well-known/") => "/.well-known",
        "/oauth/register" => "/oauth/register",
        "/oauth/token" => "/oauth/token",
        "/oauth/revoke" => "/oauth/revoke",
        p => rest::openapi::route_template(p).unwrap_or("other"),
    }
}

/// A request method as a metrics label (a client cannot mint labels).
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
