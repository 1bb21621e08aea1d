//! The shared engine: PostgreSQL, for several memhost hosts in front of one
//! replicated database.
//!
//! | rule | why |
//! |---|---|
//! | one table, `memhost_rows (tbl int2, k bytea, v bytea)`, primary key `(tbl, k)` | `bytea` compares as bytes, so key order is LMDB's; the values are the sealed rows LMDB holds, nothing more |
//! | a write batch is one transaction that first takes an advisory transaction lock | the batches of every host commit one at a time: each reads what every earlier one wrote, the audit chain has one head, an indexing job is claimed once; the lock ends with its transaction — commit, abort or a dead connection — so no host holds it after it dies |
//! | a batch's puts and deletes wait in memory, then go out as two statements | a write reads its own writes from memory; a batch costs a few round trips, not one per row |
//! | each batch that writes adds its keys to `memhost_changes` under the next sequence number, and notifies | other hosts follow the sequence to keep their in-memory indexes current |
//! | a commit whose answer was lost is looked up by its batch id on a new connection | a write is applied once: neither lost nor run twice |
//! | a lost connection, a failover or a serialization failure retries the batch until `failover_seconds` | a primary that dies is replaced by a standby; writes wait for it, then go on |
//! | reads run in one `REPEATABLE READ, READ ONLY` transaction | one snapshot per read, as LMDB gives |
//! | every call waits on futures the engine's own runtime drives | reads may come from any thread, async workers included |
//!
//! What PostgreSQL sees is what an LMDB file shows: table numbers, keys
//! (ids, namespace ids, times, blind tokens) and sealed values.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use futures_executor::block_on;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, Statement};
use tokio_rustls::rustls;

use super::{
    Change, Lent, Row, StoreError, StoreOptions, TABLES, Table, WriteFlags, WriteJob, WriteReply,
};

/// The layout of the SQL tables this build creates and understands.
const LAYOUT: i32 = 1;

/// The advisory lock every write batch takes: "memhost" in ASCII.
const WRITER_LOCK: i64 = 0x006d_656d_686f_7374;

/// The channel a committed batch notifies, with its sequence number.
const CHANNEL: &str = "memhost_changes";

/// Own batches remembered for the follower at most (it takes them as it
/// goes; a process that does not follow forgets the oldest).
const OWN_MAX: usize = 100_000;

/// How many rows one scan query asks for at first; it doubles while a
/// visit keeps going, up to [`PAGE_MAX`].
const PAGE: i64 = 64;
const PAGE_MAX: i64 = 4096;

/// Rows a backwards seek reads at once.
const STEP_BACK: i64 = 8;

/// Created once, under the writer lock (two hosts starting at once must
/// not both create).
const LAYOUT_SQL: &str = "
SET LOCAL client_min_messages TO warning;
CREATE TABLE IF NOT EXISTS memhost_layout (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS memhost_rows (
    tbl smallint NOT NULL,
    k bytea NOT NULL,
    v bytea NOT NULL,
    PRIMARY KEY (tbl, k)
);
-- Sealed values do not compress: do not try.
ALTER TABLE memhost_rows ALTER COLUMN v SET STORAGE EXTERNAL;
CREATE TABLE IF NOT EXISTS memhost_sequence (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq bigint NOT NULL
);
INSERT INTO memhost_sequence (seq) VALUES (0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS memhost_changes (
    seq bigint PRIMARY KEY,
    batch bytea NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    tbls smallint[] NOT NULL,
    keys bytea[] NOT NULL
);
CREATE INDEX IF NOT EXISTS memhost_changes_batch ON memhost_changes (batch);
";

/// The prepared statements of one connection.
struct Statements {
    get: Statement,
    scan: Statement,
    last: Statement,
    upsert: Statement,
    delete: Statement,
    next_seq: Statement,
    change: Statement,
    landed: Statement,
}

/// A connection with its statements.
struct Conn {
    client: Client,
    st: Statements,
}

struct Pool {
    idle: Vec<Conn>,
    open: usize,
}

/// The database: a pool of connections driven by the engine's runtime.
pub(super) struct Db {
    config: Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    runtime: Option<tokio::runtime::Runtime>,
    pool: Mutex<Pool>,
    freed: Condvar,
    /// Connections open at most.
    pool_size: usize,
    /// How long a batch is retried.
    failover: Duration,
    /// The database as messages name it: hosts and database, no password.
    label: String,
    /// Sequence numbers of batches this process committed, until the
    /// follower takes them (its caches already hold what they wrote).
    own: Mutex<std::collections::BTreeSet<u64>>,
    /// The last sequence number a notification named (0: none yet).
    notified: tokio::sync::watch::Sender<u64>,
}

/// A pooled connection, given back when dropped (unless it broke).
struct Pooled<'d> {
    db: &'d Db,
    conn: Option<Conn>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        // Present from checkout until drop.
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("a pooled connection is present"))
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if std::thread::panicking() {
                // Mid-transaction, perhaps holding the writer lock: closed,
                // not given back.
                drop(conn);
                self.db.closed_one();
            } else {
                self.db.give_back(conn);
            }
        }
    }
}

