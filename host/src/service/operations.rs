//! Operations use cases: backups (the file format is `store::backup`'s),
//! the state metrics read when scraped, warming up after a start.
//!
//! | table  | row key          | value                                   |
//! |--------|------------------|-----------------------------------------|
//! | `meta` | `last_backup_at` | Unix ms of the last backup written (u64, big-endian) |

use std::io::Write;
use std::path::Path;

use super::{Service, ServiceError};
use crate::audit::Record;
use crate::auth::Principal;
use crate::store::WriteFlags;
use crate::store::backup::{self, Manifest};

/// Meta row: when the last backup was written.
const META_LAST_BACKUP: &[u8] = b"last_backup_at";

impl Service {
    /// Back the whole store up while it serves: a compacted snapshot
    /// copied into the empty directory `staging`, written as a signed
    /// backup to `out`, then `finish`ed (flushed, encrypted to the end,
    /// synced — whatever makes it durable). Only then is it recorded: an
    /// audit entry, and the time ([`Service::last_backup_at`]). A failure
    /// is audited too. Needs the global admin role.
    pub fn backup<W: Write>(
        &self,
        who: &Principal,
        staging: &Path,
        out: W,
        finish: impl FnOnce(W) -> std::io::Result<()>,
        progress: &dyn Fn(u64, u64),
    ) -> Result<Manifest, ServiceError> {
        if !who.is_global_admin() {
            let detail = format!(
                "key {} is not a global admin (*=admin); a backup holds every namespace",
                who.key_id
            );
            return Err(self.deny(
                Record::by(who, "store.backup").outcome("denied", Some(detail.clone())),
                detail,
            ));
        }
        let made = backup::snapshot(&self.store, staging).and_then(|snapshot| {
            let mut out = out;
            let manifest = backup::write(snapshot, self.keyring.master(), &mut out, progress)?;
            finish(out)
                .map_err(|e| backup::BackupError::Io(format!("finishing the backup: {e}")))?;
            Ok(manifest)
        });
        let manifest = match made {
            Ok(manifest) => manifest,
            Err(e) => {
                self.record_event(
                    Record::by(who, "store.backup").outcome("failed", Some(e.to_string())),
                );
                return Err(ServiceError::Backup(e.to_string()));
            }
        };
        let record = Record::by(who, "store.backup").outcome(
            "ok",
            Some(format!(
                "{} bytes, sha256 {}, {} memory rows",
                manifest.database.bytes,
                manifest.database.sha256,
                manifest.tables.get("memories").copied().unwrap_or(0)
            )),
        );
        let at = u64::try_from(manifest.created_at)
            .unwrap_or(0)
            .to_be_bytes();
        let audit = self.audit.clone();
        let entry = self.store.write_blocking(move |txn, t| {
            txn.put(t.meta, &META_LAST_BACKUP, &at, WriteFlags::empty())?;
            audit.append(txn, t, &record)
        })?;
        crate::audit::emit(&entry);
        Ok(manifest)
    }

    /// Copy the store, compacted, into the empty directory `dir` (see
    /// `memhost compact`, which runs with no server).
    pub fn copy_store(&self, dir: &Path) -> Result<(), ServiceError> {
        Ok(self.store.copy_compacted(dir)?)
    }

    /// When the last backup was written (Unix ms), if ever.
    pub fn last_backup_at(&self) -> Result<Option<i64>, ServiceError> {
        Ok(self
            .store
            .get(|t| t.meta, META_LAST_BACKUP)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .and_then(|b| i64::try_from(u64::from_be_bytes(b)).ok()))
    }

    /// How long the embedding queue has been non-empty, given whether it
    /// is now: zero when empty, else the time since a call first saw it
    /// non-empty after it was last seen empty.
    fn queue_busy_for(&self, busy: bool) -> std::time::Duration {
        self.queue_busy_since
            .lock()
            .map_or(std::time::Duration::ZERO, |mut since| {
                busy_for(&mut since, busy, std::time::Instant::now())
            })
    }

    /// Set the metrics that are state, read now: a scrape.
    pub fn observe_metrics(&self) -> Result<(), ServiceError> {
        let Some(m) = crate::metrics::get() else {
            return Ok(());
        };
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        m.namespaces.set(int(self.all_namespaces()?.len() as u64));
        let index = self.index_totals()?;
        m.index_queue.set(int(index.queued as u64));
        m.index_lag
            .set(int(self.queue_busy_for(index.queued > 0).as_secs()));
        m.index_failed.set(int(index.failed as u64));
        for (state, n) in self.approval_counts()? {
            m.approvals.with_label_values(&[state]).set(n);
        }
        m.map_size.set(int(self.store.map_size() as u64));
        m.used.set(int(self.store.used_bytes()?));
        m.readers.set(int(self.store.readers()?));
        m.audit_entries.set(int(self.audit.length(&self.store)?));
        m.last_backup
            .set(self.last_backup_at()?.map_or(0, |ms| ms / 1000));
        Ok(())
    }

    /// Load the meaning index of every namespace with an embedder, so the
    /// first questions after a start do not wait for it; returns how many
    /// namespaces were loaded. `/ready` answers 200 once this is done.
    pub fn warm_up(&self) -> Result<usize, ServiceError> {
        let mut loaded = 0;
        for ns in self.all_namespaces()? {
            if ns.settings.embedder.is_none() {
                continue;
            }
            let key = self.data_key(&ns)?;
            self.vectors.shape(&self.store, &key, ns.vector_space())?;
            loaded += 1;
        }
        Ok(loaded)
    }
}

/// How long something has been busy at `now`, given whether it is and
/// when it was first seen busy since it was last seen idle (updated).
fn busy_for(
    since: &mut Option<std::time::Instant>,
    busy: bool,
    now: std::time::Instant,
) -> std::time::Duration {
    if !busy {
        *since = None;
        return std::time::Duration::ZERO;
    }
    now.saturating_duration_since(*since.get_or_insert(now))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn the_lag_counts_from_when_the_queue_was_first_seen_busy_and_resets_when_empty() {
        let t0 = Instant::now();
        let mut since = None;
        assert_eq!(super::busy_for(&mut since, false, t0), Duration::ZERO);
        assert_eq!(super::busy_for(&mut since, true, t0), Duration::ZERO);
        let later = t0 + Duration::from_secs(30);
        assert_eq!(
            super::busy_for(&mut since, true, later),
            Duration::from_secs(30)
        );
        assert_eq!(super::busy_for(&mut since, false, later), Duration::ZERO);
        let again = later + Duration::from_secs(5);
        assert_eq!(super::busy_for(&mut since, true, again), Duration::ZERO);
        assert_eq!(
            super::busy_for(&mut since, true, again + Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }
}
