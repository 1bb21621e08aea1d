//! What each console page does: read the form or query, call the
//! service as the signed-in user, render or redirect. No rules here: the
//! service decides what the user may do.

use std::sync::Mutex;

use warp::http::StatusCode;
use warp::reply::Response;

use super::{
    Console, Req, Visitor, approval_id, blocking, error_page, html, memory_id, pages, redirect,
    refuse, with_cookie,
};
use crate::audit::Entry;
use crate::auth::{Grant, Role};
use crate::governance::State;
use crate::service::approvals::{ApprovalQuery, NewVote, Perspective, VoteDecision};
use crate::service::recall::RecallQuery;
use crate::service::{Filters, ListQuery, MemoryPatch, NewKey, NewMemory, ServiceError};

/// Most memories one list page shows.
pub(super) const MAX_PAGE: usize = 1000;
/// Search results shown.
const SEARCH_K: usize = 50;

/// One namespace on the overview.
pub(crate) struct NamespaceRow {
    pub ns: crate::service::Namespace,
    pub role: Option<Role>,
    pub memories: u64,
    pub index: Option<crate::service::indexing::IndexProgress>,
}

/// The memories page's content.
pub(crate) enum Listing {
    /// A page of the list, and the cursor of the next one.
    Page(Vec<crate::service::Memory>, Option<uuid::Uuid>),
    /// Search results.
    Found(Vec<crate::service::recall::Hit>),
}

/// The audit chain as last verified (walked again at most once a minute:
/// a walk reads every entry).
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    /// How many verified, or where it broke.
    pub outcome: Result<u64, String>,
    /// When, Unix ms.
    pub at: i64,
}

static VERIFIED: Mutex<Option<Verified>> = Mutex::new(None);

/// Tags from a comma-separated field.
fn tag_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Roles from `team-a=writer, b-*=reader` (commas, spaces or lines).
fn grants(s: &str) -> Result<Vec<Grant>, ServiceError> {
    s.split([',', '\n', ' '])
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(|g| {
            g.parse().map_err(|e: String| ServiceError::Invalid {
                field: "roles".into(),
                detail: e,
            })
        })
        .collect()
}

fn not_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

impl Console {
    /// The plugin status the server keeps (a small file), read off the
    /// async runtime.
    async fn plugin_status(&self) -> Option<crate::plugins::status::PluginStatus> {
        let path = self.inner.plugin_status.clone();
        tokio::task::spawn_blocking(move || crate::plugins::status::PluginStatus::read(&path).ok())
            .await
            .ok()
            .flatten()
    }

