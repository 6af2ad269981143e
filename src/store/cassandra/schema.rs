//! The keyspace, its tables and their versioned migrations, and the per-dimension chunk
//! tables created on first use.
//!
//! Race safety when several proxies start at once:
//! - Only the keyspace and the two bookkeeping tables (`schema_migrations`, `schema_lock`)
//!   are created without the lock, each `IF NOT EXISTS` and only when a look at
//!   `system_schema` says it is missing.
//! - Every other schema change runs under a lock row claimed with a lightweight transaction
//!   (`INSERT … IF NOT EXISTS USING TTL`, so a crashed holder frees it by itself), is
//!   idempotent DDL (`IF NOT EXISTS`) so re-running a half-applied migration is harmless, is
//!   followed by `await_schema_agreement`, and is recorded by an LWT insert of its version.
//! - A proxy that finds the lock taken waits until the versions it needs are recorded.

use std::time::{Duration, Instant};

use super::{Applied, Conn, StoreError, StoreResult, fault};

/// One schema version: idempotent DDL statements (`{ks}` stands for the keyspace).
struct Migration {
    version: i32,
    description: &'static str,
    statements: &'static [&'static str],
}

/// Every schema version, in order.
const MIGRATIONS: &[Migration] = &[V1, V2];

/// Tables are written as JSON documents (`doc`) plus the columns queries need. Partition
/// keys start with the tenant, so another tenant's object is simply not there.
const V1: Migration = Migration {
    version: 1,
    description: "assistants, threads, messages, runs, files, vector stores",
    statements: &[
        "CREATE TABLE IF NOT EXISTS {ks}.assistants (tenant text, id text, doc text, \
         PRIMARY KEY ((tenant), id))",
        // Threads are never listed: one partition per thread keeps tenants' partitions small.
        "CREATE TABLE IF NOT EXISTS {ks}.threads (tenant text, id text, doc text, \
         PRIMARY KEY ((tenant, id)))",
        "CREATE TABLE IF NOT EXISTS {ks}.messages (tenant text, thread_id text, id text, \
         doc text, PRIMARY KEY ((tenant, thread_id), id))",
        // Written only by lightweight transactions. `active_run` is the thread's lock: a
        // static column, so creating a run and taking the lock is one conditional batch.
        "CREATE TABLE IF NOT EXISTS {ks}.runs (tenant text, thread_id text, id text, \
         doc text, version bigint, status text, write_id text, active_run text static, \
         PRIMARY KEY ((tenant, thread_id), id))",
        "CREATE TABLE IF NOT EXISTS {ks}.run_steps (tenant text, thread_id text, run_id text, \
         id text, doc text, PRIMARY KEY ((tenant, thread_id, run_id), id))",
        // A superset of the active runs, in a fixed number of small shards, so recovery
        // never scans all runs.
        "CREATE TABLE IF NOT EXISTS {ks}.active_runs (shard int, tenant text, thread_id text, \
         run_id text, PRIMARY KEY ((shard), tenant, thread_id, run_id))",
        "CREATE TABLE IF NOT EXISTS {ks}.files (tenant text, id text, doc text, \
         PRIMARY KEY ((tenant), id))",
        "CREATE TABLE IF NOT EXISTS {ks}.file_parts (tenant text, file_id text, idx int, \
         data blob, PRIMARY KEY ((tenant, file_id), idx))",
        // Which stores a file belongs to, so deleting the file finds its chunks.
        "CREATE TABLE IF NOT EXISTS {ks}.file_memberships (tenant text, file_id text, \
         vector_store_id text, PRIMARY KEY ((tenant, file_id), vector_store_id))",
        "CREATE TABLE IF NOT EXISTS {ks}.vector_stores (tenant text, id text, doc text, \
         PRIMARY KEY ((tenant), id))",
        "CREATE TABLE IF NOT EXISTS {ks}.vs_files (tenant text, vector_store_id text, id text, \
         doc text, PRIMARY KEY ((tenant, vector_store_id), id))",
        "CREATE TABLE IF NOT EXISTS {ks}.vs_batches (tenant text, vector_store_id text, \
         id text, doc text, PRIMARY KEY ((tenant, vector_store_id), id))",
        // Which chunk tables (one per embedding dimension) hold a store's chunks.
        "CREATE TABLE IF NOT EXISTS {ks}.vs_chunk_dims (tenant text, vector_store_id text, \
         dims int, PRIMARY KEY ((tenant, vector_store_id), dims))",
    ],
};

/// A vector store's activity (`last_active_at`) in a column of its own, written alone (never
/// with the document), so a touch and a whole-document rewrite never undo each other. Null
/// (rows from before): the document's value stands.
const V2: Migration = Migration {
    version: 2,
    description: "vector store activity column",
    statements: &["ALTER TABLE {ks}.vector_stores ADD IF NOT EXISTS last_active_at bigint"],
};

