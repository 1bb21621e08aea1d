//! The store: an ordered key-value boundary with transactions, the tables
//! memhost keeps in it, and the single writer with group commit.
//!
//! | rule | why |
//! |---|---|
//! | one writer thread per process; concurrent writes are batched into one transaction | a durable commit costs 0.3–6 ms here; batching keeps throughput off fsync speed |
//! | each write runs in a nested transaction | one failing write aborts alone, the rest of its batch commits |
//! | a write is answered only after its batch is durably committed | a 2xx means the data survives a crash |
//! | a write may run more than once (a grown map, a retried batch) | the engine may need to start a batch again; a write must not depend on having run before |
//! | readers never block writers; no transaction is held across `.await` | engine work runs on blocking threads |
//!
//! What the layers above see is [`Transaction`] (get, ordered scans from a
//! key with a limit, the last row at or before a key) and, inside a write,
//! [`RwTransaction::put`] / [`RwTransaction::del`] — an ordered key-value
//! store with snapshot reads and atomic multi-key writes, the shape
//! FoundationDB, TiKV and PostgreSQL share. Keys are compared as bytes.
//! Two engines sit under it: LMDB (`store/lmdb.rs`), embedded, the
//! default; and PostgreSQL (`store/postgres.rs`), for several hosts in
//! front of one replicated database.
//!
//! This module stores bytes. Sealing happens before bytes reach it (see
//! `crate::crypto`); it must never see plaintext longer than a call.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

pub mod backup;
pub mod keyring;
mod lmdb;
mod postgres;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

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
    /// The engine reported an error.
    #[error("storage: {0}")]
    Storage(String),
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
    /// A [`WriteFlags::NO_OVERWRITE`] put found a row at its key.
    #[error("storage: a row already has this key")]
    Exists,
    /// The map filled up inside a write; the writer grows it and retries.
    #[error("storage map full")]
    MapFull,
    /// The database cannot be reached now (a shared store during a
    /// failover): trying again shortly may succeed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
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

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Initial map size in bytes (virtual; the file grows as used).
    pub map_size: usize,
    /// The map never grows past this.
    pub max_map_size: usize,
    /// Keep the rows in the PostgreSQL database this connection string
    /// names (`postgres://user:password@host1,host2/db?target_session_attrs=read-write`)
    /// instead of LMDB files.
    pub postgres: Option<String>,
    /// PostgreSQL: connections this process keeps at most.
    pub pool: usize,
    /// PostgreSQL: how long a write waits for the database to come back (a
    /// failover) before it fails.
    pub failover: std::time::Duration,
    /// PostgreSQL: a PEM file of certificate authorities to trust for TLS
    /// to the database, besides Mozilla's roots (a managed database's own).
    pub ca_file: Option<PathBuf>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            map_size: 1 << 30,
            max_map_size: 1 << 40,
            postgres: None,
            pool: 16,
            failover: std::time::Duration::from_secs(60),
            ca_file: None,
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

/// One committed write batch of a shared store: its place in the change
/// sequence and the keys it put or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The batch's sequence number (gapless, in commit order).
    pub seq: u64,
    /// This process committed it (and already holds what it wrote).
    pub mine: bool,
    /// The keys it changed.
    pub keys: Vec<(Table, Vec<u8>)>,
}

/// A (key, value) pair copied out of a transaction.
pub type Row = (Vec<u8>, Vec<u8>);

/// (key, value) pairs lent by a transaction for the length of a call.
pub type Lent<'t> = [(&'t [u8], &'t [u8])];

/// One of the named tables (see [`Tables`]): a handle, the same in every
/// engine and every process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Table(u8);

impl Table {
    /// The table's name, as the engine stores it.
    pub fn name(self) -> &'static str {
        TABLE_NAMES[usize::from(self.0)]
    }

    fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Every table's name, in [`Table`] order.
const TABLE_NAMES: [&str; 13] = [
    "meta",
    "keys",
    "principals",
    "namespaces",
    "memories",
    "dedup",
    "terms",
    "vectors",
    "segments",
    "entities",
    "pending",
    "jobs",
    "audit",
];

