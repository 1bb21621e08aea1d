//! Export and import use cases. An export is what an admin may read, line
//! by line ([`ExportLine`]; `transfer/` writes them as age-encrypted JSON
//! Lines). An import is not a side door: each memory goes through the same
//! funnel as a store — authorisation, validation, redaction, the policy
//! (which may hold it for approval), dedup, indexing and extraction jobs,
//! the audit log (`memory.import`). It keeps the memory's id and its times
//! (so a re-import finds what it imported before); the importer becomes its
//! author, and who wrote it before is kept in [`Imported`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::approvals::{Payload, Proposal};
use super::model::{self, Imported, Memory, NamespaceSettings};
use super::{MemoryPatch, Namespace, NewMemory, Service, ServiceError, head_key, open_json};
use crate::audit::Record;
use crate::auth::{Principal, Role};

/// What the export format says it is.
pub const FORMAT: &str = "memhost-export";
/// The version of the export format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExportLine {
    /// The first line.
    Header {
        /// Always [`FORMAT`].
        format: String,
        /// [`FORMAT_VERSION`].
        format_version: u32,
        /// The memhost that wrote it.
        memhost_version: String,
        /// When, Unix ms.
        created_at: i64,
        /// The namespaces it holds, in order.
        namespaces: Vec<String>,
        /// Whether memories carry their earlier versions.
        versions: bool,
    },
    /// A namespace, before its memories.
    Namespace {
        /// Its name.
        name: String,
        /// When it was created, Unix ms.
        created_at: i64,
        /// Its settings.
        settings: NamespaceSettings,
    },
    /// A memory (its current version, as a read shows it), with its
    /// earlier versions when asked for.
    Memory {
        /// The memory.
        memory: Box<Memory>,
        /// Its earlier versions, oldest first.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        versions: Vec<Memory>,
    },
    /// The last line: what came before it (a file without it was cut short).
    End {
        /// Namespace lines.
        namespaces: u64,
        /// Memory lines.
        memories: u64,
        /// Earlier versions within them.
        versions: u64,
    },
}

/// What an import keeps of a memory's past beyond what a new one has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    /// Its id, kept when it is a UUID.
    #[serde(default)]
    pub id: Option<Uuid>,
    /// When it was created, Unix ms.
    #[serde(default)]
    pub created_at: Option<i64>,
    /// When it was last changed, Unix ms.
    #[serde(default)]
    pub updated_at: Option<i64>,
    /// When it expires, Unix ms.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Its provenance (`at` is set when it is imported).
    pub imported: Imported,
}

/// A memory to import: what a store takes, and its past.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportItem {
    /// Content, title, tags, metadata, importance, observed time.
    pub memory: NewMemory,
    /// Id, times, provenance.
    pub origin: Origin,
}

/// What to do with a memory whose id is already in the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnConflict {
    /// Leave the existing one (a re-import changes nothing).
    #[default]
    Skip,
    /// Make the imported one its next version (the update funnel).
    NewVersion,
    /// Stop the import there.
    Fail,
}

/// What became of one imported memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ImportOutcome {
    /// Stored under this id.
    Created {
        /// Its id.
        id: Uuid,
    },
    /// Its content was there already, as this memory.
    Duplicate {
        /// The memory that has it.
        id: Uuid,
    },
    /// Its id was there already; left as it was.
    Skipped {
        /// The id.
        id: Uuid,
    },
    /// Its id was there already; it became this version.
    Updated {
        /// The id.
        id: Uuid,
        /// The new version.
        version: u32,
    },
    /// It had expired before it arrived; not stored.
    Expired,
}

impl std::str::FromStr for OnConflict {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(OnConflict::Skip),
            "new-version" => Ok(OnConflict::NewVersion),
            "fail" => Ok(OnConflict::Fail),
            _ => Err(format!("\"{s}\" is not one of skip, new-version, fail")),
        }
    }
}

