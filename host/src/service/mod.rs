//! The use cases — namespaces (`namespaces.rs`); store, get, list,
//! update, forget memories (`memories.rs`); recall (`recall.rs`); indexing
//! and reindex (`indexing.rs`); keys and the audit log (`access.rs`); the
//! governance funnel every change passes and the approvals
//! (`approvals.rs`); backups (`operations.rs`); export and import
//! (`transfer.rs`) — in one place, used by REST, MCP and the CLI alike.
//! Knows nothing about HTTP.
//!
//! Every call is blocking (LMDB reads, plugin calls, waiting for the group
//! commit): call it from a blocking thread.
//!
//! | table        | row key                                   | value                          |
//! |--------------|-------------------------------------------|--------------------------------|
//! | `namespaces` | blind(system key, name)                   | sealed [`Namespace`] (system key) |
//! | `keys`       | `ns/` + namespace id                      | data key wrapped with age      |
//! | `memories`   | namespace id + memory id                  | sealed current [`Memory`]      |
//! | `memories`   | namespace id + memory id + version (u32)  | sealed superseded versions     |
//! | `dedup`      | namespace id + blind(ns key, content hash)| memory id                      |

pub mod access;
pub mod approvals;
pub mod extraction;
mod follow;
pub mod gazetteer;
pub mod indexing;
mod leftovers;
mod memories;
pub use memories::{LIST_SCAN_BUDGET, MAX_TTL_SECONDS};
pub use namespaces::MAX_DESCRIPTION;
pub mod model;
mod namespaces;
pub mod oauth;
pub mod operations;
pub mod people;
pub mod recall;
pub mod shared_limits;
pub mod transfer;

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

pub use access::{AuthFailure, NewKey};
pub use model::{Actor, HumanVotes, Limits, Memory, Namespace, NamespaceSettings, RedactionMode};

use crate::audit::AuditLog;
use crate::crypto::DataKey;
use crate::governance::PendingAction;
use crate::index::vector;
use crate::plugins::PluginRegistry;
use crate::store::keyring::{Keyring, KeyringError, SYSTEM_KEY};
use crate::store::{Store, StoreError};

