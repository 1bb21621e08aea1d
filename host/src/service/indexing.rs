//! Background indexing: the jobs a store or update committed with its
//! record are embedded in batches by the namespace's embedder and written
//! as sealed vectors. A crash leaves the jobs in place; the next worker
//! round picks them up. A failing or missing embedder leaves them queued
//! (DESIGN: embedder → retry, then leave the job queued).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use uuid::Uuid;

use serde::Serialize;

use super::{NO_EMBEDDER, Namespace, Service, ServiceError, invalid};
use crate::audit::Record;
use crate::auth::{Principal, Role};
use crate::crypto::DataKey;
use crate::index::vector::{self, Job};
use crate::store::{StoreError, Tables, Transaction, WriteFlags, del_in, get_in};

/// What a reindex started.
#[derive(Debug, Clone, Serialize)]
pub struct Reindex {
    /// The namespace.
    pub namespace: String,
    /// The embedder it is now bound to (none: words only).
    pub embedder: Option<String>,
    /// Its vectors' dimensions.
    pub dimensions: Option<u32>,
    /// The new index generation.
    pub index_generation: u32,
    /// Memories queued to be embedded.
    pub queued: usize,
}

/// How far a namespace's meaning index is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IndexProgress {
    /// Memories waiting to be embedded.
    pub queued: usize,
    /// Memories the embedder could not embed (status `failed`).
    pub failed: usize,
}

/// Namespace row `row` as it is in `txn`.
pub(super) fn namespace_in(
    txn: &impl Transaction,
    t: &Tables,
    system: &DataKey,
    row: &[u8],
) -> Result<Option<Namespace>, StoreError> {
    Ok(get_in(txn, t.namespaces, row)?
        .and_then(|sealed| super::open_json::<Namespace>(system, "namespaces", row, &sealed).ok()))
}

/// Refuse, inside a write, when namespace `read` changed since it was read
/// (another settings change, a policy change, a reindex, a delete): the
/// write was decided — by its policy too — against what was read.
pub(super) fn unchanged_in(
    txn: &impl Transaction,
    t: &Tables,
    system: &DataKey,
    row: &[u8],
    read: &Namespace,
) -> Result<(), StoreError> {
    match namespace_in(txn, t, system, row)? {
        Some(now)
            if now.id == read.id
                && now.settings == read.settings
                && now.index_generation == read.index_generation =>
        {
            Ok(())
        }
        Some(_) => Err(StoreError::Raced(format!(
            "namespace \"{}\" changed while this was being decided; retry",
            read.name
        ))),
        None => Err(StoreError::Rejected(format!(
            "namespace \"{}\" no longer exists",
            read.name
        ))),
    }
}

/// The index generation recorded in namespace row `row`, read in `txn`.
pub(super) fn generation_in(
    txn: &impl Transaction,
    t: &Tables,
    system: &DataKey,
    row: &[u8],
) -> Result<Option<u32>, StoreError> {
    Ok(namespace_in(txn, t, system, row)?.map(|ns| ns.index_generation))
}

/// Whether a memory written in `txn` to namespace `id` (row `row`) must be
/// queued for embedding — decided inside the write, so a reindex that
/// binds an embedder meanwhile cannot miss it. A namespace deleted
/// meanwhile refuses the write: nothing would be left of it to read.
pub(super) fn embeds_in(
    txn: &impl Transaction,
    t: &Tables,
    system: &DataKey,
    row: &[u8],
    id: &uuid::Uuid,
    name: &str,
) -> Result<bool, StoreError> {
    match namespace_in(txn, t, system, row)? {
        Some(ns) if ns.id == *id => Ok(ns.settings.embedder.is_some()),
        _ => Err(StoreError::Rejected(format!(
            "namespace \"{name}\" was deleted meanwhile; nothing was written"
        ))),
    }
}

/// Failed attempts on one memory's own text before it is given up on.
const MAX_ATTEMPTS: u8 = 3;

/// `jobs` prefix of a reindex's requeue pass that is still under way:
/// `rx/` + namespace id. A reindex binds the new embedder and starts a new
/// index generation in one small write; the pass then replaces every
/// memory's vector with an indexing job, [`REINDEX_CHUNK`] memories per
/// write, so other namespaces' writes go in between (one write over a whole
/// namespace stalled every tenant, and could outgrow LMDB's dirty-page
/// limit). While the row exists the namespace's vectors are not searched
/// (some are the old embedder's), and a restart finishes a pass a crash
/// cut short.
pub const PASS_PREFIX: &[u8] = b"rx/";

/// Memories a requeue pass handles per write.
pub const REINDEX_CHUNK: usize = 1000;

pub(super) fn pass_key(ns: &Uuid) -> Vec<u8> {
    [PASS_PREFIX, ns.as_bytes()].concat()
}

