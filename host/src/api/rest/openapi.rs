//! The OpenAPI 3.1 document served at `/v1/openapi.json`, generated from the
//! request and response types themselves (utoipa). Each `#[utoipa::path]`
//! below describes one route of `super::routes`; a test drives every
//! documented route against the real server so the two cannot drift.
#![allow(dead_code)]

use utoipa::OpenApi;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use super::problem::Problem;
use super::{BulkStore, NamespaceSettingsInput, ReindexBody};
use crate::audit::Entry;
use crate::auth::keys::{KeyFields, KeyInfo, Rate, Revocation};
use crate::auth::{Grant, Role};
use crate::governance::{Kind, PendingAction, PolicySnapshot, Requester, Requirement, State, Vote};
use crate::service::approvals::{ApprovalView, NewVote, VoteDecision};
use crate::service::gazetteer::{Gazetteer, MAX_ALIAS_CHARS, MAX_ALIASES};
use crate::service::recall::{Fusion, Hit, RecallMode, RecallQuery};
use crate::service::{
    HumanVotes, Memory, MemoryPatch, Namespace, NamespaceSettings, NewKey, NewMemory, RedactionMode,
};
use crate::transfer::ImportReport;

/// `POST /v1/namespaces` body.
#[derive(utoipa::ToSchema)]
#[allow(unused)]
struct CreateNamespace {
    /// Lowercase letters, digits, `.`, `_`, `-`; 1–63 characters.
    name: String,
    redaction: Option<RedactionMode>,
    /// Redactor plugin id (default `redact-pii`).
    redactor: Option<String>,
    /// Governance rule (default `allow`).
    policy: Option<String>,
    /// Policy plugin id (default `policy-standard`).
    policy_plugin: Option<String>,
    /// How long a held change waits, in seconds (default 24 h).
    approval_ttl_seconds: Option<u64>,
    /// Whose votes count as a `human`'s: `any` (console users and keys
    /// typed `human`, default) or `console` (signed-in people only).
    human_votes: Option<HumanVotes>,
    /// Embedder plugin id (bound for good; its dimensions are recorded).
    embedder: Option<String>,
    /// Extractor plugin id (bound for good; default `extract-entities` when
    /// loaded; `none`: no entities).
    extractor: Option<String>,
    description: Option<String>,
}

#[utoipa::path(post, path = "/v1/namespaces", request_body = CreateNamespace,
    responses((status = 201, body = Namespace), (status = 409, body = Problem), (status = 422, body = Problem)))]
fn create_namespace() {}

#[utoipa::path(get, path = "/v1/namespaces", responses((status = 200, description = "`{namespaces: [Namespace]}`")))]
fn list_namespaces() {}

#[utoipa::path(get, path = "/v1/namespaces/{ns}", params(("ns" = String, Path)),
    responses((status = 200, body = Namespace), (status = 404, body = Problem)))]
fn get_namespace() {}

#[utoipa::path(patch, path = "/v1/namespaces/{ns}", params(("ns" = String, Path)), request_body = NamespaceSettingsInput,
    responses((status = 202, description = "held for approval by the namespace's policy: `{status: pending_approval, approval: {id, state, requirement, expires_at, payload_hash}}`, `Location: /v1/approvals/{id}`; nothing was written yet"), (status = 403, body = Problem, description = "`policy-denied`"), (status = 200, body = Namespace), (status = 404, body = Problem), (status = 422, body = Problem)))]
fn patch_namespace() {}

#[utoipa::path(delete, path = "/v1/namespaces/{ns}", params(("ns" = String, Path)),
    responses((status = 202, description = "held for approval by the namespace's policy: `{status: pending_approval, approval: {id, state, requirement, expires_at, payload_hash}}`, `Location: /v1/approvals/{id}`; nothing was written yet"), (status = 403, body = Problem, description = "`policy-denied`"), (status = 204, description = "deleted with every memory in it; its data key is gone"), (status = 403, body = Problem), (status = 404, body = Problem)))]
fn delete_namespace() {}