impl Service {
    /// Export `names` (all the namespaces `who` administers when empty):
    /// `emit` gets the header, then each namespace and its memories, then
    /// the end line. Needs admin on each; audited per namespace. Memories
    /// are shown as a read shows them (redacted on the way out in `egress`
    /// mode), with their earlier versions when `versions`.
    pub fn export(
        &self,
        who: &Principal,
        names: &[String],
        versions: bool,
        emit: &mut dyn FnMut(ExportLine) -> Result<(), ServiceError>,
    ) -> Result<(u64, u64, u64), ServiceError> {
        let mut chosen = Vec::new();
        if names.is_empty() {
            chosen = self
                .namespaces(who)?
                .into_iter()
                .filter(|ns| who.role_in(&ns.name) >= Some(Role::Admin))
                .collect();
        } else {
            for name in names {
                self.authorize(who, name, Role::Admin, "namespace.export", None)?;
                chosen.push(self.find_namespace(name)?);
            }
        }
        emit(ExportLine::Header {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            memhost_version: env!("CARGO_PKG_VERSION").into(),
            created_at: model::now_ms(),
            namespaces: chosen.iter().map(|ns| ns.name.clone()).collect(),
            versions,
        })?;
        let (mut memories, mut earlier) = (0u64, 0u64);
        for ns in &chosen {
            emit(ExportLine::Namespace {
                name: ns.name.clone(),
                created_at: ns.created_at,
                settings: ns.settings.clone(),
            })?;
            let (m, v) = self.export_namespace(ns, versions, emit)?;
            self.record_event(
                Record::by(who, "namespace.export")
                    .ns(&ns.name)
                    .outcome("ok", Some(format!("{m} memories, {v} earlier versions"))),
            );
            memories += m;
            earlier += v;
        }
        let namespaces = chosen.len() as u64;
        emit(ExportLine::End {
            namespaces,
            memories,
            versions: earlier,
        })?;
        Ok((namespaces, memories, earlier))
    }

    /// `ns`'s memories, in id order, a chunk of rows per read.
    fn export_namespace(
        &self,
        ns: &Namespace,
        versions: bool,
        emit: &mut dyn FnMut(ExportLine) -> Result<(), ServiceError>,
    ) -> Result<(u64, u64), ServiceError> {
        let key = self.data_key(ns)?;
        let prefix = *ns.id.as_bytes();
        let now = model::now_ms();
        let (mut memories, mut earlier) = (0u64, 0u64);
        // A head row (namespace id + memory id) is followed by its history
        // rows (+ version): the line goes out when the next head comes.
        let mut pending: Option<(Memory, Vec<Memory>)> = None;
        let mut flush = |pending: &mut Option<(Memory, Vec<Memory>)>,
                         emit: &mut dyn FnMut(ExportLine) -> Result<(), ServiceError>|
         -> Result<(), ServiceError> {
            if let Some((m, mut older)) = pending.take() {
                older.sort_by_key(|v| v.version);
                memories += 1;
                earlier += older.len() as u64;
                let mut m = self.egress(ns, self.with_status(ns, m)?)?;
                (m.status, m.status_reason) = (None, None);
                emit(ExportLine::Memory {
                    memory: Box::new(m),
                    versions: older,
                })?;
            }
            Ok(())
        };
        let mut from = prefix.to_vec();
        loop {
            let chunk =
                self.store
                    .rows_max(|t| t.memories, &from, |k| k.starts_with(&prefix), 256)?;
            let Some((last, _)) = chunk.last() else { break };
            from = [last.as_slice(), &[0]].concat();
            let ended = chunk.len() < 256;
            for (k, v) in chunk {
                let m: Memory = open_json(&key, "memories", &k, &v)?;
                if k.len() == 32 {
                    flush(&mut pending, emit)?;
                    if !m.expired(now) {
                        pending = Some((m, Vec::new()));
                    }
                } else if versions
                    && let Some((head, older)) = pending.as_mut()
                    && head.id == m.id
                    && m.version < head.version
                {
                    older.push(self.egress(ns, m)?);
                }
            }
            if ended {
                break;
            }
        }
        flush(&mut pending, emit)?;
        Ok((memories, earlier))
    }

    /// Create namespace `name` with `settings` for an import unless it
    /// exists (an existing one keeps its own settings). Returns whether it
    /// was created.
    pub fn import_namespace(
        &self,
        who: &Principal,
        name: &str,
        settings: NamespaceSettings,
    ) -> Result<bool, ServiceError> {
        match self.find_namespace(name) {
            Ok(_) => Ok(false),
            Err(ServiceError::NoNamespace(_)) => {
                let mut settings = settings;
                // Recorded by the embedder bound here, not copied.
                settings.dimensions = None;
                self.create_namespace(who, name, settings).map(|_| true)
            }
            Err(e) => Err(e),
        }
    }

    /// Check that `who` may import into `namespace` (a writer of it) and
    /// that it exists, before a file is read.
    pub fn check_import(&self, who: &Principal, namespace: &str) -> Result<(), ServiceError> {
        self.authorize(who, namespace, Role::Writer, "memory.import", None)?;
        self.find_namespace(namespace).map(|_| ())
    }

