//! Following a shared store: what other hosts commit reaches this host's
//! in-memory state, in commit order, within a bounded delay. LMDB has one
//! writing process and nothing to follow.
//!
//! | change (table, key) | what this host does |
//! |---|---|
//! | `vectors`, namespace id + memory id | the namespace's index, if loaded here, reads the row again and holds what it says ([`vector::VectorCache::follow`]) |
//! | `keys`, `ns/` + namespace id, now gone | the namespace was deleted: its data key, vector index and gazetteer leave memory |
//! | `jobs` | nothing held; requests waiting for `?wait=indexed` look again |
//! | anything else | nothing: API keys, sessions, tokens, approvals, the audit head are read from the store on every request; the namespace list is checked against its version row |
//!
//! Batches this process committed are passed over (the code that wrote them
//! updated memory itself). A follower that finds the sequence pruned past
//! where it stood drops every vector index, to be read again on next use.

use std::sync::atomic::Ordering;

use uuid::Uuid;

use super::{Service, ServiceError, ns_key_id};
use crate::index::vector;
use crate::store::Table;

/// Batches read per query.
const CHUNK: usize = 512;

impl Service {
    /// Start following from the store's current sequence number: what
    /// this host reads from now on is at least that new.
    pub fn start_following(&self) -> Result<(), ServiceError> {
        let now = self.store.sequence()?.unwrap_or(0);
        self.followed.fetch_max(now, Ordering::SeqCst);
        Ok(())
    }

    /// Forget change rows older than `keep` (every host may; the oldest
    /// go).
    pub fn prune_changes(&self, keep: std::time::Duration) -> Result<u64, ServiceError> {
        Ok(self.store.prune_changes(keep)?)
    }

    /// The last change sequence number this host has applied.
    pub fn followed(&self) -> u64 {
        self.followed.load(Ordering::SeqCst)
    }

    /// Apply every batch committed after the last one applied; returns how
    /// many were read. Blocking.
    pub fn follow(&self) -> Result<usize, ServiceError> {
        let mut read = 0;
        let mut wake = false;
        loop {
            let after = self.followed();
            let changes = self.store.changes_after(after, CHUNK)?;
            let Some(first) = changes.first() else { break };
            if first.seq != after + 1 {
                tracing::warn!(
                    from = after,
                    to = first.seq,
                    "changes were pruned before this host read them; vector indexes are read again"
                );
                self.vectors.clear();
                wake = true;
            }
            let t = self.store.tables();
            for change in &changes {
                for (table, key) in &change.keys {
                    wake |= if change.mine {
                        *table == t.vectors
                            || (*table == t.jobs && key.starts_with(vector::JOB_PREFIX))
                    } else {
                        self.apply_change(*table, key)
                    };
                }
                self.followed.fetch_max(change.seq, Ordering::SeqCst);
            }
            read += changes.len();
        }
        if wake {
            self.index_advanced.notify_waiters();
        }
        Ok(read)
    }

    /// Bring memory up to one changed key; returns whether waiters for
    /// indexing should look again.
    fn apply_change(&self, table: Table, key: &[u8]) -> bool {
        let t = self.store.tables();
        if table == t.vectors {
            let (Some(ns), Some(id)) = (uuid_at(key, 0), uuid_at(key, 16)) else {
                return false;
            };
            if let Ok(data_key) = self.keyring.key(&self.store, &ns_key_id(&ns)) {
                self.vectors.follow(&self.store, &data_key, &ns, &id);
            }
            true
        } else if table == t.keys {
            if let Some(ns) = key
                .strip_prefix(b"ns/")
                .and_then(|k| Uuid::from_slice(k).ok())
                && matches!(self.store.get(|t| t.keys, key), Ok(None))
            {
                self.keyring.forget(key);
                self.vectors.drop_namespace(&ns);
                self.forget_aliases(&ns);
            }
            false
        } else {
            table == t.jobs && key.starts_with(vector::JOB_PREFIX)
        }
    }
}

fn uuid_at(key: &[u8], at: usize) -> Option<Uuid> {
    key.get(at..at + 16).and_then(|b| Uuid::from_slice(b).ok())
}