#[utoipa::path(post, path = "/v1/namespaces/{ns}/memories", params(("ns" = String, Path), ("wait" = Option<String>, Query, description = "`indexed`: answer once the memory is searchable by meaning (at most 30 s)")), request_body = NewMemory,
    responses((status = 202, description = "held for approval by the namespace's policy: `{status: pending_approval, approval: {id, state, requirement, expires_at, payload_hash}}`, `Location: /v1/approvals/{id}`; nothing was written yet"), (status = 403, body = Problem, description = "`policy-denied`"), (status = 201, body = Memory, description = "stored; also `created`, `duplicate`"),
        (status = 200, body = Memory, description = "identical content already stored (`duplicate: true`)"),
        (status = 404, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem)))]
fn store_memory() {}

#[utoipa::path(post, path = "/v1/namespaces/{ns}/memories/bulk", params(("ns" = String, Path)), request_body = BulkStore,
    responses((status = 200, description = "`{results: [...]}`, one status or problem per item"), (status = 404, body = Problem)))]
fn bulk_store() {}

#[utoipa::path(get, path = "/v1/namespaces/{ns}/memories",
    params(("ns" = String, Path), ("tags" = Option<String>, Query), ("agent" = Option<String>, Query),
        ("since" = Option<i64>, Query), ("until" = Option<i64>, Query), ("cursor" = Option<String>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, description = "`{memories: [Memory], next_cursor}`"), (status = 404, body = Problem)))]
fn list_memories() {}

#[utoipa::path(get, path = "/v1/namespaces/{ns}/memories/{id}", params(("ns" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Memory), (status = 404, body = Problem)))]
fn get_memory() {}

#[utoipa::path(patch, path = "/v1/namespaces/{ns}/memories/{id}", params(("ns" = String, Path), ("id" = String, Path)),
    request_body = MemoryPatch, responses((status = 202, description = "held for approval by the namespace's policy: `{status: pending_approval, approval: {id, state, requirement, expires_at, payload_hash}}`, `Location: /v1/approvals/{id}`; nothing was written yet"), (status = 403, body = Problem, description = "`policy-denied`"), (status = 200, body = Memory), (status = 404, body = Problem), (status = 409, body = Problem)))]
fn patch_memory() {}

#[utoipa::path(delete, path = "/v1/namespaces/{ns}/memories/{id}", params(("ns" = String, Path), ("id" = String, Path)),
    responses((status = 202, description = "held for approval by the namespace's policy: `{status: pending_approval, approval: {id, state, requirement, expires_at, payload_hash}}`, `Location: /v1/approvals/{id}`; nothing was written yet"), (status = 403, body = Problem, description = "`policy-denied`"), (status = 204), (status = 404, body = Problem)))]
fn forget_memory() {}

#[utoipa::path(get, path = "/v1/namespaces/{ns}/memories/{id}/history", params(("ns" = String, Path), ("id" = String, Path),
        ("after" = Option<u32>, Query, description = "versions after this one (default 0)"),
        ("limit" = Option<u32>, Query, description = "at most this many, 1-100 (default 50)")),
    responses((status = 200, description = "`{versions: [Memory], next_after}`: oldest first, the current version last; pass `next_after` as `after` for the next page (null on the last)"), (status = 404, body = Problem)))]
fn memory_history() {}

#[utoipa::path(get, path = "/v1/namespaces/{ns}/entities", params(("ns" = String, Path),
        ("page" = Option<String>, Query, description = "the `next_page` of the previous page"),
        ("limit" = Option<u32>, Query, description = "at most this many, 1-500 (default 100)")),
    responses((status = 200, description = "`{entities: [{name, kind, memories}], next_page}`: the entities the namespace's extractor found in its memories' current versions, with how many memories name each, in an order that stays put between pages (names are sealed, so not alphabetical); pass `next_page` as `page` for the next page (null on the last)"), (status = 404, body = Problem), (status = 422, body = Problem)))]
fn namespace_entities() {}

