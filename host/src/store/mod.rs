//! The LMDB environment, its tables, and the single writer with group commit.
//!
//! | rule | why |
//! |---|---|
//! | one writer thread; concurrent writes are batched into one transaction | a durable commit costs 0.3–6 ms here; batching keeps throughput off fsync speed |
//! | each write runs in a nested transaction | one failing write aborts alone, the rest of its batch commits |
//! | a write is answered only after its batch is durably committed | a 2xx means the data survives a crash |
//! | readers never block writers; no transaction is held across `.await` | LMDB work runs on blocking threads |
//! | a full map is grown and the batch retried | writes do not fail because a size guess was low |
//!
//! This module stores bytes. Sealing happens before bytes reach it (see
//! `crate::crypto`); it must never see plaintext longer than a call.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, RwLock};

pub mod backup;
pub mod keyring;

pub use lmdb::{Database, RoTransaction, RwTransaction, Transaction, WriteFlags};
use lmdb::{DatabaseFlags, Environment, EnvironmentFlags};

/// The schema this build writes and understands.
///
/// | version | change | upgrade (by the service, on open) |
/// |---|---|---|
/// | 1 | first release | |
/// | 2 | word index in posting blocks, 16-byte tokens | `index::lexical::upgrade` |
pub const SCHEMA_VERSION: u32 = 2;

/// The `meta` key holding the schema version (u32, big-endian).
pub const META_SCHEMA: &[u8] = b"schema_version";

/// Most writes one transaction takes before it commits.
const MAX_BATCH: usize = 1024;

/// Writes queued before `write` callers wait for room.
const QUEUE: usize = 8192;

/// Failures of the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// LMDB reported an error.
    #[error("storage: {0}")]
    Lmdb(String),
    /// The map is full and may not grow further.
    #[error("storage is full at {size} bytes; raise [store] max_map_size_mb in the config")]
    Full {
        /// The current map size.
        size: usize,
    },
    /// The data was written by a newer memhost.
    #[error(
        "{path} holds schema version {found}, but this memhost understands up to {SCHEMA_VERSION}: upgrade memhost"
    )]
    NewerSchema {
        /// The database directory.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// The map filled up inside a write; the writer grows it and retries.
    #[error("storage map full")]
    MapFull,
    /// The writer thread is gone (the store is shutting down).
    #[error("the store is shutting down")]
    Closed,
    /// A write was refused by its own logic; carried back to the caller.
    #[error("{0}")]
    Rejected(String),
    /// What a write was checked against changed under it (a concurrent
    /// write won): reading again and retrying may succeed.
    #[error("{0}")]
    Raced(String),
}

impl From<lmdb::Error> for StoreError {
    fn from(e: lmdb::Error) -> Self {
        match e {
            lmdb::Error::MapFull => StoreError::MapFull,
            other => StoreError::Lmdb(other.to_string()),
        }
    }
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Initial map size in bytes (virtual; the file grows as used).
    pub map_size: usize,
    /// The map never grows past this.
    pub max_map_size: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            map_size: 1 << 30,
            max_map_size: 1 << 40,
        }
    }
}

/// What one table holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableFootprint {
    /// Rows.
    pub rows: u64,
    /// Bytes of their keys.
    pub key_bytes: u64,
    /// Bytes of their values.
    pub value_bytes: u64,
    /// Pages of the table's B-tree (branch, leaf and overflow): what it
    /// takes in the file, node headers and half-full pages included.
    pub pages: u64,
}

/// A (key, value) pair copied out of a transaction.
pub type Row = (Vec<u8>, Vec<u8>);

