//! The embedded SQLite backend: one database file, opened once at start-up.
//!
//! What lives here: opening and migrating the file, the connection model and the error
//! mapping. Each resource's trait implementation has its own file (`assistants.rs`,
//! `threads.rs`, …); the shared "JSON document keyed by (tenant, [parent,] id)" pattern is in
//! `doc.rs`, the schema in `schema.rs`, and vector search in `search.rs` + `kernel.rs`.
//!
//! Connection model:
//! - **One writer thread** owns the only read-write connection. SQLite allows one writer at a
//!   time anyway; funnelling writes through one thread lets it *group-commit*: every job queued
//!   while the previous commit was being fsynced runs in the next transaction (each inside its
//!   own savepoint, so one failing job does not undo its neighbours), and all of them are
//!   acknowledged after a single `COMMIT`. With `synchronous=FULL` an acknowledged write is on
//!   disk, and throughput grows with concurrency instead of being capped at one fsync per write.
//! - **Progress writes** ([`Durability::Progress`]: a run engine's in-flight states) are
//!   committed with `synchronous=NORMAL`, visible to readers at once but not fsynced. The WAL is
//!   one append-only file, so the next fsynced commit makes every earlier frame durable too:
//!   what can be lost to a power cut is only a tail of in-flight progress that no durable
//!   write has followed yet — exactly what a proxy dying mid-run loses, which crash recovery
//!   already handles. A process crash loses nothing committed in either mode.
//! - **Reader connections** (WAL lets them read alongside the writer), never on the async
//!   runtime: short reads go to a pool of reader threads that stay busy under load instead of
//!   being woken per job (`readers.rs`); long ones (searches, scans) run on `spawn_blocking`
//!   with connections of their own, so they never hold up a short read.
//!
//! About 610 lines of code plus tests: opening, the writer thread's group commit and the
//! connection model are one design, kept in one file.

mod assistants;
mod chunks;
mod doc;
mod dump;
mod files;
mod index;
pub(crate) mod kernel;
mod lock;
mod messages;
mod readers;
mod runs;
mod schema;
mod search;
mod threads;
mod vector_stores;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::{Semaphore, oneshot};

use super::{Store, StoreError, StoreHealth, StoreResult};
use readers::{ReadJob, ReadPool};
use search::{IndexOp, SearchIndex};

/// Threads (each with its connection) of the short-read pool: one per core of the 2-core
/// machines this runs on; more would only take turns on the same cores.
const SHORT_READERS: usize = 2;

/// Connections for long reads. Two lets a search run beside a recovery scan; more would
/// only add page caches (a search holds its connection for its whole scan).
const LONG_READERS: usize = 2;

/// How long a connection waits for a lock held by another process before reporting the
/// database as unavailable. Only another process sharing the file can hold it that long.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Most jobs committed by one transaction: bounds how long the first job of a batch waits
/// for its acknowledgement when thousands are queued.
const MAX_BATCH: usize = 1024;

/// Bytes the WAL file is truncated to after a checkpoint (see `configure`).
const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// Prepared statements kept per connection. The list queries come in a few dozen shapes
/// (order × cursor × filter × table); rusqlite's default of 16 would thrash.
const STATEMENT_CACHE: usize = 128;

/// Opens (creating and migrating) the database file.
///
/// # Errors
/// A file that cannot be opened, read, written or migrated gives an error naming the path.
pub async fn open(path: &Path) -> StoreResult<Store> {
    open_locked(path, true).await
}

/// Opens the file without taking its lock (see `lock.rs`): a stand-in, in tests, for a writer
/// that does not take it (the `sqlite3` shell, a proxy from before the lock), whose writes the
/// search indexes must still notice.
#[doc(hidden)]
pub async fn open_without_lock(path: &Path) -> StoreResult<Store> {
    open_locked(path, false).await
}