#[utoipa::path(get, path = "/v1/namespaces/{ns}/gazetteer", params(("ns" = String, Path)),
    responses((status = 200, body = Gazetteer, description = "the namespace's aliases as its admin set them (`{aliases: {}}` when none)"), (status = 404, body = Problem)))]
fn get_gazetteer() {}

#[utoipa::path(put, path = "/v1/namespaces/{ns}/gazetteer", params(("ns" = String, Path)), request_body = Gazetteer,
    responses((status = 200, body = Gazetteer, description = "the aliases now in force, replacing the previous ones: from now on an alias is read as its name in the memories' `entities`, in recall's `entities` filter and in the entity listing (names compare trimmed, lowercase, spaces collapsed; an alias of an alias resolves to the end of the chain; a cycle is refused)"), (status = 404, body = Problem), (status = 422, body = Problem)))]
fn put_gazetteer() {}

#[utoipa::path(post, path = "/v1/namespaces/{ns}/recall", params(("ns" = String, Path)), request_body = RecallQuery,
    responses((status = 200, description = "`{results: [Hit]}`, best first"), (status = 404, body = Problem), (status = 422, body = Problem)))]
fn recall() {}

#[utoipa::path(post, path = "/v1/recall", request_body = RecallQuery,
    responses((status = 200, description = "`{results: [Hit]}` from every namespace searched (`namespaces`, default all the caller may read), best first"),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
fn recall_across() {}

#[utoipa::path(post, path = "/v1/namespaces/{ns}/reindex", params(("ns" = String, Path)), request_body = Option<ReindexBody>,
    responses((status = 202, description = "`{namespace, embedder, dimensions, index_generation, queued}`: re-embedding in the background; `GET /v1/namespaces/{ns}` shows `index.queued` going down"),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
fn reindex_namespace() {}

#[utoipa::path(get, path = "/v1/namespaces/{ns}/export", params(("ns" = String, Path),
        ("recipient" = String, Query, description = "age X25519 recipients (age1…), comma-separated: the export is encrypted to them"),
        ("versions" = Option<bool>, Query, description = "include each memory's earlier versions")),
    responses((status = 200, content_type = "application/octet-stream", description = "the namespace as an age file (streamed): gzip-compressed JSON Lines — a header, the namespace and its settings, one line per memory, an end line with the counts (docs/export.md); `age -d -i KEY FILE | gunzip` reads it. Needs admin on the namespace"),
        (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
fn export_namespace() {}

#[utoipa::path(post, path = "/v1/namespaces/{ns}/import", params(("ns" = String, Path),
        ("format" = Option<String>, Query, description = "auto (default), memhost, ai-memory or mem0"),
        ("on_conflict" = Option<String>, Query, description = "for a memory whose id is already there: skip (default), new-version or fail")),
    request_body(content = String, content_type = "application/octet-stream", description = "a decrypted memhost export (gzipped or not), an ai-memory export, or an OpenMemory/mem0 export (zip, memories.json, memories.jsonl.gz or get_all output); at most 64 MiB"),
    responses((status = 200, body = ImportReport, description = "what became of each memory: every one went through the same funnel as a store (redaction, policy — which may hold it —, indexing, audit) into `{ns}`"),
        (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem)))]
fn import_namespace() {}

#[utoipa::path(get, path = "/v1/admin/keys",
    responses((status = 200, description = "`{keys: [KeyInfo]}`: the keys the caller administers"), (status = 403, body = Problem)))]
fn list_keys() {}

#[utoipa::path(post, path = "/v1/admin/keys", request_body = NewKey,
    responses((status = 201, body = KeyInfo, description = "created; the body also holds `key`, shown only this once"),
        (status = 403, body = Problem), (status = 422, body = Problem)))]
fn create_key() {}

#[utoipa::path(delete, path = "/v1/admin/keys/{key_id}", params(("key_id" = String, Path)),
    responses((status = 200, body = Revocation, description = "revoked at once, with every key minted under it (`also_revoked`)"), (status = 403, body = Problem), (status = 404, body = Problem)))]
fn revoke_key() {}