/// Where a requeue pass stands.
///
/// Row value: generation (u32 BE), namespace row length (u8), namespace
/// row, then the last memory id done (16 bytes; absent at the start).
#[derive(Debug, Clone, PartialEq)]
pub struct RequeuePass {
    /// The namespace's row in `namespaces`.
    pub row: Vec<u8>,
    /// The index generation the pass is for.
    pub generation: u32,
    /// The last memory done.
    pub after: Option<Uuid>,
}

impl RequeuePass {
    /// The row value.
    pub fn encode(&self) -> Vec<u8> {
        let len = u8::try_from(self.row.len()).unwrap_or(u8::MAX);
        let mut out = self.generation.to_be_bytes().to_vec();
        out.push(len);
        out.extend_from_slice(&self.row[..usize::from(len)]);
        if let Some(after) = &self.after {
            out.extend_from_slice(after.as_bytes());
        }
        out
    }

    /// Decode a row value.
    pub fn decode(bytes: &[u8]) -> Option<RequeuePass> {
        let generation = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
        let len = usize::from(*bytes.get(4)?);
        let row = bytes.get(5..5 + len)?.to_vec();
        let after = match bytes.get(5 + len..)? {
            [] => None,
            id => Some(Uuid::from_slice(id).ok()?),
        };
        Some(RequeuePass {
            row,
            generation,
            after,
        })
    }
}

/// `jobs` row of a shared store: a host's lease on a job — `lease/` + the
/// job's key → host id (16 bytes) + until (Unix ms, big-endian).
const LEASE_PREFIX: &[u8] = b"lease/";

/// How long a lease holds: a host that dies mid-job leaves it to others
/// after this.
const LEASE_MS: i64 = 120_000;

pub(super) fn lease_key(job: &[u8]) -> Vec<u8> {
    [LEASE_PREFIX, job].concat()
}

/// When a lease row runs out (Unix ms), if it says.
fn lease_until(value: &[u8]) -> Option<i64> {
    value
        .get(16..24)
        .and_then(|b| b.try_into().ok())
        .map(i64::from_be_bytes)
}

impl Service {
    /// Delete the leases that ran out (their job settled by another path —
    /// forgotten, requeued, its namespace deleted — or its host gone);
    /// returns how many.
    pub fn purge_leases(&self) -> Result<usize, ServiceError> {
        let now = crate::clock::now_ms();
        let over: Vec<Vec<u8>> = self
            .store
            .rows(|t| t.jobs, LEASE_PREFIX, |k| k.starts_with(LEASE_PREFIX))?
            .into_iter()
            .filter(|(_, v)| lease_until(v).is_none_or(|until| until < now))
            .map(|(k, _)| k)
            .collect();
        let n = over.len();
        if n > 0 {
            self.store.write_blocking(move |txn, t| {
                for k in &over {
                    // Taken again meanwhile: kept.
                    if get_in(txn, t.jobs, k)?
                        .as_deref()
                        .and_then(lease_until)
                        .is_none_or(|until| until < now)
                    {
                        txn.del(t.jobs, k)?;
                    }
                }
                Ok(())
            })?;
        }
        Ok(n)
    }
}

