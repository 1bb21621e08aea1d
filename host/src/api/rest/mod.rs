//! REST under `/v1`: JSON in, JSON out, errors as problem+json. Every
//! handler validates transport concerns (size, media type, JSON shape) and
//! hands the rest to `crate::service` on a blocking thread.
//!
//! | method and path | does |
//! |---|---|
//! | `POST /v1/namespaces` | create a namespace |
//! | `GET /v1/namespaces` | list namespaces |
//! | `GET /v1/namespaces/{ns}` | one namespace |
//! | `PATCH /v1/namespaces/{ns}` | change its settings |
//! | `DELETE /v1/namespaces/{ns}` | delete it and every memory in it (204) |
//! | `POST /v1/namespaces/{ns}/memories` | store a memory (201; 200 with `duplicate: true` for identical content) |
//! | `POST /v1/namespaces/{ns}/memories/bulk` | store up to 100 memories, each answered on its own |
//! | `GET /v1/namespaces/{ns}/memories` | list: `tags=a,b`, `agent`, `since`, `until` (Unix ms), `cursor`, `limit` |
//! | `GET /v1/namespaces/{ns}/memories/{id}` | one memory |
//! | `PATCH /v1/namespaces/{ns}/memories/{id}` | a new version |
//! | `DELETE /v1/namespaces/{ns}/memories/{id}` | forget it (204) |
//! | `GET /v1/namespaces/{ns}/entities` | what its memories name, with counts, paged: `page`, `limit` |
//! | `GET /v1/namespaces/{ns}/gazetteer` | its aliases: `{"aliases": {"Bob": "Bob Smith"}}` |
//! | `PUT /v1/namespaces/{ns}/gazetteer` | replace them (admins); applies at once to entities, filters, listing |
//! | `GET /v1/namespaces/{ns}/memories/{id}/history` | its versions, oldest first, paged: `after` (a version), `limit` |
//! | `POST /v1/namespaces/{ns}/recall` | the memories that best match a question |
//! | `GET /v1/admin/keys` | the keys the caller administers |
//! | `POST /v1/admin/keys` | create a key (201; the key is in the body, shown once) |
//! | `DELETE /v1/admin/keys/{id}` | revoke a key |
//! | `GET /v1/admin/audit` | audit entries: `after` (sequence number), `limit` (global admins) |
//! | `GET /v1/approvals` | approvals the caller may see: `namespace`, `state`, `as=requester\|approver`, `cursor`, `limit` |
//! | `GET /v1/approvals/{id}` | one approval, with what it would do while open |
//! | `POST /v1/approvals/{id}/votes` | approve or reject (`payload_hash` as seen); an approving tally runs the action |
//! | `POST /v1/approvals/{id}/cancel` | withdraw it (requester or namespace admin) |
//! | `GET /v1/openapi.json` | this API as OpenAPI 3.1 |
//!
//! Every change (store, bulk items, update, forget, settings, delete,
//! reindex) may answer `202` with `Location: /v1/approvals/{id}` when the
//! namespace's policy holds it: nothing was written yet.
//!
//! Every route needs `Authorization: Bearer <key>` (see `auth`); what each
//! role may do is decided in `crate::service`, the same for REST and MCP.

pub mod auth;
pub mod openapi;
pub mod problem;
mod transfer;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::auth::Principal;
use crate::auth::keys::KeyInfo;
use crate::governance::{PendingAction, State};
use crate::service::approvals::{ApprovalQuery, NewVote, Perspective};
use crate::service::gazetteer::Gazetteer;
use crate::service::recall::RecallQuery;
use crate::service::{
    Filters, ListQuery, Memory, MemoryPatch, Namespace, NamespaceSettings, NewKey, NewMemory,
    Service, ServiceError,
};
use problem::{Problem, ProblemRejection};

/// Largest request body, in bytes.
pub const MAX_BODY: u64 = 1 << 20;
/// Deepest JSON nesting accepted.
pub const MAX_DEPTH: usize = 32;
/// Most memories in one bulk request.
pub const MAX_BULK: usize = 100;