impl Pooled<'_> {
    /// Close this connection instead of giving it back (its state is
    /// unknown after an error).
    fn discard(mut self) {
        if self.conn.take().is_some() {
            self.db.closed_one();
        }
    }

    /// The connection itself, still counted as open: give it back with
    /// [`Db::give_back`] or [`Db::closed_one`].
    fn into_conn(mut self) -> Conn {
        self.conn
            .take()
            .unwrap_or_else(|| unreachable!("a pooled connection is present"))
    }
}

/// Counts a connection taken out of its [`Pooled`] as closed if it is
/// never given back (a read that panicked).
struct Borrowed<'d>(&'d Db);

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        self.0.closed_one();
    }
}

/// What went wrong with the database: unavailable (for now) when the
/// connection or the server went away, else a storage error.
fn failed(label: &str, e: &tokio_postgres::Error) -> StoreError {
    let what = format!("postgres {label}: {}", describe(e));
    if connection_lost(e) {
        StoreError::Unavailable(what)
    } else {
        StoreError::Storage(what)
    }
}

/// How long a read waits for a connection while the database is away (a
/// failover) before it answers "unavailable".
const READ_PATIENCE: Duration = Duration::from_secs(5);

/// The error with its server detail, or its causes (a TLS handshake
/// says which certificate check failed).
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    text
}

/// Whether `e` means the connection (or the server behind it) is gone or
/// cannot take writes any more: try another connection.
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // A standby, or a primary being demoted.
        Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => true,
        Some(c) if *c == SqlState::ADMIN_SHUTDOWN || *c == SqlState::CRASH_SHUTDOWN => true,
        Some(c) if *c == SqlState::CANNOT_CONNECT_NOW => true,
        Some(c) => c.code().starts_with("08"),
        // No server code: lost if it failed to connect or on the socket.
        None => {
            e.to_string().starts_with("error connecting")
                || std::iter::successors(std::error::Error::source(e), |s| s.source())
                    .any(|s| s.is::<std::io::Error>())
        }
    }
}