/// The lock row's lifetime: long enough for any migration, short enough that a proxy that
/// died holding it delays the others by at most this.
const LOCK_TTL_SECS: i32 = 60;
/// How long a proxy waits for another one's migration before giving up (then it retries
/// on demand, like any connection failure).
const LOCK_WAIT: Duration = Duration::from_secs(90);
const LOCK_POLL: Duration = Duration::from_millis(250);
/// How long a new vector index may take to become queryable.
const INDEX_READY_WAIT: Duration = Duration::from_secs(60);

/// Brings the keyspace to the newest schema version.
pub(super) async fn migrate(
    conn: &Conn,
    replication: u32,
    create_keyspace: bool,
) -> StoreResult<()> {
    let ks = conn.keyspace.as_str();
    if !keyspace_exists(conn).await? {
        if !create_keyspace {
            return Err(StoreError::Unavailable(format!(
                "Cassandra: keyspace {ks} does not exist (and is not created here: on Astra it \
                 is made outside CQL; a store read from must already be there)"
            )));
        }
        // Astra creates keyspaces through its DevOps API and refuses this statement; the
        // existence check above keeps that case from ever running it.
        ddl(
            conn,
            &format!(
                "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = \
                 {{'class': 'SimpleStrategy', 'replication_factor': {replication}}}"
            ),
        )
        .await?;
    }
    if !table_exists(conn, "schema_migrations").await? {
        ddl(
            conn,
            &format!(
                "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (version int PRIMARY KEY, \
                 description text, applied_at timestamp, applied_by text)"
            ),
        )
        .await?;
    }
    if !table_exists(conn, "schema_lock").await? {
        ddl(
            conn,
            &format!(
                "CREATE TABLE IF NOT EXISTS {ks}.schema_lock (name text PRIMARY KEY, \
                 owner text, acquired_at timestamp)"
            ),
        )
        .await?;
    }
    agree(conn).await?;
    if pending(conn).await?.is_empty() {
        return Ok(());
    }
    with_lock(conn, async || {
        for m in pending(conn).await? {
            tracing::info!(
                keyspace = ks,
                version = m.version,
                "applying schema migration"
            );
            for statement in m.statements {
                ddl(conn, &statement.replace("{ks}", ks)).await?;
            }
            agree(conn).await?;
            let insert = format!(
                "INSERT INTO {} (version, description, applied_at, applied_by) \
                 VALUES (?, ?, toTimestamp(now()), ?) IF NOT EXISTS",
                conn.table("schema_migrations")
            );
            conn.lwt(&insert, (m.version, m.description, conn.instance.as_str()))
                .await?;
        }
        Ok(())
    })
    .await?;
    // Under the lock or not, leave only when every version is recorded.
    let left = pending(conn).await?;
    if let Some(m) = left.first() {
        return Err(StoreError::Other(format!(
            "Cassandra schema migration {} was not recorded",
            m.version
        )));
    }
    Ok(())
}

/// The migrations not yet recorded, in order. Read at SERIAL: the records are LWT writes.
async fn pending(conn: &Conn) -> StoreResult<Vec<&'static Migration>> {
    let mut p = conn
        .prepare(&format!(
            "SELECT version FROM {}",
            conn.table("schema_migrations")
        ))
        .await?;
    p.set_consistency(scylla::statement::Consistency::LocalSerial);
    let result = conn.exec_prepared(&p, ()).await?;
    let applied: Vec<(i32,)> = super::typed_rows(result)?;
    let newest = applied.iter().map(|(v,)| *v).max().unwrap_or(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if newest > known {
        tracing::warn!(
            keyspace = %conn.keyspace,
            newest,
            known,
            "the keyspace has schema versions newer than this proxy knows"
        );
    }
    Ok(MIGRATIONS
        .iter()
        .filter(|m| !applied.iter().any(|(v,)| *v == m.version))
        .collect())
}

