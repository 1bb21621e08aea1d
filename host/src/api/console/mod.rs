//! The web console at `/console`: server-rendered pages for the people
//! who run memhost and approve what agents ask for. A thin adapter like
//! REST and MCP: every action goes through the same `crate::service` calls
//! and rules, as the signed-in user's principal.
//!
//! | rule | how |
//! |---|---|
//! | who | a session cookie (`memhost_session`, `Path=/console`, `HttpOnly`, `SameSite=Strict`, `Secure` when `public_url` is https) from a password or a one-time link; API keys are never accepted here, and the cookie never authenticates `/v1` or `/mcp` |
//! | forms | every POST of a signed-in page carries the session's CSRF token; sign-in forms carry a token from a cookie set with the form (double submit); a cross-site `Origin` or `Sec-Fetch-Site` is refused |
//! | pages | `Content-Security-Policy` with no script at all, `frame-ancestors 'none'`; `Referrer-Policy: same-origin` (a link's token never leaves in a Referer); `Cache-Control: no-store` |
//! | sign-in | failures rate-limited per address (shared with API keys) and per user name, audited |
//!
//! | method and path | page |
//! |---|---|
//! | `GET /console/login`, `POST` | sign in with a password |
//! | `GET /console/link/{token}`, `POST` | sign in with a one-time link (GET only asks; POST spends it) |
//! | `GET /console` | namespaces, with counts, settings, indexing |
//! | `POST /console/namespaces` | create a namespace (admins) |
//! | `GET /console/ns/{ns}` | memories: list with filters, or search (`q`) |
//! | `POST /console/ns/{ns}/memories` | store a memory |
//! | `GET /console/ns/{ns}/m/{id}` | one memory, its versions, a diff between two (`from`, `to`) |
//! | `POST /console/ns/{ns}/m/{id}`, `…/forget` | change or forget it |
//! | `GET /console/approvals`, `…/{id}` | the queue; one item with its diff and votes |
//! | `POST /console/approvals/{id}/vote`, `…/cancel` | approve or reject; withdraw |
//! | `GET /console/audit` | the audit log and the chain's verification (global admins) |
//! | `GET /console/plugins`, `POST …/reload` | loaded plugins, last reload, recent failures; reload (global admins) |
//! | `GET /console/keys`, `POST`, `POST …/{id}/revoke` | API keys (admins) |
//! | `GET /console/users`, `POST`, `POST …/{name}/link`, `…/disable` | console users (admins) |
//! | `GET /console/account`, `POST …/password` | your password, your sessions |
//! | `POST /console/sign-out`, `/console/sign-out-everywhere` | end this session, or all of yours |

mod actions;
mod consent;
mod pages;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use maud::Markup;
use subtle::ConstantTimeEq;
use uuid::Uuid;
use warp::Filter;
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::reply::Response;

use crate::api::listener::ClientAddr;
use crate::api::rest::problem::Problem;
use crate::auth::Principal;
use crate::auth::limits::Limiter;
use crate::auth::sessions::{Session, SessionSettings};
use crate::auth::users::{self, User};
use crate::plugins::ReloadSummary;
use crate::service::people::SignInFailure;
use crate::service::{Service, ServiceError};

/// Reload the plugin set (the server's reloader: audited, status written).
pub type Reload = Arc<dyn Fn() -> Result<ReloadSummary, ReloadSummary> + Send + Sync>;

/// Largest form accepted (a memory's content fits).
const MAX_FORM: u64 = 1 << 20;

/// The stylesheet, built into the binary.
const CSS: &str = include_str!("console.css");

/// What the console needs from the server.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
    /// The authorization server whose consent page is here, when OAuth is on.
    oauth: Option<Arc<crate::auth::oauth::AuthServer>>,
}

struct Inner {
    service: Service,
    sessions: SessionSettings,
    /// `public_url` is https: cookies are `Secure`.
    secure: bool,
    /// The origin forms must come from, when `public_url` says it.
    origin: Option<String>,
    limiter: Arc<Limiter>,
    plugin_status: PathBuf,
    reload: Reload,
    /// Argon2id checks at once (19 MiB and tens of ms of a core each): a
    /// flood of sign-ins waits here instead of taking every blocking
    /// thread and gigabytes of memory.
    password_work: Arc<tokio::sync::Semaphore>,
}