/// The named tables (DESIGN.md, storage).
#[derive(Debug, Clone, Copy)]
pub struct Tables {
    /// Schema version, master key fingerprint, settings.
    pub meta: Table,
    /// Wrapped data keys.
    pub keys: Table,
    /// Credentials and principals.
    pub principals: Table,
    /// Namespaces and their settings.
    pub namespaces: Table,
    /// Sealed memory records.
    pub memories: Table,
    /// Content-hash dedup entries.
    pub dedup: Table,
    /// Blind lexical postings.
    pub terms: Table,
    /// Sealed vectors.
    pub vectors: Table,
    /// Sealed built vector segments.
    pub segments: Table,
    /// Sealed entities.
    pub entities: Table,
    /// Pending governance actions.
    pub pending: Table,
    /// Indexing jobs.
    pub jobs: Table,
    /// The audit chain.
    pub audit: Table,
}

/// The tables, for every store.
const TABLES: Tables = Tables {
    meta: Table(0),
    keys: Table(1),
    principals: Table(2),
    namespaces: Table(3),
    memories: Table(4),
    dedup: Table(5),
    terms: Table(6),
    vectors: Table(7),
    segments: Table(8),
    entities: Table(9),
    pending: Table(10),
    jobs: Table(11),
    audit: Table(12),
};

impl Tables {
    /// Every table with its name.
    pub fn all(&self) -> [(&'static str, Table); 13] {
        std::array::from_fn(|i| (TABLE_NAMES[i], Table(i as u8)))
    }
}

/// How a put treats the row already at its key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteFlags(u8);

impl WriteFlags {
    /// Fail with [`StoreError::Exists`] if the key holds a row.
    pub const NO_OVERWRITE: WriteFlags = WriteFlags(1);
    /// A hint: the key sorts after every key of the table (the audit
    /// chain's next entry). An engine may append without searching.
    pub const APPEND: WriteFlags = WriteFlags(2);

    /// No flags: put the value, replacing any.
    pub const fn empty() -> WriteFlags {
        WriteFlags(0)
    }

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: WriteFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// What every transaction reads: one consistent snapshot of the store (a
/// write transaction also sees its own writes).
pub trait Transaction {
    /// The value at `key` in `table`, if any.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Show `f` the rows of `table` from `start` on, in key order, until it
    /// returns false or `max` rows were shown; returns how many were.
    fn visit(
        &self,
        table: Table,
        start: &[u8],
        max: usize,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<usize, StoreError>;

    /// Show `f` every row of `table` whose key starts with `prefix`, all at
    /// once, in key order (borrowed where the engine can: LMDB lends them
    /// straight from the map).
    fn with_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        f: &mut dyn FnMut(&Lent<'_>),
    ) -> Result<(), StoreError>;

    /// The row of `table` with the greatest key at or before `upto` among
    /// those starting with `prefix`, if any.
    fn last_at_or_before(
        &self,
        table: Table,
        prefix: &[u8],
        upto: &[u8],
    ) -> Result<Option<Row>, StoreError>;
}

/// A read-only snapshot, for the duration of [`Store::read`].
pub struct RoTransaction<'e> {
    inner: Ro<'e>,
}

/// A write transaction, for the duration of one write of a batch. Its
/// writes become visible when the batch commits, or not at all.
pub struct RwTransaction<'e> {
    inner: Rw<'e>,
}

enum Ro<'e> {
    Lmdb(lmdb::Snapshot<'e>),
    Postgres(postgres::Snapshot<'e>),
}

enum Rw<'e> {
    Lmdb(lmdb::Write<'e>),
    Postgres(postgres::Write<'e>),
}

impl RoTransaction<'_> {
    /// The engine's snapshot, which reads.
    fn engine(&self) -> &dyn Transaction {
        match &self.inner {
            Ro::Lmdb(t) => t,
            Ro::Postgres(t) => t,
        }
    }
}

impl RwTransaction<'_> {
    /// The engine's write, which reads (its own writes too).
    fn engine(&self) -> &dyn Transaction {
        match &self.inner {
            Rw::Lmdb(t) => t,
            Rw::Postgres(t) => t,
        }
    }
}

/// [`Transaction`] for a store transaction, by its engine's.
macro_rules! reads {
    ($ty:ident) => {
        impl Transaction for $ty<'_> {
            fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
                self.engine().get(table, key)
            }

            fn visit(
                &self,
                table: Table,
                start: &[u8],
                max: usize,
                f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
            ) -> Result<usize, StoreError> {
                self.engine().visit(table, start, max, f)
            }

            fn with_prefix(
                &self,
                table: Table,
                prefix: &[u8],
                f: &mut dyn FnMut(&Lent<'_>),
            ) -> Result<(), StoreError> {
                self.engine().with_prefix(table, prefix, f)
            }

            fn last_at_or_before(
                &self,
                table: Table,
                prefix: &[u8],
                upto: &[u8],
            ) -> Result<Option<Row>, StoreError> {
                self.engine().last_at_or_before(table, prefix, upto)
            }
        }
    };
}

