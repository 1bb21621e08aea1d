//! The OAuth consent page (`/console/oauth/authorize`): the authorization
//! endpoint lives in the console so a person signs in the console's way
//! and the form has the console's CSRF and framing protections.
//!
//! | request | answer |
//! |---|---|
//! | client unknown, redirect URI not one it registered | an error page; nothing is sent to the redirect URI |
//! | anything else wrong (PKCE, `resource`, `response_type`) | back to the client with `error`, `state`, `iss` |
//! | good, not signed in | sign in, then back here |
//! | good, signed in | the consent page; Allow → back with `code`, `state`, `iss`; Deny → `access_denied` |
//!
//! The request is checked again when the form comes back: nothing on the
//! page is trusted that the server did not check twice.
//!
//! The account page lists the connections a person allowed, each with
//! Disconnect.

use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

use super::{CSP, Console, Req, Visitor, blocking, error_page, html, pages, redirect, refuse};
use crate::auth::oauth::AuthServer;
use crate::auth::{Grant, Role};
use crate::service::ServiceError;
use crate::service::oauth::{Authorization, AuthorizeError, AuthorizeParams};

/// The parameters of an authorization request, in the order they are
/// carried through the consent form.
const PARAMS: [&str; 8] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
    "resource",
    "scope",
];

fn params(get: impl Fn(&str) -> Option<String>) -> AuthorizeParams {
    AuthorizeParams {
        response_type: get("response_type"),
        client_id: get("client_id"),
        redirect_uri: get("redirect_uri"),
        state: get("state"),
        code_challenge: get("code_challenge"),
        code_challenge_method: get("code_challenge_method"),
        resource: get("resource"),
        scope: get("scope"),
    }
}

/// The origin (`scheme://host[:port]`) of a URL, for the consent page's
/// `form-action`.
fn origin(uri: &str) -> Option<String> {
    let url = url::Url::parse(uri).ok()?;
    match url.origin() {
        url::Origin::Tuple(..) => Some(url.origin().ascii_serialization()),
        url::Origin::Opaque(_) => Some(format!("{}:", url.scheme())),
    }
}

impl Console {
    fn server(&self) -> Option<&AuthServer> {
        self.oauth.as_deref()
    }

    /// A navigation from another site without the session cookie (which
    /// is `SameSite=Strict`): hop through a page of this server first, so
    /// a person who is signed in is not asked to sign in again.
    pub(super) fn needs_hop(&self, req: &Req) -> bool {
        self.server().is_some()
            && !req
                .cookies
                .contains_key(&self.cookie_name(super::SESSION_COOKIE))
            && req
                .fetch_site
                .as_deref()
                .is_some_and(|s| s == "cross-site" || s == "same-site")
    }

    /// The authorization request checked, with its client found (its
    /// metadata document fetched, when its id is a URL).
    async fn checked(&self, q: AuthorizeParams, req: &Req) -> Result<Authorization, Response> {
        let Some(server) = self.oauth.clone() else {
            return Err(refuse(
                None,
                StatusCode::NOT_FOUND,
                "Not found",
                "OAuth is off on this server",
            ));
        };
        if let Some(id) = &q.client_id
            && let Err(why) = crate::api::oauth::resolve_document(
                &self.inner.service,
                &server,
                &self.inner.limiter,
                id,
                req.source,
            )
            .await
        {
            return Err(refuse(
                None,
                StatusCode::BAD_REQUEST,
                "This app cannot connect",
                &why,
            ));
        }
        let (service, srv) = (self.inner.service.clone(), server.clone());
        let checked = blocking(move || {
            let client = match &q.client_id {
                Some(id) => service.oauth_client(id, &srv)?,
                None => None,
            };
            Ok::<_, ServiceError>(service.check_authorization(&q, client, &srv))
        })
        .await;
        match checked {
            Ok(Ok(auth)) => Ok(auth),
            Ok(Err(AuthorizeError::Shown(why))) => Err(refuse(
                None,
                StatusCode::BAD_REQUEST,
                "This app cannot connect",
                &why,
            )),
            Ok(Err(AuthorizeError::Redirect {
                redirect_uri,
                error,
                state,
            })) => Err(redirect(&server.response(
                &redirect_uri,
                &[
                    ("error", error.code),
                    ("error_description", &error.description),
                ],
                state.as_deref(),
            ))),
            Err(e) => Err(error_page(None, &e)),
        }
    }