/// One write of namespace `ns_id`'s requeue pass (row `key`): the next
/// `chunk` memories lose their vector and get an indexing job (or, words
/// only now, lose their job too). Returns how many were queued and whether
/// the pass is over (also when its namespace is gone or reindexed again
/// under another row).
fn requeue_chunk(
    txn: &mut crate::store::RwTransaction<'_>,
    t: &Tables,
    system: &DataKey,
    key: &[u8],
    ns_id: Uuid,
    chunk: usize,
) -> Result<(usize, bool), StoreError> {
    let Some(mut pass) = get_in(txn, t.jobs, key)?
        .as_deref()
        .and_then(RequeuePass::decode)
    else {
        del_in(txn, t.jobs, key)?;
        return Ok((0, true));
    };
    let (embeds, extracts) = match namespace_in(txn, t, system, &pass.row)? {
        Some(ns) if ns.id == ns_id && ns.index_generation == pass.generation => (
            ns.settings.embedder.is_some(),
            ns.settings.extractor.is_some(),
        ),
        _ => {
            txn.del(t.jobs, &key)?;
            return Ok((0, true));
        }
    };
    let prefix = ns_id.as_bytes();
    let from = match &pass.after {
        Some(id) => super::head_key(&ns_id, id),
        None => prefix.to_vec(),
    };
    // Heads are namespace id + memory id (32 bytes), each followed by its
    // history rows (+ version): a memory with a long history must not make
    // one write unbounded either, so rows seen are counted, not heads.
    let mut heads = Vec::new();
    let mut last = None;
    let mut seen = 0;
    let mut ended = true;
    crate::store::visit_in(txn, t.memories, &from, usize::MAX, |k, _| {
        if !k.starts_with(prefix) {
            return false;
        }
        let Some(id) = k.get(16..32).and_then(|b| Uuid::from_slice(b).ok()) else {
            return true;
        };
        if seen >= chunk * 4 || heads.len() >= chunk {
            ended = false;
            return false;
        }
        seen += 1;
        if k.len() == 32 && Some(id) != pass.after {
            heads.push(id);
        }
        last = Some(id);
        true
    })?;
    let mut queued = 0;
    for id in &heads {
        if extracts {
            txn.put(
                t.jobs,
                &super::extraction::job_key(&ns_id, id),
                &Job::queued(0).encode(),
                WriteFlags::empty(),
            )?;
        }
        del_in(txn, t.vectors, &vector::row_key(&ns_id, id))?;
        let job = vector::job_key(&ns_id, id);
        if embeds {
            let version = get_in(txn, t.jobs, &job)?
                .as_deref()
                .and_then(Job::decode)
                .map_or(0, |j| j.version);
            txn.put(
                t.jobs,
                &job,
                &Job::queued(version).encode(),
                WriteFlags::empty(),
            )?;
            queued += 1;
        } else {
            del_in(txn, t.jobs, &job)?;
        }
    }
    if ended {
        txn.del(t.jobs, &key)?;
    } else {
        pass.after = last.or(pass.after);
        txn.put(t.jobs, &key, &pass.encode(), WriteFlags::empty())?;
    }
    Ok((queued, ended))
}

/// How many memories namespace `ns_id` holds (its heads: namespace id +
/// memory id, 32 bytes; history rows are longer).
fn heads_in(txn: &impl Transaction, t: &Tables, ns_id: &Uuid) -> Result<usize, StoreError> {
    let prefix = ns_id.as_bytes();
    let mut heads = 0;
    crate::store::visit_in(txn, t.memories, prefix, usize::MAX, |k, _| {
        if !k.starts_with(prefix) {
            return false;
        }
        heads += usize::from(k.len() == 32);
        true
    })?;
    Ok(heads)
}

/// The requeue passes this process is running, so a resume does not run
/// one twice (it would be safe — each chunk reads where the pass stands in
/// its own write — but the work would be done twice).
pub(super) type Requeues = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<Uuid>>>;

/// This process runs namespace `ns`'s pass while it is held.
struct Running<'a>(&'a Requeues, Uuid);

impl<'a> Running<'a> {
    /// None when this process runs it already.
    fn claim(set: &'a Requeues, ns: Uuid) -> Option<Running<'a>> {
        set.lock()
            .is_ok_and(|mut s| s.insert(ns))
            .then_some(Running(set, ns))
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.lock() {
            s.remove(&self.1);
        }
    }
}

impl Service {
    /// Every namespace, by id (for workers that meet ids in job rows).
    pub(super) fn namespaces_by_id(&self) -> Result<HashMap<Uuid, Namespace>, ServiceError> {
        Ok(self
            .all_namespaces()?
            .into_iter()
            .map(|n| (n.id, n))
            .collect())
    }

    /// Up to `max` `jobs` rows under `prefix`, starting after where round
    /// `round`'s last call stopped and wrapping at the end: jobs that
    /// cannot run now (their plugin is missing) do not hold up the others.
    pub(super) fn next_jobs(
        &self,
        prefix: &[u8],
        round: usize,
        max: usize,
    ) -> Result<Vec<crate::store::Row>, ServiceError> {
        let after = self
            .index_cursor
            .lock()
            .map(|c| c.get(&round).cloned().unwrap_or_default())
            .unwrap_or_default();
        let window = |from: &[u8]| {
            self.store.rows_max(
                |t| t.jobs,
                if from.is_empty() { prefix } else { from },
                |k| k.starts_with(prefix),
                max + 1,
            )
        };
        let mut rows = window(&after)?;
        rows.retain(|(k, _)| k.as_slice() > after.as_slice());
        if rows.is_empty() && !after.is_empty() {
            rows = window(&[])?;
        }
        rows.truncate(max);
        if let (Ok(mut cursor), Some((last, _))) = (self.index_cursor.lock(), rows.last()) {
            cursor.insert(round, last.clone());
        }
        Ok(rows)
    }