/// The named tables (DESIGN.md, storage).
#[derive(Debug, Clone, Copy)]
pub struct Tables {
    /// Schema version, master key fingerprint, settings.
    pub meta: Database,
    /// Wrapped data keys.
    pub keys: Database,
    /// Credentials and principals.
    pub principals: Database,
    /// Namespaces and their settings.
    pub namespaces: Database,
    /// Sealed memory records.
    pub memories: Database,
    /// Content-hash dedup entries.
    pub dedup: Database,
    /// Blind lexical postings.
    pub terms: Database,
    /// Sealed vectors.
    pub vectors: Database,
    /// Sealed built vector segments.
    pub segments: Database,
    /// Sealed entities.
    pub entities: Database,
    /// Pending governance actions.
    pub pending: Database,
    /// Indexing jobs.
    pub jobs: Database,
    /// The audit chain.
    pub audit: Database,
}

impl Tables {
    /// Every table with its name.
    pub fn all(&self) -> [(&'static str, Database); 13] {
        [
            ("meta", self.meta),
            ("keys", self.keys),
            ("principals", self.principals),
            ("namespaces", self.namespaces),
            ("memories", self.memories),
            ("dedup", self.dedup),
            ("terms", self.terms),
            ("vectors", self.vectors),
            ("segments", self.segments),
            ("entities", self.entities),
            ("pending", self.pending),
            ("jobs", self.jobs),
            ("audit", self.audit),
        ]
    }
}

/// A write: runs inside the batch transaction, may be retried (after the
/// map grows), so it must not depend on having run before.
type WriteFn = Box<
    dyn FnMut(&mut RwTransaction<'_>, &Tables) -> Result<Box<dyn Any + Send>, StoreError> + Send,
>;

/// What a write sends back: its value (downcast by the caller) or error.
type WriteReply = Result<Box<dyn Any + Send>, StoreError>;

struct WriteJob {
    run: WriteFn,
    reply: tokio::sync::oneshot::Sender<WriteReply>,
}

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    env: Environment,
    tables: Tables,
    path: PathBuf,
    /// Readers hold it shared; growing the map takes it exclusively, since
    /// LMDB may only resize with no transaction open in this process.
    gate: RwLock<()>,
    map_size: AtomicUsize,
    max_map_size: usize,
    queue: Mutex<Option<SyncSender<WriteJob>>>,
    commits: AtomicUsize,
}

impl Store {
    /// Open (or create) the store in `dir`, check the schema, start the writer.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Lmdb(format!("{}: {e}", dir.display())))?;
        let env = Environment::new()
            // Transactions are not tied to threads: readers run on any
            // blocking thread.
            .set_flags(EnvironmentFlags::NO_TLS)
            .set_max_dbs(16)
            .set_max_readers(512)
            .set_map_size(options.map_size)
            .open_with_permissions(dir, 0o600)?;
        let create = |name: &str| env.create_db(Some(name), DatabaseFlags::empty());
        let tables = Tables {
            meta: create("meta")?,
            keys: create("keys")?,
            principals: create("principals")?,
            namespaces: create("namespaces")?,
            memories: create("memories")?,
            dedup: create("dedup")?,
            terms: create("terms")?,
            vectors: create("vectors")?,
            segments: create("segments")?,
            entities: create("entities")?,
            pending: create("pending")?,
            jobs: create("jobs")?,
            audit: create("audit")?,
        };
        let map_size = env.info()?.map_size().max(options.map_size);
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let store = Store {
            inner: Arc::new(Inner {
                env,
                tables,
                path: dir.to_path_buf(),
                gate: RwLock::new(()),
                map_size: AtomicUsize::new(map_size),
                max_map_size: options.max_map_size.max(map_size),
                queue: Mutex::new(Some(tx)),
                commits: AtomicUsize::new(0),
            }),
        };
        store.check_schema()?;
        let inner = store.inner.clone();
        std::thread::Builder::new()
            .name("memhost-writer".into())
            .spawn(move || writer(inner, rx))
            .map_err(|e| StoreError::Lmdb(format!("cannot start the writer thread: {e}")))?;
        Ok(store)
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let found = self.read(|txn, t| match txn.get(t.meta, &META_SCHEMA) {
            Ok(bytes) => Ok(Some(u32::from_be_bytes(bytes.try_into().map_err(
                |_| StoreError::Lmdb("meta.schema_version is corrupt".into()),
            )?))),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        })?;
        match found {
            Some(v) if v > SCHEMA_VERSION => Err(StoreError::NewerSchema {
                path: self.inner.path.clone(),
                found: v,
            }),
            Some(_) => Ok(()),
            None => {
                // A fresh database: stamp it directly (the writer is not
                // running yet).
                let mut txn = self.inner.env.begin_rw_txn()?;
                txn.put(
                    self.inner.tables.meta,
                    &META_SCHEMA,
                    &SCHEMA_VERSION.to_be_bytes(),
                    WriteFlags::empty(),
                )?;
                txn.commit()?;
                Ok(())
            }
        }
    }