/// Whether running the transaction again may succeed.
fn transient(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

impl Db {
    /// Connect, create the layout if there is none, refuse a newer one.
    pub(super) fn open(url: &str, options: &StoreOptions) -> Result<Db, StoreError> {
        let mut config: Config = url.parse().map_err(|e| {
            StoreError::Storage(format!(
                "the PostgreSQL connection string does not parse: {e}"
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            config.password(password);
        }
        if config.get_application_name().is_none() {
            config.application_name("memhost");
        }
        // A server that vanishes from the network (no reset, as after a
        // power loss) is noticed in seconds, not the kernel's quarter of an
        // hour; and the server notices a host that vanished the same way,
        // ending its transaction — and the writer lock with it.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(5));
        config.keepalives_interval(Duration::from_secs(2));
        config.keepalives_retries(3);
        config.tcp_user_timeout(Duration::from_secs(15));
        if config.get_options().is_none() {
            config.options(
                "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 \
                 -c idle_in_transaction_session_timeout=120000",
            );
        }
        let label = label(&config);
        let remote = config.get_hosts().iter().any(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => !is_loopback(name),
            tokio_postgres::config::Host::Unix(_) => false,
        });
        if remote && config.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
            tracing::warn!(database = %label, "the connection to the database may be unencrypted: add sslmode=require to the connection string");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("memhost-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Storage(format!("cannot start the database runtime: {e}")))?;
        let db = Db {
            tls: tls(options.ca_file.as_deref())?,
            config,
            runtime: Some(runtime),
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            own: Mutex::default(),
            notified: tokio::sync::watch::Sender::new(0),
            pool_size: options.pool.max(1),
            failover: options.failover,
            label,
        };
        db.create_layout()?;
        Ok(db)
    }

    fn runtime(&self) -> Result<&tokio::runtime::Runtime, StoreError> {
        self.runtime.as_ref().ok_or(StoreError::Closed)
    }

    /// A new client, its connection driven by the engine's runtime.
    fn client(&self) -> Result<Client, StoreError> {
        let config = self.config.clone();
        let tls = self.tls.clone();
        let label = self.label.clone();
        let task = self.runtime()?.spawn(async move {
            let (client, connection) = config.connect(tls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(database = %label, error = %e, "database connection ended");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        });
        block_on(task)
            .map_err(|e| StoreError::Storage(format!("postgres {}: {e}", self.label)))?
            .map_err(|e| failed(&self.label, &e))
    }

    /// A new connection, its statements prepared.
    fn connect(&self) -> Result<Conn, StoreError> {
        let client = self.client()?;
        let st = block_on(Statements::prepare(&client)).map_err(|e| failed(&self.label, &e))?;
        Ok(Conn { client, st })
    }

    /// A connection from the pool, or a new one while fewer than the
    /// pool's size are open; waits for one to come back otherwise.
    fn conn(&self) -> Result<Pooled<'_>, StoreError> {
        let mut pool = self.pool.lock().map_err(|_| StoreError::Closed)?;
        let waited = Instant::now();
        loop {
            while let Some(conn) = pool.idle.pop() {
                if !conn.client.is_closed() {
                    return Ok(Pooled {
                        db: self,
                        conn: Some(conn),
                    });
                }
                pool.open = pool.open.saturating_sub(1);
            }
            if pool.open < self.pool_size {
                pool.open += 1;
                drop(pool);
                return match self.connect() {
                    Ok(conn) => Ok(Pooled {
                        db: self,
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        if let Ok(mut pool) = self.pool.lock() {
                            pool.open = pool.open.saturating_sub(1);
                        }
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let left = Duration::from_secs(30).saturating_sub(waited.elapsed());
            if left.is_zero() {
                return Err(StoreError::Storage(format!(
                    "postgres {}: all {} connections stayed busy for 30 s; raise [store] pool",
                    self.label, self.pool_size
                )));
            }
            pool = self
                .freed
                .wait_timeout(pool, left)
                .map_err(|_| StoreError::Closed)?
                .0;
        }
    }

    fn create_layout(&self) -> Result<(), StoreError> {
        // Statements are prepared against the tables: a bare client first.
        let mut client = self.client()?;
        let found = block_on(async {
            let txn = client.transaction().await?;
            txn.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITER_LOCK])
                .await?;
            // Laid out already: no DDL, no table lock taken (every host and
            // every command opens the store).
            let laid_out: bool = txn
                .query_one("SELECT to_regclass('memhost_layout') IS NOT NULL", &[])
                .await?
                .get(0);
            let found: Option<i32> = if laid_out {
                txn.query_opt("SELECT max(version) FROM memhost_layout", &[])
                    .await?
                    .and_then(|row| row.get(0))
            } else {
                None
            };
            if found.is_none() {
                txn.batch_execute(LAYOUT_SQL).await?;
                txn.execute(
                    "INSERT INTO memhost_layout (version) VALUES ($1)",
                    &[&LAYOUT],
                )
                .await?;
            }
            txn.commit().await?;
            Ok::<_, tokio_postgres::Error>(found)
        })
        .map_err(|e| failed(&self.label, &e))?;
        match found {
            Some(v) if v > LAYOUT => Err(StoreError::NewerSchema {
                path: self.label.clone().into(),
                found: u32::try_from(v).unwrap_or(u32::MAX),
            }),
            _ => Ok(()),
        }
    }

    /// Run `f` on one snapshot.
    pub(super) fn read<R>(
        &self,
        f: impl FnOnce(Snapshot<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let conn = RefCell::new(self.patient_conn()?.into_conn());
        let lent = Borrowed(self);
        let began = Cell::new(false);
        let out = f(Snapshot {
            view: View {
                db: self,
                conn: Source::Lent(&conn),
                began: Some(&began),
                failure: None,
                seen: None,
            },
        });
        std::mem::forget(lent);
        let conn = conn.into_inner();
        if began.get()
            && let Err(e) = block_on(conn.client.batch_execute("COMMIT"))
        {
            drop(conn);
            self.closed_one();
            return out.and(Err(failed(&self.label, &e)));
        }
        self.give_back(conn);
        out
    }

    /// Put a connection back in the pool (or count it gone if it closed).
    fn give_back(&self, conn: Conn) {
        let Ok(mut pool) = self.pool.lock() else {
            return;
        };
        if conn.client.is_closed() {
            pool.open = pool.open.saturating_sub(1);
        } else {
            pool.idle.push(conn);
        }
        self.freed.notify_one();
    }

    /// Count one more connection as open (undoing [`Db::closed_one`]).
    fn reopened_one(&self) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.open += 1;
        }
    }

    /// Count one connection of the pool's as gone.
    fn closed_one(&self) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.open = pool.open.saturating_sub(1);
        }
        self.freed.notify_one();
    }

    /// A connection, waiting up to [`READ_PATIENCE`] while the database is
    /// away.
    fn patient_conn(&self) -> Result<Pooled<'_>, StoreError> {
        let deadline = Instant::now() + READ_PATIENCE;
        loop {
            match self.conn() {
                Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    /// Run `batch` in one transaction under the writer lock, each write
    /// on its own layer (a failing one leaves nothing), and commit once.
    pub(super) fn commit(&self, batch: &mut [WriteJob]) -> Result<Vec<WriteReply>, StoreError> {
        let deadline = Instant::now() + self.failover;
        let id: [u8; 16] = rand::random();
        // Results of an attempt whose COMMIT was sent but not answered.
        let mut unanswered: Option<Vec<WriteReply>> = None;
        let mut pause = Duration::from_millis(50);
        loop {
            let outcome = self
                .conn()
                .map(|conn| self.attempt(conn, batch, &id, unanswered.is_some()));
            let err = match outcome {
                Ok(Attempt::Done(results)) => return Ok(results),
                Ok(Attempt::Landed) => return Ok(unanswered.take().unwrap_or_default()),
                Ok(Attempt::Again(e)) => e,
                Ok(Attempt::Unanswered(results, e)) => {
                    unanswered = Some(results);
                    e
                }
                Ok(Attempt::Failed(e)) => return Err(e),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                let unknown = if unanswered.is_some() {
                    "; whether the last attempt committed is unknown"
                } else {
                    ""
                };
                return Err(match err {
                    StoreError::Unavailable(m) => StoreError::Unavailable(format!(
                        "{m}; the database did not come back within {} s{unknown}",
                        self.failover.as_secs()
                    )),
                    other => other,
                });
            }
            tracing::warn!(error = %err, "write batch will be retried");
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// One try at `batch`. After an attempt whose COMMIT went unanswered
    /// (`look_first`), first look for its change row — under the lock, so
    /// that attempt has surely ended — and if it is there, stop: it landed.
    fn attempt(
        &self,
        conn: Pooled<'_>,
        batch: &mut [WriteJob],
        id: &[u8; 16],
        look_first: bool,
    ) -> Attempt {
        let classify = |conn: Pooled<'_>, e: tokio_postgres::Error| {
            let err = failed(&self.label, &e);
            let again = connection_lost(&e) || transient(&e);
            conn.discard();
            if again {
                Attempt::Again(err)
            } else {
                Attempt::Failed(err)
            }
        };
        // READ COMMITTED whatever the server's default: each statement sees
        // every batch committed before this one took the lock.
        let begin = format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE; SELECT pg_advisory_xact_lock({WRITER_LOCK})"
        );
        if let Err(e) = block_on(conn.client.batch_execute(&begin)) {
            return classify(conn, e);
        }
        if look_first {
            match block_on(conn.client.query_opt(&conn.st.landed, &[&&id[..]])) {
                Ok(Some(_)) => {
                    return match block_on(conn.client.batch_execute("ROLLBACK")) {
                        Ok(()) => Attempt::Landed,
                        Err(e) => classify(conn, e),
                    };
                }
                // Not there: it never committed; run it again.
                Ok(None) => {}
                Err(e) => return classify(conn, e),
            }
        }
        let mut base = Overlay::default();
        let seen = RefCell::new(Seen::default());
        let mut results = Vec::with_capacity(batch.len());
        for job in batch.iter_mut() {
            let failure = RefCell::new(None);
            let mut write = super::RwTransaction {
                inner: super::Rw::Postgres(Write {
                    view: View {
                        db: self,
                        conn: Source::Fixed(&conn),
                        began: None,
                        failure: Some(&failure),
                        seen: Some(&seen),
                    },
                    base: &base,
                    own: Overlay::default(),
                }),
            };
            let result = (job.run)(&mut write, &TABLES);
            let own = written(write);
            if let Some(e) = failure.into_inner() {
                return classify(conn, e);
            }
            if result.is_ok() {
                base.absorb(own);
            }
            results.push(result);
        }
        if base.rows.is_empty() {
            return match block_on(conn.client.batch_execute("ROLLBACK")) {
                Ok(()) => Attempt::Done(results),
                Err(e) => classify(conn, e),
            };
        }
        let seq = match block_on(self.flush(&conn, &base, id)) {
            Ok(seq) => seq,
            Err(e) => return classify(conn, e),
        };
        match block_on(conn.client.batch_execute("COMMIT")) {
            Ok(()) => {
                self.remember(seq);
                Attempt::Done(results)
            }
            Err(e) if connection_lost(&e) => {
                // The COMMIT went out; whether it landed is unknown until
                // the batch id is looked for.
                let err = failed(&self.label, &e);
                conn.discard();
                Attempt::Unanswered(results, err)
            }
            Err(e) => classify(conn, e),
        }
    }

    /// Send a batch's rows, its change row and the notification.
    async fn flush(
        &self,
        conn: &Conn,
        base: &Overlay,
        id: &[u8; 16],
    ) -> Result<u64, tokio_postgres::Error> {
        let mut put_t: Vec<i16> = Vec::new();
        let mut put_k: Vec<&[u8]> = Vec::new();
        let mut put_v: Vec<&[u8]> = Vec::new();
        let mut del_t: Vec<i16> = Vec::new();
        let mut del_k: Vec<&[u8]> = Vec::new();
        for ((t, k), v) in &base.rows {
            match v {
                Some(v) => {
                    put_t.push(i16::from(*t));
                    put_k.push(k);
                    put_v.push(v);
                }
                None => {
                    del_t.push(i16::from(*t));
                    del_k.push(k);
                }
            }
        }
        let all_t: Vec<i16> = base.rows.keys().map(|(t, _)| i16::from(*t)).collect();
        let all_k: Vec<&[u8]> = base.rows.keys().map(|(_, k)| k.as_slice()).collect();
        let seq: i64 = conn.client.query_one(&conn.st.next_seq, &[]).await?.get(0);
        let id = &id[..];
        let upsert_params: [&(dyn ToSql + Sync); 3] = [&put_t, &put_k, &put_v];
        let delete_params: [&(dyn ToSql + Sync); 2] = [&del_t, &del_k];
        let change_params: [&(dyn ToSql + Sync); 4] = [&seq, &id, &all_t, &all_k];
        // Sent together: one round trip.
        let upsert = conn.client.execute(&conn.st.upsert, &upsert_params);
        let delete = conn.client.execute(&conn.st.delete, &delete_params);
        let change = conn.client.execute(&conn.st.change, &change_params);
        let (a, b, c) = futures_util::future::join3(upsert, delete, change).await;
        a?;
        b?;
        c?;
        Ok(u64::try_from(seq).unwrap_or(0))
    }

    /// Note a batch this process committed.
    fn remember(&self, seq: u64) {
        if let Ok(mut own) = self.own.lock() {
            own.insert(seq);
            while own.len() > OWN_MAX {
                own.pop_first();
            }
        }
    }

    /// Whether this process committed batch `seq` (asked once per batch,
    /// in order, by the follower).
    fn mine(&self, seq: u64) -> bool {
        self.own.lock().is_ok_and(|mut own| {
            // Older ones were passed by: a follower never asks again.
            while own.first().is_some_and(|first| *first < seq) {
                own.pop_first();
            }
            own.remove(&seq)
        })
    }

    /// Wake on every committed batch: a connection that LISTENs on
    /// [`CHANNEL`] (reconnecting, from any primary the connection string
    /// reaches) and publishes each sequence number notified.
    pub(super) fn watch(&self) -> Result<tokio::sync::watch::Receiver<u64>, StoreError> {
        let rx = self.notified.subscribe();
        if self.notified.receiver_count() > 1 {
            // Already listening.
            return Ok(rx);
        }
        let config = self.config.clone();
        let tls = self.tls.clone();
        let label = self.label.clone();
        let tx = self.notified.clone();
        self.runtime()?.spawn(async move {
            let mut pause = Duration::from_millis(100);
            while !tx.is_closed() {
                match listen(&config, tls.clone(), &tx).await {
                    Ok(()) => pause = Duration::from_millis(100),
                    Err(e) => {
                        tracing::debug!(database = %label, error = %e, "change notifications interrupted");
                    }
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        });
        Ok(rx)
    }

    /// Delete change rows older than `keep` (the followers have long read
    /// them); returns how many went.
    pub(super) fn prune_changes(&self, keep: Duration) -> Result<u64, StoreError> {
        let conn = self.conn()?;
        let seconds = keep.as_secs_f64();
        block_on(conn.client.execute(
            "DELETE FROM memhost_changes WHERE at < now() - make_interval(secs => $1) \
             AND seq < (SELECT seq FROM memhost_sequence)",
            &[&seconds],
        ))
        .map_err(|e| failed(&self.label, &e))
    }

    /// The database's size, bytes (rows, indexes and their TOAST).
    pub(super) fn used_bytes(&self) -> Result<u64, StoreError> {
        self.scalar("SELECT pg_total_relation_size('memhost_rows')::bigint")
    }

    /// Connections open now.
    pub(super) fn connections(&self) -> u64 {
        self.pool.lock().map_or(0, |p| p.open as u64)
    }

    /// The last sequence number committed.
    pub(super) fn sequence(&self) -> Result<u64, StoreError> {
        self.scalar("SELECT seq FROM memhost_sequence")
    }

    fn scalar(&self, sql: &str) -> Result<u64, StoreError> {
        let conn = self.conn()?;
        let row = block_on(conn.client.query_one(sql, &[])).map_err(|e| failed(&self.label, &e))?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    /// The database as messages name it.
    pub(super) fn label(&self) -> &str {
        &self.label
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.idle.clear();
        }
        // A runtime may not be dropped (and wait) inside another one.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What a write of a batch wrote.
fn written(write: super::RwTransaction<'_>) -> Overlay {
    match write.inner {
        super::Rw::Postgres(write) => write.own,
        super::Rw::Lmdb(_) => Overlay::default(),
    }
}

/// One LISTEN connection, until it ends: every notification's sequence
/// number goes to `tx`. A (re)connect also publishes, so a follower looks
/// for what it may have missed meanwhile.
async fn listen(
    config: &Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    tx: &tokio::sync::watch::Sender<u64>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls).await?;
    let (messages_tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        // The connection is driven here, its messages passed on, until it
        // ends.
        while let Some(Ok(message)) =
            futures_util::future::poll_fn(|cx| connection.poll_message(cx)).await
        {
            if messages_tx.send(message).is_err() {
                break;
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    tx.send_modify(|_| {});
    while let Some(message) = messages.recv().await {
        if let tokio_postgres::AsyncMessage::Notification(n) = message
            && let Ok(seq) = n.payload().parse::<u64>()
        {
            tx.send_modify(|last| *last = (*last).max(seq));
        }
    }
    driver.abort();
    Ok(())
}

enum Attempt {
    Done(Vec<WriteReply>),
    /// The earlier attempt whose COMMIT went unanswered did commit.
    Landed,
    /// Not committed; may succeed if run again.
    Again(StoreError),
    /// COMMIT sent, no answer: look for the batch before running it again.
    Unanswered(Vec<WriteReply>, StoreError),
    Failed(StoreError),
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
        let (i2, by, i8) = (Type::INT2, Type::BYTEA, Type::INT8);
        let (i2s, bys) = (Type::INT2_ARRAY, Type::BYTEA_ARRAY);
        let get = client
            .prepare_typed(
                "SELECT v FROM memhost_rows WHERE tbl = $1 AND k = $2",
                &[i2.clone(), by.clone()],
            )
            .await?;
        let scan = client
            .prepare_typed(
                "SELECT k, v FROM memhost_rows WHERE tbl = $1 AND k >= $2 ORDER BY k LIMIT $3",
                &[i2.clone(), by.clone(), i8.clone()],
            )
            .await?;
        let last = client
            .prepare_typed(
                "SELECT k, v FROM memhost_rows WHERE tbl = $1 AND k < $2 AND k >= $3 \
                 ORDER BY k DESC LIMIT $4",
                &[i2.clone(), by.clone(), by.clone(), i8.clone()],
            )
            .await?;
        let upsert = client
            .prepare_typed(
                "INSERT INTO memhost_rows (tbl, k, v) \
                 SELECT * FROM unnest($1::int2[], $2::bytea[], $3::bytea[]) \
                 ON CONFLICT (tbl, k) DO UPDATE SET v = excluded.v",
                &[i2s.clone(), bys.clone(), bys.clone()],
            )
            .await?;
        let delete = client
            .prepare_typed(
                "DELETE FROM memhost_rows r USING unnest($1::int2[], $2::bytea[]) AS d(tbl, k) \
                 WHERE r.tbl = d.tbl AND r.k = d.k",
                &[i2s.clone(), bys.clone()],
            )
            .await?;
        let next_seq = client
            .prepare("UPDATE memhost_sequence SET seq = seq + 1 RETURNING seq")
            .await?;
        let change = client
            .prepare_typed(
                "WITH c AS (INSERT INTO memhost_changes (seq, batch, tbls, keys) \
                 VALUES ($1, $2, $3, $4) RETURNING seq) \
                 SELECT pg_notify('memhost_changes', seq::text) FROM c",
                &[i8.clone(), by.clone(), i2s.clone(), bys.clone()],
            )
            .await?;
        let landed = client
            .prepare_typed(
                "SELECT 1 FROM memhost_changes WHERE batch = $1",
                std::slice::from_ref(&by),
            )
            .await?;
        Ok(Statements {
            get,
            scan,
            last,
            upsert,
            delete,
            next_seq,
            change,
            landed,
        })
    }
}

/// Hosts, ports and database of `config`, for messages (never the
/// password).
fn label(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
            tokio_postgres::config::Host::Unix(p) => format!("{}:{port}", p.display()),
        })
        .collect();
    format!(
        "{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or_default()
    )
}

/// The TLS client: Mozilla's roots, plus `ca_file`'s.
fn tls(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let bad = |e: &dyn std::fmt::Display| {
            StoreError::Storage(format!("[store] ca_file {}: {e}", path.display()))
        };
        let pem = std::fs::read(path).map_err(|e| bad(&e))?;
        let mut added = 0;
        for cert in rustls_pemfile_certs(&pem).map_err(|e| bad(&e))? {
            roots.add(cert).map_err(|e| bad(&e))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad(&"no certificate in it"));
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Storage(format!("cannot set up TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The certificates of a PEM file.
fn rustls_pemfile_certs(
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// Writes not yet sent: (table, key) → value, or `None` for a delete.
#[derive(Default)]
struct Overlay {
    rows: BTreeMap<(u8, Vec<u8>), Option<Vec<u8>>>,
}

impl Overlay {
    fn absorb(&mut self, other: Overlay) {
        self.rows.extend(other.rows);
    }

    fn get(&self, t: Table, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.rows.get(&(t.0, key.to_vec()))
    }

    /// Its entries of `t` from `from` on, up to `upto` (inclusive) if given.
    fn range<'a>(
        &'a self,
        t: Table,
        from: &[u8],
        upto: Option<&[u8]>,
    ) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let upto = upto.map(<[u8]>::to_vec);
        self.rows
            .range((t.0, from.to_vec())..)
            .take_while(move |((tt, k), _)| *tt == t.0 && upto.as_ref().is_none_or(|u| k <= u))
            .map(|((_, k), v)| (k.as_slice(), v.as_deref()))
    }
}

/// How a transaction queries: on which connection, and what to do first
/// or on failure.
struct View<'a> {
    db: &'a Db,
    conn: Source<'a>,
    /// A snapshot's: whether its transaction has begun (it begins with its
    /// first query).
    began: Option<&'a Cell<bool>>,
    /// A write's: the database error that broke it, for the batch to see.
    failure: Option<&'a RefCell<Option<tokio_postgres::Error>>>,
    /// A batch's: rows it read from the database. Under the writer lock
    /// nothing else changes them until the batch ends, so a second read of
    /// a row (the audit head, a word's posting block, the index stats) by
    /// another write of the batch costs no round trip. Writes are in the
    /// layers, which are looked at first.
    seen: Option<&'a RefCell<Seen>>,
}

/// Rows a batch read: (table, key) → value, or none.
type Seen = std::collections::HashMap<(u8, Vec<u8>), Option<Vec<u8>>>;

/// The connection a view queries on.
enum Source<'a> {
    /// A write's: its batch's.
    Fixed(&'a Conn),
    /// A snapshot's, replaced if it turns out stale before the snapshot
    /// began.
    Lent(&'a RefCell<Conn>),
}

impl View<'_> {
    fn query(
        &self,
        statement: impl Fn(&Statements) -> &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let first = |conn: &Conn| {
            // Sent together: one round trip.
            let (begin, rows) = block_on(futures_util::future::join(
                conn.client
                    .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
                conn.client.query(statement(&conn.st), params),
            ));
            begin.and(rows)
        };
        let result = match (&self.conn, self.began) {
            (Source::Lent(cell), Some(began)) if !began.get() => {
                began.set(true);
                let result = first(&cell.borrow());
                match result {
                    // The pooled connection's server went away (a
                    // failover): nothing was read yet, so once more on a
                    // new connection.
                    Err(e) if connection_lost(&e) => {
                        // Its place is free first: a pool full of stale
                        // connections must not wait on itself.
                        self.db.closed_one();
                        match self.db.patient_conn() {
                            Ok(fresh) => {
                                drop(cell.replace(fresh.into_conn()));
                                first(&cell.borrow())
                            }
                            Err(err) => {
                                // The stale one stays, counted again, to be
                                // given back (and found closed) at the end.
                                self.db.reopened_one();
                                return Err(err);
                            }
                        }
                    }
                    other => other,
                }
            }
            (Source::Lent(cell), _) => {
                let conn = cell.borrow();
                block_on(conn.client.query(statement(&conn.st), params))
            }
            (Source::Fixed(conn), _) => block_on(conn.client.query(statement(&conn.st), params)),
        };
        result.map_err(|e| {
            let err = failed(&self.db.label, &e);
            if let Some(failure) = self.failure {
                failure.borrow_mut().get_or_insert(e);
            }
            err
        })
    }
}

/// A read snapshot.
pub(super) struct Snapshot<'e> {
    view: View<'e>,
}

/// One write of a batch: its own layer over the batch's.
pub(super) struct Write<'e> {
    view: View<'e>,
    base: &'e Overlay,
    own: Overlay,
}

impl Snapshot<'_> {
    /// A snapshot reads the database only.
    fn layers(&self) -> Vec<&Overlay> {
        Vec::new()
    }
}

impl Write<'_> {
    /// A write reads its own writes, then its batch's, then the database.
    fn layers(&self) -> Vec<&Overlay> {
        vec![&self.own, self.base]
    }

    pub(super) fn put(
        &mut self,
        t: Table,
        key: &[u8],
        value: &[u8],
        flags: WriteFlags,
    ) -> Result<(), StoreError> {
        if flags.contains(WriteFlags::NO_OVERWRITE)
            && super::Transaction::get(self, t, key)?.is_some()
        {
            return Err(StoreError::Exists);
        }
        self.own
            .rows
            .insert((t.0, key.to_vec()), Some(value.to_vec()));
        Ok(())
    }

    pub(super) fn del(&mut self, t: Table, key: &[u8]) -> Result<(), StoreError> {
        self.own.rows.insert((t.0, key.to_vec()), None);
        Ok(())
    }
}

/// The reads of a transaction type, through its view and layers.
macro_rules! reads {
    ($ty:ident) => {
        impl super::Transaction for $ty<'_> {
            fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
                get(&self.view, &self.layers(), t, key)
            }

            fn visit(
                &self,
                t: Table,
                start: &[u8],
                max: usize,
                f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
            ) -> Result<usize, StoreError> {
                visit(&self.view, &self.layers(), t, start, max, f)
            }

            fn with_prefix(
                &self,
                t: Table,
                prefix: &[u8],
                f: &mut dyn FnMut(&Lent<'_>),
            ) -> Result<(), StoreError> {
                with_prefix(&self.view, &self.layers(), t, prefix, f)
            }

            fn last_at_or_before(
                &self,
                t: Table,
                prefix: &[u8],
                upto: &[u8],
            ) -> Result<Option<Row>, StoreError> {
                last_at_or_before(&self.view, &self.layers(), t, prefix, upto)
            }
        }
    };
}

reads!(Snapshot);
reads!(Write);

/// The overlays' word on `key`, newest layer first: `Some(None)` deleted.
fn layered<'a>(layers: &[&'a Overlay], t: Table, key: &[u8]) -> Option<&'a Option<Vec<u8>>> {
    layers.iter().find_map(|layer| layer.get(t, key))
}

fn get(
    view: &View<'_>,
    layers: &[&Overlay],
    t: Table,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    if let Some(v) = layered(layers, t, key) {
        return Ok(v.clone());
    }
    if let Some(v) = view
        .seen
        .and_then(|seen| seen.borrow().get(&(t.0, key.to_vec())).cloned())
    {
        return Ok(v);
    }
    let rows = view.query(|st| &st.get, &[&i16::from(t.0), &key])?;
    let value = rows.first().map(|row| row.get::<_, Vec<u8>>(0));
    if let Some(seen) = view.seen {
        seen.borrow_mut().insert((t.0, key.to_vec()), value.clone());
    }
    Ok(value)
}

fn visit(
    view: &View<'_>,
    layers: &[&Overlay],
    t: Table,
    start: &[u8],
    max: usize,
    f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> Result<usize, StoreError> {
    let mut shown = 0;
    let mut from = start.to_vec();
    let mut page = PAGE.min(i64::try_from(max).unwrap_or(i64::MAX)).max(1);
    loop {
        if shown >= max {
            return Ok(shown);
        }
        let rows = view.query(|st| &st.scan, &[&i16::from(t.0), &from, &page])?;
        let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= page;
        let fetched: Vec<(Vec<u8>, Vec<u8>)> = rows
            .iter()
            .map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1)))
            .collect();
        // Up to the last key fetched when there may be more; all otherwise.
        let upto = if full {
            fetched.last().map(|(k, _)| k.as_slice())
        } else {
            None
        };
        // The layers' entries in that stretch, newest layer winning.
        let mut pending: BTreeMap<&[u8], Option<&[u8]>> = BTreeMap::new();
        for layer in layers.iter().rev() {
            pending.extend(layer.range(t, &from, upto));
        }
        let mut merged = pending.into_iter().peekable();
        let mut db_rows = fetched.iter().peekable();
        loop {
            let next: (&[u8], Option<&[u8]>) = match (db_rows.peek(), merged.peek()) {
                (None, None) => break,
                (Some((k, v)), None) => {
                    let item = (k.as_slice(), Some(v.as_slice()));
                    db_rows.next();
                    item
                }
                (None, Some(_)) => merged.next().unwrap_or_else(|| unreachable!()),
                (Some((dk, dv)), Some((ok, _))) => {
                    if dk.as_slice() < *ok {
                        let item = (dk.as_slice(), Some(dv.as_slice()));
                        db_rows.next();
                        item
                    } else {
                        if dk.as_slice() == *ok {
                            db_rows.next();
                        }
                        merged.next().unwrap_or_else(|| unreachable!())
                    }
                }
            };
            let (k, Some(v)) = next else { continue };
            if shown >= max || !f(k, v) {
                return Ok(shown);
            }
            shown += 1;
        }
        match upto {
            Some(last) => {
                from = [last, &[0]].concat();
                page = (page * 2).min(PAGE_MAX);
            }
            None => return Ok(shown),
        }
    }
}

