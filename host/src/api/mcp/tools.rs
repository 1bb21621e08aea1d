//! The MCP tools: each one the same `service/` call as its REST route,
//! argument names as the REST fields. Results are structured content plus
//! a short text for the model; failures are tool errors carrying the same
//! problem document (`type`, `title`, `status`, `detail`) as REST.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::api::rest::problem::Problem;
use crate::auth::{Principal, Role};
use crate::service::recall::{RecallMode, RecallQuery};
use crate::service::{
    Filters, ListQuery, Memory, MemoryPatch, NamespaceSettings, NewMemory, RedactionMode, Service,
    ServiceError,
};

/// The MCP server of one request.
#[derive(Clone)]
pub struct Tools {
    service: Service,
    tool_router: ToolRouter<Tools>,
}

/// The caller, put in the request's extensions by the `/mcp` route.
fn caller(
    context: &RequestContext<RoleServer>,
) -> Result<(Principal, http::request::Parts), McpError> {
    let parts = context
        .extensions
        .get::<http::request::Parts>()
        .cloned()
        .ok_or_else(|| McpError::internal_error("no HTTP request in the MCP context", None))?;
    let who = parts
        .extensions
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| McpError::internal_error("no authenticated caller", None))?;
    Ok((who, parts))
}

/// A tool error with the REST problem document of `e` — except a change
/// held for approval, which is a normal result saying nothing was written.
fn failed(e: &ServiceError) -> CallToolResult {
    if let ServiceError::Held(item) = e {
        let mut value = crate::api::rest::held_body(item);
        value["approval_id"] = item.id.to_string().into();
        let text = format!(
            "Nothing was written yet: the namespace's policy holds this {} for approval ({}). Approval id {}; it expires at {} unless decided. Check it with memory_approval_status.",
            item.kind.as_str(),
            item.requirement.summary,
            item.id,
            crate::service::model::iso8601(item.expires_at)
        );
        return done(value, text);
    }
    let p = Problem::from(e);
    CallToolResult::structured_error(json!({
        "type": p.kind,
        "title": p.title,
        "status": p.status,
        "detail": p.detail,
    }))
}

/// Structured content plus `text` for the model.
fn done(value: Value, text: String) -> CallToolResult {
    let mut r = CallToolResult::structured(value);
    r.content = vec![ContentBlock::text(text)];
    r
}

/// Run a service call off the async threads.
async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, CallToolResult> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failed(&e)),
        Err(e) => Err(failed(&ServiceError::Internal(e.to_string()))),
    }
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// A memory id argument; anything that is not a UUID names no memory.
fn memory_id(namespace: &str, id: &str) -> Result<Uuid, CallToolResult> {
    Uuid::parse_str(id).map_err(|_| {
        failed(&ServiceError::NoMemory {
            namespace: namespace.to_string(),
            id: id.to_string(),
        })
    })
}

