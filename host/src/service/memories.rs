//! Memory use cases: store (one or many), get, list, history, update,
//! forget — the changes governed — and the expiry sweep.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::approvals::{self, Execution, Payload, Proposal};
use super::{
    EXPIRY_PREFIX, ListQuery, Memory, MemoryPatch, Namespace, NewMemory, Page, RedactionMode,
    Service, ServiceError, Stored, expiry_key, extraction, head_key, indexing, invalid, model,
    ns_key_id, open_json, seal_json, version_key,
};
use crate::audit::Record;
use crate::auth::{Principal, Role};
use crate::crypto::DataKey;
use crate::index::{lexical, vector};
use crate::plugins::apply_findings;
use crate::store::{StoreError, WriteFlags, del_in, get_in};

impl Service {
    /// The blind terms a memory is found by: its text as readers see it
    /// (redacted, in `egress` mode too — a search must not find what a
    /// read would hide), title and tags.
    pub(super) fn terms(
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

    /// `m` with what the background workers made of it: its indexing
    /// status (in a namespace with an embedder) and its entities (with an
    /// extractor).
    pub(crate) fn with_status(
        &self,
        ns: &Namespace,
        mut m: Memory,
    ) -> Result<Memory, ServiceError> {
        if m.observed_at.is_none() {
            // Stored before memories had one.
            m.observed_at = Some(m.created_at);
        }
        if ns.settings.extractor.is_some() {
            (m.entities, m.event_times) = self.extracted_of(ns, &m)?;
        }
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
    pub(super) fn searchable_text(
        &self,
        ns: &Namespace,
        m: &Memory,
    ) -> Result<String, ServiceError> {
        let shown = self.egress(ns, m.clone())?;
        Ok(format!(
            "{}\n{}\n{}",
            shown.title.as_deref().unwrap_or(""),
            shown.content,
            shown.tags.join(" ")
        ))
    }

    pub(super) fn data_key(&self, ns: &Namespace) -> Result<Arc<DataKey>, ServiceError> {
        Ok(self.keyring.key(&self.store, &ns_key_id(&ns.id))?)
    }

    /// Run the namespace's redactor on `text`: the findings' labels counted,
    /// and the text with findings applied. Fails closed.
    pub(super) fn redact(
        &self,
        ns: &Namespace,
        text: &str,
    ) -> Result<(String, Labels), ServiceError> {
        let (findings, counts) = self.findings(ns, text)?;
        Ok((apply_findings(text, &findings), counts))
    }

    /// What the namespace's redactor finds in `text` (nothing when the
    /// namespace does not redact), and the labels counted.
    fn findings(
        &self,
        ns: &Namespace,
        text: &str,
    ) -> Result<(Vec<crate::plugins::Finding>, Labels), ServiceError> {
        if ns.settings.redaction == RedactionMode::Off || text.is_empty() {
            return Ok((Vec::new(), BTreeMap::new()));
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
        Ok((findings, counts))
    }

    /// Redact the title, the tags and every string in the metadata (at any
    /// depth) in one call of the namespace's redactor: they are stored and
    /// indexed as readers see them, in `egress` mode too. Returns the
    /// labels found. Metadata keys are left as written.
    pub(super) fn redact_fields(
        &self,
        ns: &Namespace,
        title: Option<&mut String>,
        tags: &mut Vec<String>,
        metadata: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<Labels, ServiceError> {
        if ns.settings.redaction == RedactionMode::Off {
            return Ok(BTreeMap::new());
        }
        let mut pieces: Vec<&mut String> = Vec::new();
        pieces.extend(title);
        pieces.extend(tags.iter_mut());
        fn strings<'a>(v: &'a mut serde_json::Value, out: &mut Vec<&'a mut String>) {
            match v {
                serde_json::Value::String(s) => out.push(s),
                serde_json::Value::Array(items) => {
                    items.iter_mut().for_each(|v| strings(v, out));
                }
                serde_json::Value::Object(map) => {
                    map.values_mut().for_each(|v| strings(v, out));
                }
                _ => {}
            }
        }
        metadata.values_mut().for_each(|v| strings(v, &mut pieces));
        // One text, one call: pieces apart by a blank line, so no finding
        // of a well-behaved redactor spans two; one that does is cut at
        // the pieces' edges and applied to each.
        const GAP: &str = "\n\n";
        let mut joined = String::new();
        let mut spans = Vec::with_capacity(pieces.len());
        for p in &pieces {
            if !joined.is_empty() {
                joined.push_str(GAP);
            }
            spans.push((joined.len(), joined.len() + p.len()));
            joined.push_str(p);
        }
        let (findings, counts) = self.findings(ns, &joined)?;
        for (piece, (start, end)) in pieces.into_iter().zip(spans) {
            let mine: Vec<crate::plugins::Finding> = findings
                .iter()
                .filter(|f| (f.start as usize) < end && (f.end as usize) > start)
                .map(|f| crate::plugins::Finding {
                    start: (f.start as usize).max(start).saturating_sub(start) as u32,
                    end: ((f.end as usize).min(end) - start) as u32,
                    ..f.clone()
                })
                .collect();
            if !mine.is_empty() {
                *piece = apply_findings(piece, &mine);
            }
        }
        // Two tags may have become one.
        let mut seen = std::collections::HashSet::new();
        tags.retain(|t| !t.is_empty() && seen.insert(t.clone()));
        Ok(counts)
    }

    pub(super) fn validate(&self, m: &NewMemory) -> Result<(), ServiceError> {
        let l = &self.limits;
        if m.content.trim().is_empty() {
            return Err(invalid(
                "content",
                "must hold a character other than whitespace",
            ));
        }
        // Lengths in characters, as JSON Schema (and every client) counts.
        if m.content.chars().count() > l.content_chars {
            return Err(ServiceError::TooLarge {
                field: "content".into(),
                limit: l.content_chars,
                unit: "characters",
            });
        }
        if m.title
            .as_ref()
            .is_some_and(|t| t.chars().count() > l.title_chars)
        {
            return Err(ServiceError::TooLarge {
                field: "title".into(),
                limit: l.title_chars,
                unit: "characters",
            });
        }
        if m.tags.len() > l.tags {
            return Err(invalid("tags", format!("at most {} tags", l.tags)));
        }
        for tag in &m.tags {
            if tag.is_empty()
                || tag.chars().count() > l.tag_chars
                || tag.chars().any(char::is_control)
            {
                return Err(invalid(
                    "tags",
                    format!(
                        "each tag must be 1-{} characters without control characters",
                        l.tag_chars
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
                unit: "bytes (as JSON)",
            });
        }
        if let Some(i) = m.importance
            && !(0.0..=1.0).contains(&i)
        {
            return Err(invalid("importance", "must be between 0 and 1"));
        }
        super::check_time("observed_at", m.observed_at)?;
        if m.ttl_seconds
            .is_some_and(|t| !(1..=MAX_TTL_SECONDS).contains(&t))
        {
            return Err(invalid(
                "ttl_seconds",
                format!("must be 1-{MAX_TTL_SECONDS} (100 years)"),
            ));
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
        let r = self.store_uncounted(who, namespace, new);
        crate::metrics::operation(
            "store",
            match &r {
                Ok(s) if !s.created => "duplicate",
                r => super::outcome(r),
            },
        );
        r
    }

    fn store_uncounted(
        &self,
        who: &Principal,
        namespace: &str,
        new: NewMemory,
    ) -> Result<Stored, ServiceError> {
        self.authorize(who, namespace, Role::Writer, "memory.store", None)?;
        self.validate(&new)?;
        let ns = self.find_namespace(namespace)?;
        let memory = self.prepare_store(&ns, who, new.clone())?;
        // Held as submitted (sealed under the namespace key, removed when
        // the item closes): it runs exactly as it was asked.
        let payload = Payload::Store {
            memory: new,
            import: None,
        };
        self.govern(who, Proposal::store(&ns, &memory, payload, "memory.store"))?;
        self.commit_store(who, &ns, memory, None)
    }

    /// The memory `new` becomes in `ns`: validated, redacted, stamped with
    /// `who` as its author.
    pub(super) fn prepare_store(
        &self,
        ns: &Namespace,
        who: &Principal,
        new: NewMemory,
    ) -> Result<Memory, ServiceError> {
        self.validate(&new)?;
        let actor = who.actor();
        let (redacted, mut counts) = self.redact(ns, &new.content)?;
        let mut title = new.title;
        let mut tags: Vec<String> = Vec::new();
        for t in new.tags {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let mut metadata = new.metadata;
        // What the title, tags and metadata hold counts too: a policy
        // deciding on labels must see a secret wherever it was put.
        let found = self.redact_fields(ns, title.as_mut(), &mut tags, &mut metadata)?;
        for (label, n) in found {
            *counts.entry(label).or_insert(0) += n;
        }
        let content = match ns.settings.redaction {
            RedactionMode::StoreRedacted => redacted,
            RedactionMode::Egress | RedactionMode::Off => new.content.clone(),
        };
        let now = model::now_ms();
        Ok(Memory {
            id: Uuid::now_v7(),
            namespace: ns.name.clone(),
            content,
            title,
            tags,
            metadata,
            agent_id: actor.agent_id.clone(),
            agent_type: actor.agent_type.clone(),
            updated_by: Some(actor.agent_id.clone()),
            created_at: now,
            updated_at: now,
            observed_at: Some(new.observed_at.unwrap_or(now)),
            expires_at: new.ttl_seconds.map(|s| {
                now.saturating_add(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX))
            }),
            importance: new.importance.unwrap_or(0.5),
            version: 1,
            redactions: counts,
            status: None,
            status_reason: None,
            entities: Vec::new(),
            event_times: Vec::new(),
            imported: None,
        })
    }

    /// Write `memory` (governed already), or find its live twin, with
    /// `exec` when an approval runs it.
    pub(super) fn commit_store(
        &self,
        who: &Principal,
        ns: &Namespace,
        memory: Memory,
        exec: Option<Execution>,
    ) -> Result<Stored, ServiceError> {
        let key = self.data_key(ns)?;
        let dedup_row = dedup_row(ns, &key, &memory);
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
        let action = match memory.imported {
            Some(_) => "memory.import",
            None => "memory.store",
        };
        let record = Record::by(who, action).ns(&ns.name);
        let taken = format!(
            "memory {} is already in namespace \"{}\"",
            memory.id, ns.name
        );
        let audit = self.audit.clone();
        let twin_key = key.clone();
        let exec_in = exec.clone();
        let gone = format!("namespace \"{}\" no longer exists", ns.name);
        let read = ns.clone();
        let (existing, indexing, entry) = self.store.write_blocking(move |txn, t| {
            approvals::apply(&exec_in, txn, t)?;
            if get_in(txn, t.namespaces, &ns_row)?.is_none() {
                return Err(StoreError::Rejected(gone.clone()));
            }
            indexing::unchanged_in(txn, t, &system, &ns_row, &read)?;
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
            // Only an import brings its own id; it may have raced in.
            if get_in(txn, t.memories, &head)?.is_some() {
                return Err(StoreError::Rejected(taken.clone()));
            }
            txn.put(t.memories, &head, &sealed, WriteFlags::empty())?;
            lexical::put(txn, t, &ns_id, &id, &terms, None)?;
            if embeds {
                txn.put(
                    t.jobs,
                    &vector::job_key(&ns_id, &id),
                    &1u32.to_be_bytes(),
                    WriteFlags::empty(),
                )?;
            }
            // The namespace's settings are as read (checked above).
            if read.settings.extractor.is_some() {
                txn.put(
                    t.jobs,
                    &extraction::job_key(&ns_id, &id),
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
            .enumerate()
            .map(|(i, item)| {
                let new: NewMemory =
                    serde_json::from_value(item).map_err(|e| invalid("memory", e.to_string()))?;
                // One Idempotency-Key for the request: one per item, so a
                // retried bulk returns each item's own approval.
                let mut who = who.clone();
                who.idempotency_key = who.idempotency_key.map(|k| format!("{k}#{i}"));
                self.store(&who, namespace, new)
            })
            .collect())
    }

    /// In `egress` mode, redact on the way out.
    pub(super) fn egress(&self, ns: &Namespace, mut m: Memory) -> Result<Memory, ServiceError> {
        if ns.settings.redaction == RedactionMode::Egress {
            m.content = self.redact(ns, &m.content)?.0;
            // Stored redacted already; again for what was written before
            // they were.
            self.redact_fields(ns, m.title.as_mut(), &mut m.tags, &mut m.metadata)?;
        }
        Ok(m)
    }

    pub(super) fn load(&self, ns: &Namespace, id: &Uuid) -> Result<Memory, ServiceError> {
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
        q.filters.check()?;
        let ns = self.find_namespace(namespace)?;
        let key = self.data_key(&ns)?;
        let limit = q.limit.unwrap_or(50).clamp(1, 200);
        // Ids are UUIDv7, so rows are in creation order: `since` seeks and
        // `until` stops the scan (a second of slack each way: an id and its
        // `created_at` are two reads of the clock; `keeps` is exact).
        let f = &q.filters;
        let seek = f
            .since
            .map(|since| head_key(&ns.id, &model::first_id_at(since.saturating_sub(1000))));
        let stop = f.until.map(|until| until.saturating_add(1000));
        // Just past the cursor's head and its history rows.
        let past_cursor = q
            .cursor
            .map(|c| [head_key(&ns.id, &c), vec![0xff; 5]].concat());
        // Whichever starts later; else the namespace's first row.
        let start = [seek, past_cursor]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or_else(|| ns.id.as_bytes().to_vec());
        let now = model::now_ms();
        let mut out = Vec::new();
        let mut last_seen = None;
        let mut more = false;
        let mut opened = 0usize;
        let prefix = *ns.id.as_bytes();
        // Read in chunks: filters may skip rows, but a page never costs a
        // scan of the whole namespace — past the budget the page ends
        // short (even empty) and its cursor continues the scan.
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
                if let (Some(stop), Some(id)) =
                    (stop, k.get(16..).and_then(|b| Uuid::from_slice(b).ok()))
                    && model::id_time(&id).is_some_and(|t| t >= stop)
                {
                    break 'chunks;
                }
                if out.len() == limit || opened == LIST_SCAN_BUDGET {
                    more = true;
                    break 'chunks;
                }
                opened += 1;
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
        let r = self.update_uncounted(who, namespace, id, patch);
        crate::metrics::operation("update", super::outcome(&r));
        r
    }

    fn update_uncounted(
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
                // A TTL schedules a forget: the forget rule applies too.
                also_as: patch.ttl_seconds.map(|_| crate::governance::Kind::Forget),
            },
        )?;
        self.commit_update(who, &ns, old, next, patch.ttl_seconds, None)
    }

    /// The next version of `old` under `patch`: validated and redacted.
    pub(super) fn prepare_update(
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
            observed_at: patch.observed_at,
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
        next.title = check.title.clone();
        check.tags.dedup();
        next.tags = check.tags;
        next.metadata = check.metadata;
        // The fields of the new version as a whole, unchanged ones too:
        // the labels describe this version.
        let found =
            self.redact_fields(ns, next.title.as_mut(), &mut next.tags, &mut next.metadata)?;
        if patch.content.is_some() {
            for (label, n) in found {
                *redactions.entry(label).or_insert(0) += n;
            }
        } else {
            // The content's own counts are kept (stored redacted, they
            // cannot be found again); a label found in the fields is
            // counted at least as often as it is there now.
            for (label, n) in found {
                let have = redactions.entry(label).or_insert(0);
                *have = (*have).max(n);
            }
        }
        let now = model::now_ms();
        next.importance = check.importance.unwrap_or(old.importance);
        if let Some(ttl) = patch.ttl_seconds {
            next.expires_at = Some(
                now.saturating_add(i64::try_from(ttl.saturating_mul(1000)).unwrap_or(i64::MAX)),
            );
        }
        next.observed_at = Some(patch.observed_at.unwrap_or(old.observed()));
        next.redactions = redactions;
        next.version = old.version + 1;
        next.updated_at = now;
        next.updated_by = Some(actor.agent_id.clone());
        Ok(next)
    }

    /// Write `next` over `old` (governed already), with `exec` when an
    /// approval runs it.
    pub(super) fn commit_update(
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
        // What the old version was indexed with, so its postings go.
        let old_terms = self.terms(ns, &key, &old)?;
        let ns_row = self.namespace_row(&ns.name)?;
        let ns_name = ns.name.clone();
        let system = self.system_key()?;
        let next_version = next.version;
        let ns_id = ns.id;
        let memory_id = *id;
        let sealed_old = seal_json(&key, "memories", &history, &old)?;
        let old_dedup = dedup_row(ns, &key, &old);
        let new_dedup = dedup_row(ns, &key, &next);
        let id_bytes = *id.as_bytes();
        let raced = format!("memory {id} changed while it was being updated; retry");
        let record = Record::by(who, "memory.update").ns(&ns.name).target(id);
        let audit = self.audit.clone();
        let exec_in = exec.clone();
        let read = ns.clone();
        let entry = self.store.write_blocking(move |txn, t| {
            approvals::apply(&exec_in, txn, t)?;
            indexing::unchanged_in(txn, t, &system, &ns_row, &read)?;
            // The version read above must still be current: no lost updates.
            let current = get_in(txn, t.memories, &head)?;
            if current.is_none() {
                return Err(StoreError::Raced(raced.clone()));
            }
            txn.put(t.memories, &history, &sealed_old, WriteFlags::NO_OVERWRITE)
                .map_err(|e| match e {
                    StoreError::Exists => StoreError::Raced(raced.clone()),
                    other => other,
                })?;
            txn.put(t.memories, &head, &sealed_head, WriteFlags::empty())?;
            lexical::put(txn, t, &ns_id, &memory_id, &terms, Some(&old_terms))?;
            // The old vector goes with the old text: until the new one is
            // embedded, what was changed away cannot be found by meaning.
            del_in(txn, t.vectors, &vector::row_key(&ns_id, &memory_id))?;
            if indexing::embeds_in(txn, t, &system, &ns_row, &ns_id, &ns_name)? {
                txn.put(
                    t.jobs,
                    &vector::job_key(&ns_id, &memory_id),
                    &next_version.to_be_bytes(),
                    WriteFlags::empty(),
                )?;
            }
            if read.settings.extractor.is_some() {
                // What was found in the old text goes with it.
                extraction::forget_in(txn, t, &ns_id, &memory_id)?;
                txn.put(
                    t.jobs,
                    &extraction::job_key(&ns_id, &memory_id),
                    &next_version.to_be_bytes(),
                    WriteFlags::empty(),
                )?;
            }
            if let Some(expiry) = &new_expiry {
                txn.put(t.jobs, expiry, &[], WriteFlags::empty())?;
            }
            if old_dedup != new_dedup {
                del_in(txn, t.dedup, &old_dedup)?;
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

    /// The versions of a memory after version `after`, oldest first, at
    /// most `limit` (1–100, default 50) of them; the current version comes
    /// last. Also the version to pass as `after` for the next page, if any.
    pub fn history(
        &self,
        who: &Principal,
        namespace: &str,
        id: &Uuid,
        after: u32,
        limit: Option<usize>,
    ) -> Result<(Vec<Memory>, Option<u32>), ServiceError> {
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
        let limit = limit.unwrap_or(50).clamp(1, 100);
        let prefix = head_key(&ns.id, id);
        let from = version_key(&ns.id, id, after.saturating_add(1));
        // History rows are keyed by version, in order: one page is read,
        // however many versions the memory has.
        let rows =
            self.store
                .rows_max(|t| t.memories, &from, |k| k.starts_with(&prefix), limit + 1)?;
        let mut versions = Vec::new();
        for (k, v) in rows.iter().filter(|(k, _)| k.len() == 36) {
            let m: Memory = open_json(&key, "memories", k, v)?;
            if m.version < current.version {
                versions.push(self.egress(&ns, m)?);
            }
        }
        if current.version > after {
            versions.push(self.egress(&ns, current)?);
        }
        let next = (versions.len() > limit).then(|| {
            versions.truncate(limit);
            versions.last().map_or(after, |m| m.version)
        });
        Ok((versions, next))
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
                        match self.remove(
                            ns,
                            &m,
                            Record::by(&Principal::system(), "memory.expire"),
                            None,
                        ) {
                            Ok(_) => purged += 1,
                            // Changed or removed meanwhile — by another host's
                            // sweep, in a shared store: its turn, not an error.
                            Err(ServiceError::Raced(_) | ServiceError::NoMemory { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            self.store
                .write_blocking(move |txn, t| del_in(txn, t.jobs, &index_key))?;
        }
        Ok(purged)
    }

    /// Forget a memory: its current version, its history and its dedup
    /// entry. Writers may forget only what they wrote; admins anything.
    /// Governed: the policy sees the memory's tags and redaction labels.
    pub fn forget(&self, who: &Principal, namespace: &str, id: &Uuid) -> Result<(), ServiceError> {
        let r = self.forget_uncounted(who, namespace, id);
        crate::metrics::operation("forget", super::outcome(&r));
        r
    }

    fn forget_uncounted(
        &self,
        who: &Principal,
        namespace: &str,
        id: &Uuid,
    ) -> Result<(), ServiceError> {
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
                also_as: None,
            },
        )?;
        self.remove(&ns, &current, Record::by(who, "memory.forget"), None)
    }

    /// A writer changes only its own memories; an admin any.
    pub(super) fn owns(
        &self,
        who: &Principal,
        ns: &Namespace,
        m: &Memory,
        action: &str,
    ) -> Result<(), ServiceError> {
        if who.may_change(&ns.name, &m.agent_id) {
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
    pub(super) fn remove(
        &self,
        ns: &Namespace,
        current: &Memory,
        record: Record,
        exec: Option<Execution>,
    ) -> Result<(), ServiceError> {
        let key = self.data_key(ns)?;
        let id = &current.id;
        let dedup_row = dedup_row(ns, &key, current);
        let indexed_with = self.terms(ns, &key, current)?;
        let prefix = head_key(&ns.id, id);
        let version = current.version;
        let (ns_id, memory_id) = (ns.id, *id);
        let record = record.ns(&ns.name).target(id);
        let audit = self.audit.clone();
        let raced = format!("memory {id} changed while it was being forgotten; retry");
        let ledger = self.ledger()?;
        let exec_in = exec.clone();
        let system = self.system_key()?;
        let ns_row = self.namespace_row(&ns.name)?;
        let read = ns.clone();
        let entries = self.store.write_blocking(move |txn, t| {
            approvals::apply(&exec_in, txn, t)?;
            indexing::unchanged_in(txn, t, &system, &ns_row, &read)?;
            // The version checked (and, for a writer, found to be its own)
            // must still be the current one.
            let still = get_in(txn, t.memories, &prefix)?
                .and_then(|sealed| open_json::<Memory>(&key, "memories", &prefix, &sealed).ok())
                .is_some_and(|m| m.version == version);
            if !still {
                return Err(StoreError::Raced(raced.clone()));
            }
            // The head and every history row, whatever their numbers.
            for (row, _) in crate::store::rows_in(txn, t.memories, &prefix)? {
                txn.del(t.memories, &row)?;
            }
            lexical::remove(txn, t, &ns_id, &memory_id, Some(&indexed_with))?;
            // A newer memory with the same content may own the dedup row
            // (this one had expired): leave it to that one.
            if get_in(txn, t.dedup, &dedup_row)?.as_deref() == Some(memory_id.as_bytes()) {
                txn.del(t.dedup, &dedup_row)?;
            }
            for (db, row) in [
                (t.vectors, vector::row_key(&ns_id, &memory_id)),
                (t.jobs, vector::job_key(&ns_id, &memory_id)),
                (t.jobs, extraction::job_key(&ns_id, &memory_id)),
            ] {
                del_in(txn, db, &row)?;
            }
            extraction::forget_in(txn, t, &ns_id, &memory_id)?;
            let mut entries = vec![audit.append(txn, t, &record)?];
            entries.extend(ledger.supersede_in(
                txn,
                t,
                &ns_id,
                |i| i.target_id == Some(memory_id),
                "its memory was forgotten",
                false,
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

/// The `dedup` row of `m`: a blind token of its content as stored. In
/// `egress` mode content is stored as written, and a writer who could ask
/// "is this text here?" of everyone's memories would learn what readers
/// only see redacted; there duplicates are found among one author's own
/// memories, which tell the author nothing new.
fn dedup_row(ns: &Namespace, key: &DataKey, m: &Memory) -> Vec<u8> {
    let mut digest = Sha256::new();
    if ns.settings.redaction == RedactionMode::Egress {
        digest.update((m.agent_id.len() as u64).to_be_bytes());
        digest.update(m.agent_id.as_bytes());
    }
    digest.update(m.content.as_bytes());
    [
        ns.id.as_bytes().as_slice(),
        &key.blind("content", &digest.finalize()),
    ]
    .concat()
}

/// The longest time to live, in seconds (100 years).
pub const MAX_TTL_SECONDS: u64 = 100 * 365 * 24 * 3600;

/// Most memories one page of a list opens, matching or not.
pub const LIST_SCAN_BUDGET: usize = 2000;

/// Redaction labels and how often each was found.
type Labels = BTreeMap<String, u32>;