/// What went wrong, in terms a caller can act on. The API maps each to a
/// status and a stable problem type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServiceError {
    /// A field is invalid.
    #[error("{field}: {detail}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// A field is larger than allowed.
    #[error("{field} is longer than {limit} {unit}")]
    TooLarge {
        /// The field.
        field: String,
        /// The limit.
        limit: usize,
        /// What it is counted in (`characters`, `bytes`).
        unit: &'static str,
    },
    /// The namespace does not exist.
    #[error("namespace \"{0}\" does not exist")]
    NoNamespace(String),
    /// The memory does not exist (or expired, or was forgotten).
    #[error("memory {id} does not exist in namespace \"{namespace}\"")]
    NoMemory {
        /// Namespace.
        namespace: String,
        /// Id.
        id: String,
    },
    /// The caller's key does not allow this (the refusal is audited).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No API key with that id (that the caller may see).
    #[error("API key {0} does not exist")]
    NoKey(String),
    /// Something with that name exists, or the change no longer applies.
    #[error("{0}")]
    Conflict(String),
    /// A concurrent change won; the same request may succeed if retried.
    #[error("{0}")]
    Raced(String),
    /// The namespace's redactor failed or is missing: the write is refused.
    #[error("redaction failed, nothing was stored: {0}")]
    Redaction(String),
    /// A plugin the request needs is not loaded or failed.
    #[error("{0}")]
    Unavailable(String),
    /// The database reached its configured maximum size.
    #[error("{0}")]
    StorageFull(String),
    /// A backup could not be made.
    #[error("backup failed: {0}")]
    Backup(String),
    /// Storage or key failure.
    #[error("internal error: {0}")]
    Internal(String),
    /// Not a failure: the namespace's policy holds the action until it is
    /// approved. Nothing was written yet.
    #[error("held for approval {}: {}; nothing was written yet", .0.id, .0.requirement.summary)]
    Held(Box<PendingAction>),
    /// The namespace's policy refused the action (audited; nothing written).
    #[error("the namespace's policy denied this: {0}")]
    PolicyDenied(String),
    /// The namespace's policy plugin is missing or failed: denied, to be safe.
    #[error("policy plugin \"{plugin}\" failed, so the action was denied: {detail}")]
    PolicyFailed {
        /// The plugin's id.
        plugin: String,
        /// What went wrong.
        detail: String,
    },
    /// No approval with that id (that the caller may see).
    #[error("approval {0} does not exist")]
    NoApproval(String),
    /// The requester voted on its own action.
    #[error("{0}")]
    SelfApproval(String),
    /// The voter's role or agent type does not count for this approval.
    #[error("{0}")]
    NotAnApprover(String),
    /// The approval is decided (executed, rejected, …).
    #[error("approval {id} is already {state}{}", if .reason.is_empty() { String::new() } else { format!(": {}", .reason) })]
    ApprovalClosed {
        /// The approval.
        id: String,
        /// Its state.
        state: String,
        /// Why it closed.
        reason: String,
    },
    /// The approval expired before it was decided.
    #[error("approval {0} expired before it was decided; it was not run")]
    ApprovalExpired(String),
    /// The vote names another payload than the item holds.
    #[error("{0}")]
    StaleApproval(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(m) => ServiceError::Conflict(m),
            StoreError::Raced(m) => ServiceError::Raced(m),
            full @ StoreError::Full { .. } => ServiceError::StorageFull(full.to_string()),
            gone @ StoreError::Unavailable(_) => ServiceError::Unavailable(gone.to_string()),
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

impl From<KeyringError> for ServiceError {
    fn from(e: KeyringError) -> Self {
        ServiceError::Internal(e.to_string())
    }
}

fn invalid(field: &str, detail: impl Into<String>) -> ServiceError {
    ServiceError::Invalid {
        field: field.into(),
        detail: detail.into(),
    }
}

/// A new memory, as a caller sends it.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct NewMemory {
    /// The text.
    pub content: String,
    /// Optional title.
    #[serde(default)]
    pub title: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Free-form JSON object.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Expire after this many seconds.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// 0.0–1.0 (default 0.5).
    #[serde(default)]
    pub importance: Option<f32>,
    /// When what it records happened or was said, Unix ms (default: now).
    /// An imported conversation keeps its own timeline; relative dates in
    /// the text ("yesterday") are placed from it.
    #[serde(default)]
    pub observed_at: Option<i64>,
}

/// Changes to a memory; absent fields stay as they are.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct MemoryPatch {
    /// New text.
    #[serde(default)]
    pub content: Option<String>,
    /// New title (`null` keeps it; use an empty string to clear it).
    #[serde(default)]
    pub title: Option<String>,
    /// New tags (replace the old ones).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// New metadata (replaces the old object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// New importance.
    #[serde(default)]
    pub importance: Option<f32>,
    /// Expire this many seconds from now.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// When what it records happened or was said, Unix ms.
    #[serde(default)]
    pub observed_at: Option<i64>,
}

/// What storing did.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The memory (the existing one for a duplicate).
    pub memory: Memory,
    /// False when identical content was already stored.
    pub created: bool,
    /// An indexing job was queued with it (the namespace has an embedder).
    pub indexing: bool,
}

/// Which memories a list or a recall keeps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    /// Only memories carrying every one of these tags.
    pub tags: Vec<String>,
    /// Only memories written by this agent.
    pub agent_id: Option<String>,
    /// Created at or after (Unix ms).
    pub since: Option<i64>,
    /// Created before (Unix ms).
    pub until: Option<i64>,
}

/// The latest time a filter may name, Unix ms (the end of year 9999).
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// Refuse a time bound outside 0..=[`MAX_TIME_MS`] (field `field`).
pub(crate) fn check_time(field: &str, t: Option<i64>) -> Result<(), ServiceError> {
    match t {
        Some(t) if !(0..=MAX_TIME_MS).contains(&t) => Err(invalid(
            field,
            format!("must be a Unix time in ms from 0 to {MAX_TIME_MS}"),
        )),
        _ => Ok(()),
    }
}