    /// Embed up to `max` queued memories of worker `worker`'s share (of
    /// `workers`: jobs are split by memory id, so workers never race for
    /// one); returns how many jobs were settled (indexed, or dropped
    /// because their memory is gone) and how many were seen.
    pub fn index_pending(
        &self,
        max: usize,
        worker: usize,
        workers: usize,
    ) -> Result<(usize, usize), ServiceError> {
        let workers = workers.max(1);
        let mut rows = self.next_jobs(vector::JOB_PREFIX, worker, max)?;
        rows.retain(|(k, _)| {
            k.last()
                .is_some_and(|b| usize::from(*b) % workers == worker)
        });
        let rows = self.claim(rows)?;
        if rows.is_empty() {
            return Ok((0, 0));
        }
        let mut by_ns: BTreeMap<Uuid, Vec<(Uuid, Job)>> = BTreeMap::new();
        for (k, v) in &rows {
            let p = vector::JOB_PREFIX.len();
            if let (Some(ns), Some(id), Some(job)) = (
                k.get(p..p + 16).and_then(|b| Uuid::from_slice(b).ok()),
                k.get(p + 16..).and_then(|b| Uuid::from_slice(b).ok()),
                Job::decode(v),
            ) {
                // Given up on: stays as it is until the memory changes or
                // the namespace is reindexed.
                if job.failed.is_none() {
                    by_ns.entry(ns).or_default().push((id, job));
                }
            }
        }
        let by_len: usize = by_ns.values().map(Vec::len).sum();
        let namespaces = self.namespaces_by_id()?;
        let mut settled = 0;
        for (ns_id, jobs) in by_ns {
            let Some(ns) = namespaces.get(&ns_id) else {
                settled += self.drop_jobs(&ns_id, &jobs)?;
                continue;
            };
            match self.index_batch(ns, &jobs) {
                Ok(n) => settled += n,
                Err(e) => {
                    tracing::warn!(namespace = %ns.name, jobs = jobs.len(), "indexing failed; the jobs stay queued (why, at debug level: MEMHOST_LOG=memhost=debug)");
                    tracing::debug!(namespace = %ns.name, error = %crate::logging::untrusted(&e.to_string(), 1024), "indexing failed")
                }
            }
        }
        if settled > 0 {
            self.index_advanced.notify_waiters();
        }
        // Jobs given up on are not work: they must not make the worker
        // back off as if it were stuck.
        let open: usize = by_len;
        Ok((settled, open))
    }

    fn drop_jobs(&self, ns: &Uuid, jobs: &[(Uuid, Job)]) -> Result<usize, ServiceError> {
        let rows: Vec<Vec<u8>> = jobs.iter().map(|(id, _)| vector::job_key(ns, id)).collect();
        let n = rows.len();
        self.store.write_blocking(move |txn, t| {
            for row in &rows {
                del_in(txn, t.jobs, row)?;
                del_in(txn, t.jobs, &lease_key(row))?;
            }
            Ok(())
        })?;
        Ok(n)
    }

    /// A shared store: take a lease on each job of `rows` that is still
    /// queued as read and not leased to another host, so one host embeds
    /// it; returns those taken. A host that dies leaves its leases to run
    /// out ([`LEASE_MS`]). LMDB: every row (one process, its workers split
    /// the jobs by memory id).
    pub(super) fn claim(
        &self,
        rows: Vec<crate::store::Row>,
    ) -> Result<Vec<crate::store::Row>, ServiceError> {
        if !self.store.is_shared() || rows.is_empty() {
            return Ok(rows);
        }
        let me = self.host;
        let now = crate::clock::now_ms();
        Ok(self.store.write_blocking(move |txn, t| {
            let mut taken = Vec::new();
            for (k, v) in &rows {
                if get_in(txn, t.jobs, k)?.as_deref() != Some(v.as_slice()) {
                    continue;
                }
                let lease = lease_key(k);
                if let Some(held) = get_in(txn, t.jobs, &lease)?
                    && held.get(..16) != Some(me.as_bytes().as_slice())
                    && lease_until(&held).is_some_and(|until| until > now)
                {
                    continue;
                }
                let until = now.saturating_add(LEASE_MS);
                txn.put(
                    t.jobs,
                    &lease,
                    &[me.as_bytes().as_slice(), &until.to_be_bytes()].concat(),
                    WriteFlags::empty(),
                )?;
                taken.push((k.clone(), v.clone()));
            }
            Ok(taken)
        })?)
    }