#[utoipa::path(get, path = "/v1/admin/audit", params(("after" = Option<u64>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, description = "`{entries: [Entry]}`, oldest first"), (status = 403, body = Problem)))]
fn audit_log() {}

#[utoipa::path(get, path = "/v1/approvals",
    params(("namespace" = Option<String>, Query), ("state" = Option<String>, Query, description = "pending, executed, failed, rejected, expired, cancelled or superseded"),
        ("as" = Option<String>, Query, description = "`requester`: what the caller's agent asked for; `approver`: open items it may vote on"),
        ("cursor" = Option<String>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, description = "`{approvals: [ApprovalView], next_cursor}`: the approvals the caller may see, oldest first"), (status = 400, body = Problem)))]
fn list_approvals() {}

#[utoipa::path(get, path = "/v1/approvals/{approval_id}", params(("approval_id" = String, Path)),
    responses((status = 200, body = ApprovalView), (status = 404, body = Problem)))]
fn get_approval() {}

#[utoipa::path(post, path = "/v1/approvals/{approval_id}/votes", params(("approval_id" = String, Path)), request_body = NewVote,
    responses((status = 200, body = ApprovalView, description = "the vote counted (a repeat is not counted); `executed` when it decided"),
        (status = 403, body = Problem, description = "`self-approval`, `not-an-approver`"),
        (status = 404, body = Problem),
        (status = 409, body = Problem, description = "`approval-closed`, `approval-expired`, `stale-approval`"),
        (status = 503, body = Problem, description = "`policy-failed`: the vote was not counted")))]
fn vote_approval() {}

#[utoipa::path(post, path = "/v1/approvals/{approval_id}/cancel", params(("approval_id" = String, Path)),
    responses((status = 200, body = ApprovalView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
fn cancel_approval() {}

#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "this document")))]
fn openapi_document() {}

/// Every route needs `Authorization: Bearer <key>`.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "memhost", description = "Memory server for AI agents"),
    paths(
        create_namespace,
        list_namespaces,
        get_namespace,
        patch_namespace,
        delete_namespace,
        store_memory,
        bulk_store,
        list_memories,
        get_memory,
        patch_memory,
        forget_memory,
        memory_history,
        namespace_entities,
        get_gazetteer,
        put_gazetteer,
        recall,
        recall_across,
        reindex_namespace,
        export_namespace,
        import_namespace,
        list_keys,
        create_key,
        revoke_key,
        audit_log,
        list_approvals,
        get_approval,
        vote_approval,
        cancel_approval,
        openapi_document
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(
        ImportReport,
        Namespace,
        NamespaceSettings,
        RedactionMode,
        HumanVotes,
        Memory,
        NewMemory,
        MemoryPatch,
        Problem,
        CreateNamespace,
        NewKey,
        KeyInfo,
        Revocation,
        KeyFields,
        RecallQuery,
        ReindexBody,
        BulkStore,
        NamespaceSettingsInput,
        RecallMode,
        Fusion,
        Hit,
        Grant,
        Role,
        Rate,
        Entry,
        ApprovalView,
        PendingAction,
        NewVote,
        VoteDecision,
        State,
        Kind,
        Requester,
        Requirement,
        PolicySnapshot,
        Vote,
        Gazetteer
    ))
)]
pub struct ApiDoc;

/// The document as JSON: the routes and types, then what every route
/// can answer besides success and the constraints the server enforces,
/// taken from the same constants the checks use.
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    complete_responses(&mut doc);
    constrain(&mut doc);
    doc
}

/// A documented route: its template, the template's segments, its methods.
type Route = (String, Vec<String>, Vec<String>);

/// The document's routes. Literal segments sort before `{…}` ones, so
/// `…/memories/bulk` is found before `…/memories/{id}`.
fn routes() -> &'static [Route] {
    static ROUTES: std::sync::LazyLock<Vec<Route>> = std::sync::LazyLock::new(|| {
        let doc = document();
        let Some(paths) = doc.get("paths").and_then(|p| p.as_object()) else {
            return Vec::new();
        };
        paths
            .iter()
            .map(|(template, item)| {
                let segments = template.split('/').map(str::to_string).collect();
                let methods = item
                    .as_object()
                    .map(|ops| ops.keys().map(|m| m.to_ascii_uppercase()).collect())
                    .unwrap_or_default();
                (template.clone(), segments, methods)
            })
            .collect()
    });
    &ROUTES
}