/// Reject bodies whose nesting exceeds [`MAX_DEPTH`], before parsing.
fn too_deep(body: &[u8]) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parse a JSON body into `T`, as problems: not JSON → 400, JSON of the
/// wrong shape (unknown or missing fields, wrong types) → 422.
/// A request body as every route reads it: JSON by content type, nesting
/// bounded, an object (`null` as `{}` when `accept_null`), integral floats
/// as integers; else the problem to answer. Public for the fuzz targets.
pub fn read_json_body<T: serde::de::DeserializeOwned>(
    content_type: Option<String>,
    body: &[u8],
    accept_null: bool,
) -> Result<T, Problem> {
    let json = content_type
        .as_deref()
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as application/json",
        ));
    }
    if too_deep(body) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON",
            format!("JSON nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    let mut value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON",
            e.to_string(),
        )
    })?;
    // `3.0` is the integer 3 to JSON Schema, and so to every generated
    // client: read it as one.
    integral(&mut value);
    if value.is_null() && accept_null {
        value = serde_json::json!({});
    }
    // Every body is an object: serde would read a struct from an array too.
    if !value.is_object() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Invalid field",
            "the body must be a JSON object",
        ));
    }
    T::deserialize(value).map_err(|e| {
        let text = e.to_string();
        // The seed systems' gap: a peer could write under any identity
        // it claimed. Here the identity is the key's; say so.
        if text.starts_with("unknown field `agent_id`")
            || text.starts_with("unknown field `agent_type`")
        {
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid field",
                "agent_id and agent_type come from your API key, not from the body: remove them",
            );
        }
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Invalid field",
            text,
        )
    })
}

/// Numbers with no fraction, written as floats (`3.0`), as integers.
fn integral(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
            {
                if f >= 0.0 && f < u64::MAX as f64 {
                    *value = serde_json::Value::from(f as u64);
                } else if f < 0.0 && f >= i64::MIN as f64 {
                    *value = serde_json::Value::from(f as i64);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral),
        serde_json::Value::Object(map) => map.values_mut().for_each(integral),
        _ => {}
    }
}

/// A JSON body of type `T`, size-capped.
fn json_body<T: serde::de::DeserializeOwned + Send>()
-> impl Filter<Extract = (T,), Error = warp::Rejection> + Clone {
    body_of::<T>(false)
}

/// A JSON body of type `T`; `accept_null`: `null` reads as `{}`.
fn body_of<T: serde::de::DeserializeOwned + Send>(
    accept_null: bool,
) -> impl Filter<Extract = (T,), Error = warp::Rejection> + Clone {
    warp::body::content_length_limit(MAX_BODY)
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::bytes())
        .and_then(move |ct: Option<String>, body: bytes::Bytes| async move {
            read_json_body::<T>(ct, &body, accept_null)
                .map_err(|p| warp::reject::custom(ProblemRejection(p)))
        })
}

/// Like [`json_body`], but no body (or an empty one) means `T::default()`.
fn json_body_or_default<T: serde::de::DeserializeOwned + Default + Send>()
-> impl Filter<Extract = (T,), Error = warp::Rejection> + Clone {
    use warp::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
    let none = warp::header::headers_cloned().and_then(|h: warp::http::HeaderMap| async move {
        let empty = !h.contains_key(TRANSFER_ENCODING)
            && h.get(CONTENT_LENGTH).is_none_or(|v| v.as_bytes() == b"0");
        if empty {
            Ok(T::default())
        } else {
            Err(warp::reject())
        }
    });
    none.or(body_of::<T>(true)).unify()
}

/// `POST /v1/namespaces/{ns}/reindex`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReindexBody {
    /// The embedder to bind the namespace to (a loaded embedder plugin's
    /// id, or "none" for words only); default: its current one.
    #[serde(default)]
    pub embedder: Option<String>,
}

/// A namespace with how far its meaning index is.
#[derive(Serialize)]
struct NamespaceView {
    #[serde(flatten)]
    namespace: crate::service::Namespace,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<crate::service::indexing::IndexProgress>,
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

use warp::Reply;

/// Run a service call on a blocking thread and turn its error into a problem.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(ServiceError::Held(item))) => Err(held(&item)),
        Ok(Err(e)) => Err(Problem::from(&e).reply()),
        Err(e) => Err(Problem::from(&ServiceError::Internal(e.to_string())).reply()),
    }
}