/// How long a sign-in waits for a turn at checking its password.
const PASSWORD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Console {
    /// The console over `service`.
    pub fn new(
        service: Service,
        sessions: SessionSettings,
        public_url: Option<String>,
        limiter: Arc<Limiter>,
        plugin_status: PathBuf,
        reload: Reload,
    ) -> Console {
        let secure = public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
        let origin = public_url.map(|u| {
            let after = u.find("://").map_or(0, |i| i + 3);
            match u[after..].find('/') {
                Some(slash) => u[..after + slash].to_string(),
                None => u,
            }
        });
        Console {
            inner: Arc::new(Inner {
                service,
                sessions,
                secure,
                origin,
                limiter,
                plugin_status,
                reload,
                password_work: Arc::new(tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get()),
                )),
            }),
            oauth: None,
        }
    }

    /// This console with the consent page of `server` (OAuth on).
    pub fn with_oauth(mut self, server: Option<Arc<crate::auth::oauth::AuthServer>>) -> Console {
        self.oauth = server;
        self
    }

    /// A turn at Argon2id work, or the page saying the server is busy.
    pub(crate) async fn password_turn(
        &self,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Response> {
        match tokio::time::timeout(
            PASSWORD_WAIT,
            self.inner.password_work.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                let mut r = refuse(
                    None,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Busy",
                    "too many sign-ins are being checked at once; try again in a moment",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                Err(r)
            }
        }
    }

    fn cookie_name(&self, base: &str) -> String {
        cookie_name(self.inner.secure, base)
    }

    fn cookie(&self, base: &str, value: &str, max_age: Option<u64>) -> String {
        set_cookie(self.inner.secure, base, value, max_age)
    }
}

/// `base`, or `__Secure-base` over https (a browser then takes it only
/// from a secure origin).
fn cookie_name(secure: bool, base: &str) -> String {
    if secure {
        format!("__Secure-{base}")
    } else {
        base.to_string()
    }
}

/// A `Set-Cookie` value: only for the console, out of scripts' reach,
/// never sent with a request from another site.
fn set_cookie(secure: bool, base: &str, value: &str, max_age: Option<u64>) -> String {
    let mut c = format!(
        "{}={value}; Path=/console; HttpOnly; SameSite=Strict",
        cookie_name(secure, base)
    );
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// Does a browser say this request came from another site? By
/// `Sec-Fetch-Site` when it sends one (every current browser), and by an
/// `Origin` other than `expected` (this server's). The CSRF token is what
/// protects clients that send neither.
fn cross_site(fetch_site: Option<&str>, origin: Option<&str>, expected: Option<&str>) -> bool {
    let by_fetch = fetch_site.is_some_and(|s| !matches!(s, "same-origin" | "none"));
    let by_origin = origin
        .filter(|o| *o != "null")
        .is_some_and(|o| expected.is_none_or(|e| !o.eq_ignore_ascii_case(e)));
    by_fetch || by_origin
}

/// The session cookie's name (without the `__Secure-` prefix).
pub const SESSION_COOKIE: &str = "memhost_session";
/// The sign-in form's double-submit cookie.
const SIGNIN_COOKIE: &str = "memhost_signin";

/// One request, as the console reads it.
struct Req {
    method: Method,
    segs: Vec<String>,
    query: HashMap<String, String>,
    /// The query string as sent (for the way back after signing in).
    raw_query: String,
    cookies: HashMap<String, String>,
    origin: Option<String>,
    fetch_site: Option<String>,
    host: Option<String>,
    source: Option<IpAddr>,
    form: HashMap<String, String>,
    too_large: bool,
}

impl Req {
    fn q(&self, name: &str) -> Option<&str> {
        self.query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn f(&self, name: &str) -> &str {
        self.form.get(name).map_or("", String::as_str)
    }
}

/// Someone signed in.
pub(crate) struct Visitor {
    pub who: Principal,
    pub user: User,
    pub session: Session,
    token: String,
}

/// Every console route.
pub fn routes(console: Console) -> warp::filters::BoxedFilter<(Response,)> {
    let body = warp::body::content_length_limit(MAX_FORM)
        .and(warp::body::bytes())
        .map(|b: Bytes| (b, false))
        .or(warp::header::optional::<u64>("content-length")
            .map(|n: Option<u64>| (Bytes::new(), n.is_some_and(|n| n > MAX_FORM))))
        .unify();
    warp::path("console")
        .and(warp::path::tail())
        .and(warp::method())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::optional::<String>("cookie"))
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("sec-fetch-site"))
        .and(warp::header::optional::<String>("host"))
        .and(warp::ext::optional::<ClientAddr>())
        .and(body)
        .then(
            move |tail: warp::path::Tail,
                  method: Method,
                  query: String,
                  cookie: Option<String>,
                  origin: Option<String>,
                  fetch_site: Option<String>,
                  host: Option<String>,
                  addr: Option<ClientAddr>,
                  (body, too_large): (Bytes, bool)| {
                let console = console.clone();
                async move {
                    let req = Req {
                        method,
                        segs: tail
                            .as_str()
                            .split('/')
                            .filter(|s| !s.is_empty())
                            .map(percent_decode)
                            .collect(),
                        query: pairs(query.as_bytes()),
                        raw_query: query,
                        cookies: cookies(cookie.as_deref().unwrap_or("")),
                        origin,
                        fetch_site,
                        host,
                        source: addr.map(|a: ClientAddr| SocketAddr::ip(&a.0)),
                        form: pairs(&body),
                        too_large,
                    };
                    // Pages a person passes through while an app waits
                    // for the answer, maybe in a popup it opened.
                    let flow = matches!(
                        req.segs.first().map(String::as_str),
                        Some("oauth" | "login" | "link")
                    );
                    let mut response = console.handle(req).await;
                    harden(&mut response, flow);
                    response
                }
            },
        )
        .boxed()
}