fn route_of(path: &str) -> Option<&'static Route> {
    let asked: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    routes().iter().find(|(_, template, _)| {
        template.len() == asked.len()
            && template
                .iter()
                .zip(&asked)
                .all(|(t, a)| t.starts_with('{') || t == a)
    })
}

/// The template a request path matches (`/v1/namespaces/{ns}/memories`),
/// if the document lists one.
pub fn route_template(path: &str) -> Option<&'static str> {
    route_of(path).map(|(template, _, _)| template.as_str())
}

/// The methods the document lists for `path` (a request path, matched
/// against the templates), as an `Allow` header value; `None` for a path
/// it does not list.
pub fn allowed_methods(path: &str) -> Option<String> {
    route_of(path).map(|(_, _, methods)| methods.join(", "))
}

/// Problem answers any route can give, and why.
const ANY_ROUTE: &[(&str, &str)] = &[
    (
        "400",
        "`bad-request` or `bad-query`: the body is not JSON, nests too deep, or a query parameter does not parse",
    ),
    (
        "401",
        "`unauthorized`: no key, or one that is unknown, revoked or expired",
    ),
    (
        "403",
        "`forbidden`: the key's roles do not reach this; `policy-denied`: the namespace's policy said no",
    ),
    (
        "429",
        "`rate-limited`: over the key's rate or concurrency (see `Retry-After`)",
    ),
    ("500", "`internal`: see the server log"),
    (
        "503",
        "`policy-failed` or `unavailable`: a plugin the answer needs is missing or failing",
    ),
];

/// Problem answers of routes that take a body.
const WITH_BODY: &[(&str, &str)] = &[
    ("408", "`request-timeout`: the body did not arrive in time"),
    (
        "413",
        "`too-large`: the body or a field is larger than allowed",
    ),
    ("415", "`unsupported-media-type`: send `application/json`"),
    (
        "422",
        "`validation`: a field is missing, unknown, of the wrong type or out of range",
    ),
];

/// Every operation answers the problems it can give, as
/// `application/problem+json`.
fn complete_responses(doc: &mut serde_json::Value) {
    let problem = serde_json::json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}});
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        let open = path == "/v1/openapi.json";
        for (_, op) in item.iter_mut() {
            let has_body = op.get("requestBody").is_some();
            let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut()) else {
                continue;
            };
            // A problem is a problem, whatever the route says it holds.
            for (status, response) in responses.iter_mut() {
                if status.starts_with('4') || status.starts_with('5') {
                    response["content"] = problem.clone();
                }
            }
            let mut add = |status: &str, why: &str| {
                responses.entry(status.to_string()).or_insert_with(
                    || serde_json::json!({"description": why, "content": problem.clone()}),
                );
            };
            if open {
                add("500", "`internal`: see the server log");
                continue;
            }
            for (status, why) in ANY_ROUTE {
                add(status, why);
            }
            if path.contains('{') {
                add(
                    "404",
                    "`*-not-found`: no such namespace, memory, key or approval (or not one the key may see)",
                );
            }
            if has_body {
                for (status, why) in WITH_BODY {
                    add(status, why);
                }
            } else {
                add("422", "`validation`: a path or query value is out of range");
            }
        }
    }
}

/// `name`: what the server takes as a namespace name.
const NAMESPACE_NAME: &str = "^[a-z0-9][a-z0-9._-]{0,62}$";
/// A plugin id.
const PLUGIN_ID: &str = "^[a-z][a-z0-9-]{0,63}$";
/// Holds a character that is not whitespace (Unicode White_Space, as the
/// server trims).
const NOT_BLANK: &str = "[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
/// No control characters.
const NO_CONTROL: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// No control characters but newlines.
const NO_CONTROL_BUT_NEWLINE: &str = "^[^\\u0000-\\u0009\\u000b-\\u001f\\u007f-\\u009f]*$";

