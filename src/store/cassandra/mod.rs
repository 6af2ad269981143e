//! The Cassandra 5 / DataStax HCD / Astra backend (CQL through the `scylla` driver).
//!
//! This file owns the connection: the lazily opened session and the prepared-statement
//! cache. What the URL asks for is resolved in `settings.rs`, driver errors are mapped onto
//! [`StoreError`] in `errors.rs`, the schema and its migrations live in `schema.rs`, the
//! shared "JSON document in a clustering row" operations in `docs.rs`, and each resource's
//! trait implementation in its own file.
//!
//! Availability: [`open`] never fails because the cluster is unreachable. The session is
//! opened (and the schema migrated) by the first call that needs it, retried on demand with
//! exponential backoff, and in the meantime every call answers [`StoreError::Unavailable`].
//! Once a session exists the driver keeps its connection pools alive by itself, so a node
//! that goes away and comes back needs nothing from us. No background task of ours is
//! involved: connecting happens inside calls, single-flighted by a mutex.
//!
//! Data access goes through prepared statements only (cached by CQL text); DDL is the only
//! unprepared CQL. Reads and writes use the URL's consistency (LOCAL_QUORUM by default),
//! lightweight transactions LOCAL_SERIAL.
//!
//! Sessions can also come from elsewhere: the Astra connector (`store::astra`) builds its
//! session with [`Settings::session_builder`] plus its own address translation, and hands it
//! over as a [`Connected`] — eagerly ([`open_connected`], per-request databases) or lazily
//! through a [`SessionSource`] ([`open_source`], the `astra://` store). Everything past the
//! session (schema, statements, error mapping) is this module's, whatever the source.

mod assistants;
mod chunks;
mod docs;
mod dump;
mod errors;
mod files;
mod messages;
mod runs;
mod schema;
mod settings;
mod threads;
mod vector_stores;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use scylla::client::session::Session;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::Batch;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use tokio::sync::Semaphore;

use super::{CassandraUrl, Store, StoreError, StoreHealth, StoreResult};
use errors::{error_text, fault, is_cas_uncertain};
pub(crate) use settings::Settings;

/// How long one attempt to reach a node may take; short, because a caller waits for it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Backoff between on-demand connection attempts after a failure: doubles up to the cap, so
/// a dead cluster costs one fast `Unavailable` per call instead of a connect timeout each.
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Client-side timeout of one request. Paxos under contention and DDL need more than the
/// usual few milliseconds, but a caller should still hear back well inside a minute.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Page size for the few reads that walk a whole partition (counts, filtered lists).
const SCAN_PAGE: i32 = 500;

/// Opens the store. Configuration mistakes (a missing password variable, an unreadable CA
/// file) fail here; an unreachable cluster does not: the store then connects on demand.
pub async fn open(url: &CassandraUrl) -> StoreResult<Store> {
    let settings = Settings::from_url(url)?;
    open_source(Arc::new(settings)).await
}

