//! The Cassandra 5 / DataStax HCD / Astra backend (CQL through the `scylla` driver).
//!
//! This file owns the connection: settings from the URL, the lazily opened session, the
//! prepared-statement cache and the mapping of driver errors onto [`StoreError`]. The schema
//! and its migrations live in `schema.rs`, the shared "JSON document in a clustering row"
//! operations in `docs.rs`, and each resource's trait implementation in its own file.
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
mod files;
mod messages;
mod runs;
mod schema;
mod threads;
mod vector_stores;

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::errors::{
    BadQuery, ConnectionPoolError, DbError, ExecutionError, MetadataError, NewSessionError,
    NextPageError, NextRowError, PagerExecutionError, PrepareError, RequestAttemptError,
    RequestError, SchemaAgreementError,
};
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::Batch;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlValue, Row};
use tokio::sync::Semaphore;

use super::{CassandraUrl, Store, StoreError, StoreHealth, StoreResult};

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

#[async_trait]
impl SessionSource for Settings {
    async fn open(&self) -> StoreResult<Connected> {
        let session = self
            .session_builder()
            .build()
            .await
            .map_err(|e| fault("connecting", e))?;
        Ok(Connected {
            session,
            keyspace: self.keyspace.clone(),
            replication: self.replication,
            create_keyspace: true,
            keep: None,
        })
    }

    fn describe(&self) -> String {
        format!("keyspace {}", self.keyspace)
    }
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
    async fn ping(&self) -> StoreResult<()> {
        let c = self.conn().await?;
        c.exec("SELECT release_version FROM system.local", ())
            .await?;
        Ok(())
    }
}

/// What the URL asks for, resolved once (secrets read, TLS configured).
#[derive(Clone)]
pub(crate) struct Settings {
    hosts: Vec<String>,
    keyspace: String,
    replication: u32,
    consistency: Consistency,
    credentials: Option<(String, String)>,
    tls: Option<Arc<rustls::ClientConfig>>,
    dc: Option<String>,
}

impl Settings {
    fn from_url(url: &CassandraUrl) -> StoreResult<Settings> {
        let consistency = match url.consistency.as_str() {
            "local_quorum" => Consistency::LocalQuorum,
            "quorum" => Consistency::Quorum,
            "local_one" => Consistency::LocalOne,
            "one" => Consistency::One,
            "all" => Consistency::All,
            "each_quorum" => Consistency::EachQuorum,
            other => return Err(config_error(format!("unknown consistency {other:?}"))),
        };
        // Astra logs in as user `token` with an `AstraCS:` application token as password;
        // that is this same pair, so nothing here is specific to it.
        let credentials = match (&url.user, &url.password_env) {
            (None, None) => None,
            (Some(user), Some(var)) => {
                let password = std::env::var(var).map_err(|_| {
                    config_error(format!("password_env names {var:?}, which is not set"))
                })?;
                Some((user.clone(), password))
            }
            (Some(_), None) => {
                return Err(config_error(
                    "user is set but password_env is not (name the variable holding the password)",
                ));
            }
            (None, Some(_)) => return Err(config_error("password_env is set but user is not")),
        };
        let tls = if url.tls {
            Some(tls_config(url.ca_file.as_deref())?)
        } else {
            None
        };
        Ok(Settings {
            hosts: url.hosts.clone(),
            keyspace: url.keyspace.clone(),
            replication: url.replication,
            consistency,
            credentials,
            tls,
            dc: url.dc.clone(),
        })
    }

    /// Astra's form: contact points that are the connector's local forwarders, user `token`
    /// with the application token as password, LOCAL_QUORUM (Astra refuses writes at
    /// ONE/LOCAL_ONE/ANY), routing that prefers the bundle's local DC.
    pub(crate) fn astra(
        hosts: Vec<String>,
        keyspace: &str,
        token: &str,
        local_dc: Option<String>,
    ) -> Settings {
        Settings {
            hosts,
            keyspace: keyspace.to_owned(),
            replication: 3,
            consistency: Consistency::LocalQuorum,
            credentials: Some(("token".to_owned(), token.to_owned())),
            tls: None,
            dc: local_dc,
        }
    }

