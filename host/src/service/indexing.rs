//! Background indexing: the jobs a store or update committed with its
//! record are embedded in batches by the namespace's embedder and written
//! as sealed vectors. A crash leaves the jobs in place; the next worker
//! round picks them up. A failing or missing embedder leaves them queued
//! (DESIGN: embedder → retry, then leave the job queued).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{Namespace, Service, ServiceError};
use crate::index::vector;
use crate::store::{StoreError, WriteFlags, get_in};

impl Service {
    /// Embed up to `max` queued memories; returns how many jobs were
    /// settled (indexed, or dropped because their memory is gone) and how
    /// many were seen.
    pub fn index_pending(&self, max: usize) -> Result<(usize, usize), ServiceError> {
        // Start after where the last round stopped; wrap around at the end.
        let after = self
            .index_cursor
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        let window = |from: &[u8]| {
            self.store.rows_max(
                |t| t.jobs,
                if from.is_empty() {
                    vector::JOB_PREFIX
                } else {
                    from
                },
                |k| k.starts_with(vector::JOB_PREFIX),
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
            cursor.clone_from(last);
        }
        if rows.is_empty() {
            return Ok((0, 0));
        }
        let mut by_ns: BTreeMap<Uuid, Vec<(Uuid, u32)>> = BTreeMap::new();
        for (k, v) in &rows {
            let p = vector::JOB_PREFIX.len();
            if let (Some(ns), Some(id), Some(version)) = (
                k.get(p..p + 16).and_then(|b| Uuid::from_slice(b).ok()),
                k.get(p + 16..).and_then(|b| Uuid::from_slice(b).ok()),
                v.get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes),
            ) {
                by_ns.entry(ns).or_default().push((id, version));
            }
        }
        let namespaces: HashMap<Uuid, Namespace> = self
            .all_namespaces()?
            .into_iter()
            .map(|n| (n.id, n))
            .collect();
        let mut settled = 0;
        for (ns_id, jobs) in by_ns {
            let Some(ns) = namespaces.get(&ns_id) else {
                settled += self.drop_jobs(&ns_id, &jobs)?;
                continue;
            };
            match self.index_batch(ns, &jobs) {
                Ok(n) => settled += n,
                Err(e) => {
                    tracing::warn!(namespace = %ns.name, error = %e, jobs = jobs.len(), "indexing failed; the jobs stay queued")
                }
            }
        }
        Ok((settled, rows.len()))
    }

    fn drop_jobs(&self, ns: &Uuid, jobs: &[(Uuid, u32)]) -> Result<usize, ServiceError> {
        let rows: Vec<Vec<u8>> = jobs.iter().map(|(id, _)| vector::job_key(ns, id)).collect();
        let n = rows.len();
        self.store.write_blocking(move |txn, t| {
            for row in &rows {
                match txn.del(t.jobs, row, None) {
                    Ok(()) | Err(lmdb::Error::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        })?;
        Ok(n)
    }

    fn index_batch(&self, ns: &Namespace, jobs: &[(Uuid, u32)]) -> Result<usize, ServiceError> {
        let Some(embedder_id) = &ns.settings.embedder else {
            return self.drop_jobs(&ns.id, jobs);
        };
        let embedder = self.embedder_of(ns, embedder_id)?;
        let key = self.data_key(ns)?;
        let mut gone = Vec::new();
        let mut todo = Vec::new();
        let mut texts = Vec::new();
        for &(id, version) in jobs {
            match self.load(ns, &id) {
                Ok(m) => {
                    texts.push(self.searchable_text(ns, &m)?);
                    todo.push((id, version.max(m.version)));
                }
                Err(ServiceError::NoMemory { .. }) => gone.push((id, version)),
                Err(e) => return Err(e),
            }
        }
        let mut settled = self.drop_jobs(&ns.id, &gone)?;
        if todo.is_empty() {
            return Ok(settled);
        }
        let (todo, vectors) = match embedder.embed(&texts) {
            Ok(vectors) => (todo, vectors),
            // One bad text (too long for the model, say) must not hold up
            // the batch: try each on its own; those that fail stay queued.
            Err(e) if texts.len() > 1 => {
                let mut kept = (Vec::new(), Vec::new());
                for (job, text) in todo.into_iter().zip(texts) {
                    match embedder.embed(std::slice::from_ref(&text)) {
                        Ok(mut v) if v.len() == 1 => {
                            kept.0.push(job);
                            kept.1.push(v.remove(0));
                        }
                        Ok(_) => {}
                        Err(one) => {
                            tracing::warn!(namespace = %ns.name, memory = %job.0, error = %one, "cannot embed this memory; it stays queued")
                        }
                    }
                }
                if kept.0.is_empty() {
                    return Err(ServiceError::Unavailable(e.to_string()));
                }
                kept
            }
            Err(e) => return Err(ServiceError::Unavailable(e.to_string())),
        };
        let ns_id = ns.id;
        let sealed: Vec<(Uuid, u32, Vec<u8>)> = todo
            .iter()
            .zip(&vectors)
            .map(|(&(id, version), v)| {
                (
                    id,
                    version,
                    vector::seal(&key, &vector::row_key(&ns_id, &id), version, v),
                )
            })
            .collect();
        let written: Vec<bool> = self.store.write_blocking(move |txn, t| {
            let mut written = Vec::with_capacity(sealed.len());
            for (id, version, bytes) in &sealed {
                let job = vector::job_key(&ns_id, id);
                // Only if the job is still the one embedded: an update in
                // the meantime queued a newer version.
                let current = get_in(txn, t.jobs, &job)?;
                let mine = current
                    .as_deref()
                    .and_then(|b| b.get(..4))
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes)
                    .is_some_and(|v| v <= *version);
                if mine {
                    txn.put(
                        t.vectors,
                        &vector::row_key(&ns_id, id),
                        bytes,
                        WriteFlags::empty(),
                    )?;
                    txn.del(t.jobs, &job, None)?;
                }
                written.push(mine);
            }
            Ok::<_, StoreError>(written)
        })?;
        for ((id, _), (v, ok)) in todo.iter().zip(vectors.iter().zip(written)) {
            if ok {
                self.vectors.put(&ns_id, *id, v);
                settled += 1;
            }
        }
        Ok(settled)
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

    /// Wait until memory `id` of `namespace` is indexed, at most `timeout`;
    /// true when it is (or its namespace has no embedder).
    pub fn wait_indexed(
        &self,
        namespace: &str,
        id: &Uuid,
        timeout: Duration,
    ) -> Result<bool, ServiceError> {
        let ns = self.find_namespace(namespace)?;
        if ns.settings.embedder.is_none() {
            return Ok(true);
        }
        let job = vector::job_key(&ns.id, id);
        let until = Instant::now() + timeout;
        loop {
            if self.store.get(|t| t.jobs, &job)?.is_none() {
                return Ok(true);
            }
            if Instant::now() >= until {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Run the indexing worker on this thread until the store closes.
    pub fn run_indexer(&self) {
        let mut stuck = 0u32;
        loop {
            let pause = match self.index_pending(256) {
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
            std::thread::sleep(pause);
        }
    }
}