reads!(RoTransaction);
reads!(RwTransaction);

impl RwTransaction<'_> {
    /// Put `value` at `key` in `table` (see [`WriteFlags`]).
    pub fn put<K: AsRef<[u8]> + ?Sized, V: AsRef<[u8]> + ?Sized>(
        &mut self,
        table: Table,
        key: &K,
        value: &V,
        flags: WriteFlags,
    ) -> Result<(), StoreError> {
        match &mut self.inner {
            Rw::Lmdb(t) => t.put(table, key.as_ref(), value.as_ref(), flags),
            Rw::Postgres(t) => t.put(table, key.as_ref(), value.as_ref(), flags),
        }
    }

    /// Delete the row at `key` in `table`, if there is one: a row already
    /// gone is not an error.
    pub fn del<K: AsRef<[u8]> + ?Sized>(
        &mut self,
        table: Table,
        key: &K,
    ) -> Result<(), StoreError> {
        match &mut self.inner {
            Rw::Lmdb(t) => t.del(table, key.as_ref()),
            Rw::Postgres(t) => t.del(table, key.as_ref()),
        }
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

/// The engine under a store.
enum Engine {
    Lmdb(lmdb::Env),
    Postgres(Box<postgres::Db>),
}

impl Engine {
    fn read<R>(
        &self,
        f: impl FnOnce(&RoTransaction<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        match self {
            Engine::Lmdb(env) => env.read(|t| f(&RoTransaction { inner: Ro::Lmdb(t) })),
            Engine::Postgres(db) => db.read(|t| {
                f(&RoTransaction {
                    inner: Ro::Postgres(t),
                })
            }),
        }
    }

    fn commit(&self, batch: &mut [WriteJob]) -> Result<Vec<WriteReply>, StoreError> {
        match self {
            Engine::Lmdb(env) => env.commit(batch),
            Engine::Postgres(db) => db.commit(batch),
        }
    }
}

struct Inner {
    engine: Engine,
    path: PathBuf,
    queue: Mutex<Option<SyncSender<WriteJob>>>,
    commits: AtomicUsize,
}

impl Store {
    /// Open (or create) the store — in `dir`, or in the PostgreSQL
    /// database `options` name — check the schema, start the writer.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        let (engine, path) = match &options.postgres {
            Some(url) => {
                let db = Box::new(postgres::Db::open(url, options)?);
                let label = PathBuf::from(db.label());
                (Engine::Postgres(db), label)
            }
            None => (
                Engine::Lmdb(lmdb::Env::open(dir, options)?),
                dir.to_path_buf(),
            ),
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let store = Store {
            inner: Arc::new(Inner {
                engine,
                path,
                queue: Mutex::new(Some(tx)),
                commits: AtomicUsize::new(0),
            }),
        };
        store.check_schema()?;
        let inner = store.inner.clone();
        std::thread::Builder::new()
            .name("memhost-writer".into())
            .spawn(move || writer(inner, rx))
            .map_err(|e| StoreError::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(store)
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let found = self.read(|txn, t| {
            get_in(txn, t.meta, META_SCHEMA)?
                .map(|bytes| {
                    bytes
                        .try_into()
                        .map(u32::from_be_bytes)
                        .map_err(|_| StoreError::Storage("meta.schema_version is corrupt".into()))
                })
                .transpose()
        })?;
        match found {
            Some(v) if v > SCHEMA_VERSION => Err(StoreError::NewerSchema {
                path: self.inner.path.clone(),
                found: v,
            }),
            Some(_) => Ok(()),
            // A fresh database: stamp it here, on this thread (the writer is
            // not running yet).
            None => self.inner.commit_now(|txn, t| {
                txn.put(
                    t.meta,
                    META_SCHEMA,
                    &SCHEMA_VERSION.to_be_bytes(),
                    WriteFlags::empty(),
                )
            }),
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
                META_SCHEMA,
                &SCHEMA_VERSION.to_be_bytes(),
                WriteFlags::empty(),
            )
        })
    }

    /// The tables.
    pub fn tables(&self) -> &Tables {
        &TABLES
    }

    /// Copy the store into the empty directory `dir` as an LMDB
    /// environment (its `data.mdb`), compacted: free pages are left out and
    /// the pages renumbered. The copy is one consistent snapshot, taken in a
    /// read transaction while writers go on; rows stay sealed as they are.
    /// A shared store is copied row by row, in one snapshot, into a new
    /// LMDB environment: a backup of either opens as an LMDB store.
    pub fn copy_compacted(&self, dir: &Path) -> Result<(), StoreError> {
        match &self.inner.engine {
            Engine::Lmdb(env) => env.copy_compacted(dir),
            Engine::Postgres(_) => self.copy_rows_into(dir),
        }
    }

    fn copy_rows_into(&self, dir: &Path) -> Result<(), StoreError> {
        if std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_some()) {
            return Err(StoreError::Storage(format!(
                "copying the store to {}: not an empty directory",
                dir.display()
            )));
        }
        // Written here, not through a writer thread: the environment is
        // closed when this returns.
        let copy = lmdb::Env::open(dir, &StoreOptions::default())?;
        let put = |table: Table, rows: Vec<Row>| copy.load(table, &rows);
        self.read(|txn, t| {
            for (_, table) in t.all() {
                let mut rows: Vec<Row> = Vec::new();
                let mut failed = None;
                visit_in(txn, table, b"", usize::MAX, |k, v| {
                    rows.push((k.to_vec(), v.to_vec()));
                    if rows.len() >= 1000
                        && let Err(e) = put(table, std::mem::take(&mut rows))
                    {
                        failed = Some(e);
                        return false;
                    }
                    true
                })?;
                if let Some(e) = failed {
                    return Err(e);
                }
                put(table, rows)?;
            }
            Ok(())
        })
    }

    /// The current map size in bytes (LMDB; 0 for PostgreSQL).
    pub fn map_size(&self) -> usize {
        match &self.inner.engine {
            Engine::Lmdb(env) => env.map_size(),
            Engine::Postgres(_) => 0,
        }
    }

    /// Whether the rows are in PostgreSQL (shared with other hosts).
    pub fn is_shared(&self) -> bool {
        matches!(self.inner.engine, Engine::Postgres(_))
    }

    /// The last change sequence number committed to a shared store, by any
    /// host (`None` for LMDB: one process writes, and says so itself).
    pub fn sequence(&self) -> Result<Option<u64>, StoreError> {
        match &self.inner.engine {
            Engine::Postgres(db) => db.sequence().map(Some),
            Engine::Lmdb(_) => Ok(None),
        }
    }

    /// The batches a shared store committed after `after`, in order, at
    /// most `max` (empty for LMDB).
    pub fn changes_after(&self, after: u64, max: usize) -> Result<Vec<Change>, StoreError> {
        match &self.inner.engine {
            Engine::Postgres(db) => {
                postgres::changes_after(db, after, i64::try_from(max).unwrap_or(i64::MAX))
            }
            Engine::Lmdb(_) => Ok(Vec::new()),
        }
    }

    /// A shared store: a receiver that changes whenever a batch commits, by
    /// any host, or the connection that listens comes back (look for
    /// changes then). `None` for LMDB.
    pub fn watch_changes(&self) -> Result<Option<tokio::sync::watch::Receiver<u64>>, StoreError> {
        match &self.inner.engine {
            Engine::Postgres(db) => db.watch().map(Some),
            Engine::Lmdb(_) => Ok(None),
        }
    }

    /// A shared store: forget the change rows older than `keep`; returns
    /// how many.
    pub fn prune_changes(&self, keep: std::time::Duration) -> Result<u64, StoreError> {
        match &self.inner.engine {
            Engine::Postgres(db) => db.prune_changes(keep),
            Engine::Lmdb(_) => Ok(0),
        }
    }

    /// The shared database's hosts and name (never its password), if the
    /// rows are in PostgreSQL.
    pub fn shared_label(&self) -> Option<&str> {
        match &self.inner.engine {
            Engine::Postgres(db) => Some(db.label()),
            Engine::Lmdb(_) => None,
        }
    }

    /// Run `f` in a read transaction. Blocking: call from a blocking thread.
    pub fn read<R>(
        &self,
        f: impl FnOnce(&RoTransaction<'_>, &Tables) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.inner.engine.read(|txn| f(txn, &TABLES))
    }

    /// The value at `key` in the table `pick` chooses, if any.
    pub fn get(
        &self,
        pick: fn(&Tables) -> Table,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|txn, t| get_in(txn, pick(t), key))
    }

    /// Every row of a table from `start` on while `keep(key)` holds, in key
    /// order, copied out of the transaction.
    pub fn rows(
        &self,
        pick: fn(&Tables) -> Table,
        start: &[u8],
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<Row>, StoreError> {
        self.rows_max(pick, start, keep, usize::MAX)
    }

    /// [`Store::rows`], stopping after `max` rows.
    pub fn rows_max(
        &self,
        pick: fn(&Tables) -> Table,
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
        pick: fn(&Tables) -> Table,
        within: &[u8],
        len: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read(|txn, t| {
            let mut out: Vec<Vec<u8>> = Vec::new();
            let mut from = within.to_vec();
            loop {
                let mut next = None;
                txn.visit(pick(t), &from, 1, &mut |k, _| {
                    next = Some(k.to_vec());
                    true
                })?;
                let Some(k) = next else { break };
                if !k.starts_with(within) {
                    break;
                }
                let Some(p) = k.get(..len) else {
                    // Shorter than a prefix: step past this one key.
                    from = [&k[..], &[0]].concat();
                    continue;
                };
                out.push(p.to_vec());
                match successor(p) {
                    Some(past) => from = past,
                    None => break,
                }
            }
            Ok(out)
        })
    }

    /// Delete every row of a table whose key starts with `prefix`, in
    /// batches of 1000 (each its own transaction). Returns how many deleted
    /// keys `counted` accepts.
    pub fn delete_prefix(
        &self,
        pick: fn(&Tables) -> Table,
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
                    txn.del(pick(t), k)?;
                }
                Ok(())
            })?;
        }
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
        f: impl FnMut(&mut RwTransaction<'_>, &Tables) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<WriteReply>, StoreError> {
        let (job, rx) = WriteJob::new(f);
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
    /// snapshot (what is stored, before the engine's page and node
    /// overhead).
    pub fn footprint(
        &self,
    ) -> Result<std::collections::BTreeMap<String, TableFootprint>, StoreError> {
        self.read(|txn, t| {
            let mut all = std::collections::BTreeMap::new();
            for (name, table) in t.all() {
                let mut f = TableFootprint::default();
                visit_in(txn, table, b"", usize::MAX, |k, v| {
                    f.rows += 1;
                    f.key_bytes += k.len() as u64;
                    f.value_bytes += v.len() as u64;
                    true
                })?;
                if let Ro::Lmdb(lmdb) = &txn.inner {
                    f.pages = lmdb.pages(table)?;
                }
                all.insert(name.to_string(), f);
            }
            Ok(all)
        })
    }

    /// The database page size, bytes.
    pub fn page_size(&self) -> Result<u64, StoreError> {
        match &self.inner.engine {
            Engine::Lmdb(env) => env.page_size(),
            Engine::Postgres(_) => Ok(8192),
        }
    }

    /// LMDB: reader slots in use, by every process that has the store
    /// open. PostgreSQL: connections this process holds.
    pub fn readers(&self) -> Result<u64, StoreError> {
        match &self.inner.engine {
            Engine::Lmdb(env) => env.readers(),
            Engine::Postgres(db) => Ok(db.connections()),
        }
    }

    /// Bytes used by the database file (PostgreSQL: by the rows table).
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        match &self.inner.engine {
            Engine::Lmdb(env) => env.used_bytes(),
            Engine::Postgres(db) => db.used_bytes(),
        }
    }
}