    /// The account page, with the person's connected apps when OAuth is on.
    pub(super) async fn account_page(
        &self,
        v: &Visitor,
        status: StatusCode,
        ok: Option<&str>,
        error: Option<&str>,
    ) -> Response {
        let connections = match self.oauth.clone() {
            None => None,
            Some(server) => {
                let (service, who) = (self.inner.service.clone(), v.who.clone());
                let name = v.user.name.clone();
                match blocking(move || service.connections(&who, Some(&name), &server.settings))
                    .await
                {
                    Ok(list) => Some(list),
                    Err(e) => return error_page(Some(v), &e),
                }
            }
        };
        html(status, pages::account(v, ok, error, connections.as_deref()))
    }

    /// `POST /console/account/connections/{id}/disconnect`.
    pub(super) async fn disconnect(&self, v: &Visitor, id: &str) -> Response {
        let (service, who, id) = (self.inner.service.clone(), v.who.clone(), id.to_string());
        match blocking(move || service.revoke_connection(&who, &id)).await {
            Ok(_) => redirect("/console/account?ok=disconnected"),
            Err(e) => error_page(Some(v), &e),
        }
    }

    /// `GET /console/oauth/authorize`: the consent page.
    pub(super) async fn authorize(&self, v: &Visitor, req: &Req) -> Response {
        // RFC 6749 §3.1: a parameter given twice is refused (which
        // redirect URI would be the real one?).
        let given: Vec<(String, String)> =
            serde_urlencoded::from_str(&req.raw_query).unwrap_or_default();
        if let Some(twice) = PARAMS
            .iter()
            .find(|p| given.iter().filter(|(k, _)| k == *p).count() > 1)
        {
            return refuse(
                None,
                StatusCode::BAD_REQUEST,
                "This app cannot connect",
                &format!("the request gives {twice} more than once"),
            );
        }
        let auth = match self
            .checked(params(|k| req.q(k).map(str::to_string)), req)
            .await
        {
            Ok(a) => a,
            Err(r) => return r,
        };
        let carried: Vec<(&str, &str)> = PARAMS
            .iter()
            .filter_map(|k| req.q(k).map(|val| (*k, val)))
            .collect();
        let mut page = html(StatusCode::OK, pages::consent(v, &auth, &carried));
        // The form's answer leads to the client: allow that origin as a
        // form target (browsers check redirects after a POST against it).
        let csp = match origin(&auth.redirect_uri) {
            Some(o) => CSP.replace("form-action 'self'", &format!("form-action 'self' {o}")),
            None => CSP.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&csp) {
            page.headers_mut().insert("content-security-policy", value);
        }
        page
    }

    /// `POST /console/oauth/authorize`: the person's answer.
    pub(super) async fn decide(&self, v: &Visitor, req: &Req) -> Response {
        let get = |k: &str| Some(req.f(k).to_string()).filter(|s| !s.is_empty());
        let auth = match self.checked(params(get), req).await {
            Ok(a) => a,
            Err(r) => return r,
        };
        let Some(server) = self.oauth.clone() else {
            return refuse(Some(v), StatusCode::NOT_FOUND, "Not found", "OAuth is off");
        };
        let (service, user) = (self.inner.service.clone(), v.user.clone());
        if req.f("decision") != "allow" {
            let to = blocking(move || {
                Ok::<_, ServiceError>(service.consent_refused(&user, &auth, &server))
            })
            .await;
            return match to {
                Ok(to) => redirect(&to),
                Err(e) => error_page(Some(v), &e),
            };
        }
        let mut chosen = Vec::new();
        for (name, value) in &req.form {
            let Some(pattern) = name.strip_prefix("role:") else {
                continue;
            };
            if value == "none" {
                continue;
            }
            let Ok(role) = value.parse::<Role>() else {
                return refuse(
                    Some(v),
                    StatusCode::BAD_REQUEST,
                    "Form refused",
                    &format!("\"{value}\" is not a role"),
                );
            };
            chosen.push(Grant {
                pattern: pattern.to_string(),
                role,
            });
        }
        chosen.sort_by(|a, b| a.pattern.cmp(&b.pattern));
        let source = req.source.map(|s| s.to_string());
        match blocking(move || service.consent(&user, &auth, chosen, &server, source)).await {
            Ok(to) => redirect(&to),
            Err(e) => error_page(Some(v), &e),
        }
    }
}
