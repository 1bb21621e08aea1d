//! The embedded engine: one LMDB environment, a named database per table.
//!
//! | rule | why |
//! |---|---|
//! | opened with `NO_TLS` | transactions are not tied to threads: readers run on any blocking thread |
//! | a full map is grown and the batch retried | writes do not fail because a size guess was low |
//! | growing takes the gate exclusively | LMDB may only resize with no transaction open in this process |
//! | another process grew the map: adopt its size and begin again | the CLI writes beside a running server |
//!
//! Everything LMDB-specific (cursors, `MDB_*` calls, the map) stays in this
//! file; the rest of the store sees [`super::Transaction`].

use std::path::Path;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use lmdb::{Cursor, Database, DatabaseFlags, Environment, EnvironmentFlags, Transaction as _};

use super::{
    Lent, Row, StoreError, StoreOptions, TABLE_NAMES, Table, WriteFlags, WriteJob, WriteReply,
};

impl From<lmdb::Error> for StoreError {
    fn from(e: lmdb::Error) -> Self {
        match e {
            lmdb::Error::MapFull => StoreError::MapFull,
            lmdb::Error::KeyExist => StoreError::Exists,
            other => StoreError::Storage(other.to_string()),
        }
    }
}

/// The environment and its table handles.
pub(super) struct Env {
    env: Environment,
    dbs: [Database; TABLE_NAMES.len()],
    /// Readers hold it shared; growing the map takes it exclusively.
    gate: RwLock<()>,
    map_size: AtomicUsize,
    max_map_size: usize,
}

/// A read snapshot.
pub(super) struct Snapshot<'e> {
    txn: lmdb::RoTransaction<'e>,
    dbs: &'e [Database; TABLE_NAMES.len()],
}

/// One write of a batch: a nested transaction of the batch's.
pub(super) struct Write<'e> {
    txn: lmdb::RwTransaction<'e>,
    dbs: &'e [Database; TABLE_NAMES.len()],
}