async fn open_locked(path: &Path, lock: bool) -> StoreResult<Store> {
    let path = path.to_owned();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open_blocking(&path, lock))
        .await
        .map_err(|e| StoreError::Other(format!("SQLite open task failed: {e}")))??;
    Ok(Store::from_backend(Arc::new(store)))
}

/// The backend object behind every trait handle of [`Store`].
pub struct SqliteStore {
    db: Db,
}

impl SqliteStore {
    fn open_blocking(path: &Path, lock: bool) -> StoreResult<SqliteStore> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Other(format!(
                "cannot {what} SQLite database {}: {e}",
                path.display()
            ))
        };
        if path.as_os_str() == ":memory:" || path.to_string_lossy().starts_with("file:") {
            // Each connection would get its own private database.
            return Err(fail(
                "use",
                &"in-memory and URI databases are not supported; give a file path",
            ));
        }
        if let Some(parent) = path.parent()
            && path.is_relative()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            // A relative path is the friendly default (`./data/assistants.db`); an absolute
            // path to a missing directory is more likely a typo or an unmounted volume, so
            // that one fails below instead of silently creating a tree.
            std::fs::create_dir_all(parent).map_err(|e| fail("create the directory of", &e))?;
        }
        // Before the database is touched: a refused second proxy must not even migrate it.
        let lock = if lock { lock::acquire(path)? } else { None };
        let writer = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| fail("open", &e))?;
        configure(&writer, true).map_err(|e| fail("configure", &e))?;
        schema::migrate(&writer).map_err(|e| fail("migrate", &e))?;
        let mut readers = Vec::with_capacity(SHORT_READERS + LONG_READERS);
        for _ in 0..SHORT_READERS + LONG_READERS {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| fail("open", &e))?;
            configure(&conn, false).map_err(|e| fail("configure", &e))?;
            readers.push(conn);
        }
        let pool = ReadPool::start(readers.split_off(LONG_READERS))
            .map_err(|e| fail("start the reader threads for", &e))?;
        let index = Arc::new(SearchIndex::new());
        let (jobs, rx) = mpsc::channel::<Box<dyn Job>>();
        let thread = {
            let index = index.clone();
            let path = path.to_owned();
            std::thread::Builder::new()
                .name("sqlite-writer".into())
                .spawn(move || write_loop(&writer, &rx, &index, &path))
                .map_err(|e| fail("start the writer thread for", &e))?
        };
        Ok(SqliteStore {
            db: Db {
                inner: Arc::new(Inner {
                    path: path.to_owned(),
                    jobs: Some(jobs),
                    writer: Some(thread),
                    pool: Some(pool),
                    readers: Mutex::new(readers),
                    reader_permits: Arc::new(Semaphore::new(LONG_READERS)),
                    index,
                    _lock: lock,
                }),
            },
        })
    }
}

/// Per-connection settings. WAL lets readers run beside the writer; `synchronous=FULL` makes
/// every commit fsync the WAL, so an acknowledged write survives power loss, not only a crash.
fn configure(conn: &Connection, writer: bool) -> Result<(), DbError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // The bundled SQLite is built with STAT4, which re-plans (re-prepares) a cached statement
    // whenever a bound cursor value changes; our plans are fixed by the key indexes, so keep
    // them (measured: re-preparing was ~10% of a list page).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    if writer {
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(DbError::Invalid(format!(
                "journal_mode is {mode}, WAL could not be enabled"
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        // A bulk ingest grows the WAL to hundreds of MB between checkpoints; truncate it
        // back afterwards instead of keeping the file at its high-water mark.
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    }
    // Temporary b-trees (sorts, GROUP BY) in memory: they are small and never need to persist.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Cheap-to-clone handle on the connections.
#[derive(Clone)]
pub(crate) struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    /// Named in every error, so an operator knows which file is at fault.
    path: PathBuf,
    /// The writer thread's queue; `None` only while dropping (closing it stops the thread).
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    /// Joined on drop, so the write connection is closed before the store is gone (a reopen
    /// in the same process then finds the file quiet).
    writer: Option<JoinHandle<()>>,
    /// The short-read threads; `None` only while dropping.
    pool: Option<ReadPool>,
    /// Idle long-read connections; a permit of `reader_permits` guarantees one is here.
    readers: Mutex<Vec<Connection>>,
    /// Makes async callers wait (without blocking a runtime thread) for a free reader.
    reader_permits: Arc<Semaphore>,
    /// In-memory search indexes of the vector stores searched so far.
    index: Arc<SearchIndex>,
    /// Keeps other proxies off the file (`lock.rs`). Declared last, so it is released only
    /// after `drop` has joined the threads and every connection above has closed.
    _lock: Option<std::fs::File>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stops (and joins) the reader threads after the reads already queued.
        self.pool = None;
        self.jobs = None;
        if let Some(thread) = self.writer.take() {
            // The queue is closed, so the thread finishes its batch and returns; a panic in it
            // has already been reported to the jobs it was running.
            let _ = thread.join();
        }
    }
}