    /// The schema version the database holds (older ones are upgraded
    /// by the service when it opens them; see [`SCHEMA_VERSION`]).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.read(|txn, t| {
            Ok(get_in(txn, t.meta, META_SCHEMA)?
                .and_then(|v| v.try_into().ok())
                .map_or(SCHEMA_VERSION, u32::from_be_bytes))
        })
    }

    /// Record that the database is now at [`SCHEMA_VERSION`].
    pub fn mark_upgraded(&self) -> Result<(), StoreError> {
        self.write_blocking(|txn, t| {
            txn.put(
                t.meta,
                &META_SCHEMA,
                &SCHEMA_VERSION.to_be_bytes(),
                WriteFlags::empty(),
            )?;
            Ok(())
        })
    }

    /// The tables.
    pub fn tables(&self) -> &Tables {
        &self.inner.tables
    }

    /// Copy the environment into the empty directory `dir` (as its
    /// `data.mdb`), compacted: free pages are left out and the pages
    /// renumbered. The copy is one consistent snapshot, taken in a read
    /// transaction while writers go on; rows stay sealed as they are.
    pub fn copy_compacted(&self, dir: &Path) -> Result<(), StoreError> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let target = dir.join("data.mdb");
        let failed = |e: &dyn std::fmt::Display| {
            StoreError::Lmdb(format!("copying the store to {}: {e}", target.display()))
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
        let _shared = self.inner.gate.read().map_err(|_| StoreError::Closed)?;
        // SAFETY: the environment is open for as long as `self.inner` lives
        // (it is borrowed here), the descriptor is an open file this
        // function owns for the duration of the call, and mdb_env_copyfd2
        // only reads the environment (in its own read transaction) and
        // writes to that descriptor.
        let code = unsafe {
            lmdb_sys::mdb_env_copyfd2(
                self.inner.env.env(),
                file.as_raw_fd(),
                lmdb_sys::MDB_CP_COMPACT,
            )
        };
        if code != 0 {
            return Err(failed(&lmdb::Error::from_err_code(code)));
        }
        file.sync_all().map_err(|e| failed(&e))?;
        Ok(())
    }

    /// The current map size in bytes.
    pub fn map_size(&self) -> usize {
        self.inner.map_size.load(Ordering::Relaxed)
    }

    /// Run `f` in a read transaction. Blocking: call from a blocking thread.
    pub fn read<R>(
        &self,
        f: impl FnOnce(&RoTransaction<'_>, &Tables) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let _shared = self.inner.gate.read().map_err(|_| StoreError::Closed)?;
        let txn = match self.inner.env.begin_ro_txn() {
            Err(lmdb::Error::MapResized) => {
                drop(_shared);
                self.adopt_resize()?;
                return self.read(f);
            }
            other => other?,
        };
        f(&txn, &self.inner.tables)
    }

    /// The value at `key` in the table `pick` chooses, if any.
    pub fn get(
        &self,
        pick: fn(&Tables) -> Database,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|txn, t| get_in(txn, pick(t), key))
    }

    /// Every row of a table from `start` on while `keep(key)` holds, in key
    /// order, copied out of the transaction.
    pub fn rows(
        &self,
        pick: fn(&Tables) -> Database,
        start: &[u8],
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<Row>, StoreError> {
        self.rows_max(pick, start, keep, usize::MAX)
    }

    /// [`Store::rows`], stopping after `max` rows.
    pub fn rows_max(
        &self,
        pick: fn(&Tables) -> Database,
        start: &[u8],
        keep: impl Fn(&[u8]) -> bool,
        max: usize,
    ) -> Result<Vec<Row>, StoreError> {
        self.read(|txn, t| scan(txn, pick(t), start, keep, max))
    }

    /// The distinct first `len` bytes of the keys of a table that start
    /// with `within`, in order: one seek per prefix, not a scan of its rows.
    pub fn prefixes(
        &self,
        pick: fn(&Tables) -> Database,
        within: &[u8],
        len: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read(|txn, t| {
            let mut cursor = txn.open_ro_cursor(pick(t))?;
            let mut out: Vec<Vec<u8>> = Vec::new();
            let mut from = within.to_vec();
            loop {
                let next = if from.is_empty() {
                    lmdb::Cursor::iter_start(&mut cursor).next()
                } else {
                    lmdb::Cursor::iter_from(&mut cursor, &from).next()
                };
                let Some(item) = next else { break };
                let (k, _) = item?;
                if !k.starts_with(within) {
                    break;
                }
                let Some(p) = k.get(..len) else {
                    // Shorter than a prefix: step past this one key.
                    from = [k, &[0]].concat();
                    continue;
                };
                out.push(p.to_vec());
                // The smallest key after every key starting with `p`.
                let mut past = p.to_vec();
                while let Some(last) = past.pop() {
                    if last < u8::MAX {
                        past.push(last + 1);
                        break;
                    }
                }
                if past.is_empty() {
                    break;
                }
                from = past;
            }
            Ok(out)
        })
    }

    /// Delete every row of a table whose key starts with `prefix`, in
    /// batches of 1000 (each its own transaction). Returns how many deleted
    /// keys `counted` accepts.
    pub fn delete_prefix(
        &self,
        pick: fn(&Tables) -> Database,
        prefix: &[u8],
        counted: impl Fn(&[u8]) -> bool,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        loop {
            let rows = self.rows_max(pick, prefix, |k| k.starts_with(prefix), 1000)?;
            if rows.is_empty() {
                return Ok(n);
            }
            n += rows.iter().filter(|(k, _)| counted(k)).count();
            self.write_blocking(move |txn, t| {
                for (k, _) in &rows {
                    del_in(txn, pick(t), k)?;
                }
                Ok(())
            })?;
        }
    }

    /// Another process grew the map: adopt its size.
    fn adopt_resize(&self) -> Result<(), StoreError> {
        let _exclusive = self.inner.gate.write().map_err(|_| StoreError::Closed)?;
        self.inner.env.set_map_size(0)?;
        let size = self.inner.env.info()?.map_size();
        self.inner.map_size.store(size, Ordering::Relaxed);
        Ok(())
    }

    /// Queue a write and wait until the batch holding it is durably
    /// committed. `f` may run more than once (after the map grows), each
    /// time on a fresh transaction.
    pub async fn write<R: Send + 'static>(
        &self,
        f: impl FnMut(&mut RwTransaction<'_>, &Tables) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let rx = self.submit(f)?;
        finish(rx.await)
    }

    /// [`Store::write`] for blocking callers (the CLI, blocking threads).
    pub fn write_blocking<R: Send + 'static>(
        &self,
        f: impl FnMut(&mut RwTransaction<'_>, &Tables) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let rx = self.submit(f)?;
        finish(rx.blocking_recv())
    }

    fn submit<R: Send + 'static>(
        &self,
        mut f: impl FnMut(&mut RwTransaction<'_>, &Tables) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<WriteReply>, StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = WriteJob {
            run: Box::new(move |txn, tables| {
                f(txn, tables).map(|r| Box::new(r) as Box<dyn Any + Send>)
            }),
            reply,
        };
        let sender = self
            .inner
            .queue
            .lock()
            .map_err(|_| StoreError::Closed)?
            .clone()
            .ok_or(StoreError::Closed)?;
        sender.send(job).map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Stop accepting writes; queued writes still commit. The writer thread
    /// ends when the last handle is dropped.
    pub fn close(&self) {
        if let Ok(mut queue) = self.inner.queue.lock() {
            queue.take();
        }
    }

    /// Transactions committed by the writer so far (each holds a batch).
    pub fn commits(&self) -> usize {
        self.inner.commits.load(Ordering::Relaxed)
    }

    /// How many rows each table holds, by name, in one snapshot.
    pub fn counts(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        Ok(self
            .footprint()?
            .into_iter()
            .map(|(name, f)| (name, f.rows))
            .collect())
    }

    /// Rows and the bytes of their keys and values, per table, in one
    /// snapshot (what is stored, before LMDB's page and node overhead).
    pub fn footprint(
        &self,
    ) -> Result<std::collections::BTreeMap<String, TableFootprint>, StoreError> {
        self.read(|txn, t| {
            let mut all = std::collections::BTreeMap::new();
            for (name, db) in t.all() {
                let mut f = TableFootprint::default();
                visit_in(txn, db, b"", usize::MAX, |k, v| {
                    f.rows += 1;
                    f.key_bytes += k.len() as u64;
                    f.value_bytes += v.len() as u64;
                    true
                })?;
                f.pages = table_pages(txn, db)?;
                all.insert(name.to_string(), f);
            }
            Ok(all)
        })
    }

    /// The database page size, bytes.
    pub fn page_size(&self) -> Result<u64, StoreError> {
        Ok(self.inner.env.stat()?.page_size() as u64)
    }

    /// Reader slots in use, by every process that has the store open.
    pub fn readers(&self) -> Result<u64, StoreError> {
        Ok(u64::from(self.inner.env.info()?.num_readers()))
    }

    /// Bytes used by the database file.
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        let info = self.inner.env.info()?;
        let stat = self.inner.env.stat()?;
        Ok((info.last_pgno() as u64 + 1) * stat.page_size() as u64)
    }
}