    fn index_batch(&self, ns: &Namespace, jobs: &[(Uuid, Job)]) -> Result<usize, ServiceError> {
        let Some(embedder_id) = &ns.settings.embedder else {
            return self.drop_jobs(&ns.id, jobs);
        };
        let embedder = self.embedder_of(ns, embedder_id)?;
        let key = self.data_key(ns)?;
        let mut gone = Vec::new();
        let mut todo = Vec::new();
        let mut texts = Vec::new();
        for (id, job) in jobs {
            match self.load(ns, id) {
                Ok(m) => {
                    texts.push(self.searchable_text(ns, &m)?);
                    let mut job = job.clone();
                    job.version = job.version.max(m.version);
                    todo.push((*id, job));
                }
                Err(ServiceError::NoMemory { .. }) => gone.push((*id, job.clone())),
                Err(e) => return Err(e),
            }
        }
        let mut settled = self.drop_jobs(&ns.id, &gone)?;
        if todo.is_empty() {
            return Ok(settled);
        }
        let mut given_up = Vec::new();
        let (todo, vectors) = match embedder.embed_in_background(&texts) {
            Ok(vectors) => (todo, vectors),
            Err(e) if e.is_transient() => return Err(ServiceError::Unavailable(e.to_string())),
            // One bad text (one that makes the model fail) must not hold
            // up the batch: try each on its own. A text the plugin calls
            // unusable, or that failed MAX_ATTEMPTS times, is given up on
            // with the reason (status `failed`); the rest stay queued.
            Err(e) => {
                let mut kept = (Vec::new(), Vec::new());
                for ((id, mut job), text) in todo.into_iter().zip(texts) {
                    match embedder.embed_in_background(std::slice::from_ref(&text)) {
                        Ok(mut v) if v.len() == 1 => {
                            kept.0.push((id, job));
                            kept.1.push(v.remove(0));
                        }
                        Ok(_) => {}
                        Err(one) if one.is_transient() => {}
                        Err(one) => {
                            job.attempts = job.attempts.saturating_add(1);
                            if one.is_bad_input() || job.attempts >= MAX_ATTEMPTS {
                                // What kind of failure, not the plugin's
                                // message: that could quote the text, and
                                // job rows are not sealed (the log has it).
                                job.failed = Some(one.kind.summary().to_string());
                                tracing::warn!(namespace = %ns.name, memory = %id, plugin = %one.plugin.id, error = %one.kind.without_words(), attempts = job.attempts, "cannot embed this memory; giving up (status failed)");
                            } else {
                                tracing::warn!(namespace = %ns.name, memory = %id, plugin = %one.plugin.id, error = %one.kind.without_words(), attempts = job.attempts, "cannot embed this memory; it stays queued");
                            }
                            given_up.push((id, job));
                        }
                    }
                }
                if kept.0.is_empty() && given_up.is_empty() {
                    return Err(ServiceError::Unavailable(e.to_string()));
                }
                kept
            }
        };
        let ns_id = ns.id;
        let space = ns.vector_space();
        let sealed: Vec<(Uuid, u32, Vec<u8>)> = todo
            .iter()
            .zip(&vectors)
            .map(|((id, job), v)| {
                (
                    *id,
                    job.version,
                    vector::seal(&key, &vector::row_key(&ns_id, id), job.version, v),
                )
            })
            .collect();
        let system = self.system_key()?;
        let ns_row = self.namespace_row(&ns.name)?;
        let generation = ns.index_generation;
        let (written, marked): (Vec<bool>, usize) = self.store.write_blocking(move |txn, t| {
            // Embedded for the namespace as it was: a reindex (or a delete)
            // meanwhile makes these vectors stale.
            if generation_in(txn, t, &system, &ns_row)? != Some(generation) {
                return Ok((vec![false; sealed.len()], 0));
            }
            // Only if the job is still the one embedded: an update in the
            // meantime queued a newer version.
            let still = |txn: &crate::store::RwTransaction<'_>, row: &[u8], version: u32| {
                get_in(txn, t.jobs, row).map(|current| {
                    current
                        .as_deref()
                        .and_then(Job::decode)
                        .is_some_and(|j| j.version <= version)
                })
            };
            let mut written = Vec::with_capacity(sealed.len());
            for (id, version, bytes) in &sealed {
                let job = vector::job_key(&ns_id, id);
                let mine = still(txn, &job, *version)?;
                if mine {
                    txn.put(
                        t.vectors,
                        &vector::row_key(&ns_id, id),
                        bytes,
                        WriteFlags::empty(),
                    )?;
                    txn.del(t.jobs, &job)?;
                    del_in(txn, t.jobs, &lease_key(&job))?;
                }
                written.push(mine);
            }
            let mut marked = 0;
            for (id, job) in &given_up {
                let row = vector::job_key(&ns_id, id);
                if still(txn, &row, job.version)? {
                    txn.put(t.jobs, &row, &job.encode(), WriteFlags::empty())?;
                    marked += usize::from(job.failed.is_some());
                }
            }
            Ok::<_, StoreError>((written, marked))
        })?;
        settled += marked;
        for ((id, job), (v, ok)) in todo.iter().zip(vectors.iter().zip(written)) {
            if ok {
                self.vectors
                    .put(&self.store, &key, space, *id, job.version, v);
                settled += 1;
                crate::metrics::indexed(1);
            }
        }
        Ok(settled)
    }