impl Inner {
    /// Run one write as its own batch on this thread (before the writer
    /// runs).
    fn commit_now(
        &self,
        f: impl FnMut(&mut RwTransaction<'_>, &Tables) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        let (job, _reply) = WriteJob::new(f);
        let mut results = self.engine.commit(&mut [job])?;
        results.pop().ok_or(StoreError::Closed)?.map(drop)
    }
}

impl WriteJob {
    fn new<R: Send + 'static>(
        mut f: impl FnMut(&mut RwTransaction<'_>, &Tables) -> Result<R, StoreError> + Send + 'static,
    ) -> (WriteJob, tokio::sync::oneshot::Receiver<WriteReply>) {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = WriteJob {
            run: Box::new(move |txn, tables| {
                f(txn, tables).map(|r| Box::new(r) as Box<dyn Any + Send>)
            }),
            reply,
        };
        (job, rx)
    }
}

/// The smallest key after every key starting with `p` (none when `p` is
/// all 0xff).
fn successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut past = p.to_vec();
    while let Some(last) = past.pop() {
        if last < u8::MAX {
            past.push(last + 1);
            return Some(past);
        }
    }
    None
}

/// The row of `table` with the greatest key at or before `upto` among those
/// starting with `prefix`, if any (a seek, then one step back).
pub fn last_at_or_before<T: Transaction>(
    txn: &T,
    table: Table,
    prefix: &[u8],
    upto: &[u8],
) -> Result<Option<Row>, StoreError> {
    txn.last_at_or_before(table, prefix, upto)
}