/// The console's content security policy: no script, forms only to
/// itself, never framed. (The consent page also lets its form lead to the
/// client's redirect origin.)
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Headers every console answer carries. `flow`: a page of the sign-in
/// and consent flow, which keeps its opener (an app that opened it in a
/// popup must see it go on, not closed).
fn harden(r: &mut Response, flow: bool) {
    let h = r.headers_mut();
    let set = |h: &mut warp::http::HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    if !h.contains_key("content-security-policy") {
        set(h, "content-security-policy", CSP);
    }
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "same-origin");
    set(
        h,
        "cross-origin-opener-policy",
        if flow { "unsafe-none" } else { "same-origin" },
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
}

fn pairs(raw: &[u8]) -> HashMap<String, String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(raw)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn cookies(header: &str) -> HashMap<String, String> {
    header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A path segment as its bytes say (`%2D` is `-`).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// An HTML page.
fn html(status: StatusCode, markup: Markup) -> Response {
    let mut r = Response::new(markup.into_string().into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// `303 See Other` to `to` (a path of this console).
fn redirect(to: &str) -> Response {
    let mut r = Response::new(Default::default());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn with_cookie(mut r: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// Run a service call on a blocking thread.
async fn blocking<T: Send + 'static, E: Send + 'static + From<ServiceError>>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ServiceError::Internal(e.to_string()).into()))
}

/// A page for a refusal or failure, with its status.
pub(crate) fn error_page(v: Option<&Visitor>, e: &ServiceError) -> Response {
    if let ServiceError::Held(item) = e {
        return html(StatusCode::ACCEPTED, pages::held(v, item));
    }
    let p = Problem::from(e);
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "console request failed");
    }
    html(status, pages::problem(v, &p.title, &p.detail))
}

fn refuse(v: Option<&Visitor>, status: StatusCode, title: &str, detail: &str) -> Response {
    html(status, pages::problem(v, title, detail))
}

/// The memory id in a path; anything else names no memory.
fn memory_id(ns: &str, id: &str) -> Result<Uuid, ServiceError> {
    Uuid::parse_str(id).map_err(|_| ServiceError::NoMemory {
        namespace: ns.into(),
        id: id.into(),
    })
}