    /// Re-embed every memory of `name`, with `embedder` if given (a loaded
    /// embedder's id, or `"none"` for words only) or else its own. The
    /// binding, the old vectors' removal and the new jobs are one
    /// transaction under a new index generation; the worker embeds in the
    /// background ([`Service::index_progress`] shows how far). Needs admin.
    pub fn reindex_namespace(
        &self,
        who: &Principal,
        name: &str,
        embedder: Option<&str>,
    ) -> Result<Reindex, ServiceError> {
        self.authorize(who, name, Role::Admin, "namespace.reindex", None)?;
        let ns = self.find_namespace(name)?;
        // Checked before the policy is asked: a reindex it would hold must
        // be one that can run.
        self.reindex_binding(&ns, embedder)?;
        self.govern(
            who,
            super::approvals::Proposal::namespace(
                &ns,
                super::approvals::Payload::Reindex {
                    embedder: embedder.map(str::to_string),
                },
                "namespace.reindex",
            ),
        )?;
        self.commit_reindex(who, ns, embedder, None)
    }

    /// The embedder and dimensions a reindex of `ns` with `embedder` binds.
    fn reindex_binding(
        &self,
        ns: &Namespace,
        embedder: Option<&str>,
    ) -> Result<(Option<String>, Option<u32>), ServiceError> {
        let snapshot = self.plugins.snapshot();
        let id = match embedder {
            Some(NO_EMBEDDER) => None,
            Some(id) => Some(id.to_string()),
            None => ns.settings.embedder.clone(),
        };
        let dimensions = match &id {
            None => None,
            Some(id) => match snapshot.embedder(id) {
                Some(e) => Some(e.model().dimensions),
                // Its own embedder, not loaded now: the jobs wait for it.
                None if Some(id) == ns.settings.embedder.as_ref() => ns.settings.dimensions,
                None => {
                    return Err(invalid(
                        "embedder",
                        format!("\"{id}\" is not a loaded embedder plugin"),
                    ));
                }
            },
        };
        Ok((id, dimensions))
    }

    /// Write a reindex of `ns` (governed already), with `exec` when an
    /// approval runs it.
    pub(super) fn commit_reindex(
        &self,
        who: &Principal,
        mut ns: Namespace,
        embedder: Option<&str>,
        exec: Option<super::approvals::Execution>,
    ) -> Result<Reindex, ServiceError> {
        let name = ns.name.clone();
        let name = name.as_str();
        let (id, dimensions) = self.reindex_binding(&ns, embedder)?;
        let read = ns.clone();
        ns.settings.dimensions = dimensions;
        let was = ns.settings.embedder.clone();
        let read_generation = ns.index_generation;
        ns.settings.embedder = id;
        ns.index_generation = ns.index_generation.wrapping_add(1);
        let row = self.namespace_row(name)?;
        let system = self.system_key()?;
        let sealed = super::seal_json(&system, "namespaces", &row, &ns)?;
        let raced = format!("namespace \"{name}\" changed while it was being reindexed; retry");
        let record = Record::by(who, "namespace.reindex").ns(name).outcome(
            "ok",
            Some(format!(
                "embedder {} -> {}",
                was.as_deref().unwrap_or(NO_EMBEDDER),
                ns.settings.embedder.as_deref().unwrap_or(NO_EMBEDDER)
            )),
        );
        let audit = self.audit.clone();
        let pass = RequeuePass {
            row: row.clone(),
            generation: ns.index_generation,
            after: None,
        }
        .encode();
        let pass_row = pass_key(&ns.id);
        // Claimed before the pass exists, so a resume does not take it up
        // (one finishing an earlier pass goes on with this one: each chunk
        // reads where the pass stands in its own write).
        let _running = Running::claim(&self.requeues, ns.id);
        let exec_in = exec.clone();
        let embeds = ns.settings.embedder.is_some();
        let ns_id = ns.id;
        let (entry, queued) = self.store.write_blocking(move |txn, t| {
            super::approvals::apply(&exec_in, txn, t)?;
            // Another reindex (or a delete) since it was read: not this one.
            if generation_in(txn, t, &system, &row)? != Some(read_generation) {
                return Err(StoreError::Raced(raced.clone()));
            }
            unchanged_in(txn, t, &system, &row, &read)?;
            txn.put(t.namespaces, &row, &sealed, WriteFlags::empty())?;
            super::namespaces::namespaces_changed(txn, t)?;
            // The old vectors and jobs are replaced by the pass, in chunks;
            // the old generation's segments are never loaded again and go
            // with the leftovers.
            txn.put(t.jobs, &pass_row, &pass, WriteFlags::empty())?;
            // Counted here, not by whoever runs the pass: a server sharing
            // the store (this may be the CLI) can take the pass up first.
            let queued = if embeds { heads_in(txn, t, &ns_id)? } else { 0 };
            Ok((audit.append(txn, t, &record)?, queued))
        })?;
        super::approvals::emit(&exec);
        crate::audit::emit(&entry);
        self.vectors.drop_namespace(&ns.id);
        self.run_requeue(ns.id)?;
        Ok(Reindex {
            namespace: ns.name,
            embedder: ns.settings.embedder,
            dimensions: ns.settings.dimensions,
            index_generation: ns.index_generation,
            queued,
        })
    }

