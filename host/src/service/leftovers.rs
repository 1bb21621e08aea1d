//! Leftovers: rows no namespace owns any more. Deleting a namespace drops
//! its key and row in one transaction and then its rows in batches; a crash
//! in between leaves rows nothing can read (their key is gone). A segment
//! build that finishes after a reindex writes rows of a generation no one
//! loads. Both are removed here, at start and then now and again.

use std::collections::HashMap;

use uuid::Uuid;

use super::{Service, ServiceError};
use crate::index::{segment, vector};
use crate::store::{Table, Tables};

/// Picks a table.
type Pick = fn(&Tables) -> Table;

/// The tables whose rows start with the namespace id.
const BY_NAMESPACE: [Pick; 5] = [
    |t| t.memories,
    |t| t.dedup,
    |t| t.terms,
    |t| t.vectors,
    |t| t.entities,
];

impl Service {
    /// Remove rows of namespaces that no longer exist and vector segments
    /// of superseded index generations. Returns how many rows went.
    pub fn collect_leftovers(&self) -> Result<usize, ServiceError> {
        // The prefixes first, the namespaces after: a namespace created in
        // between has its row in place before any row of its own.
        let mut found: Vec<(Pick, Vec<u8>)> = Vec::new();
        for pick in BY_NAMESPACE {
            for p in self.store.prefixes(pick, &[], 16)? {
                found.push((pick, p));
            }
        }
        let jobs: Pick = |t| t.jobs;
        let mut job_prefixes: Vec<(usize, Vec<u8>)> = Vec::new();
        for kind in [vector::JOB_PREFIX, super::extraction::EXT_PREFIX] {
            for p in self.store.prefixes(jobs, kind, kind.len() + 16)? {
                job_prefixes.push((kind.len(), p));
            }
        }
        let segments: Pick = |t| t.segments;
        let built = self.store.prefixes(segments, &[], segment::PREFIX_LEN)?;
        let current: HashMap<Uuid, u32> = self
            .all_namespaces()?
            .into_iter()
            .map(|ns| (ns.id, ns.index_generation))
            .collect();
        let known = |id: &[u8]| Uuid::from_slice(id).is_ok_and(|id| current.contains_key(&id));
        let mut removed = 0;
        for (pick, p) in found {
            if !known(&p) {
                removed += self.store.delete_prefix(pick, &p, |_| true)?;
            }
        }
        for (kind, p) in job_prefixes {
            if !known(&p[kind..]) {
                removed += self.store.delete_prefix(jobs, &p, |_| true)?;
            }
        }
        for p in built {
            let (id, generation) = p.split_at(16);
            let live = Uuid::from_slice(id).ok().and_then(|id| current.get(&id));
            let generation = generation.try_into().map(u32::from_be_bytes).ok();
            if live.is_none() || live.copied() != generation {
                removed += self.store.delete_prefix(segments, &p, |_| true)?;
            }
        }
        if removed > 0 {
            tracing::info!(
                rows = removed,
                "removed rows left by deleted namespaces or earlier index generations"
            );
        }
        Ok(removed)
    }
}