fn with_prefix(
    view: &View<'_>,
    layers: &[&Overlay],
    t: Table,
    prefix: &[u8],
    f: &mut dyn FnMut(&Lent<'_>),
) -> Result<(), StoreError> {
    let mut rows: Vec<Row> = Vec::new();
    visit(view, layers, t, prefix, usize::MAX, &mut |k, v| {
        if !k.starts_with(prefix) {
            return false;
        }
        rows.push((k.to_vec(), v.to_vec()));
        true
    })?;
    let lent: Vec<(&[u8], &[u8])> = rows
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    f(&lent);
    Ok(())
}

fn last_at_or_before(
    view: &View<'_>,
    layers: &[&Overlay],
    t: Table,
    prefix: &[u8],
    upto: &[u8],
) -> Result<Option<Row>, StoreError> {
    // The layers' newest live entry in [prefix, upto].
    let mut pending: BTreeMap<&[u8], Option<&[u8]>> = BTreeMap::new();
    for layer in layers.iter().rev() {
        pending.extend(layer.range(t, prefix, Some(upto)));
    }
    let mine = pending
        .iter()
        .rev()
        .find_map(|(k, v)| v.map(|v| (k.to_vec(), v.to_vec())));
    // The database's, skipping rows the layers deleted: below `upto`
    // and a zero byte is at or below `upto`.
    let mut below = [upto, &[0]].concat();
    let theirs = 'seek: loop {
        let rows = view.query(
            |st| &st.last,
            &[&i16::from(t.0), &below, &prefix, &STEP_BACK],
        )?;
        for row in &rows {
            let k: Vec<u8> = row.get(0);
            // The layers' word on a key wins: deleted there, or written
            // there (then it is among theirs, with its new value).
            if pending.contains_key(k.as_slice()) {
                below = k;
                continue;
            }
            break 'seek Some((k, row.get::<_, Vec<u8>>(1)));
        }
        if i64::try_from(rows.len()).unwrap_or(0) < STEP_BACK {
            break None;
        }
    };
    Ok([mine, theirs]
        .into_iter()
        .flatten()
        .max_by(|a, b| a.0.cmp(&b.0))
        .filter(|(k, _)| k.starts_with(prefix)))
}

/// The batches committed after `after`, in sequence order, at most `max`.
pub(super) fn changes_after(db: &Db, after: u64, max: i64) -> Result<Vec<Change>, StoreError> {
    let conn = db.conn()?;
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let rows = block_on(conn.client.query(
        "SELECT seq, tbls, keys FROM memhost_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
        &[&after, &max],
    ))
    .map_err(|e| failed(&db.label, &e))?;
    Ok(rows
        .iter()
        .map(|row| {
            let seq: i64 = row.get(0);
            let tbls: Vec<i16> = row.get(1);
            let keys: Vec<Vec<u8>> = row.get(2);
            let seq = u64::try_from(seq).unwrap_or(0);
            Change {
                seq,
                mine: db.mine(seq),
                keys: tbls
                    .into_iter()
                    .zip(keys)
                    .filter_map(|(t, k)| {
                        let t = u8::try_from(t).ok()?;
                        (usize::from(t) < super::TABLE_NAMES.len()).then_some((Table(t), k))
                    })
                    .collect(),
            }
        })
        .collect())
}

/// Whether a host name is this machine's.
fn is_loopback(name: &str) -> bool {
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