    /// Run namespace `ns_id`'s requeue pass to its end, a chunk per write;
    /// returns how many memories it queued.
    fn run_requeue(&self, ns_id: Uuid) -> Result<usize, ServiceError> {
        let system = self.system_key()?;
        let chunk = self.reindex_chunk;
        let key = pass_key(&ns_id);
        let mut queued = 0;
        loop {
            let (system, key) = (system.clone(), key.clone());
            let (n, done) = self
                .store
                .write_blocking(move |txn, t| requeue_chunk(txn, t, &system, &key, ns_id, chunk))?;
            queued += n;
            if done {
                // Loaded while the pass ran, the index may hold vectors of
                // the old embedder: read it afresh.
                self.vectors.drop_namespace(&ns_id);
                return Ok(queued);
            }
        }
    }

    /// Finish the requeue passes a crash (or a failed write) cut short;
    /// passes this process is running are left to it. Returns how many
    /// passes were finished.
    pub fn resume_reindexes(&self) -> Result<usize, ServiceError> {
        let rows = self.store.rows_max(
            |t| t.jobs,
            PASS_PREFIX,
            |k| k.starts_with(PASS_PREFIX),
            1024,
        )?;
        let mut finished = 0;
        for (k, _) in rows {
            let Some(ns_id) = k
                .get(PASS_PREFIX.len()..)
                .and_then(|b| Uuid::from_slice(b).ok())
            else {
                continue;
            };
            let Some(_running) = Running::claim(&self.requeues, ns_id) else {
                continue;
            };
            let queued = self.run_requeue(ns_id)?;
            tracing::info!(namespace_id = %ns_id, queued, "finished a reindex that was cut short");
            finished += 1;
        }
        Ok(finished)
    }

    /// Is a reindex of namespace `ns_id` still replacing its vectors? Its
    /// vectors are not searched meanwhile: some are of the old embedder.
    pub(super) fn requeue_under_way(&self, ns_id: &Uuid) -> Result<bool, ServiceError> {
        Ok(self.store.get(|t| t.jobs, &pass_key(ns_id))?.is_some())
    }