/// The `Idempotency-Key` header, checked: a retried change that a policy
/// held answers with the same approval.
fn idempotency_key() -> impl Filter<Extract = (Option<String>,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("idempotency-key").and_then(|key: Option<String>| async move {
        match key {
            Some(k) if !Principal::valid_idempotency_key(&k) => {
                Err(warp::reject::custom(ProblemRejection(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "bad-idempotency-key",
                    "Bad Idempotency-Key",
                    "Idempotency-Key must be 1-255 visible ASCII characters",
                ))))
            }
            other => Ok(other),
        }
    })
}

/// What a held change answers: its approval, in brief.
pub fn held_body(item: &PendingAction) -> serde_json::Value {
    serde_json::json!({
        "status": "pending_approval",
        "approval": {
            "id": item.id,
            "state": item.state,
            "kind": item.kind,
            "namespace": item.namespace,
            "requirement": item.requirement,
            "expires_at": item.expires_at,
            "payload_hash": item.payload_hash,
        },
    })
}

/// `202 Accepted` with `Location: /v1/approvals/{id}`: nothing was written
/// yet.
fn held(item: &PendingAction) -> Response {
    let mut r = json(StatusCode::ACCEPTED, &held_body(item));
    if let Ok(v) = warp::http::HeaderValue::from_str(&format!("/v1/approvals/{}", item.id)) {
        r.headers_mut().insert(warp::http::header::LOCATION, v);
    }
    r
}

/// An approval id from the path; anything that is not a UUID names none.
fn approval_id(id: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(id).map_err(|_| Problem::from(&ServiceError::NoApproval(id.to_string())))
}

/// A memory id from the path; anything that is not a UUID names no memory.
fn memory_id(ns: &str, id: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(id).map_err(|_| {
        Problem::from(&ServiceError::NoMemory {
            namespace: ns.to_string(),
            id: id.to_string(),
        })
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateNamespace {
    name: String,
    #[serde(default)]
    embedder: Option<String>,
    #[serde(default)]
    extractor: Option<String>,
    #[serde(default)]
    redaction: Option<crate::service::RedactionMode>,
    #[serde(default)]
    redactor: Option<String>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    policy_plugin: Option<String>,
    #[serde(default)]
    approval_ttl_seconds: Option<u64>,
    #[serde(default)]
    human_votes: Option<crate::service::HumanVotes>,
    #[serde(default)]
    description: Option<String>,
}

/// Settings as sent: all optional; what is absent stays as it was.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = NamespaceSettingsPatch)]
#[serde(deny_unknown_fields)]
struct NamespaceSettingsInput {
    #[serde(default)]
    redaction: Option<crate::service::RedactionMode>,
    #[serde(default)]
    redactor: Option<String>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    policy_plugin: Option<String>,
    #[serde(default)]
    approval_ttl_seconds: Option<u64>,
    #[serde(default)]
    human_votes: Option<crate::service::HumanVotes>,
    #[serde(default)]
    description: Option<String>,
}

impl NamespaceSettingsInput {
    fn apply(self, mut base: NamespaceSettings) -> NamespaceSettings {
        if let Some(r) = self.redaction {
            base.redaction = r;
        }
        if let Some(r) = self.redactor {
            base.redactor = r;
        }
        if let Some(p) = self.policy {
            base.policy = p;
        }
        if let Some(p) = self.policy_plugin {
            base.policy_plugin = p;
        }
        if self.approval_ttl_seconds.is_some() {
            base.approval_ttl_seconds = self.approval_ttl_seconds;
        }
        if let Some(h) = self.human_votes {
            base.human_votes = h;
        }
        if self.description.is_some() {
            base.description = self.description;
        }
        base
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    tags: Option<String>,
    agent: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    cursor: Option<Uuid>,
    limit: Option<usize>,
}

/// `POST …/memories/bulk` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BulkStore {
    /// Up to 100 memories, each as `POST …/memories` takes it; each is
    /// stored or refused on its own.
    #[schema(value_type = Vec<NewMemory>)]
    memories: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct StoredBody<'a> {
    #[serde(flatten)]
    memory: &'a Memory,
    created: bool,
    duplicate: bool,
}

/// `POST …/memories?wait=indexed`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreParams {
    wait: Option<WaitFor>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum WaitFor {
    Indexed,
}

/// Longest `?wait=indexed` holds a request.
const WAIT_INDEXED: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Serialize)]
struct NamespaceList<'a> {
    namespaces: &'a [Namespace],
}