    /// Import one memory into `namespace` through the store funnel (or,
    /// for an id already there and `new-version`, the update funnel).
    pub fn import_memory(
        &self,
        who: &Principal,
        namespace: &str,
        item: ImportItem,
        on_conflict: OnConflict,
    ) -> Result<ImportOutcome, ServiceError> {
        let r = self.import_uncounted(who, namespace, item, on_conflict);
        crate::metrics::operation(
            "import",
            match &r {
                Ok(ImportOutcome::Created { .. }) => "ok",
                Ok(ImportOutcome::Duplicate { .. }) => "duplicate",
                Ok(ImportOutcome::Skipped { .. }) => "skipped",
                Ok(ImportOutcome::Updated { .. }) => "updated",
                Ok(ImportOutcome::Expired) => "expired",
                r => super::outcome(r),
            },
        );
        r
    }

    fn import_uncounted(
        &self,
        who: &Principal,
        namespace: &str,
        item: ImportItem,
        on_conflict: OnConflict,
    ) -> Result<ImportOutcome, ServiceError> {
        self.authorize(who, namespace, Role::Writer, "memory.import", None)?;
        let ImportItem {
            memory: mut new,
            mut origin,
        } = item;
        // Ids say when they were made (lists seek by them): an id that is
        // not a UUIDv7 is kept as provenance and a new one made for its
        // creation time.
        if let Some(id) = origin.id.filter(|id| id.get_version_num() != 7) {
            origin.imported.original_id.get_or_insert(id.to_string());
            origin.id = None;
        }
        if origin.id.is_none()
            && let Some(created) = origin.created_at
        {
            origin.id = Some(model::id_at(created));
        }
        new.ttl_seconds = None;
        if new.observed_at.is_none() {
            new.observed_at = origin.created_at;
        }
        self.validate(&new)?;
        let ns = self.find_namespace(namespace)?;
        if origin.expires_at.is_some_and(|at| at <= model::now_ms()) {
            return Ok(ImportOutcome::Expired);
        }
        if let Some(id) = origin.id
            && self
                .store
                .get(|t| t.memories, &head_key(&ns.id, &id))?
                .is_some()
        {
            return match on_conflict {
                OnConflict::Skip => Ok(ImportOutcome::Skipped { id }),
                OnConflict::Fail => Err(ServiceError::Conflict(format!(
                    "memory {id} is already in namespace \"{namespace}\" (--on-conflict skip or new-version go on past it)"
                ))),
                OnConflict::NewVersion => {
                    let patch = MemoryPatch {
                        content: Some(new.content),
                        title: Some(new.title.unwrap_or_default()),
                        tags: Some(new.tags),
                        metadata: Some(new.metadata),
                        importance: new.importance,
                        observed_at: new.observed_at,
                        ..MemoryPatch::default()
                    };
                    let m = self.update(who, namespace, &id, patch)?;
                    Ok(ImportOutcome::Updated {
                        id,
                        version: m.version,
                    })
                }
            };
        }
        let memory = self.prepare_import(&ns, who, new.clone(), &origin)?;
        let payload = Payload::Store {
            memory: new,
            import: Some(origin),
        };
        self.govern(who, Proposal::store(&ns, &memory, payload, "memory.import"))?;
        let stored = self.commit_store(who, &ns, memory, None)?;
        Ok(if stored.created {
            ImportOutcome::Created {
                id: stored.memory.id,
            }
        } else {
            ImportOutcome::Duplicate {
                id: stored.memory.id,
            }
        })
    }

    /// The memory an import of `new` with `origin` becomes in `ns`: as a
    /// store would make it, with its id, times and provenance kept.
    pub(super) fn prepare_import(
        &self,
        ns: &Namespace,
        who: &Principal,
        new: NewMemory,
        origin: &Origin,
    ) -> Result<Memory, ServiceError> {
        let mut m = self.prepare_store(ns, who, new)?;
        if let Some(id) = origin.id {
            m.id = id;
        }
        if let Some(created) = origin.created_at {
            m.created_at = created;
            m.updated_at = origin.updated_at.unwrap_or(created).max(created);
        }
        m.expires_at = origin.expires_at;
        m.imported = Some(Imported {
            at: model::now_ms(),
            ..origin.imported.clone()
        });
        Ok(m)
    }
}