/// Put the constraints the server enforces into the schemas and
/// parameters, so a request the document allows is one the server takes.
fn constrain(doc: &mut serde_json::Value) {
    use serde_json::json;
    let limits = crate::service::Limits::default();
    let set = |doc: &mut serde_json::Value, schema: &str, field: &str, add: serde_json::Value| {
        if let Some(prop) = doc
            .pointer_mut(&format!("/components/schemas/{schema}/properties/{field}"))
            .and_then(|p| p.as_object_mut())
            && let Some(add) = add.as_object()
        {
            prop.extend(add.clone());
        }
    };
    let text = |max: usize| json!({"minLength": 1, "maxLength": max, "pattern": NOT_BLANK});
    set(
        doc,
        "CreateNamespace",
        "name",
        json!({"pattern": NAMESPACE_NAME}),
    );
    for schema in ["CreateNamespace", "NamespaceSettingsPatch"] {
        set(
            doc,
            schema,
            "description",
            json!({"maxLength": crate::service::MAX_DESCRIPTION, "pattern": NO_CONTROL_BUT_NEWLINE}),
        );
        set(doc, schema, "redactor", json!({"pattern": PLUGIN_ID}));
        set(doc, schema, "policy_plugin", json!({"pattern": PLUGIN_ID}));
        set(doc, schema, "policy", text(256));
        set(
            doc,
            schema,
            "approval_ttl_seconds",
            json!({"minimum": 1, "maximum": crate::service::model::MAX_APPROVAL_TTL}),
        );
    }
    set(
        doc,
        "Gazetteer",
        "aliases",
        json!({"maxProperties": MAX_ALIASES,
            "propertyNames": {"type": "string", "minLength": 1, "maxLength": MAX_ALIAS_CHARS, "pattern": NOT_BLANK},
            "additionalProperties": {"type": "string", "minLength": 1, "maxLength": MAX_ALIAS_CHARS, "pattern": NOT_BLANK}}),
    );
    set(doc, "NewMemory", "content", text(limits.content_chars));
    set(doc, "MemoryPatch", "content", text(limits.content_chars));
    for schema in ["NewMemory", "MemoryPatch"] {
        set(
            doc,
            schema,
            "title",
            json!({"maxLength": limits.title_chars}),
        );
        set(
            doc,
            schema,
            "tags",
            json!({"maxItems": limits.tags, "items": {"type": "string", "minLength": 1, "maxLength": limits.tag_chars, "pattern": NO_CONTROL}}),
        );
        set(
            doc,
            schema,
            "importance",
            json!({"minimum": 0, "maximum": 1}),
        );
        set(
            doc,
            schema,
            "ttl_seconds",
            json!({"minimum": 1, "maximum": crate::service::MAX_TTL_SECONDS}),
        );
        set(
            doc,
            schema,
            "observed_at",
            json!({"minimum": 0, "maximum": crate::service::MAX_TIME_MS}),
        );
    }
    set(
        doc,
        "RecallQuery",
        "query",
        text(crate::service::recall::MAX_QUERY),
    );
    set(
        doc,
        "RecallQuery",
        "k",
        json!({"minimum": 1, "maximum": 100}),
    );
    for field in ["since", "until", "event_since", "event_until"] {
        set(
            doc,
            "RecallQuery",
            field,
            json!({"minimum": 0, "maximum": crate::service::MAX_TIME_MS}),
        );
    }
    set(
        doc,
        "RecallQuery",
        "recency_weight",
        json!({"minimum": 0, "maximum": 1}),
    );
    set(
        doc,
        "RecallQuery",
        "half_life_days",
        json!({"minimum": f32::MIN_POSITIVE, "maximum": f32::MAX}),
    );
    set(
        doc,
        "RecallQuery",
        "namespaces",
        json!({"minItems": 1, "maxItems": crate::service::recall::MAX_NAMESPACES, "items": {"type": "string", "pattern": NAMESPACE_NAME}}),
    );
    set(
        doc,
        "NewKey",
        "agent_id",
        json!({"minLength": 1, "maxLength": 128, "pattern": NO_CONTROL}),
    );
    set(
        doc,
        "NewKey",
        "agent_type",
        json!({"pattern": "^[A-Za-z0-9._-]{1,64}$"}),
    );
    set(
        doc,
        "NewKey",
        "grants",
        json!({"minItems": 1, "maxItems": crate::auth::keys::MAX_GRANTS}),
    );
    set(
        doc,
        "Grant",
        "pattern",
        json!({"pattern": "^(\\*|[a-z0-9][a-z0-9._-]{0,62}\\*?)$"}),
    );
    set(doc, "Rate", "per_second", json!({"exclusiveMinimum": 0}));
    set(doc, "Rate", "burst", json!({"minimum": 1}));
    set(
        doc,
        "NewVote",
        "comment",
        json!({"maxLength": crate::service::approvals::MAX_COMMENT}),
    );
    set(
        doc,
        "BulkStore",
        "memories",
        json!({"maxItems": super::MAX_BULK}),
    );
    // `namespaces` belongs to the question across namespaces only.
    if let Some(one) = doc.pointer("/components/schemas/RecallQuery").cloned() {
        let mut across = one.clone();
        let mut one = one;
        if let Some(props) = one.get_mut("properties").and_then(|p| p.as_object_mut()) {
            props.remove("namespaces");
        }
        if let Some(desc) = across.get_mut("description") {
            *desc =
                json!("A question across namespaces: `RecallQuery` and the namespaces to search.");
        }
        if let Some(schemas) = doc
            .pointer_mut("/components/schemas")
            .and_then(|s| s.as_object_mut())
        {
            schemas.insert("RecallQuery".into(), one);
            schemas.insert("RecallAcrossQuery".into(), across);
        }
        if let Some(body) =
            doc.pointer_mut("/paths/~1v1~1recall/post/requestBody/content/application~1json/schema")
        {
            *body = json!({"$ref": "#/components/schemas/RecallAcrossQuery"});
        }
    }
    // What a request may hold is what the server reads: no more.
    for schema in [
        "CreateNamespace",
        "NamespaceSettingsPatch",
        "NewMemory",
        "MemoryPatch",
        "RecallQuery",
        "RecallAcrossQuery",
        "ReindexBody",
        "BulkStore",
        "NewKey",
        "NewVote",
        "Grant",
        "Rate",
    ] {
        if let Some(s) = doc
            .pointer_mut(&format!("/components/schemas/{schema}"))
            .and_then(|s| s.as_object_mut())
        {
            s.insert("additionalProperties".into(), json!(false));
        }
    }
    // Path and query parameters, by name.
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let Some(params) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) else {
                continue;
            };
            for param in params {
                let schema = match param["name"].as_str().unwrap_or("") {
                    "ns" | "namespace" => json!({"type": "string", "pattern": NAMESPACE_NAME}),
                    "id" | "approval_id" | "cursor" => json!({"type": "string", "format": "uuid"}),
                    "key_id" => json!({"type": "string", "pattern": "^[0-9a-f]{16}$"}),
                    "page" => json!({"type": "string", "pattern": "^[0-9a-f]{64}$"}),
                    "wait" => json!({"type": "string", "enum": ["indexed"]}),
                    "limit" | "after" => {
                        json!({"type": "integer", "minimum": 0, "maximum": u64::MAX})
                    }
                    "as" => json!({"type": "string", "enum": ["requester", "approver"]}),
                    "state" => json!({"type": "string", "enum": [
                        "pending", "executed", "failed", "rejected", "expired", "cancelled", "superseded"
                    ]}),
                    "since" | "until" => json!({
                        "type": "integer", "minimum": 0, "maximum": crate::service::MAX_TIME_MS
                    }),
                    _ => continue,
                };
                param["schema"] = schema;
            }
        }
    }
}