/// A session opened by someone else, with what the store needs to know about it.
pub(crate) struct Connected {
    pub session: Session,
    pub keyspace: String,
    /// Replication factor if the keyspace has to be created over CQL.
    pub replication: u32,
    /// Whether a missing keyspace may be created over CQL. Astra refuses that (its keyspaces
    /// are made through the DevOps API), so its sources make sure it exists beforehand.
    pub create_keyspace: bool,
    /// Lives as long as the store: whatever the session's connections depend on (the Astra
    /// connector's forwarders stop when it is dropped).
    pub keep: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// Something that can open sessions for a store, on demand and again after a failure.
#[async_trait]
pub(crate) trait SessionSource: Send + Sync {
    async fn open(&self) -> StoreResult<Connected>;
    /// For logs: what this source connects to (never a secret).
    fn describe(&self) -> String;
}

/// A store that connects through `source` on demand (one eager attempt now).
pub(crate) async fn open_source(source: Arc<dyn SessionSource>) -> StoreResult<Store> {
    let store = Arc::new(CassandraStore {
        link: Link::new(Some(source)),
    });
    // One eager attempt so a healthy cluster is migrated at start-up; a failure is only
    // logged, the next call that needs the database tries again.
    if let Err(e) = store.link.conn().await {
        tracing::warn!(error = %e, "Cassandra not reachable at start-up; will retry on demand");
    }
    Ok(Store::from_backend(store))
}

/// A store over a session that is already open: the schema is migrated now, and failures
/// are the caller's to handle (nothing reconnects; the driver keeps the pools alive).
pub(crate) async fn open_connected(connected: Connected) -> StoreResult<Store> {
    let conn = Arc::new(Conn::new(connected).await?);
    let link = Link::new(None);
    link.set_live(conn);
    Ok(Store::from_backend(Arc::new(CassandraStore { link })))
}

/// The backend object behind every trait handle.
pub struct CassandraStore {
    link: Link,
}

impl CassandraStore {
    async fn conn(&self) -> StoreResult<Arc<Conn>> {
        self.link.conn().await
    }
}

#[async_trait]
impl StoreHealth for CassandraStore {
    /// Reads one row of a replicated table at the configured consistency: a node that
    /// answers is not enough, its replicas must make a quorum (system tables are local and
    /// would answer with every other node gone).
    async fn ping(&self) -> StoreResult<()> {
        let c = self.conn().await?;
        let cql = format!(
            "SELECT version FROM {} WHERE version = 1",
            c.table("schema_migrations")
        );
        c.exec(&cql, ()).await?;
        Ok(())
    }
}

/// The lazily opened connection and what it takes to (re)open it.
struct Link {
    /// Where sessions come from; None for a store handed an open session (no reconnects).
    source: Option<Arc<dyn SessionSource>>,
    /// The live connection, once there is one; read without waiting on `connecting`.
    live: RwLock<Option<Arc<Conn>>>,
    /// Held while connecting, so concurrent callers make one attempt between them.
    connecting: tokio::sync::Mutex<Attempts>,
}

/// Memory of failed attempts, for backoff.
struct Attempts {
    last_failure: Option<(Instant, bool, String)>,
    backoff: Duration,
}

impl Link {
    fn new(source: Option<Arc<dyn SessionSource>>) -> Link {
        Link {
            source,
            live: RwLock::new(None),
            connecting: tokio::sync::Mutex::new(Attempts {
                last_failure: None,
                backoff: BACKOFF_START,
            }),
        }
    }

    fn set_live(&self, conn: Arc<Conn>) {
        match self.live.write() {
            Ok(mut g) => *g = Some(conn),
            Err(poisoned) => *poisoned.into_inner() = Some(conn),
        }
    }

    fn current(&self) -> Option<Arc<Conn>> {
        match self.live.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The connection, opening it (and migrating the schema) if needed. Within the backoff
    /// window after a failure it answers the last failure at once.
    async fn conn(&self) -> StoreResult<Arc<Conn>> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let mut attempts = self.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        if let Some((at, unavailable, message)) = &attempts.last_failure
            && at.elapsed() < attempts.backoff
        {
            let message = format!("Cassandra is not connected: {message}");
            return Err(if *unavailable {
                StoreError::Unavailable(message)
            } else {
                StoreError::Other(message)
            });
        }
        let Some(source) = &self.source else {
            return Err(StoreError::Unavailable(
                "Cassandra: the session is closed".into(),
            ));
        };
        let opened = match source.open().await {
            Ok(connected) => Conn::new(connected).await,
            Err(e) => Err(e),
        };
        match opened {
            Ok(conn) => {
                let conn = Arc::new(conn);
                self.set_live(conn.clone());
                attempts.last_failure = None;
                attempts.backoff = BACKOFF_START;
                tracing::info!(target = %source.describe(), "connected to Cassandra");
                Ok(conn)
            }
            Err(e) => {
                if attempts.last_failure.is_some() {
                    attempts.backoff = (attempts.backoff * 2).min(BACKOFF_MAX);
                }
                let unavailable = matches!(e, StoreError::Unavailable(_));
                attempts.last_failure = Some((Instant::now(), unavailable, e.to_string()));
                Err(e)
            }
        }
    }
}

/// An open session with its caches. Statements name tables with the keyspace, so nothing
/// depends on a connection's `USE` state.
struct Conn {
    session: Session,
    keyspace: String,
    /// Prepared statements by CQL text (prepared once per session, on first use).
    prepared: Mutex<HashMap<String, PreparedStatement>>,
    /// Embedding dimensions whose chunk table is known to exist and be queryable.
    chunk_tables: Mutex<HashSet<u32>>,
    /// Serializes this process's creation of chunk tables.
    chunk_ddl: tokio::sync::Mutex<()>,
    /// In-flight inserts per chunk table (see `chunks.rs`: jvector's pooled-object limit).
    chunk_writers: Mutex<HashMap<u32, Arc<Semaphore>>>,
    /// Identifies this process in the schema lock and in run write ids.
    instance: String,
    /// What the session depends on (see [`Connected::keep`]); dropped after the session.
    _keep: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Conn {
    /// Wraps an open session and brings its keyspace to the current schema.
    async fn new(connected: Connected) -> StoreResult<Conn> {
        let Connected {
            session,
            keyspace,
            replication,
            create_keyspace,
            keep,
        } = connected;
        let conn = Conn {
            session,
            keyspace,
            prepared: Mutex::new(HashMap::new()),
            chunk_tables: Mutex::new(HashSet::new()),
            chunk_ddl: tokio::sync::Mutex::new(()),
            chunk_writers: Mutex::new(HashMap::new()),
            instance: crate::ids::new_id("proxy_"),
            _keep: keep,
        };
        schema::migrate(&conn, replication, create_keyspace).await?;
        Ok(conn)
    }

    /// `keyspace.table`, for CQL text.
    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.keyspace)
    }