/// Runs `work` holding the cluster-wide schema lock. A proxy that cannot take the lock
/// waits for the holder, then runs `work` itself (which finds nothing left to do, since
/// every step is idempotent and checked).
pub(super) async fn with_lock<T>(
    conn: &Conn,
    work: impl AsyncFnOnce() -> StoreResult<T>,
) -> StoreResult<T> {
    let claim = format!(
        "INSERT INTO {} (name, owner, acquired_at) VALUES ('schema', ?, toTimestamp(now())) \
         IF NOT EXISTS USING TTL {LOCK_TTL_SECS}",
        conn.table("schema_lock")
    );
    let owner = conn.instance.as_str();
    let started = Instant::now();
    loop {
        match conn.lwt(&claim, (owner,)).await? {
            Applied::Yes => break,
            // Unknown: our claim may have landed; reading the owner tells.
            Applied::Unknown if lock_owner(conn).await?.as_deref() == Some(owner) => break,
            Applied::No | Applied::Unknown => {}
        }
        if started.elapsed() > LOCK_WAIT {
            return Err(StoreError::Unavailable(format!(
                "Cassandra schema lock held by {} for over {}s",
                lock_owner(conn).await?.unwrap_or_default(),
                LOCK_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
    let outcome = work().await;
    let release = format!(
        "DELETE FROM {} WHERE name = 'schema' IF owner = ?",
        conn.table("schema_lock")
    );
    // A failed release only delays the next migration by the lock's TTL.
    if let Err(e) = conn.lwt(&release, (owner,)).await {
        tracing::warn!(error = %e, "releasing the Cassandra schema lock");
    }
    outcome
}

async fn lock_owner(conn: &Conn) -> StoreResult<Option<String>> {
    let mut p = conn
        .prepare(&format!(
            "SELECT owner FROM {} WHERE name = 'schema'",
            conn.table("schema_lock")
        ))
        .await?;
    p.set_consistency(scylla::statement::Consistency::LocalSerial);
    let rows: Vec<(Option<String>,)> = super::typed_rows(conn.exec_prepared(&p, ()).await?)?;
    Ok(rows.into_iter().next().and_then(|(o,)| o))
}

async fn keyspace_exists(conn: &Conn) -> StoreResult<bool> {
    let rows: Vec<(String,)> = conn
        .rows(
            "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
            (conn.keyspace.as_str(),),
        )
        .await?;
    Ok(!rows.is_empty())
}

pub(super) async fn table_exists(conn: &Conn, table: &str) -> StoreResult<bool> {
    let rows: Vec<(String,)> = conn
        .rows(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?",
            (conn.keyspace.as_str(), table),
        )
        .await?;
    Ok(!rows.is_empty())
}

async fn index_exists(conn: &Conn, table: &str, index: &str) -> StoreResult<bool> {
    let rows: Vec<(String,)> = conn
        .rows(
            "SELECT index_name FROM system_schema.indexes \
             WHERE keyspace_name = ? AND table_name = ? AND index_name = ?",
            (conn.keyspace.as_str(), table, index),
        )
        .await?;
    Ok(!rows.is_empty())
}

/// A schema statement (the only unprepared CQL; DDL takes no bind markers).
async fn ddl(conn: &Conn, cql: &str) -> StoreResult<()> {
    conn.session
        .query_unpaged(cql, ())
        .await
        .map_err(|e| fault("changing the schema", e))?;
    Ok(())
}

async fn agree(conn: &Conn) -> StoreResult<()> {
    conn.session
        .await_schema_agreement()
        .await
        .map_err(|e| fault("awaiting schema agreement", e))?;
    Ok(())
}

/// Name of the chunk table for one embedding dimension.
pub(super) fn chunk_table(dims: u32) -> String {
    format!("chunks_v{dims}")
}

/// Makes sure the chunk table for `dims` exists, has its vector index, and answers ANN
/// queries. Created on first use: one table per dimension because a `vector<float, N>`
/// column has a fixed N.
pub(super) async fn ensure_chunk_table(conn: &Conn, dims: u32) -> StoreResult<()> {
    if super::lock(&conn.chunk_tables).contains(&dims) {
        return Ok(());
    }
    let _one_at_a_time = conn.chunk_ddl.lock().await;
    if super::lock(&conn.chunk_tables).contains(&dims) {
        return Ok(());
    }
    let table = chunk_table(dims);
    let index = format!("{table}_ann");
    if !(table_exists(conn, &table).await? && index_exists(conn, &table, &index).await?) {
        let ks = conn.keyspace.as_str();
        with_lock(conn, async || {
            ddl(
                conn,
                &format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.{table} (tenant text, vector_store_id text, \
                     bucket int, file_id text, chunk_no int, content text, attributes text, \
                     embedding vector<float, {dims}>, \
                     PRIMARY KEY ((tenant, vector_store_id, bucket), file_id, chunk_no))"
                ),
            )
            .await?;
            // Created on the empty table, before any insert, so it has nothing to build.
            ddl(
                conn,
                &format!(
                    "CREATE CUSTOM INDEX IF NOT EXISTS {index} ON {ks}.{table} (embedding) \
                     USING 'StorageAttachedIndex' WITH OPTIONS = {{'similarity_function': 'cosine'}}"
                ),
            )
            .await?;
            agree(conn).await
        })
        .await?;
    }
    wait_queryable(conn, &table, dims).await?;
    super::lock(&conn.chunk_tables).insert(dims);
    Ok(())
}

/// Probes the index with an ANN query until it answers (a new SAI index is built
/// asynchronously and refuses queries until then).
async fn wait_queryable(conn: &Conn, table: &str, dims: u32) -> StoreResult<()> {
    let probe = format!(
        "SELECT chunk_no FROM {} WHERE tenant = '' AND vector_store_id = '' AND bucket = 0 \
         ORDER BY embedding ANN OF ? LIMIT 1",
        conn.table(table)
    );
    let mut unit = vec![0.0f32; dims as usize];
    if let Some(first) = unit.first_mut() {
        *first = 1.0;
    }
    let started = Instant::now();
    loop {
        match conn.exec(&probe, (&unit,)).await {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() < INDEX_READY_WAIT => {
                tracing::debug!(error = %e, table, "vector index not queryable yet");
                tokio::time::sleep(LOCK_POLL).await;
            }
            Err(e) => return Err(e),
        }
    }
}