    pub(crate) fn session_builder(&self) -> SessionBuilder {
        let mut policy = DefaultPolicy::builder();
        if let Some(dc) = &self.dc {
            policy = policy.prefer_datacenter(dc.clone());
        }
        let profile = ExecutionProfile::builder()
            .consistency(self.consistency)
            .serial_consistency(Some(SerialConsistency::LocalSerial))
            .request_timeout(Some(REQUEST_TIMEOUT))
            .load_balancing_policy(policy.build())
            .build();
        let mut builder = SessionBuilder::new()
            .known_nodes(&self.hosts)
            .connection_timeout(CONNECT_TIMEOUT)
            .default_execution_profile_handle(profile.into_handle())
            // Client timestamps, monotonic per process: "replace" is a range delete followed
            // by inserts, and the inserts must win even when coordinators' clocks differ.
            .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()));
        if let Some((user, password)) = &self.credentials {
            builder = builder.user(user.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            builder = builder.tls_context(Some(tls.clone()));
        }
        builder
    }
}

fn config_error(message: impl Display) -> StoreError {
    StoreError::Other(format!("Cassandra store configuration: {message}"))
}

/// A TLS client trusting `ca_file` if given, else the platform's roots (the Mozilla roots
/// when the platform has none). The driver verifies node certificates against the node's IP
/// address (it sends no SNI), so certificates must carry IP SANs.
fn tls_config(ca_file: Option<&Path>) -> StoreResult<Arc<rustls::ClientConfig>> {
    use crate::tls::{Roots, root_store};
    let roots = match ca_file {
        Some(path) => {
            root_store(&[Roots::PemFile(path)]).map_err(|e| config_error(format!("ca_file {e}")))?
        }
        None => {
            let platform = root_store(&[Roots::Platform]).map_err(config_error)?;
            if platform.is_empty() {
                root_store(&[Roots::Mozilla]).map_err(config_error)?
            } else {
                platform
            }
        }
    };
    let config = crate::tls::client_config(roots).map_err(config_error)?;
    Ok(Arc::new(config))
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
        // Only SELECTs are marked idempotent (so the driver may retry them); writes are
        // retried, where that is safe, by the code that issues them.
        p.set_is_idempotent(cql.trim_start().starts_with("SELECT"));
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

// ---------------------------------------------------------------------------------------
// Driver errors → StoreError
// ---------------------------------------------------------------------------------------

/// Whether a driver error means "the database can't be reached right now" (a retry may
/// work) rather than a failed statement.
trait Reachability {
    fn unreachable(&self) -> bool;
}

fn fault<E: Reachability + Display>(doing: &str, e: E) -> StoreError {
    let message = format!("Cassandra: {doing}: {e}");
    if e.unreachable() {
        StoreError::Unavailable(message)
    } else {
        StoreError::Other(message)
    }
}

impl Reachability for DbError {
    fn unreachable(&self) -> bool {
        matches!(
            self,
            DbError::Unavailable { .. }
                | DbError::Overloaded
                | DbError::IsBootstrapping
                | DbError::ReadTimeout { .. }
                | DbError::WriteTimeout { .. }
                | DbError::TruncateError
                | DbError::RateLimitReached { .. }
        )
    }
}

impl Reachability for RequestAttemptError {
    fn unreachable(&self) -> bool {
        match self {
            RequestAttemptError::DbError(db, _) => db.unreachable(),
            RequestAttemptError::BrokenConnectionError(_)
            | RequestAttemptError::UnableToAllocStreamId => true,
            _ => false,
        }
    }
}

impl Reachability for ConnectionPoolError {
    fn unreachable(&self) -> bool {
        // A broken or initializing pool, or a node filtered away: no node to talk to.
        true
    }
}

impl Reachability for PrepareError {
    fn unreachable(&self) -> bool {
        match self {
            PrepareError::ConnectionPoolError(_) => true,
            PrepareError::AllAttemptsFailed { first_attempt } => first_attempt.unreachable(),
            _ => false,
        }
    }
}

impl Reachability for SchemaAgreementError {
    fn unreachable(&self) -> bool {
        match self {
            SchemaAgreementError::ConnectionPoolError(_) | SchemaAgreementError::Timeout(_) => true,
            SchemaAgreementError::PrepareError(e) => e.unreachable(),
            SchemaAgreementError::RequestError(e) => e.unreachable(),
            _ => false,
        }
    }
}

impl Reachability for MetadataError {
    fn unreachable(&self) -> bool {
        matches!(
            self,
            MetadataError::ConnectionPoolError(_) | MetadataError::FetchError(_)
        )
    }
}

impl Reachability for ExecutionError {
    fn unreachable(&self) -> bool {
        match self {
            ExecutionError::EmptyPlan
            | ExecutionError::ConnectionPoolError(_)
            | ExecutionError::RequestTimeout(_) => true,
            ExecutionError::LastAttemptError(e) => e.unreachable(),
            ExecutionError::PrepareError(e) => e.unreachable(),
            ExecutionError::SchemaAgreementError(e) => e.unreachable(),
            ExecutionError::MetadataError(e) => e.unreachable(),
            ExecutionError::BadQuery(BadQuery::SerializationError(_)) => false,
            _ => false,
        }
    }
}

impl Reachability for RequestError {
    fn unreachable(&self) -> bool {
        match self {
            RequestError::EmptyPlan
            | RequestError::ConnectionPoolError(_)
            | RequestError::RequestTimeout(_) => true,
            RequestError::LastAttemptError(e) => e.unreachable(),
            _ => false,
        }
    }
}

impl Reachability for PagerExecutionError {
    fn unreachable(&self) -> bool {
        match self {
            PagerExecutionError::PrepareError(e) => e.unreachable(),
            PagerExecutionError::NextPageError(e) => e.unreachable(),
            PagerExecutionError::SchemaAgreementError(e) => e.unreachable(),
            PagerExecutionError::MetadataError(e) => e.unreachable(),
            _ => false,
        }
    }
}

impl Reachability for NextPageError {
    fn unreachable(&self) -> bool {
        match self {
            NextPageError::RequestFailure(e) => e.unreachable(),
            _ => false,
        }
    }
}

impl Reachability for NextRowError {
    fn unreachable(&self) -> bool {
        match self {
            NextRowError::NextPageError(e) => e.unreachable(),
            _ => false,
        }
    }
}

impl Reachability for NewSessionError {
    fn unreachable(&self) -> bool {
        // Failing to reach, resolve or log in to any contact point is retried on demand
        // (the node may be starting, or DNS may come back); a bad configuration is not.
        !matches!(
            self,
            NewSessionError::EmptyKnownNodesList | NewSessionError::IllegalConfig(_)
        )
    }
}

/// A conditional write whose outcome is unknown: Paxos timed out or lost to contention.
fn is_cas_uncertain(e: &ExecutionError) -> bool {
    use scylla::errors::WriteType;
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => matches!(
            db,
            DbError::WriteTimeout {
                write_type: WriteType::Cas,
                ..
            } | DbError::ReadTimeout { .. }
        ),
        ExecutionError::RequestTimeout(_) => true,
        _ => false,
    }
}