    /// The prepared statement for `cql`, preparing it on first use.
    async fn prepare(&self, cql: &str) -> StoreResult<PreparedStatement> {
        if let Some(p) = lock(&self.prepared).get(cql) {
            return Ok(p.clone());
        }
        let mut p = self
            .session
            .prepare(cql)
            .await
            .map_err(|e| fault("preparing a statement", e))?;
        p.set_is_idempotent(idempotent(cql));
        lock(&self.prepared).insert(cql.to_owned(), p.clone());
        Ok(p)
    }

    async fn exec(&self, cql: &str, values: impl SerializeRow) -> StoreResult<QueryResult> {
        let p = self.prepare(cql).await?;
        self.exec_prepared(&p, values).await
    }

    async fn exec_prepared(
        &self,
        p: &PreparedStatement,
        values: impl SerializeRow,
    ) -> StoreResult<QueryResult> {
        self.session
            .execute_unpaged(p, values)
            .await
            .map_err(|e| fault("executing a statement", e))
    }

    /// All rows of a (bounded) single-page read.
    async fn rows<R>(&self, cql: &str, values: impl SerializeRow) -> StoreResult<Vec<R>>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        let result = self.exec(cql, values).await?;
        typed_rows(result)
    }

    async fn first_row<R>(&self, cql: &str, values: impl SerializeRow) -> StoreResult<Option<R>>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        Ok(self.rows(cql, values).await?.into_iter().next())
    }

    /// Walks a read page by page, handing each row to `visit` until it returns false.
    async fn scan<R>(
        &self,
        cql: &str,
        values: impl SerializeRow,
        mut visit: impl FnMut(R) -> bool,
    ) -> StoreResult<()>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm> + 'static,
    {
        let mut p = self.prepare(cql).await?;
        p.set_page_size(SCAN_PAGE);
        let pager = self
            .session
            .execute_iter(p, values)
            .await
            .map_err(|e| fault("reading", e))?;
        let mut stream = pager
            .rows_stream::<R>()
            .map_err(|e| StoreError::Other(format!("Cassandra row type: {e}")))?;
        while let Some(row) = stream.next().await {
            let row = row.map_err(|e| fault("reading", e))?;
            if !visit(row) {
                break;
            }
        }
        Ok(())
    }

    /// Runs a lightweight transaction and answers whether it applied.
    async fn lwt(&self, cql: &str, values: impl SerializeRow) -> StoreResult<Applied> {
        let p = self.prepare(cql).await?;
        match self.session.execute_unpaged(&p, values).await {
            Ok(result) => applied(result).map(Applied::from),
            Err(e) if is_cas_uncertain(&e) => Ok(Applied::Unknown),
            Err(e) => Err(fault("executing a conditional statement", e)),
        }
    }

    /// Runs a conditional batch (one partition) and answers whether it applied.
    async fn lwt_batch(&self, cqls: &[&str], values: Vec<Vec<CqlValue>>) -> StoreResult<Applied> {
        let mut batch = Batch::default();
        for cql in cqls {
            batch.append_statement(self.prepare(cql).await?);
        }
        match self.session.batch(&batch, values).await {
            Ok(result) => applied(result).map(Applied::from),
            Err(e) if is_cas_uncertain(&e) => Ok(Applied::Unknown),
            Err(e) => Err(fault("executing a conditional batch", e)),
        }
    }
}