impl Env {
    pub(super) fn open(dir: &Path, options: &StoreOptions) -> Result<Env, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Storage(format!("{}: {e}", dir.display())))?;
        let env = Environment::new()
            .set_flags(EnvironmentFlags::NO_TLS)
            .set_max_dbs(16)
            .set_max_readers(512)
            .set_map_size(options.map_size)
            .open_with_permissions(dir, 0o600)?;
        let mut dbs = Vec::with_capacity(TABLE_NAMES.len());
        for name in TABLE_NAMES {
            dbs.push(env.create_db(Some(name), DatabaseFlags::empty())?);
        }
        let dbs: [Database; TABLE_NAMES.len()] = dbs
            .try_into()
            .map_err(|_| StoreError::Storage("opening the tables".into()))?;
        let map_size = env.info()?.map_size().max(options.map_size);
        Ok(Env {
            env,
            dbs,
            gate: RwLock::new(()),
            map_size: AtomicUsize::new(map_size),
            max_map_size: options.max_map_size.max(map_size),
        })
    }

    /// Run `f` in a read transaction.
    pub(super) fn read<R>(
        &self,
        f: impl FnOnce(Snapshot<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let shared = self.gate.read().map_err(|_| StoreError::Closed)?;
        let txn = match self.env.begin_ro_txn() {
            Err(lmdb::Error::MapResized) => {
                drop(shared);
                self.adopt_resize()?;
                return self.read(f);
            }
            other => other?,
        };
        let out = f(Snapshot {
            txn,
            dbs: &self.dbs,
        });
        drop(shared);
        out
    }

    /// Run `batch` in one transaction, each write nested (a failing one
    /// aborts alone), and commit once. A full map is grown and the batch
    /// run again.
    pub(super) fn commit(&self, batch: &mut [WriteJob]) -> Result<Vec<WriteReply>, StoreError> {
        loop {
            match self.run_batch(batch) {
                Err(BatchError::MapFull) => self.grow()?,
                Err(BatchError::Resized) => {
                    let _exclusive = self.gate.write().map_err(|_| StoreError::Closed)?;
                    self.env.set_map_size(0)?;
                }
                Err(BatchError::Failed(e)) => return Err(e),
                Ok(results) => return Ok(results),
            }
        }
    }

    fn run_batch(&self, batch: &mut [WriteJob]) -> Result<Vec<WriteReply>, BatchError> {
        let mut txn = self.env.begin_rw_txn()?;
        let mut results = Vec::with_capacity(batch.len());
        for job in batch.iter_mut() {
            let nested = txn.begin_nested_txn()?;
            let mut write = super::RwTransaction {
                inner: super::Rw::Lmdb(Write {
                    txn: nested,
                    dbs: &self.dbs,
                }),
            };
            match (job.run)(&mut write, &super::TABLES) {
                Ok(value) => {
                    if let super::Rw::Lmdb(w) = write.inner {
                        w.txn.commit()?;
                    }
                    results.push(Ok(value));
                }
                Err(StoreError::MapFull) => return Err(BatchError::MapFull),
                // Dropping the nested transaction aborts it.
                Err(e) => results.push(Err(e)),
            }
        }
        txn.commit()?;
        Ok(results)
    }

    /// Put `rows` into `t` in one transaction of its own, growing the map
    /// as needed (filling a new environment; no writer runs).
    pub(super) fn load(&self, t: Table, rows: &[Row]) -> Result<(), StoreError> {
        loop {
            let attempt = (|| {
                let mut txn = self.env.begin_rw_txn()?;
                for (k, v) in rows {
                    txn.put(self.dbs[t.index()], k, v, lmdb::WriteFlags::empty())?;
                }
                txn.commit()
            })();
            match attempt {
                Err(lmdb::Error::MapFull) => self.grow()?,
                other => return Ok(other?),
            }
        }
    }

    fn grow(&self) -> Result<(), StoreError> {
        let current = self.map_size.load(Ordering::Relaxed);
        if current >= self.max_map_size {
            return Err(StoreError::Full { size: current });
        }
        let next = current.saturating_mul(2).min(self.max_map_size);
        let _exclusive = self.gate.write().map_err(|_| StoreError::Closed)?;
        self.env.set_map_size(next)?;
        self.map_size.store(next, Ordering::Relaxed);
        tracing::info!(from = current, to = next, "storage map grown");
        Ok(())
    }

    /// Another process grew the map: adopt its size.
    fn adopt_resize(&self) -> Result<(), StoreError> {
        let _exclusive = self.gate.write().map_err(|_| StoreError::Closed)?;
        self.env.set_map_size(0)?;
        let size = self.env.info()?.map_size();
        self.map_size.store(size, Ordering::Relaxed);
        Ok(())
    }

    pub(super) fn map_size(&self) -> usize {
        self.map_size.load(Ordering::Relaxed)
    }

    pub(super) fn page_size(&self) -> Result<u64, StoreError> {
        Ok(self.env.stat()?.page_size() as u64)
    }

    pub(super) fn readers(&self) -> Result<u64, StoreError> {
        Ok(u64::from(self.env.info()?.num_readers()))
    }

    pub(super) fn used_bytes(&self) -> Result<u64, StoreError> {
        let info = self.env.info()?;
        let stat = self.env.stat()?;
        Ok((info.last_pgno() as u64 + 1) * stat.page_size() as u64)
    }

    /// Copy the environment, compacted, into `dir/data.mdb`.
    pub(super) fn copy_compacted(&self, dir: &Path) -> Result<(), StoreError> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let target = dir.join("data.mdb");
        let failed = |e: &dyn std::fmt::Display| {
            StoreError::Storage(format!("copying the store to {}: {e}", target.display()))
        };
        // Made here, owner-only like the store itself (LMDB's own copy
        // would create it world-readable).
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&target)
            .map_err(|e| failed(&e))?;
        // A map resize must not happen under the copy's read transaction.
        let _shared = self.gate.read().map_err(|_| StoreError::Closed)?;
        // SAFETY: the environment is open for as long as `self` lives (it is
        // borrowed here), the descriptor is an open file this function owns
        // for the duration of the call, and mdb_env_copyfd2 only reads the
        // environment (in its own read transaction) and writes to that
        // descriptor.
        let code = unsafe {
            lmdb_sys::mdb_env_copyfd2(self.env.env(), file.as_raw_fd(), lmdb_sys::MDB_CP_COMPACT)
        };
        if code != 0 {
            return Err(failed(&lmdb::Error::from_err_code(code)));
        }
        file.sync_all().map_err(|e| failed(&e))?;
        Ok(())
    }
}

enum BatchError {
    MapFull,
    Resized,
    Failed(StoreError),
}

impl From<lmdb::Error> for BatchError {
    fn from(e: lmdb::Error) -> Self {
        match e {
            lmdb::Error::MapFull => BatchError::MapFull,
            lmdb::Error::MapResized => BatchError::Resized,
            other => BatchError::Failed(other.into()),
        }
    }
}