fn approval_id(id: &str) -> Result<Uuid, ServiceError> {
    Uuid::parse_str(id).map_err(|_| ServiceError::NoApproval(id.into()))
}

impl Console {
    async fn handle(&self, req: Req) -> Response {
        if req.too_large {
            return refuse(
                None,
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too large",
                "the form is larger than 1 MiB",
            );
        }
        let segs: Vec<&str> = req.segs.iter().map(String::as_str).collect();
        let get = req.method == Method::GET || req.method == Method::HEAD;
        let post = req.method == Method::POST;
        match (get, post, segs.as_slice()) {
            (true, _, ["assets", "console.css"]) => {
                let mut r = Response::new(CSS.into());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/css; charset=utf-8"),
                );
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=3600"),
                );
                return r;
            }
            (true, _, ["login"]) => return self.sign_in_form(&req, None, StatusCode::OK),
            (_, true, ["login"]) => return self.sign_in_password(&req).await,
            (true, _, ["link", token]) => return self.link_form(&req, token).await,
            (true, _, ["oauth", "authorize"]) if self.needs_hop(&req) => {
                return html(
                    StatusCode::OK,
                    pages::hop(&format!("/console/oauth/authorize?{}", req.raw_query)),
                );
            }
            (_, true, ["link", token]) => return self.use_link(&req, token).await,
            _ => {}
        }
        if !get && !post {
            return refuse(
                None,
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                "the console takes GET and POST",
            );
        }
        let visitor = match self.visitor(&req).await {
            Ok(v) => v,
            Err(r) => return r,
        };
        let v = &visitor;
        if post && let Some(refused) = self.form_refusal(&req, v) {
            return refused;
        }
        match (post, segs.as_slice()) {
            (false, []) => self.overview(v, &req).await,
            (true, ["namespaces"]) => self.create_namespace(v, &req).await,
            (false, ["ns", ns]) => self.memories(v, &req, ns).await,
            (true, ["ns", ns, "memories"]) => self.store(v, &req, ns).await,
            (false, ["ns", ns, "m", id]) => self.memory(v, &req, ns, id).await,
            (true, ["ns", ns, "m", id]) => self.update(v, &req, ns, id).await,
            (true, ["ns", ns, "m", id, "forget"]) => self.forget(v, ns, id).await,
            (false, ["approvals"]) => self.approvals(v, &req).await,
            (false, ["approvals", id]) => self.approval(v, &req, id).await,
            (true, ["approvals", id, "vote"]) => self.vote(v, &req, id).await,
            (true, ["approvals", id, "cancel"]) => self.cancel(v, id).await,
            (false, ["audit"]) => self.audit(v, &req).await,
            (false, ["plugins"]) => self.plugins(v, &req).await,
            (true, ["plugins", "reload"]) => self.reload(v).await,
            (false, ["keys"]) => self.keys(v, None).await,
            (true, ["keys"]) => self.create_key(v, &req).await,
            (true, ["keys", id, "revoke"]) => self.revoke_key(v, id).await,
            (false, ["users"]) => self.users(v, None).await,
            (true, ["users"]) => self.create_user(v, &req).await,
            (true, ["users", name, "link"]) => self.user_link(v, &req, name).await,
            (true, ["users", name, "disable"]) => self.disable_user(v, name).await,
            (false, ["account"]) => {
                self.account_page(v, StatusCode::OK, req.q("ok"), None)
                    .await
            }
            (true, ["account", "connections", id, "disconnect"]) => self.disconnect(v, id).await,
            (true, ["account", "password"]) => self.change_password(v, &req).await,
            (true, ["sign-out"]) => self.sign_out(v).await,
            (true, ["sign-out-everywhere"]) => self.sign_out_everywhere(v).await,
            (false, ["oauth", "authorize"]) => self.authorize(v, &req).await,
            (true, ["oauth", "authorize"]) => self.decide(v, &req).await,
            _ => refuse(
                Some(v),
                StatusCode::NOT_FOUND,
                "Not found",
                "there is no such page in the console",
            ),
        }
    }

    /// The signed-in visitor, or the way to the sign-in page.
    async fn visitor(&self, req: &Req) -> Result<Visitor, Response> {
        let to_sign_in = || {
            let next = if req.method == Method::GET && req.raw_query.is_empty() {
                format!("/console/{}", req.segs.join("/"))
            } else if req.method == Method::GET {
                format!("/console/{}?{}", req.segs.join("/"), req.raw_query)
            } else {
                "/console".into()
            };
            redirect(&format!(
                "/console/login?next={}",
                serde_urlencoded::to_string([("", next)])
                    .unwrap_or_default()
                    .trim_start_matches('=')
            ))
        };
        let Some(token) = req.cookies.get(&self.cookie_name(SESSION_COOKIE)).cloned() else {
            return Err(to_sign_in());
        };
        let (service, settings, t) = (
            self.inner.service.clone(),
            self.inner.sessions,
            token.clone(),
        );
        match blocking(move || service.session(&t, &settings)).await {
            Ok((session, user)) => {
                let mut who = user.principal();
                let strongest = who.strongest_role();
                let rate = self.inner.limiter.rate_for(None, strongest);
                match self.inner.limiter.admit(&who.key_id, rate) {
                    Ok(slot) => who._slot = Some(slot),
                    Err(refused) => {
                        return Err(refuse(
                            None,
                            StatusCode::TOO_MANY_REQUESTS,
                            "Too many requests",
                            &refused.reason,
                        ));
                    }
                }
                Ok(Visitor {
                    who,
                    user,
                    session,
                    token,
                })
            }
            Err(SignInFailure::Internal(e)) => Err(error_page(None, &ServiceError::Internal(e))),
            Err(_) => Err(with_cookie(
                to_sign_in(),
                &self.cookie(SESSION_COOKIE, "", Some(0)),
            )),
        }
    }

    /// A POST from a signed-in page: same origin, and the session's CSRF
    /// token in the form.
    fn form_refusal(&self, req: &Req, v: &Visitor) -> Option<Response> {
        if let Some(refused) = self.cross_site(req) {
            return Some(refused);
        }
        let sent = req.f("csrf");
        if sent.is_empty() || !bool::from(sent.as_bytes().ct_eq(v.session.csrf.as_bytes())) {
            return Some(refuse(
                Some(v),
                StatusCode::FORBIDDEN,
                "Form refused",
                "the form did not carry this session's token (CSRF): reload the page and try again",
            ));
        }
        None
    }

    /// Refuse a POST a browser says came from another site.
    fn cross_site(&self, req: &Req) -> Option<Response> {
        let expected = match (&self.inner.origin, &req.host) {
            (Some(o), _) => Some(o.clone()),
            (None, Some(host)) => Some(format!("http://{host}")),
            (None, None) => None,
        };
        cross_site(
            req.fetch_site.as_deref(),
            req.origin.as_deref(),
            expected.as_deref(),
        )
        .then(|| {
            refuse(
                None,
                StatusCode::FORBIDDEN,
                "Form refused",
                "the form was sent from another site (behind a proxy, set [server] public_url to the address browsers use)",
            )
        })
    }

    /// The sign-in form, with a fresh double-submit token.
    fn sign_in_form(&self, req: &Req, error: Option<&str>, status: StatusCode) -> Response {
        let token = self.signin_token(req);
        let next = safe_next(req.q("next").or(Some(req.f("next"))));
        let page = html(status, pages::sign_in(&token, &next, error, req.q("done")));
        with_cookie(page, &self.cookie(SIGNIN_COOKIE, &token, Some(3600)))
    }

    /// The sign-in forms' double-submit token: the browser's own when it
    /// has one (a second tab keeps the first one's form working), else new.
    fn signin_token(&self, req: &Req) -> String {
        req.cookies
            .get(&self.cookie_name(SIGNIN_COOKIE))
            .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
            .cloned()
            .unwrap_or_else(|| crate::auth::sessions::new_token(""))
    }

    fn signin_token_ok(&self, req: &Req) -> bool {
        let sent = req.f("signin");
        req.cookies
            .get(&self.cookie_name(SIGNIN_COOKIE))
            .is_some_and(|c| !sent.is_empty() && bool::from(c.as_bytes().ct_eq(sent.as_bytes())))
    }

    async fn sign_in_password(&self, req: &Req) -> Response {
        if let Some(refused) = self.cross_site(req) {
            return refused;
        }
        if !self.signin_token_ok(req) {
            return self.sign_in_form(
                req,
                Some("the sign-in form expired or came from elsewhere: try again"),
                StatusCode::FORBIDDEN,
            );
        }
        let name = req.f("user").trim().to_lowercase();
        let password = req.f("password").to_string();
        // An address over its failures is refused before any work.
        if let Some(ip) = req.source
            && let Some(refused) = self.inner.limiter.failing(ip)
        {
            return self.too_many(req, &refused);
        }
        // A name no user can have, or a password no user can have set, is
        // the address's failure only: nothing is kept or written under it.
        if !crate::auth::users::valid_name(&name) || password.len() > 4 * users::MAX_PASSWORD {
            if let Some(refused) = self
                .failed_sign_in(req, None, SignInFailure::WrongPassword)
                .await
            {
                return self.too_many(req, &refused);
            }
            return self.sign_in_form(
                req,
                Some("wrong user name or password"),
                StatusCode::UNAUTHORIZED,
            );
        }
        if let Err(refused) = self.inner.limiter.sign_in_attempt(&name) {
            let why = SignInFailure::Throttled(refused.reason.clone());
            let _ = self.failed_sign_in(req, Some(&name), why).await;
            return self.too_many(req, &refused);
        }
        let _turn = match self.password_turn().await {
            Ok(turn) => turn,
            Err(busy) => {
                self.inner.limiter.sign_in_succeeded(&name);
                return busy;
            }
        };
        let service = self.inner.service.clone();
        let source = req.source.map(|s| s.to_string());
        let n = name.clone();
        match blocking(move || service.sign_in_password(&n, &password, source)).await {
            Ok(signed) => {
                self.inner.limiter.sign_in_succeeded(&name);
                self.signed_in(req, signed)
            }
            Err(SignInFailure::Internal(e)) => error_page(None, &ServiceError::Internal(e)),
            Err(why) => {
                if let Some(refused) = self.failed_sign_in(req, Some(&name), why).await {
                    return self.too_many(req, &refused);
                }
                self.sign_in_form(
                    req,
                    Some("wrong user name or password"),
                    StatusCode::UNAUTHORIZED,
                )
            }
        }
    }

    /// A failed sign-in (a password, a link): counted against its address
    /// together with failed API keys, audited while the failures of all
    /// addresses are within the audit rate (as failed keys are); the
    /// refusal once the address has failed too often.
    async fn failed_sign_in(
        &self,
        req: &Req,
        name: Option<&str>,
        why: SignInFailure,
    ) -> Option<crate::auth::limits::Refused> {
        crate::metrics::auth_failure("console");
        let (audit, refused) = match req.source {
            Some(ip) => {
                let f = self.inner.limiter.failed(ip);
                (f.audit, f.refused)
            }
            None => (true, None),
        };
        if audit {
            self.audit_sign_in(req, name, why).await;
        }
        refused
    }

    /// Write a refused sign-in to the audit log, off the async runtime.
    async fn audit_sign_in(&self, req: &Req, name: Option<&str>, why: SignInFailure) {
        let (service, name, source) = (
            self.inner.service.clone(),
            name.map(str::to_string),
            req.source.map(|s| s.to_string()),
        );
        let _ = tokio::task::spawn_blocking(move || {
            service.sign_in_refused(name.as_deref(), source, &why)
        })
        .await;
    }

    fn too_many(&self, req: &Req, refused: &crate::auth::limits::Refused) -> Response {
        let mut r = self.sign_in_form(
            req,
            Some(&format!(
                "{}; try again in {} s",
                refused.reason, refused.retry_after
            )),
            StatusCode::TOO_MANY_REQUESTS,
        );
        if let Ok(v) = HeaderValue::from_str(&refused.retry_after.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }

    /// Set the session cookie and go where the visitor was going.
    fn signed_in(&self, req: &Req, signed: crate::service::people::SignedIn) -> Response {
        let next = safe_next(Some(req.f("next")));
        let r = with_cookie(
            redirect(&next),
            &self.cookie(SESSION_COOKIE, &signed.token, None),
        );
        with_cookie(r, &self.cookie(SIGNIN_COOKIE, "", Some(0)))
    }

    async fn link_form(&self, req: &Req, token: &str) -> Response {
        let service = self.inner.service.clone();
        let t = token.to_string();
        match blocking(move || service.peek_link(&t)).await {
            Ok(user) => {
                let signin = self.signin_token(req);
                let page = html(StatusCode::OK, pages::link(&user, &signin));
                with_cookie(page, &self.cookie(SIGNIN_COOKIE, &signin, Some(3600)))
            }
            Err(SignInFailure::Internal(e)) => error_page(None, &ServiceError::Internal(e)),
            Err(why) => {
                let _ = self.failed_sign_in(req, None, why).await;
                html(StatusCode::UNAUTHORIZED, pages::link_refused())
            }
        }
    }

    async fn use_link(&self, req: &Req, token: &str) -> Response {
        if let Some(refused) = self.cross_site(req) {
            return refused;
        }
        if !self.signin_token_ok(req) {
            return refuse(
                None,
                StatusCode::FORBIDDEN,
                "Form refused",
                "the sign-in form expired or came from elsewhere: open the link again",
            );
        }
        let service = self.inner.service.clone();
        let (t, source) = (token.to_string(), req.source.map(|s| s.to_string()));
        match blocking(move || service.use_link(&t, source)).await {
            Ok(signed) => self.signed_in(req, signed),
            Err(SignInFailure::Internal(e)) => error_page(None, &ServiceError::Internal(e)),
            Err(why) => {
                if let Some(refused) = self.failed_sign_in(req, None, why).await {
                    return self.too_many(req, &refused);
                }
                html(StatusCode::UNAUTHORIZED, pages::link_refused())
            }
        }
    }
}