impl Filters {
    /// Refuse bounds no memory can have.
    pub fn check(&self) -> Result<(), ServiceError> {
        check_time("since", self.since)?;
        check_time("until", self.until)
    }

    /// Is `m` live at `now` and does it pass every filter?
    pub fn keeps(&self, m: &Memory, now: i64) -> bool {
        !m.expired(now)
            && self.tags.iter().all(|t| m.tags.contains(t))
            && self.agent_id.as_ref().is_none_or(|a| &m.agent_id == a)
            && self.since.is_none_or(|s| m.created_at >= s)
            && self.until.is_none_or(|u| m.created_at < u)
    }
}

/// Filters and paging for [`Service::list`].
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Which memories.
    pub filters: Filters,
    /// Continue after this memory id.
    pub cursor: Option<Uuid>,
    /// Page size (1–200, default 50).
    pub limit: Option<usize>,
}

/// One page of memories, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The memories.
    pub memories: Vec<Memory>,
    /// Pass as `cursor` for the next page; `None` at the end.
    pub next_cursor: Option<Uuid>,
}

/// Every namespace, by name, and the version of the namespaces table it
/// was read at.
type NamespaceList = (u64, Arc<Vec<Namespace>>);

/// The service.
#[derive(Clone)]
pub struct Service {
    store: Store,
    keyring: Arc<Keyring>,
    plugins: Arc<PluginRegistry>,
    limits: Limits,
    audit: AuditLog,
    /// How many of each key's refusals reach the audit log.
    refusals: Arc<crate::auth::limits::RefusalBudget>,
    /// Every namespace, as of a version of the namespaces table.
    namespace_cache: Arc<std::sync::Mutex<Option<NamespaceList>>>,
    vectors: vector::VectorCache,
    /// Where the indexing worker's next round starts (it moves on, so jobs
    /// that cannot run now do not hold up the others).
    index_cursor: Arc<std::sync::Mutex<HashMap<usize, Vec<u8>>>>,
    /// Reindex requeue passes this process is running.
    requeues: indexing::Requeues,
    /// Memories a requeue pass handles per write.
    reindex_chunk: usize,
    /// Woken whenever the indexer settles jobs (or the follower sees
    /// another host's).
    index_advanced: Arc<tokio::sync::Notify>,
    /// A shared store: the last change sequence number applied here.
    followed: Arc<std::sync::atomic::AtomicU64>,
    /// This process among the hosts of a shared store (its job leases).
    host: Uuid,
    /// Each namespace's gazetteer as last opened.
    gazetteers: gazetteer::Opened,
    /// When a metrics scrape first saw the embedding queue non-empty since
    /// it was last empty (the index lag gauge).
    queue_busy_since: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// The embedder a new namespace is bound to when its settings name none
/// and that plugin is loaded: semantic recall by default.
pub const DEFAULT_EMBEDDER: &str = "embed-static";
/// `"embedder": "none"`: a namespace searched by words only.
pub const NO_EMBEDDER: &str = "none";
/// The extractor a new namespace is bound to when its settings name none
/// and that plugin is loaded.
pub const DEFAULT_EXTRACTOR: &str = "extract-entities";
/// `"extractor": "none"`: a namespace nothing is extracted from.
pub const NO_EXTRACTOR: &str = "none";

fn ns_key_id(ns: &Uuid) -> Vec<u8> {
    [b"ns/".as_slice(), ns.as_bytes()].concat()
}

fn head_key(ns: &Uuid, id: &Uuid) -> Vec<u8> {
    [ns.as_bytes().as_slice(), id.as_bytes()].concat()
}

fn version_key(ns: &Uuid, id: &Uuid, version: u32) -> Vec<u8> {
    [
        ns.as_bytes().as_slice(),
        id.as_bytes(),
        &version.to_be_bytes(),
    ]
    .concat()
}

/// `jobs` row marking when a memory expires: `exp/` + expiry (Unix ms,
/// big-endian, so rows sort by time) + namespace id + memory id. Expiry
/// times are visible at rest, like every timestamp.
fn expiry_key(at: i64, ns: &Uuid, id: &Uuid) -> Vec<u8> {
    [
        EXPIRY_PREFIX,
        &at.to_be_bytes(),
        ns.as_bytes(),
        id.as_bytes(),
    ]
    .concat()
}

const EXPIRY_PREFIX: &[u8] = b"exp/";

fn seal_json<T: serde::Serialize>(
    key: &DataKey,
    table: &str,
    row: &[u8],
    value: &T,
) -> Result<Vec<u8>, ServiceError> {
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec(value).map_err(|e| ServiceError::Internal(e.to_string()))?,
    );
    Ok(key.seal_packed(table, row, &plain))
}

