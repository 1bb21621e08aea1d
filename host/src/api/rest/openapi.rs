//! The OpenAPI 3.1 document served at `/v1/openapi.json`, generated from the
//! request and response types themselves (utoipa). Each `#[utoipa::path]`
//! below describes one route of `super::routes`; a test drives every
//! documented route against the real server so the two cannot drift.
#![allow(dead_code)]

use utoipa::OpenApi;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use super::ReindexBody;
use super::problem::Problem;
use crate::audit::Entry;
use crate::auth::keys::{KeyFields, KeyInfo, Rate, Revocation};
use crate::auth::{Grant, Role};
use crate::governance::{Kind, PendingAction, PolicySnapshot, Requester, Requirement, State, Vote};
use crate::service::approvals::{ApprovalView, NewVote, VoteDecision};
use crate::service::recall::{Fusion, Hit, RecallMode, RecallQuery};
use crate::service::{
    Memory, MemoryPatch, Namespace, NamespaceSettings, NewKey, NewMemory, RedactionMode,
};

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
    /// Embedder plugin id (bound for good; its dimensions are recorded).
    embedder: Option<String>,
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

#[utoipa::path(patch, path = "/v1/namespaces/{ns}", params(("ns" = String, Path)), request_body = NamespaceSettings,
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

#[utoipa::path(post, path = "/v1/namespaces/{ns}/memories/bulk", params(("ns" = String, Path)),
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
        recall,
        recall_across,
        reindex_namespace,
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
        Namespace,
        NamespaceSettings,
        RedactionMode,
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
        Vote
    ))
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}