    pub(super) async fn create_namespace(&self, v: &Visitor, req: &Req) -> Response {
        let mut settings = crate::service::NamespaceSettings {
            description: not_empty(req.f("description")),
            embedder: match req.f("embedder") {
                "" | "default" => None,
                other => Some(other.to_string()),
            },
            ..crate::service::NamespaceSettings::default()
        };
        if let Some(policy) = not_empty(req.f("policy")) {
            settings.policy = policy;
        }
        let (service, who) = (self.inner.service.clone(), v.who.clone());
        let name = req.f("name").trim().to_string();
        match blocking(move || service.create_namespace(&who, &name, settings)).await {
            Ok(ns) => redirect(&format!("/console/ns/{}?ok=created", ns.name)),
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn overview(&self, v: &Visitor, req: &Req) -> Response {
        let (service, who) = (self.inner.service.clone(), v.who.clone());
        let r = blocking(move || {
            let mut rows = Vec::new();
            for ns in service.namespaces(&who)? {
                let memories = service.memory_count(&who, &ns.name)?;
                let index = match ns.settings.embedder {
                    Some(_) => Some(service.index_progress(&who, &ns.name)?),
                    None => None,
                };
                rows.push(NamespaceRow {
                    role: who.role_in(&ns.name),
                    ns,
                    memories,
                    index,
                });
            }
            let waiting = service
                .approvals(
                    &who,
                    &ApprovalQuery {
                        role: Some(Perspective::Approver),
                        state: Some(State::Pending),
                        limit: Some(200),
                        ..ApprovalQuery::default()
                    },
                )?
                .approvals
                .len();
            Ok((rows, waiting))
        })
        .await;
        match r {
            Ok((rows, waiting)) => html(
                StatusCode::OK,
                pages::overview(
                    v,
                    req.q("ok"),
                    &rows,
                    waiting,
                    &self.inner.service.embedder_ids(),
                ),
            ),
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn memories(&self, v: &Visitor, req: &Req, ns: &str) -> Response {
        let (service, who, name) = (self.inner.service.clone(), v.who.clone(), ns.to_string());
        let query = req.q("q").map(str::to_string);
        let filters = Filters {
            tags: tag_list(req.q("tags").unwrap_or("")),
            agent_id: req.q("agent").map(str::to_string),
            since: None,
            until: None,
        };
        let cursor = req.q("cursor").and_then(|c| uuid::Uuid::parse_str(c).ok());
        let per_page = req
            .q("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(100)
            .clamp(1, MAX_PAGE);
        let f = filters.clone();
        let r = blocking(move || {
            let (namespace, index) = service.namespace_with_index(&who, &name)?;
            let listing = match query {
                Some(q) => Listing::Found(service.recall(
                    &who,
                    &name,
                    &RecallQuery {
                        query: q,
                        k: Some(SEARCH_K),
                        tags: f.tags.clone(),
                        agent_id: f.agent_id.clone(),
                        ..RecallQuery::default()
                    },
                )?),
                None => {
                    // The service pages by 200 at most; a console page may
                    // show up to 1,000.
                    let mut memories = Vec::new();
                    let mut next = cursor;
                    loop {
                        let page = service.list(
                            &who,
                            &name,
                            &ListQuery {
                                filters: f.clone(),
                                cursor: next,
                                limit: Some((per_page - memories.len()).min(200)),
                            },
                        )?;
                        memories.extend(page.memories);
                        next = page.next_cursor;
                        if next.is_none() || memories.len() >= per_page {
                            break;
                        }
                    }
                    Listing::Page(memories, next)
                }
            };
            Ok((namespace, index, listing))
        })
        .await;
        match r {
            Ok((namespace, index, listing)) => html(
                StatusCode::OK,
                pages::memories(v, req, &namespace, index.as_ref(), &listing, per_page),
            ),
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn store(&self, v: &Visitor, req: &Req, ns: &str) -> Response {
        let memory = NewMemory {
            content: req.f("content").to_string(),
            title: not_empty(req.f("title")),
            tags: tag_list(req.f("tags")),
            metadata: Default::default(),
            ttl_seconds: None,
            importance: None,
            observed_at: None,
        };
        let (service, who, name) = (self.inner.service.clone(), v.who.clone(), ns.to_string());
        match blocking(move || service.store(&who, &name, memory)).await {
            Ok(stored) => redirect(&format!(
                "/console/ns/{ns}/m/{}?ok={}",
                stored.memory.id,
                if stored.created {
                    "stored"
                } else {
                    "duplicate"
                }
            )),
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn memory(&self, v: &Visitor, req: &Req, ns: &str, id: &str) -> Response {
        let id = match memory_id(ns, id) {
            Ok(id) => id,
            Err(e) => return error_page(Some(v), &e),
        };
        let (service, who, name) = (self.inner.service.clone(), v.who.clone(), ns.to_string());
        let r = blocking(move || {
            let memory = service.get(&who, &name, &id)?;
            let mut versions = Vec::new();
            let mut after = 0;
            // A memory's whole history, up to 1,000 versions.
            while versions.len() < 1000 {
                let (page, next) = service.history(&who, &name, &id, after, Some(100))?;
                versions.extend(page);
                match next {
                    Some(n) => after = n,
                    None => break,
                }
            }
            Ok((memory, versions))
        })
        .await;
        let (memory, versions) = match r {
            Ok(found) => found,
            Err(e) => return error_page(Some(v), &e),
        };
        let version = |name: &str| req.q(name).and_then(|x| x.parse::<u32>().ok());
        let to = version("to").unwrap_or(memory.version);
        let from = version("from").unwrap_or(to.saturating_sub(1));
        html(
            StatusCode::OK,
            pages::memory(v, req, &memory, &versions, from, to),
        )
    }

    pub(super) async fn update(&self, v: &Visitor, req: &Req, ns: &str, id: &str) -> Response {
        let id = match memory_id(ns, id) {
            Ok(id) => id,
            Err(e) => return error_page(Some(v), &e),
        };
        let patch = MemoryPatch {
            content: Some(req.f("content").to_string()),
            title: Some(req.f("title").trim().to_string()),
            tags: Some(tag_list(req.f("tags"))),
            ..MemoryPatch::default()
        };
        let (service, who, name) = (self.inner.service.clone(), v.who.clone(), ns.to_string());
        match blocking(move || service.update(&who, &name, &id, patch)).await {
            Ok(m) => redirect(&format!("/console/ns/{ns}/m/{}?ok=updated", m.id)),
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn forget(&self, v: &Visitor, ns: &str, id: &str) -> Response {
        let id = match memory_id(ns, id) {
            Ok(id) => id,
            Err(e) => return error_page(Some(v), &e),
        };
        let (service, who, name) = (self.inner.service.clone(), v.who.clone(), ns.to_string());
        match blocking(move || service.forget(&who, &name, &id)).await {
            Ok(()) => redirect(&format!("/console/ns/{ns}?ok=forgotten")),
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn approvals(&self, v: &Visitor, req: &Req) -> Response {
        let view = req.q("view").unwrap_or("waiting").to_string();
        let state = req.q("state").and_then(State::parse);
        let q = match view.as_str() {
            "mine" => ApprovalQuery {
                role: Some(Perspective::Requester),
                state,
                ..ApprovalQuery::default()
            },
            "all" => ApprovalQuery {
                state,
                ..ApprovalQuery::default()
            },
            _ => ApprovalQuery {
                role: Some(Perspective::Approver),
                state: Some(State::Pending),
                ..ApprovalQuery::default()
            },
        };
        let q = ApprovalQuery {
            limit: Some(200),
            namespace: req.q("namespace").map(str::to_string),
            ..q
        };
        let (service, who) = (self.inner.service.clone(), v.who.clone());
        match blocking(move || service.approvals(&who, &q)).await {
            Ok(page) => html(
                StatusCode::OK,
                pages::approvals(v, &view, state, &page.approvals),
            ),
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn approval(&self, v: &Visitor, req: &Req, id: &str) -> Response {
        let id = match approval_id(id) {
            Ok(id) => id,
            Err(e) => return error_page(Some(v), &e),
        };
        let (service, who) = (self.inner.service.clone(), v.who.clone());
        let r = blocking(move || {
            let view = service.approval(&who, &id)?;
            // What it would change, as it is now.
            let current = match (view.item.target_id, view.item.state) {
                (Some(target), State::Pending) => {
                    service.get(&who, &view.item.namespace, &target).ok()
                }
                _ => None,
            };
            Ok((view, current))
        })
        .await;
        match r {
            Ok((view, current)) => html(
                StatusCode::OK,
                pages::approval(v, req.q("ok"), &view, current.as_ref()),
            ),
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn vote(&self, v: &Visitor, req: &Req, id: &str) -> Response {
        let id = match approval_id(id) {
            Ok(id) => id,
            Err(e) => return error_page(Some(v), &e),
        };
        let decision = match req.f("decision") {
            "approve" => VoteDecision::Approve,
            "reject" => VoteDecision::Reject,
            _ => {
                return refuse(
                    Some(v),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid vote",
                    "choose approve or reject",
                );
            }
        };
        let vote = NewVote {
            decision,
            comment: not_empty(req.f("comment")),
            payload_hash: req.f("payload_hash").to_string(),
        };
        let (service, who) = (self.inner.service.clone(), v.who.clone());
        match blocking(move || service.vote(&who, &id, vote)).await {
            Ok(view) => redirect(&format!(
                "/console/approvals/{id}?ok={}",
                view.item.state.as_str()
            )),
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn cancel(&self, v: &Visitor, id: &str) -> Response {
        let id = match approval_id(id) {
            Ok(id) => id,
            Err(e) => return error_page(Some(v), &e),
        };
        let (service, who) = (self.inner.service.clone(), v.who.clone());
        match blocking(move || service.cancel_approval(&who, &id)).await {
            Ok(_) => redirect(&format!("/console/approvals/{id}?ok=cancelled")),
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn audit(&self, v: &Visitor, req: &Req) -> Response {
        let before = req.q("before").and_then(|b| b.parse::<u64>().ok());
        let filter = pages::AuditFilter {
            action: req.q("action").map(str::to_string),
            agent: req.q("agent").map(str::to_string),
            namespace: req.q("namespace").map(str::to_string),
            outcome: req.q("outcome").map(str::to_string),
        };
        let (service, who, f) = (self.inner.service.clone(), v.who.clone(), filter.clone());
        let r = blocking(move || {
            let (entries, next) = service.audit_page(&who, before, 100, |e: &Entry| f.keeps(e))?;
            Ok((
                entries,
                next,
                verification(&service)?,
                service.audit_length()?,
            ))
        })
        .await;
        match r {
            Ok((entries, next, verified, length)) => html(
                StatusCode::OK,
                pages::audit(v, &filter, &entries, next, &verified, length),
            ),
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn plugins(&self, v: &Visitor, req: &Req) -> Response {
        let status = self.plugin_status().await;
        let failures = crate::metrics::recent_plugin_failures();
        html(
            StatusCode::OK,
            pages::plugins(v, req.q("ok"), status.as_ref(), &failures),
        )
    }

    pub(super) async fn reload(&self, v: &Visitor) -> Response {
        if !v.who.is_global_admin() {
            return error_page(
                Some(v),
                &ServiceError::Forbidden(format!(
                    "{} is not a global admin (*=admin): reloading plugins is server-wide",
                    v.who.key_id
                )),
            );
        }
        let (service, who, reload) = (
            self.inner.service.clone(),
            v.who.clone(),
            self.inner.reload.clone(),
        );
        let outcome = tokio::task::spawn_blocking(move || {
            service.record_event(
                crate::audit::Record::by(&who, "plugins.reload")
                    .outcome("requested", Some("from the console".into())),
            );
            reload()
        })
        .await;
        match outcome {
            Ok(Ok(_)) => redirect("/console/plugins?ok=reloaded"),
            Ok(Err(_)) => redirect("/console/plugins?ok=failed"),
            Err(e) => error_page(Some(v), &ServiceError::Internal(e.to_string())),
        }
    }

    pub(super) async fn keys(&self, v: &Visitor, created: Option<(String, String)>) -> Response {
        let (service, who) = (self.inner.service.clone(), v.who.clone());
        match blocking(move || service.list_keys(&who)).await {
            Ok(keys) => html(
                if created.is_some() {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                pages::keys(v, &keys, created.as_ref()),
            ),
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn create_key(&self, v: &Visitor, req: &Req) -> Response {
        let grants = match grants(req.f("roles")) {
            Ok(g) => g,
            Err(e) => return error_page(Some(v), &e),
        };
        let expires_at = match req.f("expires_days").trim() {
            "" => None,
            days => match days.parse::<i64>() {
                Ok(d) if (1..=3650).contains(&d) => Some(crate::clock::now_ms() + d * 86_400_000),
                _ => {
                    return error_page(
                        Some(v),
                        &ServiceError::Invalid {
                            field: "expires_days".into(),
                            detail: "give a number of days from 1 to 3650, or nothing".into(),
                        },
                    );
                }
            },
        };
        let new = NewKey {
            agent_id: req.f("agent_id").trim().to_string(),
            agent_type: req.f("agent_type").trim().to_string(),
            grants,
            expires_at,
            rate: None,
        };
        let (service, who) = (self.inner.service.clone(), v.who.clone());
        match blocking(move || service.create_key(&who, new)).await {
            Ok((token, info)) => self.keys(v, Some((token, info.key.id))).await,
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn revoke_key(&self, v: &Visitor, id: &str) -> Response {
        let (service, who, id) = (self.inner.service.clone(), v.who.clone(), id.to_string());
        match blocking(move || service.revoke_key(&who, &id)).await {
            Ok(_) => redirect("/console/keys?ok=revoked"),
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn users(&self, v: &Visitor, link: Option<(String, String)>) -> Response {
        let (service, who) = (self.inner.service.clone(), v.who.clone());
        match blocking(move || service.users(&who)).await {
            Ok(users) => html(StatusCode::OK, pages::users(v, &users, link.as_ref())),
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn create_user(&self, v: &Visitor, req: &Req) -> Response {
        let grants = match grants(req.f("roles")) {
            Ok(g) => g,
            Err(e) => return error_page(Some(v), &e),
        };
        let name = req.f("name").trim().to_string();
        let password = not_empty(req.f("password"));
        let (service, who) = (self.inner.service.clone(), v.who.clone());
        match blocking(move || service.create_user(&who, &name, grants, password.as_deref())).await
        {
            Ok(_) => redirect("/console/users?ok=created"),
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn user_link(&self, v: &Visitor, req: &Req, name: &str) -> Response {
        let (service, who, n) = (self.inner.service.clone(), v.who.clone(), name.to_string());
        let valid = self.inner.sessions.link_ms();
        match blocking(move || service.sign_in_link(&who, &n, valid)).await {
            Ok((token, _)) => {
                let base = match (&self.inner.origin, &req.host) {
                    (Some(o), _) => o.clone(),
                    (None, Some(h)) => format!("http://{h}"),
                    (None, None) => String::new(),
                };
                let link = format!("{base}/console/link/{token}");
                self.users(v, Some((name.to_string(), link))).await
            }
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn disable_user(&self, v: &Visitor, name: &str) -> Response {
        let (service, who, n) = (self.inner.service.clone(), v.who.clone(), name.to_string());
        match blocking(move || service.disable_user(&who, &n)).await {
            Ok(_) => redirect("/console/users?ok=disabled"),
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn change_password(&self, v: &Visitor, req: &Req) -> Response {
        let (new, again) = (req.f("password").to_string(), req.f("again"));
        if new != again {
            return self
                .account_page(
                    v,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    None,
                    Some("the two new passwords differ"),
                )
                .await;
        }
        let current = req.f("current").to_string();
        // Guessing the current password here is guessing a sign-in.
        if let Err(refused) = self.inner.limiter.sign_in_attempt(&v.user.name) {
            return refuse(
                Some(v),
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                &refused.reason,
            );
        }
        let _turn = match self.password_turn().await {
            Ok(turn) => turn,
            Err(busy) => return busy,
        };
        let (service, who, name) = (
            self.inner.service.clone(),
            v.who.clone(),
            v.user.name.clone(),
        );
        let r = blocking(move || {
            let current = (!current.is_empty()).then_some(current);
            service.set_password(&who, &name, current.as_deref(), &new)
        })
        .await;
        if !matches!(r, Err(ServiceError::Forbidden(_))) {
            self.inner.limiter.sign_in_succeeded(&v.user.name);
        }
        match r {
            // Every session ended with the old password, this one too.
            Ok(()) => with_cookie(
                redirect("/console/login?done=password"),
                &self.cookie(super::SESSION_COOKIE, "", Some(0)),
            ),
            Err(ServiceError::Invalid { detail, .. }) => {
                self.account_page(
                    v,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    None,
                    Some(&format!("the new password {detail}")),
                )
                .await
            }
            Err(ServiceError::Forbidden(detail)) => {
                self.account_page(v, StatusCode::FORBIDDEN, None, Some(&detail))
                    .await
            }
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn sign_out(&self, v: &Visitor) -> Response {
        let (service, who, token) = (self.inner.service.clone(), v.who.clone(), v.token.clone());
        match blocking(move || service.sign_out(&who, &token)).await {
            Ok(()) => with_cookie(
                redirect("/console/login?done=signed-out"),
                &self.cookie(super::SESSION_COOKIE, "", Some(0)),
            ),
            Err(e) => error_page(Some(v), &e),
        }
    }

    pub(super) async fn sign_out_everywhere(&self, v: &Visitor) -> Response {
        let (service, who, name) = (
            self.inner.service.clone(),
            v.who.clone(),
            v.user.name.clone(),
        );
        match blocking(move || service.sign_out_everywhere(&who, &name)).await {
            Ok(()) => with_cookie(
                redirect("/console/login?done=signed-out"),
                &self.cookie(super::SESSION_COOKIE, "", Some(0)),
            ),
            Err(e) => error_page(Some(v), &e),
        }
    }
}

/// The chain's verification, walked again when it grew or a minute has
/// passed (a walk reads every entry).
fn verification(service: &crate::service::Service) -> Result<Verified, ServiceError> {
    let now = crate::clock::now_ms();
    if let Ok(cached) = VERIFIED.lock()
        && let Some(v) = cached.as_ref()
        && now - v.at < 60_000
    {
        return Ok(v.clone());
    }
    let verified = Verified {
        outcome: service.verify_audit().map_err(|e| e.to_string()),
        at: now,
    };
    if let Ok(mut cached) = VERIFIED.lock() {
        *cached = Some(verified.clone());
    }
    Ok(verified)
}