fn open_json<T: serde::de::DeserializeOwned>(
    key: &DataKey,
    table: &str,
    row: &[u8],
    sealed: &[u8],
) -> Result<T, ServiceError> {
    let plain = key
        .open(table, row, sealed)
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    serde_json::from_slice(&plain)
        .map_err(|e| ServiceError::Internal(format!("corrupt {table} row: {e}")))
}

/// A use case's result as a metrics outcome word.
pub(crate) fn outcome<T>(r: &Result<T, ServiceError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(ServiceError::Held(_)) => "held",
        Err(ServiceError::PolicyDenied(_) | ServiceError::PolicyFailed { .. }) => "denied",
        Err(ServiceError::Forbidden(_)) => "forbidden",
        Err(ServiceError::Invalid { .. } | ServiceError::TooLarge { .. }) => "invalid",
        Err(ServiceError::NoNamespace(_) | ServiceError::NoMemory { .. }) => "not_found",
        Err(ServiceError::Conflict(_) | ServiceError::Raced(_)) => "conflict",
        Err(_) => "error",
    }
}

impl Service {
    /// A service over an open store and keyring, with the plugin registry.
    pub fn new(
        store: Store,
        keyring: Arc<Keyring>,
        plugins: Arc<PluginRegistry>,
    ) -> Result<Service, ServiceError> {
        let audit = AuditLog::new(keyring.key(&store, SYSTEM_KEY)?);
        if store.schema_version()? < crate::store::SCHEMA_VERSION {
            let started = std::time::Instant::now();
            let rewritten = crate::index::lexical::upgrade(&store)?;
            store.mark_upgraded()?;
            tracing::info!(
                namespaces = rewritten,
                took_ms = started.elapsed().as_millis() as u64,
                schema = crate::store::SCHEMA_VERSION,
                "store upgraded: word index rewritten in posting blocks"
            );
        }
        Ok(Service {
            store,
            keyring,
            plugins,
            limits: Limits::default(),
            audit,
            refusals: Arc::default(),
            namespace_cache: Arc::default(),
            vectors: vector::VectorCache::default(),
            index_cursor: Arc::default(),
            requeues: Arc::default(),
            reindex_chunk: indexing::REINDEX_CHUNK,
            index_advanced: Arc::default(),
            followed: Arc::default(),
            host: Uuid::from_bytes(rand::random()),
            gazetteers: Arc::default(),
            queue_busy_since: Arc::default(),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A reindex replaces `chunk` memories' vectors per write (tests; the
    /// server uses [`indexing::REINDEX_CHUNK`]).
    pub fn with_reindex_chunk(mut self, chunk: usize) -> Service {
        self.reindex_chunk = chunk.max(1);
        self
    }

    /// With these limits instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Service {
        self.limits = limits;
        self
    }

    fn system_key(&self) -> Result<Arc<DataKey>, ServiceError> {
        Ok(self.keyring.key(&self.store, SYSTEM_KEY)?)
    }

    fn namespace_row(&self, name: &str) -> Result<Vec<u8>, ServiceError> {
        Ok(self
            .system_key()?
            .blind("namespace-name", name.as_bytes())
            .to_vec())
    }
}