/// Failures inside a blocking database closure, mapped to [`StoreError`] (with the path) at
/// the async boundary.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("a stored column has the wrong type: {0}")]
    Column(#[from] rusqlite::types::FromSqlError),
    #[error("stored JSON does not decode: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
}

impl DbError {
    fn into_store(self, path: &Path) -> StoreError {
        let busy = matches!(
            &self,
            DbError::Sqlite(e) if matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
            )
        );
        let message = format!("SQLite database {}: {self}", path.display());
        if busy {
            StoreError::Unavailable(message)
        } else {
            StoreError::Other(message)
        }
    }
}

/// The error of a read on a store that is shutting down.
fn closed() -> StoreError {
    StoreError::Unavailable("SQLite store is closed".into())
}

/// A read closure's outcome, caught panic included, as the store reports it.
fn settle<T>(outcome: std::thread::Result<Result<T, DbError>>, path: &Path) -> StoreResult<T> {
    match outcome {
        Ok(result) => result.map_err(|e| e.into_store(path)),
        Err(_) => Err(StoreError::Other("SQLite read panicked (a bug)".into())),
    }
}

impl Db {
    fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs a short read `f` (a key lookup, a page of at most a few hundred rows) on the
    /// reader pool, off the async runtime.
    pub(crate) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            // The caller may have gone (a cancelled request): then nobody wants the result.
            let _ = tx.send(catch_unwind(AssertUnwindSafe(|| f(conn))));
        });
        self.inner
            .pool
            .as_ref()
            .ok_or_else(closed)?
            .submit(job)
            .map_err(|_| closed())?;
        // The pool runs every queued job before it stops, so the sender only goes unanswered
        // if the job itself was lost.
        let outcome = rx.await.map_err(|_| closed())?;
        settle(outcome, self.path())
    }

    /// Runs a long read `f` (a vector search, a scan) on its own connection through
    /// `spawn_blocking`, so it never queues a short read behind it.
    pub(crate) async fn read_long<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let permit = self
            .inner
            .reader_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let Some(conn) = db.lock_readers().pop() else {
                // Cannot happen: a permit is held per connection taken.
                return Err(StoreError::Other("SQLite reader pool is empty".into()));
            };
            let outcome = catch_unwind(AssertUnwindSafe(|| f(&conn)));
            db.lock_readers().push(conn);
            settle(outcome, db.path())
        })
        .await
        .map_err(|e| StoreError::Other(format!("SQLite read task failed: {e}")))?
    }

    /// The in-memory search indexes (shared with the writer thread, which keeps them current).
    pub(crate) fn index(&self) -> Arc<SearchIndex> {
        self.inner.index.clone()
    }

    fn lock_readers(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A panic while the lock was held cannot leave the Vec inconsistent (push/pop only).
        self.inner
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` in the writer thread's next transaction and answers once it is committed and
    /// on disk.
    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, DbError> + Send + 'static,
    {
        self.write_with(Durability::Flush, f).await
    }

    /// [`Db::write`], choosing whether the commit must reach the disk before the answer.
    pub(crate) async fn write_with<T, F>(&self, durability: Durability, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, DbError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            f,
            reply,
            durability,
        });
        let sent = self
            .inner
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if !sent {
            return Err(StoreError::Unavailable(format!(
                "SQLite database {}: the writer thread has stopped",
                self.path().display()
            )));
        }
        answer.await.map_err(|_| {
            StoreError::Other(format!(
                "SQLite database {}: the writer thread dropped a write (a bug)",
                self.path().display()
            ))
        })?
    }
}

/// A write job's view of the open transaction.
pub(crate) struct Tx<'c> {
    pub conn: &'c Connection,
    /// Changes to the in-memory search indexes, applied once the transaction commits.
    ops: Vec<IndexOp>,
}

impl Tx<'_> {
    pub(crate) fn index_op(&mut self, op: IndexOp) {
        self.ops.push(op);
    }
}

/// A queued write, type-erased so one channel carries every result type.
/// Whether a write's commit waits for the disk (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// fsynced before it is acknowledged: what a client was told is stored survives power loss.
    Flush,
    /// Committed and visible, made durable by the next `Flush` commit.
    Progress,
}

trait Job: Send {
    fn durability(&self) -> Durability;
    /// Runs inside the batch transaction; returns how to answer once the commit is known.
    fn run(self: Box<Self>, tx: &mut Tx<'_>, path: &Path) -> Box<dyn Answer>;
    /// The batch could not start: answer with the error.
    fn abort(self: Box<Self>, e: StoreError);
}

trait Answer: Send {
    fn send(self: Box<Self>, commit: &StoreResult<()>);
}

struct Pending<F, T> {
    f: F,
    reply: oneshot::Sender<StoreResult<T>>,
    durability: Durability,
}

struct Ready<T> {
    result: StoreResult<T>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<F, T> Job for Pending<F, T>
where
    T: Send + 'static,
    F: FnOnce(&mut Tx<'_>) -> Result<T, DbError> + Send + 'static,
{
    fn durability(&self) -> Durability {
        self.durability
    }

    fn run(self: Box<Self>, tx: &mut Tx<'_>, path: &Path) -> Box<dyn Answer> {
        let Pending { f, reply, .. } = *self;
        let result = in_savepoint(tx, f).map_err(|e| e.into_store(path));
        Box::new(Ready { result, reply })
    }

    fn abort(self: Box<Self>, e: StoreError) {
        // The caller may have gone away (its future dropped); nothing to tell then.
        let _ = self.reply.send(Err(e));
    }
}

impl<T: Send> Answer for Ready<T> {
    fn send(self: Box<Self>, commit: &StoreResult<()>) {
        let result = match commit {
            Ok(()) => self.result,
            Err(e) => Err(e.clone()),
        };
        let _ = self.reply.send(result);
    }
}

/// Runs one job inside a savepoint of the batch transaction: its failure (or panic) rolls
/// back only its own changes and index operations.
fn in_savepoint<T>(
    tx: &mut Tx<'_>,
    f: impl FnOnce(&mut Tx<'_>) -> Result<T, DbError>,
) -> Result<T, DbError> {
    tx.conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    let ops_before = tx.ops.len();
    let result = match catch_unwind(AssertUnwindSafe(|| f(tx))) {
        Ok(r) => r,
        Err(_) => Err(DbError::Invalid("SQLite write panicked (a bug)".into())),
    };
    match result {
        Ok(v) => {
            tx.conn.prepare_cached("RELEASE job")?.execute([])?;
            Ok(v)
        }
        Err(e) => {
            tx.ops.truncate(ops_before);
            tx.conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
            tx.conn.prepare_cached("RELEASE job")?.execute([])?;
            Err(e)
        }
    }
}

/// The writer thread: takes whatever is queued, runs it in one transaction, commits once,
/// applies index changes, then answers. Returns when every sender is gone.
fn write_loop(
    conn: &Connection,
    rx: &mpsc::Receiver<Box<dyn Job>>,
    index: &SearchIndex,
    path: &Path,
) {
    // The connection starts with synchronous=FULL (configure).
    let mut synced = Durability::Flush;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // One job that must reach the disk makes the whole batch (and all before it) durable.
        let wanted = if batch.iter().any(|j| j.durability() == Durability::Flush) {
            Durability::Flush
        } else {
            Durability::Progress
        };
        if wanted != synced {
            let mode = match wanted {
                Durability::Flush => "FULL",
                Durability::Progress => "NORMAL",
            };
            match conn.pragma_update(None, "synchronous", mode) {
                Ok(()) => synced = wanted,
                // Committing progress at FULL only costs time.
                Err(_) if wanted == Durability::Progress => {}
                Err(e) => {
                    let e = DbError::from(e).into_store(path);
                    for job in batch {
                        job.abort(e.clone());
                    }
                    continue;
                }
            }
        }
        // IMMEDIATE takes the write lock up front, so a read-then-write inside a job (one
        // active run per thread, compare-and-set) cannot interleave with another process.
        if let Err(e) = conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]))
        {
            let e = DbError::from(e).into_store(path);
            for job in batch {
                job.abort(e.clone());
            }
            continue;
        }
        let mut tx = Tx {
            conn,
            ops: Vec::new(),
        };
        let answers: Vec<Box<dyn Answer>> = batch
            .into_iter()
            .map(|job| job.run(&mut tx, path))
            .collect();
        let ops = std::mem::take(&mut tx.ops);
        let commit = || -> StoreResult<()> {
            let done = conn
                .prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]));
            if let Err(e) = done {
                // Leave no half-open transaction behind for the next batch.
                let _ = conn.execute_batch("ROLLBACK");
                return Err(DbError::from(e).into_store(path));
            }
            Ok(())
        };
        let committed = if ops.is_empty() {
            commit()
        } else {
            index.commit_and_apply(ops, commit)
        };
        for answer in answers {
            answer.send(&committed);
        }
    }
}

#[async_trait]
impl StoreHealth for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.db
            .read(|conn| {
                conn.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `synchronous` as the writer connection has it while running a job.
    async fn mode_in(db: &Db, d: Durability) -> i64 {
        db.write_with(d, |tx| {
            Ok(tx
                .conn
                .pragma_query_value(None, "synchronous", |r| r.get(0))?)
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn progress_commits_skip_the_fsync_and_durable_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_blocking(&dir.path().join("d.db"), true).unwrap();
        let db = &store.db;
        // 2 = FULL (fsync at every commit), 1 = NORMAL (WAL synced at checkpoints only).
        assert_eq!(mode_in(db, Durability::Flush).await, 2);
        assert_eq!(mode_in(db, Durability::Progress).await, 1);
        assert_eq!(mode_in(db, Durability::Flush).await, 2, "back to FULL");

        // A batch holding one durable job is committed durably as a whole.
        let progress = db.write_with(Durability::Progress, |tx| {
            Ok(tx
                .conn
                .pragma_query_value::<i64, _>(None, "synchronous", |r| r.get(0))?)
        });
        let durable = db.write_with(Durability::Flush, |tx| {
            Ok(tx
                .conn
                .pragma_query_value::<i64, _>(None, "synchronous", |r| r.get(0))?)
        });
        let (p, d) = tokio::join!(progress, durable);
        assert_eq!(d.unwrap(), 2);
        assert!(
            matches!(p.unwrap(), 1 | 2),
            "alone or batched with the durable job"
        );
    }
}
