//! The use cases — create namespaces; store, get, list, update, forget
//! memories — in one place, used by REST, MCP and the CLI alike. Knows
//! nothing about HTTP.
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
pub mod indexing;
mod leftovers;
pub mod model;
pub mod recall;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use access::{AuthFailure, NewKey};
pub use model::{Actor, Limits, Memory, Namespace, NamespaceSettings, RedactionMode};

use crate::audit::{AuditLog, Record};
use crate::auth::{Principal, Role};
use crate::crypto::DataKey;
use crate::governance::PendingAction;
use crate::index::{lexical, vector};
use crate::plugins::{PluginRegistry, apply_findings};
use crate::store::keyring::{Keyring, KeyringError, SYSTEM_KEY};
use crate::store::{Store, StoreError, Transaction, WriteFlags, get_in};
use approvals::{Execution, Payload, Proposal};

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
    #[error("{field} is larger than {limit} bytes")]
    TooLarge {
        /// The field.
        field: String,
        /// The limit.
        limit: usize,
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
    /// Something with that name exists.
    #[error("{0}")]
    Conflict(String),
    /// The namespace's redactor failed or is missing: the write is refused.
    #[error("redaction failed, nothing was stored: {0}")]
    Redaction(String),
    /// A plugin the request needs is not loaded or failed.
    #[error("{0}")]
    Unavailable(String),
    /// The database reached its configured maximum size.
    #[error("{0}")]
    StorageFull(String),
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
            full @ StoreError::Full { .. } => ServiceError::StorageFull(full.to_string()),
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

impl Filters {
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

/// The service.
#[derive(Clone)]
pub struct Service {
    store: Store,
    keyring: Arc<Keyring>,
    plugins: Arc<PluginRegistry>,
    limits: Limits,
    audit: AuditLog,
    vectors: vector::VectorCache,
    /// Where the indexing worker's next round starts (it moves on, so jobs
    /// that cannot run now do not hold up the others).
    index_cursor: Arc<std::sync::Mutex<HashMap<usize, Vec<u8>>>>,
}

/// The embedder a new namespace is bound to when its settings name none
/// and that plugin is loaded: semantic recall by default.
pub const DEFAULT_EMBEDDER: &str = "embed-local";
/// `"embedder": "none"`: a namespace searched by words only.
pub const NO_EMBEDDER: &str = "none";

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
    Ok(key.seal(table, row, &plain))
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

impl Service {
    /// A service over an open store and keyring, with the plugin registry.
    pub fn new(
        store: Store,
        keyring: Arc<Keyring>,
        plugins: Arc<PluginRegistry>,
    ) -> Result<Service, ServiceError> {
        let audit = AuditLog::new(keyring.key(&store, SYSTEM_KEY)?);
        Ok(Service {
            store,
            keyring,
            plugins,
            limits: Limits::default(),
            audit,
            vectors: vector::VectorCache::default(),
            index_cursor: Arc::default(),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
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

    /// Create a namespace with its own data key. Needs admin over the name.
    pub fn create_namespace(
        &self,
        who: &Principal,
        name: &str,
        settings: NamespaceSettings,
    ) -> Result<Namespace, ServiceError> {
        if !who.admin_over(name) {
            return Err(self.deny(
                Record::by(who, "namespace.create")
                    .ns(name)
                    .outcome("denied", None),
                format!(
                    "key {} may create only namespaces it administers, not \"{name}\"",
                    who.key_id
                ),
            ));
        }
        if !model::valid_namespace_name(name) {
            return Err(invalid(
                "name",
                format!(
                    "\"{name}\" is not a valid namespace name: 1-63 characters, lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
                ),
            ));
        }
        let mut settings = settings;
        let snapshot = self.plugins.snapshot();
        match settings.embedder.as_deref() {
            Some(NO_EMBEDDER) => settings.embedder = None,
            None if snapshot.embedder(DEFAULT_EMBEDDER).is_some() => {
                settings.embedder = Some(DEFAULT_EMBEDDER.into());
            }
            _ => {}
        }
        validate_settings(&settings)?;
        self.check_policy(name, &settings)?;
        settings.dimensions = match &settings.embedder {
            None => None,
            Some(id) => Some(
                snapshot
                    .embedder(id)
                    .ok_or_else(|| {
                        invalid(
                            "embedder",
                            format!("\"{id}\" is not a loaded embedder plugin"),
                        )
                    })?
                    .model()
                    .dimensions,
            ),
        };
        let ns = Namespace {
            id: Uuid::now_v7(),
            name: name.to_string(),
            created_at: model::now_ms(),
            settings,
            index_generation: 0,
        };
        let row = self.namespace_row(name)?;
        let sealed = seal_json(&*self.system_key()?, "namespaces", &row, &ns)?;
        let (data_key, wrapped) = self.keyring.new_key()?;
        let key_id = ns_key_id(&ns.id);
        let conflict = format!("namespace \"{name}\" already exists");
        let kid = key_id.clone();
        let record = Record::by(who, "namespace.create").ns(name);
        let audit = self.audit.clone();
        let entry = self.store.write_blocking(move |txn, t| {
            if get_in(txn, t.namespaces, &row)?.is_some() {
                return Err(StoreError::Rejected(conflict.clone()));
            }
            txn.put(t.namespaces, &row, &sealed, WriteFlags::empty())?;
            Keyring::put_wrapped(txn, t, &kid, &wrapped)?;
            audit.append(txn, t, &record)
        })?;
        crate::audit::emit(&entry);
        self.keyring.remember(&key_id, data_key);
        Ok(ns)
    }

    /// The namespace called `name`, for a caller with any role on it.
    pub fn namespace(&self, who: &Principal, name: &str) -> Result<Namespace, ServiceError> {
        self.authorize(who, name, Role::Reader, "namespace.get", None)?;
        self.find_namespace(name)
    }

    fn find_namespace(&self, name: &str) -> Result<Namespace, ServiceError> {
        if !model::valid_namespace_name(name) {
            return Err(ServiceError::NoNamespace(name.to_string()));
        }
        let row = self.namespace_row(name)?;
        let sealed = self
            .store
            .get(|t| t.namespaces, &row)?
            .ok_or_else(|| ServiceError::NoNamespace(name.to_string()))?;
        open_json(&*self.system_key()?, "namespaces", &row, &sealed)
    }

    /// Every namespace `who` holds a role on, by name.
    pub fn namespaces(&self, who: &Principal) -> Result<Vec<Namespace>, ServiceError> {
        let mut all = self.all_namespaces()?;
        all.retain(|ns| who.role_in(&ns.name).is_some());
        Ok(all)
    }

    fn all_namespaces(&self) -> Result<Vec<Namespace>, ServiceError> {
        let rows = self.store.rows(|t| t.namespaces, &[], |_| true)?;
        let key = self.system_key()?;
        let mut all = rows
            .iter()
            .map(|(k, v)| open_json::<Namespace>(&key, "namespaces", k, v))
            .collect::<Result<Vec<_>, _>>()?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Change a namespace's settings (`change` gets the current ones).
    /// Needs admin on the namespace; governed by its current policy. A
    /// change of the policy supersedes the namespace's open approvals.
    pub fn update_namespace(
        &self,
        who: &Principal,
        name: &str,
        change: impl FnOnce(NamespaceSettings) -> NamespaceSettings,
    ) -> Result<Namespace, ServiceError> {
        self.authorize(who, name, Role::Admin, "namespace.update", None)?;
        let ns = self.find_namespace(name)?;
        let settings = change(ns.settings.clone());
        self.check_settings_change(&ns, &settings)?;
        self.govern(
            who,
            Proposal::namespace(
                &ns,
                Payload::Configure {
                    settings: settings.clone(),
                },
                "namespace.update",
            ),
        )?;
        self.commit_namespace_update(who, ns, settings, None)
    }

    /// Can `ns` take `settings`?
    fn check_settings_change(
        &self,
        ns: &Namespace,
        settings: &NamespaceSettings,
    ) -> Result<(), ServiceError> {
        let name = &ns.name;
        validate_settings(settings)?;
        let redaction_changed = (settings.redaction, &settings.redactor)
            != (ns.settings.redaction, &ns.settings.redactor);
        let prefix = *ns.id.as_bytes();
        if redaction_changed
            && !self
                .store
                .rows_max(|t| t.memories, &prefix, |k| k.starts_with(&prefix), 1)?
                .is_empty()
        {
            // Redaction applies when a memory is written, and the word and
            // meaning indexes hold the text as it was then shown: changing
            // the rules would leave both under the old ones.
            return Err(invalid(
                "redaction",
                format!(
                    "namespace \"{name}\" already holds memories written and indexed under its current redaction settings; create a new namespace for different ones"
                ),
            ));
        }
        if (&settings.embedder, settings.dimensions)
            != (&ns.settings.embedder, ns.settings.dimensions)
        {
            return Err(invalid(
                "embedder",
                "a namespace keeps the embedder it was created with: vectors of different models never mix",
            ));
        }
        if (&settings.policy, &settings.policy_plugin)
            != (&ns.settings.policy, &ns.settings.policy_plugin)
        {
            self.check_policy(name, settings)?;
        }
        Ok(())
    }

    /// Write new settings for `ns` (governed already), with `exec` when an
    /// approval runs it.
    fn commit_namespace_update(
        &self,
        who: &Principal,
        mut ns: Namespace,
        settings: NamespaceSettings,
        exec: Option<Execution>,
    ) -> Result<Namespace, ServiceError> {
        if exec.is_some() {
            // Approved later: what was valid then must still be.
            self.check_settings_change(&ns, &settings)?;
        }
        let name = ns.name.clone();
        let policy_changed = (&settings.policy, &settings.policy_plugin)
            != (&ns.settings.policy, &ns.settings.policy_plugin);
        ns.settings = settings;
        let row = self.namespace_row(&name)?;
        let system = self.system_key()?;
        let sealed = seal_json(&system, "namespaces", &row, &ns)?;
        let record = Record::by(who, "namespace.update").ns(&name);
        let audit = self.audit.clone();
        let ledger = self.ledger()?;
        let generation = ns.index_generation;
        let ns_id = ns.id;
        let raced = format!("namespace \"{name}\" was reindexed meanwhile; retry");
        let exec_in = exec.clone();
        let entries = self.store.write_blocking(move |txn, t| {
            approvals::apply(&exec_in, txn, t)?;
            // A reindex since it was read would be undone by this write.
            if indexing::generation_in(txn, t, &system, &row)? != Some(generation) {
                return Err(StoreError::Rejected(raced.clone()));
            }
            txn.put(t.namespaces, &row, &sealed, WriteFlags::empty())?;
            let mut entries = vec![audit.append(txn, t, &record)?];
            if policy_changed {
                entries.extend(approvals::supersede_in(
                    &ledger,
                    &audit,
                    txn,
                    t,
                    &ns_id,
                    |_| true,
                    "its namespace's policy changed",
                )?);
            }
            Ok(entries)
        })?;
        approvals::emit(&exec);
        entries.iter().for_each(crate::audit::emit);
        Ok(ns)
    }

    /// Delete a namespace and everything in it. Its data key goes first, in
    /// one transaction with the namespace row and the audit entry: from that
    /// commit on nothing left of it can be read, even from a copy of the
    /// file taken later. The sealed rows are then removed in batches.
    /// Needs admin on the namespace; governed (the policy sees `purge`).
    /// Its open approvals are superseded. Returns how many memories it held.
    pub fn delete_namespace(&self, who: &Principal, name: &str) -> Result<usize, ServiceError> {
        self.authorize(who, name, Role::Admin, "namespace.delete", None)?;
        let ns = self.find_namespace(name)?;
        self.govern(
            who,
            Proposal::namespace(&ns, Payload::DeleteNamespace, "namespace.delete"),
        )?;
        self.commit_delete_namespace(who, &ns, None)
    }

    fn commit_delete_namespace(
        &self,
        who: &Principal,
        ns: &Namespace,
        exec: Option<Execution>,
    ) -> Result<usize, ServiceError> {
        let name = ns.name.as_str();
        let row = self.namespace_row(name)?;
        let key_id = ns_key_id(&ns.id);
        let record = Record::by(who, "namespace.delete").ns(name);
        let audit = self.audit.clone();
        let ledger = self.ledger()?;
        let kid = key_id.clone();
        let ns_id = ns.id;
        let gone = format!("namespace \"{name}\" no longer exists");
        let exec_in = exec.clone();
        let entries = self.store.write_blocking(move |txn, t| {
            approvals::apply(&exec_in, txn, t)?;
            if get_in(txn, t.namespaces, &row)?.is_none() {
                return Err(StoreError::Rejected(gone.clone()));
            }
            txn.del(t.namespaces, &row, None)?;
            match txn.del(t.keys, &kid, None) {
                Ok(()) | Err(lmdb::Error::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
            let mut entries = vec![audit.append(txn, t, &record)?];
            entries.extend(approvals::supersede_in(
                &ledger,
                &audit,
                txn,
                t,
                &ns_id,
                |_| true,
                "its namespace was deleted",
            )?);
            Ok(entries)
        })?;
        approvals::emit(&exec);
        entries.iter().for_each(crate::audit::emit);
        self.keyring.forget(&key_id);
        crate::index::lexical::drop_namespace(&self.store, &ns.id)?;
        self.vectors.drop_namespace(&ns.id);
        let jobs = [vector::JOB_PREFIX, ns.id.as_bytes()].concat();
        self.store.delete_prefix(|t| t.jobs, &jobs, |_| false)?;
        let prefix = ns.id.as_bytes();
        self.store.delete_prefix(|t| t.dedup, prefix, |_| false)?;
        self.store.delete_prefix(|t| t.vectors, prefix, |_| false)?;
        self.store
            .delete_prefix(|t| t.segments, prefix, |_| false)?;
        // Heads are namespace id + memory id; history rows add a version.
        let memories = self
            .store
            .delete_prefix(|t| t.memories, prefix, |k| k.len() == 32)?;
        Ok(memories)
    }

    /// The blind terms a memory is found by: its text as readers see it
    /// (redacted, in `egress` mode too — a search must not find what a
    /// read would hide), title and tags.
    fn terms(
        &self,
        ns: &Namespace,
        key: &DataKey,
        m: &Memory,
    ) -> Result<lexical::Terms, ServiceError> {
        Ok(lexical::Terms::of(key, &self.searchable_text(ns, m)?))
    }

    /// `m` (of namespace `namespace`) with its indexing status as of now.
    pub fn current_status(&self, namespace: &str, m: Memory) -> Result<Memory, ServiceError> {
        let ns = self.find_namespace(namespace)?;
        self.with_status(&ns, m)
    }

    /// `m` with its indexing status, in a namespace with an embedder.
    pub(crate) fn with_status(
        &self,
        ns: &Namespace,
        mut m: Memory,
    ) -> Result<Memory, ServiceError> {
        if ns.settings.embedder.is_some() {
            let job = self
                .store
                .get(|t| t.jobs, &vector::job_key(&ns.id, &m.id))?
                .map(|row| vector::Job::decode(&row));
            m.status = Some(
                match job {
                    None => "ready",
                    Some(Some(vector::Job {
                        failed: Some(reason),
                        ..
                    })) => {
                        m.status_reason = Some(reason);
                        "failed"
                    }
                    Some(_) => "indexing",
                }
                .into(),
            );
        }
        Ok(m)
    }

    /// What both indexes see of a memory: title, text and tags as a read
    /// shows them.
    fn searchable_text(&self, ns: &Namespace, m: &Memory) -> Result<String, ServiceError> {
        let shown = self.egress(ns, m.clone())?;
        Ok(format!(
            "{}\n{}\n{}",
            shown.title.as_deref().unwrap_or(""),
            shown.content,
            shown.tags.join(" ")
        ))
    }

    fn data_key(&self, ns: &Namespace) -> Result<Arc<DataKey>, ServiceError> {
        Ok(self.keyring.key(&self.store, &ns_key_id(&ns.id))?)
    }

    /// Run the namespace's redactor on `text`: the findings' labels counted,
    /// and the text with findings applied. Fails closed.
    fn redact(
        &self,
        ns: &Namespace,
        text: &str,
    ) -> Result<(String, BTreeMap<String, u32>), ServiceError> {
        if ns.settings.redaction == RedactionMode::Off || text.is_empty() {
            return Ok((text.to_string(), BTreeMap::new()));
        }
        let redactor = self
            .plugins
            .snapshot()
            .redactor(&ns.settings.redactor)
            .ok_or_else(|| {
                ServiceError::Redaction(format!(
                    "namespace \"{}\" uses redactor \"{}\", which is not loaded",
                    ns.name, ns.settings.redactor
                ))
            })?;
        let findings = redactor
            .redact(text)
            .map_err(|e| ServiceError::Redaction(e.to_string()))?;
        let mut counts = BTreeMap::new();
        for f in &findings {
            *counts.entry(f.label.clone()).or_insert(0) += 1;
        }
        Ok((apply_findings(text, &findings), counts))
    }

    fn validate(&self, m: &NewMemory) -> Result<(), ServiceError> {
        let l = &self.limits;
        if m.content.trim().is_empty() {
            return Err(invalid("content", "must not be empty"));
        }
        if m.content.len() > l.content_bytes {
            return Err(ServiceError::TooLarge {
                field: "content".into(),
                limit: l.content_bytes,
            });
        }
        if m.title.as_ref().is_some_and(|t| t.len() > l.title_bytes) {
            return Err(ServiceError::TooLarge {
                field: "title".into(),
                limit: l.title_bytes,
            });
        }
        if m.tags.len() > l.tags {
            return Err(invalid("tags", format!("at most {} tags", l.tags)));
        }
        for tag in &m.tags {
            if tag.is_empty() || tag.len() > l.tag_bytes || tag.chars().any(char::is_control) {
                return Err(invalid(
                    "tags",
                    format!(
                        "each tag must be 1-{} bytes without control characters",
                        l.tag_bytes
                    ),
                ));
            }
        }
        let meta =
            serde_json::to_vec(&m.metadata).map_err(|e| invalid("metadata", e.to_string()))?;
        if meta.len() > l.metadata_bytes {
            return Err(ServiceError::TooLarge {
                field: "metadata".into(),
                limit: l.metadata_bytes,
            });
        }
        if let Some(i) = m.importance
            && !(0.0..=1.0).contains(&i)
        {
            return Err(invalid("importance", "must be between 0 and 1"));
        }
        if m.ttl_seconds == Some(0) {
            return Err(invalid("ttl_seconds", "must be at least 1"));
        }
        Ok(())
    }

    /// Store a memory. Identical content (after redaction) in the same
    /// namespace returns the existing memory with `created: false`.
    /// Governed: the policy sees the tags and the redaction labels.
    pub fn store(
        &self,
        who: &Principal,
        namespace: &str,
        new: NewMemory,
    ) -> Result<Stored, ServiceError> {
        self.authorize(who, namespace, Role::Writer, "memory.store", None)?;
        self.validate(&new)?;
        let ns = self.find_namespace(namespace)?;
        let memory = self.prepare_store(&ns, who, new.clone())?;
        self.govern(
            who,
            Proposal {
                ns: &ns,
                target: None,
                tags: memory.tags.clone(),
                labels: memory.redactions.keys().cloned().collect(),
                payload: Payload::Store { memory: new },
                audit_action: "memory.store",
            },
        )?;
        self.commit_store(who, &ns, memory, None)
    }

    /// The memory `new` becomes in `ns`: validated, redacted, stamped with
    /// `who` as its author.
    fn prepare_store(
        &self,
        ns: &Namespace,
        who: &Principal,
        new: NewMemory,
    ) -> Result<Memory, ServiceError> {
        self.validate(&new)?;
        let actor = who.actor();
        let (redacted, counts) = self.redact(ns, &new.content)?;
        let title = match &new.title {
            Some(t) => Some(self.redact(ns, t)?.0),
            None => None,
        };
        let content = match ns.settings.redaction {
            RedactionMode::StoreRedacted => redacted,
            RedactionMode::Egress | RedactionMode::Off => new.content.clone(),
        };
        let now = model::now_ms();
        let mut tags: Vec<String> = Vec::new();
        for t in new.tags {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        Ok(Memory {
            id: Uuid::now_v7(),
            namespace: ns.name.clone(),
            content,
            title,
            tags,
            metadata: new.metadata,
            agent_id: actor.agent_id.clone(),
            agent_type: actor.agent_type.clone(),
            updated_by: Some(actor.agent_id.clone()),
            created_at: now,
            updated_at: now,
            expires_at: new.ttl_seconds.map(|s| {
                now.saturating_add(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX))
            }),
            importance: new.importance.unwrap_or(0.5),
            version: 1,
            redactions: counts,
            status: None,
            status_reason: None,
        })
    }

    /// Write `memory` (governed already), or find its live twin, with
    /// `exec` when an approval runs it.
    fn commit_store(
        &self,
        who: &Principal,
        ns: &Namespace,
        memory: Memory,
        exec: Option<Execution>,
    ) -> Result<Stored, ServiceError> {
        let key = self.data_key(ns)?;
        let digest = Sha256::digest(memory.content.as_bytes());
        let dedup_row = [ns.id.as_bytes().as_slice(), &key.blind("content", &digest)].concat();
        let head = head_key(&ns.id, &memory.id);
        let sealed = seal_json(&key, "memories", &head, &memory)?;
        let terms = self.terms(ns, &key, &memory)?;
        let ns_row = self.namespace_row(&ns.name)?;
        let ns_name = ns.name.clone();
        let system = self.system_key()?;
        let ns_id = ns.id;
        let id = memory.id;
        let expiry = memory
            .expires_at
            .map(|at| expiry_key(at, &ns.id, &memory.id));
        let record = Record::by(who, "memory.store").ns(&ns.name);
        let audit = self.audit.clone();
        let twin_key = key.clone();
        let exec_in = exec.clone();
        let gone = format!("namespace \"{}\" no longer exists", ns.name);
        let (existing, indexing, entry) = self.store.write_blocking(move |txn, t| {
            approvals::apply(&exec_in, txn, t)?;
            if get_in(txn, t.namespaces, &ns_row)?.is_none() {
                return Err(StoreError::Rejected(gone.clone()));
            }
            let embeds = indexing::embeds_in(txn, t, &system, &ns_row, &ns_id, &ns_name)?;
            if let Some(prior) = get_in(txn, t.dedup, &dedup_row)?
                && let Ok(prior_id) = Uuid::from_slice(&prior)
                && let Some(row) = get_in(txn, t.memories, &head_key(&ns_id, &prior_id))?
                // An expired twin does not count: this one is stored, and
                // the sweep removes the twin.
                && let Ok(found) =
                    open_json::<Memory>(&twin_key, "memories", &head_key(&ns_id, &prior_id), &row)
                && !found.expired(model::now_ms())
            {
                let entry = audit.append(
                    txn,
                    t,
                    &record.clone().target(prior_id).outcome("duplicate", None),
                )?;
                return Ok((Some(found), false, entry));
            }
            txn.put(t.memories, &head, &sealed, WriteFlags::empty())?;
            lexical::put(txn, t, &ns_id, &id, &terms)?;
            if embeds {
                txn.put(
                    t.jobs,
                    &vector::job_key(&ns_id, &id),
                    &1u32.to_be_bytes(),
                    WriteFlags::empty(),
                )?;
            }
            txn.put(t.dedup, &dedup_row, id.as_bytes(), WriteFlags::empty())?;
            if let Some(expiry) = &expiry {
                txn.put(t.jobs, expiry, &[], WriteFlags::empty())?;
            }
            let entry = audit.append(txn, t, &record.clone().target(id))?;
            Ok((None, embeds, entry))
        })?;
        approvals::emit(&exec);
        crate::audit::emit(&entry);
        match existing {
            None => Ok(Stored {
                memory,
                created: true,
                indexing,
            }),
            Some(found) => Ok(Stored {
                memory: self.egress(ns, found)?,
                created: false,
                indexing: false,
            }),
        }
    }

    /// Store several memories, each on its own: one item's failure does
    /// not stop the others. Items arrive as raw JSON so a malformed one is
    /// reported in its place. The namespace must exist.
    pub fn store_many(
        &self,
        who: &Principal,
        namespace: &str,
        items: Vec<serde_json::Value>,
    ) -> Result<Vec<Result<Stored, ServiceError>>, ServiceError> {
        self.authorize(who, namespace, Role::Writer, "memory.store", None)?;
        self.find_namespace(namespace)?;
        Ok(items
            .into_iter()
            .map(|item| {
                let new: NewMemory =
                    serde_json::from_value(item).map_err(|e| invalid("memory", e.to_string()))?;
                self.store(who, namespace, new)
            })
            .collect())
    }

    /// In `egress` mode, redact on the way out.
    fn egress(&self, ns: &Namespace, mut m: Memory) -> Result<Memory, ServiceError> {
        if ns.settings.redaction == RedactionMode::Egress {
            m.content = self.redact(ns, &m.content)?.0;
            if let Some(t) = &m.title {
                m.title = Some(self.redact(ns, t)?.0);
            }
        }
        Ok(m)
    }

    fn load(&self, ns: &Namespace, id: &Uuid) -> Result<Memory, ServiceError> {
        let missing = || ServiceError::NoMemory {
            namespace: ns.name.clone(),
            id: id.to_string(),
        };
        let head = head_key(&ns.id, id);
        let sealed = self
            .store
            .read(|txn, t| get_in(txn, t.memories, &head))?
            .ok_or_else(missing)?;
        let m: Memory = open_json(&*self.data_key(ns)?, "memories", &head, &sealed)?;
        if m.expired(model::now_ms()) {
            return Err(missing());
        }
        Ok(m)
    }

    /// One memory (redacted on the way out in `egress` mode).
    pub fn get(&self, who: &Principal, namespace: &str, id: &Uuid) -> Result<Memory, ServiceError> {
        self.authorize(
            who,
            namespace,
            Role::Reader,
            "memory.get",
            Some(id.to_string()),
        )?;
        let ns = self.find_namespace(namespace)?;
        let m = self.load(&ns, id)?;
        let m = self.with_status(&ns, m)?;
        self.egress(&ns, m)
    }

    /// A page of memories, oldest first, filtered.
    pub fn list(
        &self,
        who: &Principal,
        namespace: &str,
        q: &ListQuery,
    ) -> Result<Page, ServiceError> {
        self.authorize(who, namespace, Role::Reader, "memory.list", None)?;
        let ns = self.find_namespace(namespace)?;
        let key = self.data_key(&ns)?;
        let limit = q.limit.unwrap_or(50).clamp(1, 200);
        let start = match q.cursor {
            // Just past the cursor's head and its history rows.
            Some(c) => [head_key(&ns.id, &c), vec![0xff; 5]].concat(),
            None => ns.id.as_bytes().to_vec(),
        };
        let now = model::now_ms();
        let mut out = Vec::new();
        let mut last_seen = None;
        let mut more = false;
        let prefix = *ns.id.as_bytes();
        // Read in chunks: filters may skip rows, but a page never costs a
        // scan of the whole namespace.
        let mut from = start;
        'chunks: loop {
            let chunk =
                self.store
                    .rows_max(|t| t.memories, &from, |k| k.starts_with(&prefix), 256)?;
            let exhausted = chunk.len() < 256;
            for (k, v) in chunk {
                if k.len() != 32 {
                    continue;
                }
                if out.len() == limit {
                    more = true;
                    break 'chunks;
                }
                let m: Memory = open_json(&key, "memories", &k, &v)?;
                last_seen = Some(m.id);
                if q.filters.keeps(&m, now) {
                    let m = self.with_status(&ns, m)?;
                    out.push(self.egress(&ns, m)?);
                }
            }
            match last_seen {
                Some(id) if !exhausted => from = [head_key(&ns.id, &id), vec![0xff; 5]].concat(),
                _ => break,
            }
        }
        Ok(Page {
            memories: out,
            next_cursor: if more { last_seen } else { None },
        })
    }

    /// Change a memory: the current version moves to its history and a new
    /// version (number + 1) takes its place, redacted like a new memory.
    /// Governed: the policy sees the new tags and redaction labels.
    pub fn update(
        &self,
        who: &Principal,
        namespace: &str,
        id: &Uuid,
        patch: MemoryPatch,
    ) -> Result<Memory, ServiceError> {
        self.authorize(
            who,
            namespace,
            Role::Writer,
            "memory.update",
            Some(id.to_string()),
        )?;
        let ns = self.find_namespace(namespace)?;
        let old = self.load(&ns, id)?;
        self.owns(who, &ns, &old, "memory.update")?;
        let next = self.prepare_update(&ns, who, &old, &patch)?;
        self.govern(
            who,
            Proposal {
                ns: &ns,
                target: Some((*id, old.version)),
                tags: next.tags.clone(),
                labels: next.redactions.keys().cloned().collect(),
                payload: Payload::Update {
                    patch: patch.clone(),
                },
                audit_action: "memory.update",
            },
        )?;
        self.commit_update(who, &ns, old, next, patch.ttl_seconds, None)
    }

    /// The next version of `old` under `patch`: validated and redacted.
    fn prepare_update(
        &self,
        ns: &Namespace,
        who: &Principal,
        old: &Memory,
        patch: &MemoryPatch,
    ) -> Result<Memory, ServiceError> {
        let actor = who.actor();
        let mut check = NewMemory {
            content: patch.content.clone().unwrap_or_else(|| old.content.clone()),
            title: patch
                .title
                .clone()
                .or_else(|| old.title.clone())
                .filter(|t| !t.is_empty()),
            tags: patch.tags.clone().unwrap_or_else(|| old.tags.clone()),
            metadata: patch
                .metadata
                .clone()
                .unwrap_or_else(|| old.metadata.clone()),
            ttl_seconds: patch.ttl_seconds,
            importance: Some(patch.importance.unwrap_or(old.importance)),
        };
        self.validate(&check)?;
        let mut next = old.clone();
        let mut redactions = old.redactions.clone();
        if let Some(content) = &patch.content {
            let (redacted, counts) = self.redact(ns, content)?;
            redactions = counts;
            next.content = match ns.settings.redaction {
                RedactionMode::StoreRedacted => redacted,
                _ => content.clone(),
            };
        }
        if let Some(title) = &patch.title {
            next.title = if title.is_empty() {
                None
            } else {
                Some(self.redact(ns, title)?.0)
            };
        }
        let now = model::now_ms();
        check.tags.dedup();
        next.tags = check.tags;
        next.metadata = check.metadata;
        next.importance = check.importance.unwrap_or(old.importance);
        if let Some(ttl) = patch.ttl_seconds {
            next.expires_at = Some(
                now.saturating_add(i64::try_from(ttl.saturating_mul(1000)).unwrap_or(i64::MAX)),
            );
        }
        next.redactions = redactions;
        next.version = old.version + 1;
        next.updated_at = now;
        next.updated_by = Some(actor.agent_id.clone());
        Ok(next)
    }

    /// Write `next` over `old` (governed already), with `exec` when an
    /// approval runs it.
    fn commit_update(
        &self,
        who: &Principal,
        ns: &Namespace,
        old: Memory,
        next: Memory,
        ttl_seconds: Option<u64>,
        exec: Option<Execution>,
    ) -> Result<Memory, ServiceError> {
        let key = self.data_key(ns)?;
        let id = &old.id;
        let head = head_key(&ns.id, id);
        let new_expiry = ttl_seconds
            .and(next.expires_at)
            .map(|at| expiry_key(at, &ns.id, id));
        let history = version_key(&ns.id, id, old.version);
        let sealed_head = seal_json(&key, "memories", &head, &next)?;
        let terms = self.terms(ns, &key, &next)?;
        let ns_row = self.namespace_row(&ns.name)?;
        let ns_name = ns.name.clone();
        let system = self.system_key()?;
        let next_version = next.version;
        let ns_id = ns.id;
        let memory_id = *id;
        let sealed_old = seal_json(&key, "memories", &history, &old)?;
        let old_dedup = [
            ns.id.as_bytes().as_slice(),
            &key.blind("content", &Sha256::digest(old.content.as_bytes())),
        ]
        .concat();
        let new_dedup = [
            ns.id.as_bytes().as_slice(),
            &key.blind("content", &Sha256::digest(next.content.as_bytes())),
        ]
        .concat();
        let id_bytes = *id.as_bytes();
        let raced = format!("memory {id} changed while it was being updated; retry");
        let record = Record::by(who, "memory.update").ns(&ns.name).target(id);
        let audit = self.audit.clone();
        let exec_in = exec.clone();
        let entry = self.store.write_blocking(move |txn, t| {
            approvals::apply(&exec_in, txn, t)?;
            // The version read above must still be current: no lost updates.
            let current = get_in(txn, t.memories, &head)?;
            if current.is_none() {
                return Err(StoreError::Rejected(raced.clone()));
            }
            txn.put(t.memories, &history, &sealed_old, WriteFlags::NO_OVERWRITE)
                .map_err(|e| match e {
                    lmdb::Error::KeyExist => StoreError::Rejected(raced.clone()),
                    other => other.into(),
                })?;
            txn.put(t.memories, &head, &sealed_head, WriteFlags::empty())?;
            lexical::put(txn, t, &ns_id, &memory_id, &terms)?;
            // The old vector goes with the old text: until the new one is
            // embedded, what was changed away cannot be found by meaning.
            match txn.del(t.vectors, &vector::row_key(&ns_id, &memory_id), None) {
                Ok(()) | Err(lmdb::Error::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
            if indexing::embeds_in(txn, t, &system, &ns_row, &ns_id, &ns_name)? {
                txn.put(
                    t.jobs,
                    &vector::job_key(&ns_id, &memory_id),
                    &next_version.to_be_bytes(),
                    WriteFlags::empty(),
                )?;
            }
            if let Some(expiry) = &new_expiry {
                txn.put(t.jobs, expiry, &[], WriteFlags::empty())?;
            }
            if old_dedup != new_dedup {
                match txn.del(t.dedup, &old_dedup, None) {
                    Ok(()) | Err(lmdb::Error::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
                txn.put(t.dedup, &new_dedup, &id_bytes, WriteFlags::empty())?;
            }
            audit.append(txn, t, &record)
        })?;
        approvals::emit(&exec);
        crate::audit::emit(&entry);
        self.vectors.remove(
            ns.vector_space(),
            &memory_id,
            next_version.saturating_sub(1),
        );
        let next = self.with_status(ns, next)?;
        self.egress(ns, next)
    }

    /// Every version of a memory, oldest first, ending with the current one.
    pub fn history(
        &self,
        who: &Principal,
        namespace: &str,
        id: &Uuid,
    ) -> Result<Vec<Memory>, ServiceError> {
        self.authorize(
            who,
            namespace,
            Role::Reader,
            "memory.history",
            Some(id.to_string()),
        )?;
        let ns = self.find_namespace(namespace)?;
        let current = self.load(&ns, id)?;
        let key = self.data_key(&ns)?;
        let prefix = head_key(&ns.id, id);
        let rows = self
            .store
            .rows(|t| t.memories, &prefix, |k| k.starts_with(&prefix))?;
        let mut versions = Vec::new();
        for (k, v) in rows.iter().filter(|(k, _)| k.len() == 36) {
            let m: Memory = open_json(&key, "memories", k, v)?;
            versions.push(self.egress(&ns, m)?);
        }
        versions.sort_by_key(|m| m.version);
        versions.push(self.egress(&ns, current)?);
        Ok(versions)
    }

    /// Delete every memory whose expiry has passed; returns how many. Expired
    /// memories are already invisible to every read; this reclaims them.
    pub fn purge_expired(&self) -> Result<usize, ServiceError> {
        let now = model::now_ms();
        let due = self.store.rows(
            |t| t.jobs,
            EXPIRY_PREFIX,
            |k| {
                k.starts_with(EXPIRY_PREFIX)
                    && k.get(4..12)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .is_some_and(|b| i64::from_be_bytes(b) <= now)
            },
        )?;
        let namespaces: std::collections::HashMap<Uuid, Namespace> = self
            .all_namespaces()?
            .into_iter()
            .map(|n| (n.id, n))
            .collect();
        let mut purged = 0;
        for (index_key, _) in due {
            let (Some(ns_id), Some(id)) = (
                index_key.get(12..28).and_then(|b| Uuid::from_slice(b).ok()),
                index_key.get(28..44).and_then(|b| Uuid::from_slice(b).ok()),
            ) else {
                continue;
            };
            if let Some(ns) = namespaces.get(&ns_id) {
                let head = head_key(&ns.id, &id);
                if let Some(sealed) = self.store.get(|t| t.memories, &head)? {
                    let m: Memory = open_json(&*self.data_key(ns)?, "memories", &head, &sealed)?;
                    // An update may have moved the expiry: only the current one counts.
                    if m.expired(now) {
                        self.remove(
                            ns,
                            &m,
                            Record::by(&Principal::system(), "memory.expire"),
                            None,
                        )?;
                        purged += 1;
                    }
                }
            }
            self.store
                .write_blocking(move |txn, t| match txn.del(t.jobs, &index_key, None) {
                    Ok(()) | Err(lmdb::Error::NotFound) => Ok(()),
                    Err(e) => Err(e.into()),
                })?;
        }
        Ok(purged)
    }

    /// Forget a memory: its current version, its history and its dedup
    /// entry. Writers may forget only what they wrote; admins anything.
    /// Governed: the policy sees the memory's tags and redaction labels.
    pub fn forget(&self, who: &Principal, namespace: &str, id: &Uuid) -> Result<(), ServiceError> {
        self.authorize(
            who,
            namespace,
            Role::Writer,
            "memory.forget",
            Some(id.to_string()),
        )?;
        let ns = self.find_namespace(namespace)?;
        let current = self.load(&ns, id)?;
        self.owns(who, &ns, &current, "memory.forget")?;
        self.govern(
            who,
            Proposal {
                ns: &ns,
                target: Some((*id, current.version)),
                tags: current.tags.clone(),
                labels: current.redactions.keys().cloned().collect(),
                payload: Payload::Forget,
                audit_action: "memory.forget",
            },
        )?;
        self.remove(&ns, &current, Record::by(who, "memory.forget"), None)
    }

    /// A writer changes only its own memories; an admin any.
    fn owns(
        &self,
        who: &Principal,
        ns: &Namespace,
        m: &Memory,
        action: &str,
    ) -> Result<(), ServiceError> {
        if m.agent_id == who.agent_id || who.role_in(&ns.name) >= Some(Role::Admin) {
            return Ok(());
        }
        let detail = format!(
            "memory {} was written by agent \"{}\"; a writer may change or forget only its own memories (ask an admin of \"{}\")",
            m.id, m.agent_id, ns.name
        );
        Err(self.deny(
            Record::by(who, action)
                .ns(&ns.name)
                .target(m.id)
                .outcome("denied", Some("not the writer's own memory".into())),
            detail,
        ))
    }

    /// Delete every row of `current` (any expiry), audited as `record`,
    /// with `exec` when an approval runs it. Open approvals that target it
    /// are superseded.
    fn remove(
        &self,
        ns: &Namespace,
        current: &Memory,
        record: Record,
        exec: Option<Execution>,
    ) -> Result<(), ServiceError> {
        let key = self.data_key(ns)?;
        let id = &current.id;
        let digest = Sha256::digest(current.content.as_bytes());
        let dedup_row = [ns.id.as_bytes().as_slice(), &key.blind("content", &digest)].concat();
        let prefix = head_key(&ns.id, id);
        let version = current.version;
        let (ns_id, memory_id) = (ns.id, *id);
        let record = record.ns(&ns.name).target(id);
        let audit = self.audit.clone();
        let raced = format!("memory {id} changed while it was being forgotten; retry");
        let ledger = self.ledger()?;
        let exec_in = exec.clone();
        let entries = self.store.write_blocking(move |txn, t| {
            approvals::apply(&exec_in, txn, t)?;
            // The version checked (and, for a writer, found to be its own)
            // must still be the current one.
            let still = get_in(txn, t.memories, &prefix)?
                .and_then(|sealed| open_json::<Memory>(&key, "memories", &prefix, &sealed).ok())
                .is_some_and(|m| m.version == version);
            if !still {
                return Err(StoreError::Rejected(raced.clone()));
            }
            // The head and every history row, whatever their numbers.
            let rows: Vec<Vec<u8>> = {
                let mut cursor = txn.open_ro_cursor(t.memories)?;
                lmdb::Cursor::iter_from(&mut cursor, &prefix)
                    .map_while(|item| item.ok())
                    .map(|(k, _)| k)
                    .take_while(|k| k.starts_with(&prefix))
                    .map(<[u8]>::to_vec)
                    .collect()
            };
            for row in rows {
                txn.del(t.memories, &row, None)?;
            }
            lexical::remove(txn, t, &ns_id, &memory_id)?;
            // A newer memory with the same content may own the dedup row
            // (this one had expired): leave it to that one.
            if get_in(txn, t.dedup, &dedup_row)?.as_deref() == Some(memory_id.as_bytes()) {
                txn.del(t.dedup, &dedup_row, None)?;
            }
            for (db, row) in [
                (t.vectors, vector::row_key(&ns_id, &memory_id)),
                (t.jobs, vector::job_key(&ns_id, &memory_id)),
            ] {
                match txn.del(db, &row, None) {
                    Ok(()) | Err(lmdb::Error::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let mut entries = vec![audit.append(txn, t, &record)?];
            entries.extend(approvals::supersede_in(
                &ledger,
                &audit,
                txn,
                t,
                &ns_id,
                |i| i.target_id == Some(memory_id),
                "its memory was forgotten",
            )?);
            Ok(entries)
        })?;
        approvals::emit(&exec);
        entries.iter().for_each(crate::audit::emit);
        // Forgotten for good: no version of it counts again.
        self.vectors.remove(ns.vector_space(), &memory_id, u32::MAX);
        Ok(())
    }
}

fn validate_settings(s: &NamespaceSettings) -> Result<(), ServiceError> {
    if !crate::plugins::manifest::valid_id(&s.redactor) {
        return Err(invalid(
            "redactor",
            format!("\"{}\" is not a plugin id", s.redactor),
        ));
    }
    if let Some(e) = &s.embedder
        && !crate::plugins::manifest::valid_id(e)
    {
        return Err(invalid("embedder", format!("\"{e}\" is not a plugin id")));
    }
    if s.policy.trim().is_empty() || s.policy.len() > 256 {
        return Err(invalid(
            "policy",
            "must be 1-256 characters, e.g. allow, single:reviewer, consensus:2",
        ));
    }
    Ok(())
}