/// The pages of `db`'s B-tree as of `txn` (lmdb-rkv reads this statistic
/// for the whole environment only).
fn table_pages<T: Transaction>(txn: &T, db: Database) -> Result<u64, StoreError> {
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

/// The row of `db` with the greatest key at or before `upto` among those
/// starting with `prefix`, if any (a seek, then one step back).
pub fn last_at_or_before<T: Transaction>(
    txn: &T,
    db: Database,
    prefix: &[u8],
    upto: &[u8],
) -> Result<Option<Row>, StoreError> {
    use lmdb::Cursor;
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

/// The value at `key` in `db` within a transaction, if any.
pub fn get_in<T: Transaction>(
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

/// Delete the row at `key` in `db` within a write transaction, if there is
/// one: a row already gone is not an error.
pub fn del_in(txn: &mut RwTransaction<'_>, db: Database, key: &[u8]) -> Result<(), StoreError> {
    match txn.del(db, &key, None) {
        Ok(()) | Err(lmdb::Error::NotFound) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Every row of `db` whose key starts with `prefix`, within a
/// transaction, in key order.
pub fn rows_in<T: Transaction>(
    txn: &T,
    db: Database,
    prefix: &[u8],
) -> Result<Vec<Row>, StoreError> {
    scan(txn, db, prefix, |k| k.starts_with(prefix), usize::MAX)
}

/// The rows of `db` from `start` on while `keep(key)` holds, at most `max`.
fn scan<T: Transaction>(
    txn: &T,
    db: Database,
    start: &[u8],
    keep: impl Fn(&[u8]) -> bool,
    max: usize,
) -> Result<Vec<Row>, StoreError> {
    let mut out = Vec::new();
    visit_in(txn, db, start, max, |k, v| {
        if !keep(k) {
            return false;
        }
        out.push((k.to_vec(), v.to_vec()));
        true
    })?;
    Ok(out)
}

/// Show `f` the rows of `db` from `start` on, in key order, borrowed from
/// the transaction (nothing is copied), until it returns false or `max`
/// rows were shown; returns how many were.
pub fn visit_in<T: Transaction>(
    txn: &T,
    db: Database,
    start: &[u8],
    max: usize,
    mut f: impl FnMut(&[u8], &[u8]) -> bool,
) -> Result<usize, StoreError> {
    let mut cursor = txn.open_ro_cursor(db)?;
    // LMDB refuses an empty key to seek to: the whole table starts at the
    // start.
    let iter = if start.is_empty() {
        lmdb::Cursor::iter_start(&mut cursor)
    } else {
        lmdb::Cursor::iter_from(&mut cursor, start)
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

fn finish<R: 'static>(
    reply: Result<WriteReply, tokio::sync::oneshot::error::RecvError>,
) -> Result<R, StoreError> {
    let value = reply.map_err(|_| StoreError::Closed)??;
    value
        .downcast::<R>()
        .map(|b| *b)
        .map_err(|_| StoreError::Lmdb("write returned an unexpected type".into()))
}

/// The writer loop: take what is queued (up to [`MAX_BATCH`]), run it in
/// one transaction, commit once, answer everyone.
fn writer(inner: Arc<Inner>, rx: Receiver<WriteJob>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = loop {
            match run_batch(&inner, &mut batch) {
                Err(BatchError::MapFull) => {
                    if let Err(e) = grow(&inner) {
                        break Err(e);
                    }
                }
                Err(BatchError::Resized) => {
                    let resized = inner
                        .gate
                        .write()
                        .map_err(|_| StoreError::Closed)
                        .and_then(|_g| inner.env.set_map_size(0).map_err(StoreError::from));
                    if let Err(e) = resized {
                        break Err(e);
                    }
                }
                Err(BatchError::Failed(e)) => break Err(e),
                Ok(results) => break Ok(results),
            }
        };
        match outcome {
            Ok(results) => {
                for (job, result) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "write batch failed");
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
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

type BatchResults = Vec<WriteReply>;

fn run_batch(inner: &Inner, batch: &mut [WriteJob]) -> Result<BatchResults, BatchError> {
    let mut txn = inner.env.begin_rw_txn()?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch.iter_mut() {
        let mut nested = txn.begin_nested_txn()?;
        match (job.run)(&mut nested, &inner.tables) {
            Ok(value) => {
                nested.commit()?;
                results.push(Ok(value));
            }
            Err(StoreError::MapFull) => return Err(BatchError::MapFull),
            Err(e) => {
                nested.abort();
                results.push(Err(e));
            }
        }
    }
    txn.commit()?;
    inner.commits.fetch_add(1, Ordering::Relaxed);
    Ok(results)
}

fn grow(inner: &Inner) -> Result<(), StoreError> {
    let current = inner.map_size.load(Ordering::Relaxed);
    if current >= inner.max_map_size {
        return Err(StoreError::Full { size: current });
    }
    let next = current.saturating_mul(2).min(inner.max_map_size);
    let _exclusive = inner.gate.write().map_err(|_| StoreError::Closed)?;
    inner.env.set_map_size(next)?;
    inner.map_size.store(next, Ordering::Relaxed);
    tracing::info!(from = current, to = next, "storage map grown");
    Ok(())
}

#[cfg(test)]
mod tests;