#[derive(Serialize)]
struct MemoryPage<'a> {
    memories: &'a [Memory],
    next_cursor: Option<Uuid>,
}

#[derive(Serialize)]
struct Versions<'a> {
    versions: &'a [Memory],
    /// Pass as `after` for the next page; null on the last.
    next_after: Option<u32>,
}

/// `GET …/entities` paging.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityParams {
    /// A `next_page` of the previous page.
    page: Option<String>,
    /// At most this many (1–500, default 100).
    limit: Option<u64>,
}

/// `GET …/history` paging.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    /// Versions after this one (default 0: from the first).
    after: Option<u64>,
    /// At most this many (1–100, default 50).
    limit: Option<usize>,
}

/// A matched route, waiting for the caller's principal. Routes are matched
/// first and run after authentication, so the credential check happens
/// once per request, not once per route tried.
type Action = Box<
    dyn FnOnce(Principal) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>
        + Send,
>;

/// Wrap a handler as an [`Action`]; an `Err` response is a problem reply.
fn act<F, Fut>(f: F) -> Action
where
    F: FnOnce(Principal) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Response, Response>> + Send + 'static,
{
    Box::new(move |who| Box::pin(async move { f(who).await.unwrap_or_else(|e| e) }))
}

#[derive(Serialize)]
struct CreatedKey<'a> {
    /// The key itself: shown once, never again.
    key: &'a str,
    #[serde(flatten)]
    info: &'a KeyInfo,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalParams {
    namespace: Option<String>,
    state: Option<String>,
    r#as: Option<Perspective>,
    cursor: Option<Uuid>,
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    after: Option<u64>,
    limit: Option<usize>,
}

/// A 405 says which methods the path takes (RFC 9110).
pub fn with_allow(
    path: warp::path::FullPath,
    mut response: warp::reply::Response,
) -> warp::reply::Response {
    use warp::http::{HeaderValue, StatusCode, header::ALLOW};
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && !response.headers().contains_key(ALLOW)
        && let Some(methods) = openapi::allowed_methods(path.as_str())
        && let Ok(value) = HeaderValue::from_str(&methods)
    {
        response.headers_mut().insert(ALLOW, value);
    }
    response
}