/// The error text of a statement failure, for the few server messages matched by text.
fn error_text(e: &StoreError) -> &str {
    e.message()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(query: &str) -> CassandraUrl {
        match crate::store::StoreUrl::parse(&format!("cassandra://127.0.0.1:9042/ks{query}")) {
            Ok(crate::store::StoreUrl::Cassandra(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn credentials_come_from_the_named_variable() {
        // Astra's form: user `token`, the `AstraCS:` token in a variable (PATH stands in).
        let s = Settings::from_url(&url("?user=token&password_env=PATH")).unwrap();
        let (user, password) = s.credentials.unwrap();
        assert_eq!(user, "token");
        assert_eq!(password, std::env::var("PATH").unwrap());
        assert!(Settings::from_url(&url("")).unwrap().credentials.is_none());
        for bad in [
            "?user=token&password_env=AP_TEST_SURELY_UNSET_VARIABLE",
            "?user=token",
            "?password_env=PATH",
        ] {
            assert!(
                matches!(Settings::from_url(&url(bad)), Err(StoreError::Other(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn consistency_levels_map() {
        let s = Settings::from_url(&url("?consistency=local_one")).unwrap();
        assert_eq!(s.consistency, Consistency::LocalOne);
        assert_eq!(
            Settings::from_url(&url("")).unwrap().consistency,
            Consistency::LocalQuorum
        );
    }

    #[test]
    fn tls_trusts_the_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).unwrap();
        let s = Settings::from_url(&url(&format!("?ca_file={}", path.display()))).unwrap();
        assert!(s.tls.is_some());
        assert!(Settings::from_url(&url("?tls=true")).unwrap().tls.is_some());

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        for bad in [empty, dir.path().join("missing.pem")] {
            let r = Settings::from_url(&url(&format!("?ca_file={}", bad.display())));
            assert!(matches!(r, Err(StoreError::Other(_))));
        }
    }

    #[test]
    fn buckets_and_shards_are_stable() {
        // Changing the hash would strand stored chunks and index entries.
        assert_eq!(fnv32(""), 0x811c_9dc5);
        assert_eq!(fnv32("a"), 0xe40c_292c);
    }
}