/// The reads both kinds of transaction share, over any LMDB transaction.
fn get<T: lmdb::Transaction>(
    txn: &T,
    db: Database,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    match txn.get(db, &key) {
        Ok(v) => Ok(Some(v.to_vec())),
        Err(lmdb::Error::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn visit<T: lmdb::Transaction>(
    txn: &T,
    db: Database,
    start: &[u8],
    max: usize,
    f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> Result<usize, StoreError> {
    let mut cursor = txn.open_ro_cursor(db)?;
    // LMDB refuses an empty key to seek to: the whole table starts at the
    // start.
    let iter = if start.is_empty() {
        cursor.iter_start()
    } else {
        cursor.iter_from(start)
    };
    let mut shown = 0;
    for item in iter {
        let (k, v) = item?;
        if shown >= max || !f(k, v) {
            break;
        }
        shown += 1;
    }
    Ok(shown)
}

fn with_prefix<T: lmdb::Transaction>(
    txn: &T,
    db: Database,
    prefix: &[u8],
    f: &mut dyn FnMut(&Lent<'_>),
) -> Result<(), StoreError> {
    let mut cursor = txn.open_ro_cursor(db)?;
    let iter = if prefix.is_empty() {
        cursor.iter_start()
    } else {
        cursor.iter_from(prefix)
    };
    let mut rows = Vec::new();
    for item in iter {
        let (k, v) = item?;
        if !k.starts_with(prefix) {
            break;
        }
        rows.push((k, v));
    }
    f(&rows);
    Ok(())
}

fn last_at_or_before<T: lmdb::Transaction>(
    txn: &T,
    db: Database,
    prefix: &[u8],
    upto: &[u8],
) -> Result<Option<Row>, StoreError> {
    let cursor = txn.open_ro_cursor(db)?;
    let found = match cursor.get(Some(upto), None, lmdb_sys::MDB_SET_RANGE) {
        Ok((Some(k), v)) if k == upto => Ok((Some(k), v)),
        Ok(_) => cursor.get(None, None, lmdb_sys::MDB_PREV),
        Err(lmdb::Error::NotFound) => cursor.get(None, None, lmdb_sys::MDB_LAST),
        Err(e) => Err(e),
    };
    match found {
        Ok((Some(k), v)) if k.starts_with(prefix) => Ok(Some((k.to_vec(), v.to_vec()))),
        Ok(_) | Err(lmdb::Error::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The pages of `db`'s B-tree as of `txn` (lmdb-rkv reads this statistic
/// for the whole environment only).
fn pages<T: lmdb::Transaction>(txn: &T, db: Database) -> Result<u64, StoreError> {
    let mut stat = lmdb_sys::MDB_stat {
        ms_psize: 0,
        ms_depth: 0,
        ms_branch_pages: 0,
        ms_leaf_pages: 0,
        ms_overflow_pages: 0,
        ms_entries: 0,
    };
    // SAFETY: `txn` is a live transaction for the duration of the borrow,
    // `db` a handle opened in this environment, and mdb_stat only writes
    // the struct it is given.
    let code = unsafe { lmdb_sys::mdb_stat(txn.txn(), db.dbi(), &mut stat) };
    if code != 0 {
        return Err(lmdb::Error::from_err_code(code).into());
    }
    Ok((stat.ms_branch_pages + stat.ms_leaf_pages + stat.ms_overflow_pages) as u64)
}

macro_rules! reads {
    ($ty:ident) => {
        impl super::Transaction for $ty<'_> {
            fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
                get(&self.txn, self.dbs[t.index()], key)
            }

            fn visit(
                &self,
                t: Table,
                start: &[u8],
                max: usize,
                f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
            ) -> Result<usize, StoreError> {
                visit(&self.txn, self.dbs[t.index()], start, max, f)
            }

            fn with_prefix(
                &self,
                t: Table,
                prefix: &[u8],
                f: &mut dyn FnMut(&Lent<'_>),
            ) -> Result<(), StoreError> {
                with_prefix(&self.txn, self.dbs[t.index()], prefix, f)
            }

            fn last_at_or_before(
                &self,
                t: Table,
                prefix: &[u8],
                upto: &[u8],
            ) -> Result<Option<Row>, StoreError> {
                last_at_or_before(&self.txn, self.dbs[t.index()], prefix, upto)
            }
        }
    };
}

reads!(Snapshot);
reads!(Write);

impl Snapshot<'_> {
    /// The pages `t` takes in the file.
    pub(super) fn pages(&self, t: Table) -> Result<u64, StoreError> {
        pages(&self.txn, self.dbs[t.index()])
    }
}

impl Write<'_> {
    pub(super) fn put(
        &mut self,
        t: Table,
        key: &[u8],
        value: &[u8],
        flags: WriteFlags,
    ) -> Result<(), StoreError> {
        let mut lmdb_flags = lmdb::WriteFlags::empty();
        if flags.contains(WriteFlags::NO_OVERWRITE) {
            lmdb_flags |= lmdb::WriteFlags::NO_OVERWRITE;
        }
        if flags.contains(WriteFlags::APPEND) {
            lmdb_flags |= lmdb::WriteFlags::APPEND;
        }
        Ok(self
            .txn
            .put(self.dbs[t.index()], &key, &value, lmdb_flags)?)
    }

    pub(super) fn del(&mut self, t: Table, key: &[u8]) -> Result<(), StoreError> {
        match self.txn.del(self.dbs[t.index()], &key, None) {
            Ok(()) | Err(lmdb::Error::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