/// A `next` that stays inside the console (never another site). Its
/// query may carry anything percent-encoded (an authorization request's
/// redirect URI).
fn safe_next(next: Option<&str>) -> String {
    let path = next.map(|n| n.split('?').next().unwrap_or(""));
    match (next, path) {
        (Some(n), Some(path))
            if path.starts_with("/console")
                && !path.starts_with("/console/login")
                && !path.contains("//")
                && !path.contains('\\')
                && n.chars().all(|c| c.is_ascii_graphic()) =>
        {
            n.to_string()
        }
        _ => "/console".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_never_leaves_the_console() {
        assert_eq!(safe_next(Some("/console/approvals")), "/console/approvals");
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/console//evil.example",
            "/console/\\evil",
            "/v1/namespaces",
            "/console/login",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/console", "{bad}");
        }
    }

    #[test]
    fn cookies_are_console_only_http_only_strict_and_secure_over_https() {
        assert_eq!(
            set_cookie(false, SESSION_COOKIE, "mhs_x", None),
            "memhost_session=mhs_x; Path=/console; HttpOnly; SameSite=Strict"
        );
        assert_eq!(
            set_cookie(true, SESSION_COOKIE, "", Some(0)),
            "__Secure-memhost_session=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0; Secure"
        );
    }

    #[test]
    fn posts_from_other_sites_are_spotted() {
        let here = Some("https://memory.example.com");
        assert!(!cross_site(Some("same-origin"), here, here));
        assert!(!cross_site(None, None, here), "curl: the token decides");
        assert!(!cross_site(Some("same-origin"), Some("null"), here));
        assert!(cross_site(Some("cross-site"), None, here));
        assert!(
            cross_site(Some("same-site"), None, here),
            "a sibling subdomain"
        );
        assert!(cross_site(None, Some("https://evil.example"), here));
        assert!(cross_site(None, Some("http://memory.example.com"), here));
        assert!(cross_site(None, Some("https://evil.example"), None));
    }

    #[test]
    fn paths_and_forms_decode() {
        assert_eq!(percent_decode("team%2Da"), "team-a");
        assert_eq!(percent_decode("a%+fb"), "a%+fb");
        let f = pairs(b"content=a+b%26c&csrf=x");
        assert_eq!(f["content"], "a b&c");
        assert_eq!(
            cookies("a=1; memhost_session=mhs_x")["memhost_session"],
            "mhs_x"
        );
    }
}