/// Whether the driver may run `cql` again on another node after a failed attempt (a node
/// lost mid-request leaves it unknown whether the first attempt was applied). Reads may; so
/// may our plain writes: each sets fixed values (no counters, no list appends, no `now()`
/// outside a condition), so applying one twice leaves the same row (the retry carries a
/// later client timestamp, but its caller has not moved on yet, so nothing it wrote since
/// can be overwritten). A lightweight transaction (`IF ...`) may not: its first
/// attempt may have won, and a second would then fail its condition and report "not
/// applied" for a write that happened.
fn idempotent(cql: &str) -> bool {
    !cql.split_whitespace()
        .any(|word| word.eq_ignore_ascii_case("IF"))
}

/// Outcome of a lightweight transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    Yes,
    No,
    /// Timed out or contended: it may or may not have been applied; read to find out.
    Unknown,
}

impl From<bool> for Applied {
    fn from(b: bool) -> Self {
        if b { Applied::Yes } else { Applied::No }
    }
}

/// The `[applied]` column that leads every LWT result.
fn applied(result: QueryResult) -> StoreResult<bool> {
    let rows = result
        .into_rows_result()
        .map_err(|e| StoreError::Other(format!("Cassandra LWT result: {e}")))?;
    let first = rows
        .rows::<Row>()
        .map_err(|e| StoreError::Other(format!("Cassandra LWT result: {e}")))?
        .next();
    match first {
        Some(Ok(row)) => match row.columns.first() {
            Some(Some(CqlValue::Boolean(b))) => Ok(*b),
            _ => Err(StoreError::Other(
                "Cassandra LWT result without [applied]".into(),
            )),
        },
        Some(Err(e)) => Err(StoreError::Other(format!("Cassandra LWT result: {e}"))),
        None => Err(StoreError::Other(
            "Cassandra LWT result without rows".into(),
        )),
    }
}

fn typed_rows<R>(result: QueryResult) -> StoreResult<Vec<R>>
where
    R: for<'f> DeserializeRow<'f, 'f>,
{
    let rows = result
        .into_rows_result()
        .map_err(|e| StoreError::Other(format!("Cassandra result: {e}")))?;
    let out = rows
        .rows::<R>()
        .map_err(|e| StoreError::Other(format!("Cassandra row type: {e}")))?
        .collect::<Result<Vec<R>, _>>()
        .map_err(|e| StoreError::Other(format!("Cassandra row: {e}")))?;
    Ok(out)
}

/// A std mutex that survives poisoning (the data behind ours is always consistent).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A stable 32-bit FNV-1a hash (bucket and shard numbers must not change between builds).
fn fnv32(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Other(format!("encoding JSON: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Other(format!("stored JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unconditional_statements_are_retried() {
        assert!(idempotent("SELECT doc FROM ks.runs WHERE tenant = ?"));
        assert!(idempotent("INSERT INTO ks.messages (a, doc) VALUES (?, ?)"));
        assert!(idempotent(
            "DELETE FROM ks.files WHERE tenant = ? AND file_id = ?"
        ));
        assert!(!idempotent("DELETE FROM ks.runs WHERE id = ? IF EXISTS"));
        assert!(!idempotent(
            "UPDATE ks.threads SET active_run = ? WHERE id = ?\n IF active_run = null"
        ));
        assert!(!idempotent(
            "INSERT INTO ks.schema_lock (name) VALUES ('schema') if not exists"
        ));
    }

    #[test]
    fn buckets_and_shards_are_stable() {
        // Changing the hash would strand stored chunks and index entries.
        assert_eq!(fnv32(""), 0x811c_9dc5);
        assert_eq!(fnv32("a"), 0xe40c_292c);
    }
}