/// Every `/v1` route, behind the credential check of `gate`.
pub fn routes(service: Service, gate: auth::Gate) -> warp::filters::BoxedFilter<(Response,)> {
    let svc = warp::any().map(move || service.clone());
    let ns_root = warp::path("namespaces");

    let create_ns = ns_root
        .and(warp::path::end())
        .and(warp::post())
        .and(svc.clone())
        .and(json_body::<CreateNamespace>())
        .map(|s: Service, body: CreateNamespace| {
            act(move |who| async move {
                let mut settings = NamespaceSettingsInput {
                    redaction: body.redaction,
                    redactor: body.redactor,
                    policy: body.policy,
                    policy_plugin: body.policy_plugin,
                    approval_ttl_seconds: body.approval_ttl_seconds,
                    human_votes: body.human_votes,
                    description: body.description,
                }
                .apply(NamespaceSettings::default());
                settings.embedder = body.embedder;
                settings.extractor = body.extractor;
                let ns = blocking(move || s.create_namespace(&who, &body.name, settings)).await?;
                Ok(json(StatusCode::CREATED, &ns))
            })
        });

    let list_ns = ns_root
        .and(warp::path::end())
        .and(warp::get())
        .and(svc.clone())
        .map(|s: Service| {
            act(move |who| async move {
                let all = blocking(move || s.namespaces(&who)).await?;
                Ok(json(StatusCode::OK, &NamespaceList { namespaces: &all }))
            })
        });

    let get_ns = ns_root
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::get())
        .and(svc.clone())
        .map(|name: String, s: Service| {
            act(move |who| async move {
                let (namespace, index) =
                    blocking(move || s.namespace_with_index(&who, &name)).await?;
                let view = NamespaceView { namespace, index };
                Ok(json(StatusCode::OK, &view))
            })
        });

    let reindex_ns = ns_root
        .and(warp::path::param::<String>())
        .and(warp::path("reindex"))
        .and(warp::path::end())
        .and(warp::post())
        .and(svc.clone())
        .and(json_body_or_default::<ReindexBody>())
        .map(|name: String, s: Service, body: ReindexBody| {
            act(move |who| async move {
                let started =
                    blocking(move || s.reindex_namespace(&who, &name, body.embedder.as_deref()))
                        .await?;
                Ok(json(StatusCode::ACCEPTED, &started))
            })
        });

    let patch_ns = ns_root
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::patch())
        .and(svc.clone())
        .and(json_body::<NamespaceSettingsPatch>())
        .map(|name: String, s: Service, body: NamespaceSettingsPatch| {
            act(move |who| async move {
                let ns = blocking(move || {
                    s.update_namespace(&who, &name, |current| body.0.apply(current))
                })
                .await?;
                Ok(json(StatusCode::OK, &ns))
            })
        });

    let delete_ns = ns_root
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::delete())
        .and(svc.clone())
        .map(|name: String, s: Service| {
            act(move |who| async move {
                blocking(move || s.delete_namespace(&who, &name)).await?;
                Ok(StatusCode::NO_CONTENT.into_response())
            })
        });

    let memories = ns_root
        .and(warp::path::param::<String>())
        .and(warp::path("memories"));

    let store = memories
        .and(warp::path::end())
        .and(warp::post())
        .and(svc.clone())
        .and(warp::query::<StoreParams>())
        .and(json_body::<NewMemory>())
        .map(
            |ns: String, s: Service, params: StoreParams, body: NewMemory| {
                act(move |who| async move {
                    let (svc, name) = (s.clone(), ns.clone());
                    let mut stored = blocking(move || svc.store(&who, &name, body)).await?;
                    if stored.indexing && params.wait == Some(WaitFor::Indexed) {
                        // Checked when the indexer settles jobs (and once a
                        // second): a waiting request holds no thread of the
                        // blocking pool, which authentication and every
                        // other request share, and costs nothing between
                        // checks.
                        let until = tokio::time::Instant::now() + WAIT_INDEXED;
                        let id = stored.memory.id;
                        let advanced = s.index_advanced();
                        loop {
                            // Made before the check, so progress during it
                            // is not missed.
                            let next = advanced.notified();
                            let (svc, name) = (s.clone(), ns.clone());
                            let now = tokio::time::Instant::now();
                            if blocking(move || svc.indexed(&name, &id)).await? || now >= until {
                                break;
                            }
                            let recheck = until.min(now + std::time::Duration::from_secs(1));
                            let _ = tokio::time::timeout_at(recheck, next).await;
                        }
                    }
                    stored.memory = blocking(move || s.current_status(&ns, stored.memory)).await?;
                    let status = if stored.created {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    Ok(json(
                        status,
                        &StoredBody {
                            memory: &stored.memory,
                            created: stored.created,
                            duplicate: !stored.created,
                        },
                    ))
                })
            },
        );

    let bulk = memories
        .and(warp::path("bulk"))
        .and(warp::path::end())
        .and(warp::post())
        .and(svc.clone())
        .and(json_body::<BulkStore>())
        .map(|ns: String, s: Service, body: BulkStore| {
            act(move |who| async move {
                if body.memories.len() > MAX_BULK {
                    return Err(Problem::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too-large",
                        "Too large",
                        format!("at most {MAX_BULK} memories per bulk request"),
                    )
                    .reply());
                }
                let outcomes = blocking(move || s.store_many(&who, &ns, body.memories)).await?;
                let results: Vec<serde_json::Value> = outcomes
                    .into_iter()
                    .map(|outcome| match outcome {
                        Ok(stored) => serde_json::json!({
                            "status": if stored.created { 201 } else { 200 },
                            "memory": stored.memory,
                            "duplicate": !stored.created,
                        }),
                        Err(ServiceError::Held(item)) => {
                            let mut body = held_body(&item);
                            body["status"] = 202.into();
                            body
                        }
                        Err(e) => serde_json::to_value(Problem::from(&e)).unwrap_or_default(),
                    })
                    .collect();
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({ "results": results }),
                ))
            })
        });

    let list = memories
        .and(warp::path::end())
        .and(warp::get())
        .and(svc.clone())
        .and(warp::query::<ListParams>())
        .map(|ns: String, s: Service, p: ListParams| {
            act(move |who| async move {
                let q = ListQuery {
                    filters: Filters {
                        tags: p
                            .tags
                            .map(|t| {
                                t.split(',')
                                    .map(|x| x.trim().to_string())
                                    .filter(|x| !x.is_empty())
                                    .collect()
                            })
                            .unwrap_or_default(),
                        agent_id: p.agent,
                        since: p.since,
                        until: p.until,
                    },
                    cursor: p.cursor,
                    limit: p.limit,
                };
                let page = blocking(move || s.list(&who, &ns, &q)).await?;
                Ok(json(
                    StatusCode::OK,
                    &MemoryPage {
                        memories: &page.memories,
                        next_cursor: page.next_cursor,
                    },
                ))
            })
        });

    let entities = ns_root
        .and(warp::path::param::<String>())
        .and(warp::path("entities"))
        .and(warp::path::end())
        .and(warp::get())
        .and(svc.clone())
        .and(warp::query::<EntityParams>())
        .map(|ns: String, s: Service, p: EntityParams| {
            act(move |who| async move {
                let page =
                    blocking(move || s.entities(&who, &ns, p.page.as_deref(), p.limit)).await?;
                Ok(json(StatusCode::OK, &page))
            })
        });

    let gazetteer = ns_root
        .and(warp::path::param::<String>())
        .and(warp::path("gazetteer"))
        .and(warp::path::end());
    let get_gazetteer =
        gazetteer
            .and(warp::get())
            .and(svc.clone())
            .map(|ns: String, s: Service| {
                act(move |who| async move {
                    let g = blocking(move || s.gazetteer(&who, &ns)).await?;
                    Ok(json(StatusCode::OK, &g))
                })
            });
    let put_gazetteer = gazetteer
        .and(warp::put())
        .and(svc.clone())
        .and(json_body::<Gazetteer>())
        .map(|ns: String, s: Service, g: Gazetteer| {
            act(move |who| async move {
                let g = blocking(move || s.set_gazetteer(&who, &ns, g)).await?;
                Ok(json(StatusCode::OK, &g))
            })
        });

    let recall = ns_root
        .and(warp::path::param::<String>())
        .and(warp::path("recall"))
        .and(warp::path::end())
        .and(warp::post())
        .and(svc.clone())
        .and(json_body::<RecallQuery>())
        .map(|ns: String, s: Service, q: RecallQuery| {
            act(move |who| async move {
                let results = blocking(move || s.recall(&who, &ns, &q)).await?;
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({ "results": results }),
                ))
            })
        });

    let recall_across = warp::path("recall")
        .and(warp::path::end())
        .and(warp::post())
        .and(svc.clone())
        .and(json_body::<RecallQuery>())
        .map(|s: Service, q: RecallQuery| {
            act(move |who| async move {
                let results = blocking(move || s.recall_across(&who, &q)).await?;
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({ "results": results }),
                ))
            })
        });

    let one = memories.and(warp::path::param::<String>());

    let get = one
        .and(warp::path::end())
        .and(warp::get())
        .and(svc.clone())
        .map(|ns: String, id: String, s: Service| {
            act(move |who| async move {
                let id = memory_id(&ns, &id).map_err(|p| p.reply())?;
                let m = blocking(move || s.get(&who, &ns, &id)).await?;
                Ok(json(StatusCode::OK, &m))
            })
        });

    let patch = one
        .and(warp::path::end())
        .and(warp::patch())
        .and(svc.clone())
        .and(json_body::<MemoryPatch>())
        .map(|ns: String, id: String, s: Service, body: MemoryPatch| {
            act(move |who| async move {
                let id = memory_id(&ns, &id).map_err(|p| p.reply())?;
                let m = blocking(move || s.update(&who, &ns, &id, body)).await?;
                Ok(json(StatusCode::OK, &m))
            })
        });

    let delete = one
        .and(warp::path::end())
        .and(warp::delete())
        .and(svc.clone())
        .map(|ns: String, id: String, s: Service| {
            act(move |who| async move {
                let id = memory_id(&ns, &id).map_err(|p| p.reply())?;
                blocking(move || s.forget(&who, &ns, &id)).await?;
                Ok(StatusCode::NO_CONTENT.into_response())
            })
        });

    let history = one
        .and(warp::path("history"))
        .and(warp::path::end())
        .and(warp::get())
        .and(svc.clone())
        .and(warp::query::<HistoryParams>())
        .map(|ns: String, id: String, s: Service, p: HistoryParams| {
            act(move |who| async move {
                let id = memory_id(&ns, &id).map_err(|p| p.reply())?;
                // No version is past u32::MAX: a larger `after` is past them all.
                let after = u32::try_from(p.after.unwrap_or(0)).unwrap_or(u32::MAX);
                let (versions, next_after) =
                    blocking(move || s.history(&who, &ns, &id, after, p.limit)).await?;
                Ok(json(
                    StatusCode::OK,
                    &Versions {
                        versions: &versions,
                        next_after,
                    },
                ))
            })
        });

    let admin = warp::path("admin");
    let keys_root = admin.and(warp::path("keys"));

    let list_keys = keys_root
        .and(warp::path::end())
        .and(warp::get())
        .and(svc.clone())
        .map(|s: Service| {
            act(move |who| async move {
                let keys = blocking(move || s.list_keys(&who)).await?;
                Ok(json(StatusCode::OK, &serde_json::json!({ "keys": keys })))
            })
        });

    let create_key = keys_root
        .and(warp::path::end())
        .and(warp::post())
        .and(svc.clone())
        .and(json_body::<NewKey>())
        .map(|s: Service, body: NewKey| {
            act(move |who| async move {
                let (key, info) = blocking(move || s.create_key(&who, body)).await?;
                Ok(json(
                    StatusCode::CREATED,
                    &CreatedKey {
                        key: &key,
                        info: &info,
                    },
                ))
            })
        });

    let revoke_key = keys_root
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::delete())
        .and(svc.clone())
        .map(|id: String, s: Service| {
            act(move |who| async move {
                let info = blocking(move || s.revoke_key(&who, &id)).await?;
                Ok(json(StatusCode::OK, &info))
            })
        });

    let audit = admin
        .and(warp::path("audit"))
        .and(warp::path::end())
        .and(warp::get())
        .and(svc.clone())
        .and(warp::query::<AuditParams>())
        .map(|s: Service, p: AuditParams| {
            act(move |who| async move {
                let entries = blocking(move || {
                    s.audit_entries(&who, p.after.unwrap_or(0), p.limit.unwrap_or(100))
                })
                .await?;
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({ "entries": entries }),
                ))
            })
        });

    let approvals_root = warp::path("approvals");

    let list_approvals = approvals_root
        .and(warp::path::end())
        .and(warp::get())
        .and(svc.clone())
        .and(warp::query::<ApprovalParams>())
        .map(|s: Service, p: ApprovalParams| {
            act(move |who| async move {
                let state = match p.state.as_deref() {
                    None => None,
                    Some(text) => Some(State::parse(text).ok_or_else(|| {
                        Problem::new(
                            StatusCode::BAD_REQUEST,
                            "bad-query",
                            "Bad query",
                            format!("state \"{text}\" is not one of pending, executed, failed, rejected, expired, cancelled, superseded"),
                        )
                        .reply()
                    })?),
                };
                let q = ApprovalQuery {
                    namespace: p.namespace,
                    state,
                    role: p.r#as,
                    cursor: p.cursor,
                    limit: p.limit,
                };
                let page = blocking(move || s.approvals(&who, &q)).await?;
                Ok(json(StatusCode::OK, &page))
            })
        });

    let get_approval = approvals_root
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::get())
        .and(svc.clone())
        .map(|id: String, s: Service| {
            act(move |who| async move {
                let id = approval_id(&id).map_err(|p| p.reply())?;
                let view = blocking(move || s.approval(&who, &id)).await?;
                Ok(json(StatusCode::OK, &view))
            })
        });

    let vote = approvals_root
        .and(warp::path::param::<String>())
        .and(warp::path("votes"))
        .and(warp::path::end())
        .and(warp::post())
        .and(svc.clone())
        .and(json_body::<NewVote>())
        .map(|id: String, s: Service, body: NewVote| {
            act(move |who| async move {
                let id = approval_id(&id).map_err(|p| p.reply())?;
                let view = blocking(move || s.vote(&who, &id, body)).await?;
                Ok(json(StatusCode::OK, &view))
            })
        });

    let cancel = approvals_root
        .and(warp::path::param::<String>())
        .and(warp::path("cancel"))
        .and(warp::path::end())
        .and(warp::post())
        .and(svc.clone())
        .map(|id: String, s: Service| {
            act(move |who| async move {
                let id = approval_id(&id).map_err(|p| p.reply())?;
                let view = blocking(move || s.cancel_approval(&who, &id)).await?;
                Ok(json(StatusCode::OK, &view))
            })
        });

    let doc = serde_json::to_vec(&openapi::document()).unwrap_or_default();
    let openapi = warp::path("openapi.json")
        .and(warp::path::end())
        .and(warp::get())
        .map(move || {
            let doc = doc.clone();
            act(move |_who| async move {
                let mut r = Response::new(doc.into());
                r.headers_mut().insert(
                    warp::http::header::CONTENT_TYPE,
                    warp::http::HeaderValue::from_static("application/json"),
                );
                Ok(r)
            })
        });

    // Boxing each step keeps the filter type shallow enough for release
    // builds (an unboxed chain of this length overflows the trait solver).
    let mut all: warp::filters::BoxedFilter<(Action,)> = openapi.boxed();
    all = all.or(create_ns).unify().boxed();
    all = all.or(list_ns).unify().boxed();
    all = all.or(get_ns).unify().boxed();
    all = all.or(patch_ns).unify().boxed();
    all = all.or(delete_ns).unify().boxed();
    all = all.or(reindex_ns).unify().boxed();
    all = all
        .or(transfer::routes(ns_root, svc.clone()))
        .unify()
        .boxed();
    all = all.or(recall).unify().boxed();
    all = all.or(entities).unify().boxed();
    all = all.or(get_gazetteer).unify().boxed();
    all = all.or(put_gazetteer).unify().boxed();
    all = all.or(recall_across).unify().boxed();
    all = all.or(bulk).unify().boxed();
    all = all.or(store).unify().boxed();
    all = all.or(list).unify().boxed();
    all = all.or(history).unify().boxed();
    all = all.or(get).unify().boxed();
    all = all.or(patch).unify().boxed();
    all = all.or(delete).unify().boxed();
    all = all.or(list_keys).unify().boxed();
    all = all.or(create_key).unify().boxed();
    all = all.or(revoke_key).unify().boxed();
    all = all.or(audit).unify().boxed();
    all = all.or(list_approvals).unify().boxed();
    all = all.or(get_approval).unify().boxed();
    all = all.or(vote).unify().boxed();
    all = all.or(cancel).unify().boxed();
    warp::path("v1")
        .and(auth::principal(gate))
        .and(idempotency_key())
        .and(all)
        .then(|mut who: Principal, key: Option<String>, action: Action| {
            who.idempotency_key = key;
            action(who)
        })
        .recover(problem::recover)
        .unify()
        .boxed()
}