    /// Namespace `name` and, when it has an embedder, how far its meaning
    /// index is. Needs read access.
    pub fn namespace_with_index(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<(Namespace, Option<IndexProgress>), ServiceError> {
        let ns = self.namespace(who, name)?;
        let progress = match ns.settings.embedder {
            Some(_) => Some(self.index_progress(who, name)?),
            None => None,
        };
        Ok((ns, progress))
    }

    /// About how many memories namespace `name` holds (expired ones count
    /// until the sweep purges them). Needs read access.
    pub fn memory_count(&self, who: &Principal, name: &str) -> Result<u64, ServiceError> {
        self.authorize(who, name, Role::Reader, "namespace.count", None)?;
        let ns = self.find_namespace(name)?;
        Ok(crate::index::lexical::documents(&self.store, &ns.id)?)
    }

    /// How many of `name`'s memories wait to be embedded, and how many
    /// failed. Needs read access.
    pub fn index_progress(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<IndexProgress, ServiceError> {
        self.authorize(who, name, Role::Reader, "namespace.index", None)?;
        let ns = self.find_namespace(name)?;
        let prefix = [vector::JOB_PREFIX, ns.id.as_bytes()].concat();
        let mut progress = IndexProgress::default();
        let mut from = prefix.clone();
        loop {
            let rows = self
                .store
                .rows_max(|t| t.jobs, &from, |k| k.starts_with(&prefix), 4096)?;
            for (_, v) in &rows {
                match Job::decode(v) {
                    Some(Job {
                        failed: Some(_), ..
                    }) => progress.failed += 1,
                    _ => progress.queued += 1,
                }
            }
            match rows.last() {
                Some((k, _)) if rows.len() == 4096 => from = [k.as_slice(), &[0]].concat(),
                _ => return Ok(progress),
            }
        }
    }

    /// Memories waiting to be embedded and memories the embedder failed
    /// on, in every namespace (the metrics' queue depth).
    pub(super) fn index_totals(&self) -> Result<IndexProgress, ServiceError> {
        let mut progress = IndexProgress::default();
        self.store.read(|txn, t| {
            crate::store::visit_in(txn, t.jobs, vector::JOB_PREFIX, usize::MAX, |k, v| {
                if !k.starts_with(vector::JOB_PREFIX) {
                    return false;
                }
                match Job::decode(v) {
                    Some(Job {
                        failed: Some(_), ..
                    }) => progress.failed += 1,
                    _ => progress.queued += 1,
                }
                true
            })
        })?;
        Ok(progress)
    }

    /// The namespace's embedder, if loaded and still giving the dimensions
    /// its vectors have.
    pub(super) fn embedder_of(
        &self,
        ns: &Namespace,
        embedder_id: &str,
    ) -> Result<std::sync::Arc<crate::plugins::Embedder>, ServiceError> {
        let embedder = self
            .plugins
            .snapshot()
            .embedder(embedder_id)
            .ok_or_else(|| {
                ServiceError::Unavailable(format!(
                    "namespace \"{}\" uses embedder \"{embedder_id}\", which is not loaded",
                    ns.name
                ))
            })?;
        if Some(embedder.model().dimensions) != ns.settings.dimensions {
            return Err(ServiceError::Unavailable(format!(
                "embedder \"{embedder_id}\" now gives {} dimensions but namespace \"{}\" holds {:?}-dimensional vectors",
                embedder.model().dimensions,
                ns.name,
                ns.settings.dimensions
            )));
        }
        Ok(embedder)
    }

    /// Woken whenever this process's indexer settles jobs: who waits for a
    /// memory to be indexed checks [`Service::indexed`] again then (and now
    /// and again anyway — another process may have indexed it), holding no
    /// thread in between.
    pub fn index_advanced(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.index_advanced.clone()
    }

    /// Is memory `id` of `namespace` indexed or given up on (or is there no
    /// embedder to wait for)? One read.
    pub fn indexed(&self, namespace: &str, id: &Uuid) -> Result<bool, ServiceError> {
        let ns = self.find_namespace(namespace)?;
        if ns.settings.embedder.is_none() {
            return Ok(true);
        }
        if self.requeue_under_way(&ns.id)? {
            return Ok(false);
        }
        let settled = match self.store.get(|t| t.jobs, &vector::job_key(&ns.id, id))? {
            None => true,
            Some(row) => Job::decode(&row).is_some_and(|j| j.failed.is_some()),
        };
        // A shared store: another host may have indexed it; this host's
        // index follows that far now (what it applies twice, it applies
        // the same), so a recall here finds it at once.
        if settled && self.store.is_shared() {
            self.follow()?;
        }
        Ok(settled)
    }

    /// Run indexing worker `worker` of `workers` on this thread, for
    /// as long as the process runs.
    pub fn run_indexer(&self, worker: usize, workers: usize) {
        let mut stuck = 0u32;
        let resume_failed = crate::logging::Sampled::every(Duration::from_secs(60));
        loop {
            if worker == 0
                && let Err(e) = self.resume_reindexes()
                && let Some(left_out) = resume_failed.take()
            {
                tracing::warn!(error = %e, left_out, "finishing a reindex failed; retrying");
            }
            // Extraction takes microseconds a memory: one worker does it.
            let extracted = if worker == 0 {
                self.extract_pending(256).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "extraction round failed");
                    (0, 0)
                })
            } else {
                (0, 0)
            };
            let pause = match self.index_pending(256, worker, workers) {
                Ok((_, 0)) => Duration::from_millis(50),
                Ok((0, _)) => {
                    // Jobs that cannot be done now (embedder missing or
                    // failing): back off, up to 10 s.
                    stuck = (stuck + 1).min(8);
                    Duration::from_millis(40 << stuck).min(Duration::from_secs(10))
                }
                Ok(_) => {
                    stuck = 0;
                    Duration::ZERO
                }
                Err(e) => {
                    tracing::warn!(error = %e, "indexing round failed");
                    Duration::from_secs(1)
                }
            };
            // More extraction queued: no pause.
            let pause = if extracted.0 > 0 {
                Duration::ZERO
            } else {
                pause
            };
            std::thread::sleep(pause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_row_reads_back_as_written_and_a_broken_one_is_refused() {
        let start = RequeuePass {
            row: vec![7; 32],
            generation: 3,
            after: None,
        };
        let later = RequeuePass {
            after: Some(Uuid::now_v7()),
            ..start.clone()
        };
        for pass in [&start, &later] {
            assert_eq!(RequeuePass::decode(&pass.encode()).as_ref(), Some(pass));
        }
        let bytes = later.encode();
        // Cut inside the row, or inside the memory id: not a pass.
        assert_eq!(RequeuePass::decode(&bytes[..20]), None);
        assert_eq!(RequeuePass::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(RequeuePass::decode(&[]), None);
    }
}