/// One line about a memory for the text part of a result.
fn line(m: &Memory) -> String {
    let mut text: String = m.content.chars().take(200).collect();
    if text.len() < m.content.len() {
        text.push('…');
    }
    match &m.title {
        Some(t) => format!("{t}: {text} (id {})", m.id),
        None => format!("{text} (id {})", m.id),
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreArgs {
    /// The namespace to store in (see memory_namespaces).
    pub namespace: String,
    /// The memory itself: a fact, preference, decision or note, in plain words.
    pub content: String,
    /// A short title.
    #[serde(default)]
    pub title: Option<String>,
    /// Tags to filter by later.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Any JSON object to keep with it.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Forget it after this many seconds.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// How much it matters, 0 to 1 (default 0.5).
    #[serde(default)]
    pub importance: Option<f32>,
    /// When what it records happened or was said, Unix ms (default now):
    /// "yesterday" in the text is placed from it.
    #[serde(default)]
    pub observed_at: Option<i64>,
}

/// Which channels answer a recall.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Meaning and words together (default).
    #[default]
    Hybrid,
    /// Meaning only (embeddings): finds paraphrases.
    Vector,
    /// Words only (BM25): finds exact terms, names, codes.
    Lexical,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallArgs {
    /// The namespace to search.
    pub namespace: String,
    /// The question or topic, in natural language.
    pub query: String,
    /// How many memories to return (1-100, default 10).
    #[serde(default)]
    pub k: Option<usize>,
    /// hybrid (default), vector or lexical.
    #[serde(default)]
    pub mode: Mode,
    /// Only memories carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only memories written by this agent id.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Only memories naming every one of these entities (people, places,
    /// projects, ids… as the namespace's extractor found them; case does
    /// not matter).
    #[serde(default)]
    pub entities: Vec<String>,
    /// Only memories created at or after this time (Unix milliseconds).
    #[serde(default)]
    pub since: Option<i64>,
    /// Only memories created before this time (Unix milliseconds).
    #[serde(default)]
    pub until: Option<i64>,
    /// Only memories that refer to a time ending after this (Unix ms): a
    /// date in their text ("yesterday", "3 March") or, naming none, when
    /// they were observed.
    #[serde(default)]
    pub event_since: Option<i64>,
    /// Only memories that refer to a time starting before this (Unix ms).
    #[serde(default)]
    pub event_until: Option<i64>,
    /// 0 to 1: how much newer beats more relevant (default 0).
    #[serde(default)]
    pub recency_weight: Option<f32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntitiesArgs {
    /// The namespace.
    pub namespace: String,
    /// next_page from the previous page.
    #[serde(default)]
    pub page: Option<String>,
    /// How many (1-500, default 100).
    #[serde(default)]
    pub limit: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryRef {
    /// The namespace.
    pub namespace: String,
    /// The memory id (a UUID, as returned by memory_store or memory_recall).
    pub id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateArgs {
    /// The namespace.
    pub namespace: String,
    /// The memory id.
    pub id: String,
    /// New content (replaces the old; the old version stays in its history).
    #[serde(default)]
    pub content: Option<String>,
    /// New title.
    #[serde(default)]
    pub title: Option<String>,
    /// New tags (replace the old ones).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// New metadata (replaces the old object).
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    /// New importance, 0 to 1.
    #[serde(default)]
    pub importance: Option<f32>,
    /// Forget it this many seconds from now.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// When what it records happened or was said, Unix ms.
    #[serde(default)]
    pub observed_at: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// The namespace.
    pub namespace: String,
    /// Only memories carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only memories written by this agent id.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Only memories created at or after this time (Unix milliseconds).
    #[serde(default)]
    pub since: Option<i64>,
    /// Only memories created before this time (Unix milliseconds).
    #[serde(default)]
    pub until: Option<i64>,
    /// Continue after this memory id (next_cursor of the previous page).
    #[serde(default)]
    pub cursor: Option<String>,
    /// Page size (1-200, default 50).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchArgs {
    /// What to look for, in natural language.
    pub query: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FetchArgs {
    /// A result id from search ("namespace/memory-id").
    pub id: String,
}

/// How a new namespace treats what its redactor finds.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Redaction {
    /// Store the content already redacted (default).
    #[default]
    StoreRedacted,
    /// Store it as written, sealed; redact on every read.
    Egress,
    /// No redaction.
    Off,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNamespaceArgs {
    /// The new namespace's name: lowercase letters, digits, '.', '_' and '-'.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// The embedder plugin for meaning search (default: embed-static when
    /// loaded; "none" for words only). Fixed once created.
    #[serde(default)]
    pub embedder: Option<String>,
    /// The extractor plugin that finds entities in each memory (default:
    /// extract-entities when loaded; "none" for none). Fixed once created.
    #[serde(default)]
    pub extractor: Option<String>,
    /// store-redacted (default), egress or off.
    #[serde(default)]
    pub redaction: Redaction,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReindexArgs {
    /// The namespace.
    pub namespace: String,
    /// Another embedder to bind it to ("none" for words only); default: its own.
    #[serde(default)]
    pub embedder: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GazetteerArgs {
    /// The namespace.
    pub namespace: String,
    /// The new aliases, replacing all of them: alias → the name it stands
    /// for, e.g. {"Bob": "Bob Smith"}. Omit to read the current ones.
    #[serde(default)]
    pub aliases: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NamespaceRef {
    /// The namespace.
    pub namespace: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRef {
    /// The approval id (approval_id of a held change).
    pub approval_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsArgs {
    /// Only this namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Only this state: pending, executed, failed, rejected, expired, cancelled, superseded.
    #[serde(default)]
    pub state: Option<String>,
    /// "approver": open items this key may vote on; "requester": what this key's agent asked for.
    #[serde(default)]
    pub r#as: Option<String>,
    /// Continue after this approval id (next_cursor of the previous page).
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteArgs {
    /// The approval id.
    pub approval_id: String,
    /// "approve" or "reject".
    pub decision: String,
    /// The payload_hash of the approval as you read it (memory_approval_status).
    pub payload_hash: String,
    /// Why, in a few words.
    #[serde(default)]
    pub comment: Option<String>,
}

/// An approval id argument.
fn approval_id(id: &str) -> Result<Uuid, CallToolResult> {
    Uuid::parse_str(id).map_err(|_| failed(&ServiceError::NoApproval(id.to_string())))
}

/// One line about an approval.
fn approval_line(v: &crate::service::approvals::ApprovalView) -> String {
    let i = &v.item;
    let mut text = format!(
        "{} {} in {} by {} — {} ({}; hash {})",
        i.id,
        i.kind.as_str(),
        i.namespace,
        i.requester.agent_id,
        i.state.as_str(),
        i.requirement.summary,
        i.payload_hash
    );
    if let Some(r) = &i.reason {
        text.push_str(&format!(": {r}"));
    }
    text
}

/// Tools listed only to keys with a role on a namespace whose changes are
/// governed by more than plain `allow`: the ones that can vote somewhere.
fn for_voters(tool: &str) -> bool {
    matches!(
        tool,
        "memory_approvals" | "memory_approval_vote" | "memory_approval_cancel"
    )
}

/// The least role a tool needs on some namespace to be listed (and the
/// OAuth scope a token needs to call it).
pub(super) fn needs(tool: &str) -> Role {
    match tool {
        "memory_store" | "memory_update" | "memory_forget" => Role::Writer,
        t if in_admin_profile(t) => Role::Admin,
        _ => Role::Reader,
    }
}

/// Tools listed only to clients that ask for the admin profile
/// (`/mcp?profile=admin`): an agent's everyday tool list stays small.
fn in_admin_profile(tool: &str) -> bool {
    tool.starts_with("namespace_")
}

/// Whether the request asked for the admin profile.
fn admin_profile(parts: &http::request::Parts) -> bool {
    parts
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "profile=admin"))
}

/// Where a memory can be read over REST, for `search`/`fetch` citations.
fn url_of(parts: &http::request::Parts, namespace: &str, id: &Uuid) -> String {
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = parts
        .headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    format!("{scheme}://{host}/v1/namespaces/{namespace}/memories/{id}")
}

fn title_of(m: &Memory) -> String {
    m.title
        .clone()
        .unwrap_or_else(|| m.content.chars().take(80).collect())
}

#[tool_router]
impl Tools {
    /// The tools over `service`.
    pub fn new(service: Service) -> Tools {
        Tools {
            service,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Store a memory in a namespace. Identical content already stored there is not stored twice (the answer says duplicate). Returns the memory with its id.",
        annotations(
            title = "Store a memory",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn memory_store(
        &self,
        Parameters(a): Parameters<StoreArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let (who, _) = caller(&context)?;
        let s = self.service.clone();
        let ns = a.namespace.clone();
        let new = NewMemory {
            content: a.content,
            title: a.title,
            tags: a.tags,
            metadata: a.metadata,
            ttl_seconds: a.ttl_seconds,
            importance: a.importance,
            observed_at: a.observed_at,
        };
        Ok(
            match run(move || {
                let mut stored = s.store(&who, &ns, new)?;
                stored.memory = s.current_status(&ns, stored.memory)?;
                Ok(stored)
            })
            .await
            {
                Ok(stored) => {
                    let mut value = to_value(&stored.memory);
                    if let Some(o) = value.as_object_mut() {
                        o.insert("created".into(), stored.created.into());
                        o.insert("duplicate".into(), (!stored.created).into());
                    }
                    let verb = if stored.created {
                        "Stored"
                    } else {
                        "Already stored"
                    };
                    done(
                        value,
                        format!("{verb} in {}: {}", a.namespace, line(&stored.memory)),
                    )
                }
                Err(e) => e,
            },
        )
    }

    #[tool(
        description = "Find the memories of a namespace that best answer a question, by meaning and by words (mode hybrid, the default), by meaning only (vector) or by words only (lexical). Results are best first, each with id, content, score and the channels that matched.",
        annotations(
            title = "Recall memories",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn memory_recall(
        &self,
        Parameters(a): Parameters<RecallArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let (who, _) = caller(&context)?;
        let s = self.service.clone();
        let ns = a.namespace.clone();
        let q = RecallQuery {
            query: a.query,
            k: a.k,
            mode: match a.mode {
                Mode::Hybrid => RecallMode::Hybrid,
                Mode::Vector => RecallMode::Vector,
                Mode::Lexical => RecallMode::Lexical,
            },
            tags: a.tags,
            agent_id: a.agent_id,
            entities: a.entities,
            since: a.since,
            until: a.until,
            event_since: a.event_since,
            event_until: a.event_until,
            recency_weight: a.recency_weight,
            ..RecallQuery::default()
        };
        Ok(match run(move || s.recall(&who, &ns, &q)).await {
            Ok(hits) => {
                let text = if hits.is_empty() {
                    format!("No memory in {} matches.", a.namespace)
                } else {
                    hits.iter()
                        .enumerate()
                        .map(|(i, h)| format!("{}. [{:.2}] {}", i + 1, h.score, line(&h.memory)))
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                done(json!({ "results": hits }), text)
            }
            Err(e) => e,
        })
    }

    #[tool(
        description = "Read one memory by id.",
        annotations(
            title = "Get a memory",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn memory_get(
        &self,
        Parameters(a): Parameters<MemoryRef>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let (who, _) = caller(&context)?;
        let id = match memory_id(&a.namespace, &a.id) {
            Ok(id) => id,
            Err(e) => return Ok(e),
        };
        let s = self.service.clone();
        let ns = a.namespace;
        Ok(match run(move || s.get(&who, &ns, &id)).await {
            Ok(m) => done(to_value(&m), line(&m)),
            Err(e) => e,
        })
    }

    #[tool(
        description = "Change a memory: only the fields given change. The previous version is kept in the memory's history. Writers may change only their own memories.",
        annotations(
            title = "Update a memory",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn memory_update(
        &self,
        Parameters(a): Parameters<UpdateArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let (who, _) = caller(&context)?;
        let id = match memory_id(&a.namespace, &a.id) {
            Ok(id) => id,
            Err(e) => return Ok(e),
        };
        let patch = MemoryPatch {
            content: a.content,
            title: a.title,
            tags: a.tags,
            metadata: a.metadata,
            importance: a.importance,
            ttl_seconds: a.ttl_seconds,
            observed_at: a.observed_at,
        };
        let s = self.service.clone();
        let ns = a.namespace;
        Ok(match run(move || s.update(&who, &ns, &id, patch)).await {
            Ok(m) => done(
                to_value(&m),
                format!("Updated (version {}): {}", m.version, line(&m)),
            ),
            Err(e) => e,
        })
    }

    #[tool(
        description = "Forget a memory for good: it and its history are deleted. Writers may forget only their own memories.",
        annotations(
            title = "Forget a memory",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn memory_forget(
        &self,
        Parameters(a): Parameters<MemoryRef>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let (who, _) = caller(&context)?;
        let id = match memory_id(&a.namespace, &a.id) {
            Ok(id) => id,
            Err(e) => return Ok(e),
        };
        let s = self.service.clone();
        let ns = a.namespace.clone();
        Ok(match run(move || s.forget(&who, &ns, &id)).await {
            Ok(()) => done(
                json!({ "namespace": a.namespace, "id": id, "forgotten": true }),
                format!("Forgot memory {id} in {}.", a.namespace),
            ),
            Err(e) => e,
        })
    }

    #[tool(
        description = "List the entities (people, organizations, projects, ids, paths…) a namespace's memories name, with how many memories name each, a page at a time (pass next_page back as page). Filter memory_recall by them with its entities argument.",
        annotations(
            title = "List entities",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn memory_entities(
        &self,
        Parameters(a): Parameters<EntitiesArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let (who, _) = caller(&context)?;
        let s = self.service.clone();
        let ns = a.namespace.clone();
        Ok(
            match run(move || s.entities(&who, &ns, a.page.as_deref(), a.limit)).await {
                Ok(page) => {
                    let mut text: Vec<String> = page
                        .entities
                        .iter()
                        .map(|e| format!("{} ({}): {} memories", e.name, e.kind, e.memories))
                        .collect();
                    if text.is_empty() {
                        text.push(format!("No entities found in {} yet.", a.namespace));
                    }
                    if let Some(p) = &page.next_page {
                        text.push(format!("More: pass page {p}."));
                    }
                    done(to_value(&page), text.join("\n"))
                }
                Err(e) => e,
            },
        )
    }

    #[tool(
        description = "List the memories of a namespace, oldest first, a page at a time (pass next_cursor back as cursor for the next page), optionally filtered by tags, agent and time.",
        annotations(
            title = "List memories",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn memory_list(
        &self,
        Parameters(a): Parameters<ListArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let (who, _) = caller(&context)?;
        let cursor = match a.cursor.as_deref().map(Uuid::parse_str) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(_)) => {
                return Ok(failed(&ServiceError::Invalid {
                    field: "cursor".into(),
                    detail: "not a memory id (pass next_cursor from the previous page)".into(),
                }));
            }
        };
        let q = ListQuery {
            filters: Filters {
                tags: a.tags,
                agent_id: a.agent_id,
                since: a.since,
                until: a.until,
            },
            cursor,
            limit: a.limit,
        };
        let s = self.service.clone();
        let ns = a.namespace.clone();
        Ok(match run(move || s.list(&who, &ns, &q)).await {
            Ok(page) => {
                let mut text: Vec<String> = page.memories.iter().map(line).collect();
                if text.is_empty() {
                    text.push(format!("No memories in {}.", a.namespace));
                }
                if let Some(c) = page.next_cursor {
                    text.push(format!("More: pass cursor {c}."));
                }
                done(
                    json!({ "memories": page.memories, "next_cursor": page.next_cursor }),
                    text.join("\n"),
                )
            }
            Err(e) => e,
        })
    }

    #[tool(
        description = "The namespaces this key may use, with its role in each (reader, writer or admin) and whether meaning search is on.",
        annotations(
            title = "List namespaces",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn memory_namespaces(
        &self,
        Parameters(_): Parameters<NoArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let (who, _) = caller(&context)?;
        let s = self.service.clone();
        let me = who.clone();
        Ok(match run(move || s.namespaces(&who)).await {
            Ok(all) => {
                let list: Vec<Value> = all
                    .iter()
                    .map(|ns| {
                        json!({
                            "name": ns.name,
                            "role": me.role_in(&ns.name),
                            "embedder": ns.settings.embedder,
                            "description": ns.settings.description,
                        })
                    })
                    .collect();
                let text = if all.is_empty() {
                    "This key may use no namespace yet.".to_string()
                } else {
                    all.iter()
                        .map(|ns| {
                            format!(
                                "{} ({})",
                                ns.name,
                                me.role_in(&ns.name).map_or("-", |r| r.as_str())
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                done(json!({ "namespaces": list }), text)
            }
            Err(e) => e,
        })
    }

    #[tool(
        description = "Search every namespace this key may read for memories about the query. Returns results with id, title and url; read one with fetch.",
        annotations(
            title = "Search memories",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn search(
        &self,
        Parameters(a): Parameters<SearchArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let (who, parts) = caller(&context)?;
        let s = self.service.clone();
        let q = RecallQuery {
            query: a.query,
            ..RecallQuery::default()
        };
        Ok(match run(move || s.recall_across(&who, &q)).await {
            Ok(hits) => {
                let results: Vec<Value> = hits
                    .iter()
                    .map(|h| {
                        json!({
                            "id": format!("{}/{}", h.memory.namespace, h.memory.id),
                            "title": title_of(&h.memory),
                            "url": url_of(&parts, &h.memory.namespace, &h.memory.id),
                        })
                    })
                    .collect();
                let value = json!({ "results": results });
                done(value.clone(), value.to_string())
            }
            Err(e) => e,
        })
    }

    #[tool(
        description = "Read one search result in full, by the id search returned.",
        annotations(
            title = "Fetch a memory",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn fetch(
        &self,
        Parameters(a): Parameters<FetchArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let (who, parts) = caller(&context)?;
        let Some((ns, id)) = a.id.rsplit_once('/') else {
            return Ok(failed(&ServiceError::Invalid {
                field: "id".into(),
                detail: "a search result id is \"namespace/memory-id\"".into(),
            }));
        };
        let (ns, id_text) = (ns.to_string(), id.to_string());
        let id = match memory_id(&ns, &id_text) {
            Ok(id) => id,
            Err(e) => return Ok(e),
        };
        let s = self.service.clone();
        let name = ns.clone();
        Ok(match run(move || s.get(&who, &name, &id)).await {
            Ok(m) => {
                let value = json!({
                    "id": a.id,
                    "title": title_of(&m),
                    "text": m.content,
                    "url": url_of(&parts, &ns, &id),
                    "metadata": {
                        "namespace": m.namespace,
                        "tags": m.tags,
                        "created_at": m.created_at,
                        "updated_at": m.updated_at,
                        "version": m.version,
                    },
                });
                done(value.clone(), value.to_string())
            }
            Err(e) => e,
        })
    }
    #[tool(
        description = "Where a change held for approval stands: pending (with what it needs and what it would do), executed, failed, rejected, expired, cancelled or superseded.",
        annotations(
            title = "Approval status",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn memory_approval_status(
        &self,
        Parameters(a): Parameters<ApprovalRef>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let (who, _) = caller(&context)?;
        let id = match approval_id(&a.approval_id) {
            Ok(id) => id,
            Err(e) => return Ok(e),
        };
        let s = self.service.clone();
        Ok(match run(move || s.approval(&who, &id)).await {
            Ok(v) => done(to_value(&v), approval_line(&v)),
            Err(e) => e,
        })
    }

    #[tool(
        description = "List changes held for approval that this key may see; as=approver lists the open ones it may vote on.",
        annotations(
            title = "List approvals",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn memory_approvals(
        &self,
        Parameters(a): Parameters<ApprovalsArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        use crate::governance::State;
        use crate::service::approvals::{ApprovalQuery, Perspective};
        let (who, _) = caller(&context)?;
        let bad = |field: &str, detail: &str| {
            failed(&ServiceError::Invalid {
                field: field.into(),
                detail: detail.into(),
            })
        };
        let state = match a.state.as_deref() {
            None => None,
            Some(t) => match State::parse(t) {
                Some(st) => Some(st),
                None => {
                    return Ok(bad(
                        "state",
                        "one of pending, executed, failed, rejected, expired, cancelled, superseded",
                    ));
                }
            },
        };
        let role = match a.r#as.as_deref() {
            None => None,
            Some("approver") => Some(Perspective::Approver),
            Some("requester") => Some(Perspective::Requester),
            Some(_) => return Ok(bad("as", "approver or requester")),
        };
        let cursor = match a.cursor.as_deref().map(Uuid::parse_str) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(_)) => return Ok(bad("cursor", "not an approval id")),
        };
        let q = ApprovalQuery {
            namespace: a.namespace,
            state,
            role,
            cursor,
            limit: None,
        };
        let s = self.service.clone();
        Ok(match run(move || s.approvals(&who, &q)).await {
            Ok(page) => {
                let mut text: Vec<String> = page.approvals.iter().map(approval_line).collect();
                if text.is_empty() {
                    text.push("No approvals.".into());
                }
                done(to_value(&page), text.join("\n"))
            }
            Err(e) => e,
        })
    }

    #[tool(
        description = "Approve or reject a change held for approval. Send the payload_hash you read with memory_approval_status; the requester cannot vote on its own change. When the votes suffice, the change runs at once.",
        annotations(
            title = "Vote on an approval",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn memory_approval_vote(
        &self,
        Parameters(a): Parameters<VoteArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        use crate::service::approvals::{NewVote, VoteDecision};
        let (who, _) = caller(&context)?;
        let id = match approval_id(&a.approval_id) {
            Ok(id) => id,
            Err(e) => return Ok(e),
        };
        let decision = match a.decision.as_str() {
            "approve" => VoteDecision::Approve,
            "reject" => VoteDecision::Reject,
            _ => {
                return Ok(failed(&ServiceError::Invalid {
                    field: "decision".into(),
                    detail: "approve or reject".into(),
                }));
            }
        };
        let vote = NewVote {
            decision,
            comment: a.comment,
            payload_hash: a.payload_hash,
        };
        let s = self.service.clone();
        Ok(match run(move || s.vote(&who, &id, vote)).await {
            Ok(v) => done(to_value(&v), approval_line(&v)),
            Err(e) => e,
        })
    }

    #[tool(
        description = "Withdraw a change held for approval (its requester or a namespace admin).",
        annotations(
            title = "Cancel an approval",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn memory_approval_cancel(
        &self,
        Parameters(a): Parameters<ApprovalRef>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let (who, _) = caller(&context)?;
        let id = match approval_id(&a.approval_id) {
            Ok(id) => id,
            Err(e) => return Ok(e),
        };
        let s = self.service.clone();
        Ok(match run(move || s.cancel_approval(&who, &id)).await {
            Ok(v) => done(to_value(&v), approval_line(&v)),
            Err(e) => e,
        })
    }

    #[tool(
        description = "Create a namespace (admin profile). Its embedder is fixed once created.",
        annotations(
            title = "Create a namespace",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn namespace_create(
        &self,
        Parameters(a): Parameters<CreateNamespaceArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let (who, _) = caller(&context)?;
        let settings = NamespaceSettings {
            description: a.description,
            embedder: a.embedder,
            extractor: a.extractor,
            redaction: match a.redaction {
                Redaction::StoreRedacted => RedactionMode::StoreRedacted,
                Redaction::Egress => RedactionMode::Egress,
                Redaction::Off => RedactionMode::Off,
            },
            ..NamespaceSettings::default()
        };
        let s = self.service.clone();
        Ok(
            match run(move || s.create_namespace(&who, &a.name, settings)).await {
                Ok(ns) => {
                    let text = format!(
                        "Created namespace {} (embedder: {}).",
                        ns.name,
                        ns.settings.embedder.as_deref().unwrap_or("none")
                    );
                    done(to_value(&ns), text)
                }
                Err(e) => e,
            },
        )
    }

    #[tool(
        description = "Re-embed every memory of a namespace in the background, optionally with another embedder (admin profile). Meaning search covers the memories again as they are re-embedded.",
        annotations(
            title = "Reindex a namespace",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn namespace_reindex(
        &self,
        Parameters(a): Parameters<ReindexArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let (who, _) = caller(&context)?;
        let s = self.service.clone();
        Ok(
            match run(move || s.reindex_namespace(&who, &a.namespace, a.embedder.as_deref())).await
            {
                Ok(r) => {
                    let text = format!(
                        "Reindexing {}: {} memories queued (embedder: {}).",
                        r.namespace,
                        r.queued,
                        r.embedder.as_deref().unwrap_or("none")
                    );
                    done(to_value(&r), text)
                }
                Err(e) => e,
            },
        )
    }

    #[tool(
        description = "Read a namespace's aliases, or replace them by passing `aliases` (alias → the name it stands for, e.g. {\"Bob\": \"Bob Smith\", \"Robert\": \"Bob Smith\"}; admin profile). Aliases apply at once to memories' entities, entity filters and the entity listing.",
        annotations(
            title = "Namespace aliases",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn namespace_gazetteer(
        &self,
        Parameters(a): Parameters<GazetteerArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let (who, _) = caller(&context)?;
        let s = self.service.clone();
        let ns = a.namespace;
        Ok(
            match run(move || match a.aliases {
                None => s.gazetteer(&who, &ns),
                Some(aliases) => {
                    s.set_gazetteer(&who, &ns, crate::service::gazetteer::Gazetteer { aliases })
                }
            })
            .await
            {
                Ok(g) => {
                    let text = format!("{} aliases.", g.aliases.len());
                    done(to_value(&g), text)
                }
                Err(e) => e,
            },
        )
    }

    #[tool(
        description = "Delete a namespace and every memory in it, for good (admin profile).",
        annotations(
            title = "Delete a namespace",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn namespace_delete(
        &self,
        Parameters(a): Parameters<NamespaceRef>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let (who, _) = caller(&context)?;
        let s = self.service.clone();
        let ns = a.namespace.clone();
        Ok(match run(move || s.delete_namespace(&who, &ns)).await {
            Ok(n) => done(
                json!({ "namespace": a.namespace, "deleted": true, "memories": n }),
                format!("Deleted namespace {} and its {n} memories.", a.namespace),
            ),
            Err(e) => e,
        })
    }
}

#[tool_handler]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("memhost", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "memhost keeps memories for agents in namespaces. Call memory_namespaces to see where you may read and write; memory_recall to find what is known about a topic before answering; memory_store to keep a fact, preference or decision worth remembering.",
            )
    }

    /// Only the tools the caller's role may use.
    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let (who, parts) = caller(&context)?;
        let strongest = who.strongest_role();
        let admin = admin_profile(&parts);
        let s = self.service.clone();
        let me = who.clone();
        let voter = tokio::task::spawn_blocking(move || s.governed_somewhere(&me))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        let tools: Vec<Tool> = self
            .tool_router
            .list_all()
            .into_iter()
            .filter(|t| strongest.is_some_and(|r| r >= needs(&t.name)))
            .filter(|t| admin || !in_admin_profile(&t.name))
            .filter(|t| voter || !for_voters(&t.name))
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let (_, parts) = caller(&context)?;
        if in_admin_profile(&request.name) && !admin_profile(&parts) {
            return Err(McpError::invalid_params(
                format!(
                    "tool {} is in the admin profile: connect to /mcp?profile=admin",
                    request.name
                ),
                None,
            ));
        }
        let tcc = ToolCallContext::new(self, request, context);
        self.tool_router.call(tcc).await
    }
}