/// `GET /metrics` on the main port: for a key with the global admin role.
/// (A scraper without one uses `[server] metrics_listen`.)
pub fn metrics(service: Service, gate: auth::Gate) -> warp::filters::BoxedFilter<(Response,)> {
    // Recovered inside the path match: a problem for this route only,
    // never a 404 that would shadow the routes after it.
    let answer = auth::principal(gate)
        .then(move |who: Principal| {
            let s = service.clone();
            async move {
                if !who.is_global_admin() {
                    return Problem::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        "Forbidden",
                        format!(
                            "key {} is not a global admin (*=admin): /metrics shows the whole server; give a scraper the metrics listener ([server] metrics_listen) instead",
                            who.key_id
                        ),
                    )
                    .reply();
                }
                metrics_reply(s).await
            }
        })
        .recover(problem::recover)
        .unify();
    warp::path("metrics")
        .and(warp::path::end())
        .and(warp::get())
        .and(answer)
        .boxed()
}

/// The metrics, with the state ones read now.
pub async fn metrics_reply(service: Service) -> Response {
    let text = tokio::task::spawn_blocking(move || {
        if let Err(e) = service.observe_metrics() {
            tracing::warn!(error = %e, "reading the state metrics failed; serving the others");
        }
        crate::metrics::render()
    })
    .await
    .unwrap_or_default();
    let mut r = warp::reply::Reply::into_response(text);
    r.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    r
}

/// `PATCH /v1/namespaces/{ns}`: only the settings to change.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
struct NamespaceSettingsPatch(NamespaceSettingsInput);