/// The value at `key` in `table` within a transaction, if any.
pub fn get_in<T: Transaction>(
    txn: &T,
    table: Table,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    txn.get(table, key)
}

/// Delete the row at `key` in `table` within a write transaction, if there
/// is one: a row already gone is not an error.
pub fn del_in(txn: &mut RwTransaction<'_>, table: Table, key: &[u8]) -> Result<(), StoreError> {
    txn.del(table, key)
}

/// Every row of `table` whose key starts with `prefix`, within a
/// transaction, in key order.
pub fn rows_in<T: Transaction>(
    txn: &T,
    table: Table,
    prefix: &[u8],
) -> Result<Vec<Row>, StoreError> {
    scan(txn, table, prefix, |k| k.starts_with(prefix), usize::MAX)
}

/// The rows of `table` from `start` on while `keep(key)` holds, at most `max`.
fn scan<T: Transaction>(
    txn: &T,
    table: Table,
    start: &[u8],
    keep: impl Fn(&[u8]) -> bool,
    max: usize,
) -> Result<Vec<Row>, StoreError> {
    let mut out = Vec::new();
    visit_in(txn, table, start, max, |k, v| {
        if !keep(k) {
            return false;
        }
        out.push((k.to_vec(), v.to_vec()));
        true
    })?;
    Ok(out)
}

/// Show `f` the rows of `table` from `start` on, in key order, borrowed
/// from the transaction where the engine can, until it returns false or
/// `max` rows were shown; returns how many were.
pub fn visit_in<T: Transaction>(
    txn: &T,
    table: Table,
    start: &[u8],
    max: usize,
    mut f: impl FnMut(&[u8], &[u8]) -> bool,
) -> Result<usize, StoreError> {
    txn.visit(table, start, max, &mut f)
}

/// Show `f` every row of `table` whose key starts with `prefix`, all at
/// once, and return what it returns.
pub fn with_prefix_in<T: Transaction, R>(
    txn: &T,
    table: Table,
    prefix: &[u8],
    f: impl FnOnce(&[(&[u8], &[u8])]) -> R,
) -> Result<R, StoreError> {
    let mut f = Some(f);
    let mut out = None;
    txn.with_prefix(table, prefix, &mut |rows| {
        if let Some(f) = f.take() {
            out = Some(f(rows));
        }
    })?;
    out.ok_or_else(|| StoreError::Storage("a prefix scan did not run".into()))
}

fn finish<R: 'static>(
    reply: Result<WriteReply, tokio::sync::oneshot::error::RecvError>,
) -> Result<R, StoreError> {
    let value = reply.map_err(|_| StoreError::Closed)??;
    value
        .downcast::<R>()
        .map(|b| *b)
        .map_err(|_| StoreError::Storage("write returned an unexpected type".into()))
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
        match inner.engine.commit(&mut batch) {
            Ok(results) => {
                inner.commits.fetch_add(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests;
