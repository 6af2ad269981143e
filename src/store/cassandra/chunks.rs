//! Chunks and vector search.
//!
//! One table per embedding dimension (`chunks_v{N}`, a `vector<float, N>` column with a
//! cosine SAI index), created on first use by `schema::ensure_chunk_table`; `vs_chunk_dims`
//! records which of them hold a store's chunks. Rows are partitioned by
//! `(tenant, vector_store_id, bucket)` with `bucket = hash(file_id) % BUCKETS`, clustered by
//! `(file_id, chunk_no)`: a file's chunks are one clustering slice (listed in order, replaced
//! with one range delete), and a store is a few partitions.
//!
//! Search runs one partition-scoped ANN query per (store, bucket), concurrently, each
//! returning `similarity_cosine` so results merge by score. Attribute filters are applied
//! after ANN: a partition is over-fetched and, if too few of its rows pass, re-read with a
//! larger limit (ANN `LIMIT` tops out at 1000).
//!
//! A cosine index rejects all-zero (and non-finite) vectors, so such a chunk is stored
//! without its embedding: it is listed with its file but never found by search.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use futures_util::{StreamExt, stream};
use scylla::statement::Consistency;
use scylla::statement::batch::{Batch, BatchType};
use tokio::sync::Semaphore;

use super::schema::{chunk_table, ensure_chunk_table};
use super::{CassandraStore, Conn, error_text, fault, fnv32, from_json, lock, to_json};
use crate::model::{AttributeFilter, Attributes, Chunk, ScoredChunk};
use crate::store::{ChunkStore, StoreError, StoreResult, Tenant};

/// Partitions per store and dimension. A file's chunks stay in one partition; more buckets
/// spread a big store (keeping partitions well under ~100 MB at 1536 dims) at the price of
/// one more concurrent query per search.
const BUCKETS: u32 = 4;
/// Inserts in flight per chunk table from this process. Cassandra 5.0.9's jvector fails
/// concurrent inserts into a vector-indexed table beyond CPUs + 1 ("Number of outstanding
/// pooled objects has gone beyond the limit"); the node caps concurrent_writes at 3, and we
/// stay below it.
const WRITERS_PER_TABLE: usize = 2;
/// Retries of an insert that hit that limit (or a timeout), with growing pauses.
const INSERT_ATTEMPTS: u32 = 8;
/// Cassandra refuses ANN queries with a larger LIMIT.
const ANN_LIMIT_MAX: usize = 1000;
/// First over-fetch factor when a filter will drop rows after ANN; grows by this factor.
const FILTER_OVERFETCH: usize = 4;
/// The largest `vector<float, N>` Cassandra accepts.
const MAX_DIMS: usize = 8192;

/// Rows per insert batch: ~6 KiB of vector each at 1536 dims, so a batch stays well under
/// the native protocol's frame and the commit log's mutation limits.
const INSERT_BATCH_ROWS: usize = 16;

/// `(tenant, vector_store_id, bucket, file_id, chunk_no, content, attributes, embedding)`.
type ChunkRow = (
    String,
    String,
    i32,
    String,
    i32,
    String,
    String,
    Option<Vec<f32>>,
);

/// `(file_id, chunk_no, content, attributes, similarity)` of an ANN result row.
type AnnRow = (String, i32, Option<String>, Option<String>, Option<f32>);

pub(super) fn bucket(file_id: &str) -> i32 {
    // < BUCKETS, so the cast is lossless.
    (fnv32(file_id) % BUCKETS) as i32
}

/// Whether a vector can be stored in / searched with a cosine index.
fn indexable(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite()) && v.iter().any(|x| *x != 0.0)
}

impl Conn {
    /// The embedding dimensions a store has chunks in.
    async fn store_dims(&self, t: &Tenant, vs_id: &str) -> StoreResult<Vec<u32>> {
        let cql = format!(
            "SELECT dims FROM {} WHERE tenant = ? AND vector_store_id = ?",
            self.table("vs_chunk_dims")
        );
        let rows: Vec<(i32,)> = self.rows(&cql, (t.as_str(), vs_id)).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(d,)| u32::try_from(d).ok())
            .collect())
    }

    fn writers(&self, dims: u32) -> Arc<Semaphore> {
        lock(&self.chunk_writers)
            .entry(dims)
            .or_insert_with(|| Arc::new(Semaphore::new(WRITERS_PER_TABLE)))
            .clone()
    }

    /// A write into a chunk table, within the table's writer limit, retried through the
    /// jvector pooled-object error and timeouts (chunk writes are idempotent).
    async fn chunk_write<F, Fut>(&self, dims: u32, write: F) -> StoreResult<()>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = StoreResult<()>>,
    {
        let writers = self.writers(dims);
        let mut attempt = 0;
        loop {
            let outcome = {
                let _permit = writers
                    .acquire()
                    .await
                    .map_err(|_| StoreError::Other("chunk writer limit closed".into()))?;
                write().await
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(e) if attempt + 1 < INSERT_ATTEMPTS && retryable_write(&e) => {
                    tracing::debug!(error = %e, attempt, "retrying a chunk write");
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Inserts rows of one partition as one unlogged batch: a single mutation, so one
    /// write in flight on the node however many rows it carries, and one round trip.
    /// (Single-partition batches are exempt from the batch size guardrail.)
    async fn insert_chunk_rows(
        &self,
        dims: u32,
        insert: &str,
        rows: &[ChunkRow],
    ) -> StoreResult<()> {
        let p = self.prepare(insert).await?;
        let mut batch = Batch::new(BatchType::Unlogged);
        // Plain upserts of fixed values: the driver may resend the batch to another node
        // when one is lost mid-request.
        batch.set_is_idempotent(true);
        for _ in rows {
            batch.append_statement(p.clone());
        }
        self.chunk_write(dims, || async {
            self.session
                .batch(&batch, rows)
                .await
                .map(|_| ())
                .map_err(|e| fault("inserting chunks", e))
        })
        .await
    }

    /// Deletes a file's chunks from a store, in every dimension the store has.
    pub(super) async fn delete_file_chunks(
        &self,
        t: &Tenant,
        vs_id: &str,
        file_id: &str,
    ) -> StoreResult<()> {
        for dims in self.store_dims(t, vs_id).await? {
            let cql = format!(
                "DELETE FROM {} WHERE tenant = ? AND vector_store_id = ? AND bucket = ? AND file_id = ?",
                self.table(&chunk_table(dims))
            );
            self.exec(&cql, (t.as_str(), vs_id, bucket(file_id), file_id))
                .await?;
        }
        Ok(())
    }

    /// Deletes every chunk of a store (whole partitions) and its dimension records.
    pub(super) async fn delete_store_chunks(&self, t: &Tenant, vs_id: &str) -> StoreResult<()> {
        for dims in self.store_dims(t, vs_id).await? {
            let cql = format!(
                "DELETE FROM {} WHERE tenant = ? AND vector_store_id = ? AND bucket = ?",
                self.table(&chunk_table(dims))
            );
            for b in 0..BUCKETS as i32 {
                self.exec(&cql, (t.as_str(), vs_id, b)).await?;
            }
        }
        let cql = format!(
            "DELETE FROM {} WHERE tenant = ? AND vector_store_id = ?",
            self.table("vs_chunk_dims")
        );
        self.exec(&cql, (t.as_str(), vs_id)).await?;
        Ok(())
    }

    /// `(chunk_no, content, attributes)` of a file in one chunk table, in order.
    async fn chunk_rows(
        &self,
        t: &Tenant,
        vs_id: &str,
        file_id: &str,
        dims: u32,
    ) -> StoreResult<Vec<(i32, Option<String>, Option<String>)>> {
        let cql = format!(
            "SELECT chunk_no, content, attributes FROM {} \
             WHERE tenant = ? AND vector_store_id = ? AND bucket = ? AND file_id = ?",
            self.table(&chunk_table(dims))
        );
        let mut rows = Vec::new();
        self.scan(&cql, (t.as_str(), vs_id, bucket(file_id), file_id), |r| {
            rows.push(r);
            true
        })
        .await?;
        Ok(rows)
    }

    /// The best `k` chunks of one (store, bucket) partition that pass `filter`, over-fetching
    /// and re-reading as the filter requires.
    async fn search_partition(
        &self,
        s: &Search<'_>,
        vs_id: &str,
        b: i32,
    ) -> StoreResult<Vec<ScoredChunk>> {
        let Search {
            t,
            dims,
            query,
            k,
            filter,
        } = *s;
        let cql = format!(
            "SELECT file_id, chunk_no, content, attributes, similarity_cosine(embedding, ?) \
             FROM {} WHERE tenant = ? AND vector_store_id = ? AND bucket = ? \
             ORDER BY embedding ANN OF ? LIMIT ?",
            self.table(&chunk_table(dims))
        );
        let mut p = self.prepare(&cql).await?;
        // Cassandra runs ANN reads at (LOCAL_)ONE whatever is asked, with a warning; asking
        // for it directly avoids the warning.
        p.set_consistency(Consistency::LocalOne);
        let mut limit = if filter.is_some() {
            k.saturating_mul(FILTER_OVERFETCH)
        } else {
            k
        };
        limit = limit.clamp(1, ANN_LIMIT_MAX);
        loop {
            let bound = i32::try_from(limit).unwrap_or(i32::MAX);
            let result = self
                .exec_prepared(&p, (query, t.as_str(), vs_id, b, query, bound))
                .await?;
            let rows: Vec<AnnRow> = super::typed_rows(result)?;
            let fetched = rows.len();
            let mut hits = Vec::new();
            for (file_id, chunk_no, content, attributes, score) in rows {
                let attributes: Attributes = match attributes {
                    Some(a) => from_json(&a)?,
                    None => Attributes::new(),
                };
                if filter.is_some_and(|f| !f.matches(&attributes)) {
                    continue;
                }
                hits.push(ScoredChunk {
                    vector_store_id: vs_id.to_owned(),
                    file_id,
                    index: u32::try_from(chunk_no).unwrap_or(0),
                    text: content.unwrap_or_default(),
                    attributes,
                    // similarity_cosine is (1 + cos) / 2; the store speaks plain cosine.
                    score: score.map_or(-1.0, |s| 2.0 * s - 1.0),
                });
            }
            if hits.len() >= k || fetched < limit || limit >= ANN_LIMIT_MAX {
                hits.truncate(k);
                return Ok(hits);
            }
            limit = limit.saturating_mul(FILTER_OVERFETCH).min(ANN_LIMIT_MAX);
        }
    }
}

/// One search, as every partition query of it sees it.
#[derive(Clone, Copy)]
struct Search<'a> {
    t: &'a Tenant,
    dims: u32,
    query: &'a [f32],
    k: usize,
    filter: Option<&'a AttributeFilter>,
}

fn retryable_write(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(_)) || error_text(e).contains("outstanding pooled objects")
}

#[async_trait]
impl ChunkStore for CassandraStore {
    async fn put_chunks(
        &self,
        t: &Tenant,
        vs_id: &str,
        file_id: &str,
        chunks: Vec<Chunk>,
    ) -> StoreResult<()> {
        let conn = self.conn().await?;
        let Some(first) = chunks.first() else {
            return conn.delete_file_chunks(t, vs_id, file_id).await;
        };
        let n = first.embedding.len();
        if n == 0 || n > MAX_DIMS || chunks.iter().any(|c| c.embedding.len() != n) {
            return Err(StoreError::Other(format!(
                "chunks of {file_id} must share one embedding dimension in 1..={MAX_DIMS}"
            )));
        }
        // ≤ MAX_DIMS, so lossless.
        let dims = n as u32;
        ensure_chunk_table(&conn, dims).await?;
        let register = format!(
            "INSERT INTO {} (tenant, vector_store_id, dims) VALUES (?, ?, ?)",
            conn.table("vs_chunk_dims")
        );
        conn.exec(&register, (t.as_str(), vs_id, dims as i32))
            .await?;
        // Replace: drop what the file had (in any dimension), then insert. Client-side
        // monotonic timestamps order the inserts after the range delete.
        conn.delete_file_chunks(t, vs_id, file_id).await?;
        let insert = format!(
            "INSERT INTO {} (tenant, vector_store_id, bucket, file_id, chunk_no, content, \
             attributes, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            conn.table(&chunk_table(dims))
        );
        let b = bucket(file_id);
        let skipped = chunks.iter().filter(|c| !indexable(&c.embedding)).count();
        if skipped > 0 {
            tracing::warn!(
                file_id,
                skipped,
                "chunks with a zero or non-finite embedding are kept but not searchable"
            );
        }
        let rows = chunks
            .into_iter()
            .map(|c| {
                let chunk_no = i32::try_from(c.index)
                    .map_err(|_| StoreError::Other(format!("chunk index {} too large", c.index)))?;
                let attributes = to_json(&c.attributes)?;
                let embedding = indexable(&c.embedding).then_some(c.embedding);
                Ok((
                    t.as_str().to_owned(),
                    vs_id.to_owned(),
                    b,
                    file_id.to_owned(),
                    chunk_no,
                    c.text,
                    attributes,
                    embedding,
                ))
            })
            .collect::<StoreResult<Vec<ChunkRow>>>()?;
        let (conn, insert) = (&conn, insert.as_str());
        let results: Vec<StoreResult<()>> =
            stream::iter((0..rows.len()).step_by(INSERT_BATCH_ROWS))
                .map(|start| {
                    let end = (start + INSERT_BATCH_ROWS).min(rows.len());
                    conn.insert_chunk_rows(dims, insert, &rows[start..end])
                })
                .buffer_unordered(WRITERS_PER_TABLE)
                .collect()
                .await;
        results.into_iter().collect()
    }

    async fn delete_chunks(&self, t: &Tenant, vs_id: &str, file_id: &str) -> StoreResult<()> {
        self.conn()
            .await?
            .delete_file_chunks(t, vs_id, file_id)
            .await
    }

    async fn file_chunks(&self, t: &Tenant, vs_id: &str, file_id: &str) -> StoreResult<Vec<Chunk>> {
        let conn = self.conn().await?;
        let mut out = Vec::new();
        for dims in conn.store_dims(t, vs_id).await? {
            for (chunk_no, content, attributes) in conn.chunk_rows(t, vs_id, file_id, dims).await? {
                out.push(Chunk {
                    vector_store_id: vs_id.to_owned(),
                    file_id: file_id.to_owned(),
                    index: u32::try_from(chunk_no).unwrap_or(0),
                    text: content.unwrap_or_default(),
                    embedding: Vec::new(),
                    attributes: match attributes {
                        Some(a) => from_json(&a)?,
                        None => Attributes::new(),
                    },
                });
            }
        }
        out.sort_by_key(|c| c.index);
        Ok(out)
    }

    async fn set_chunk_attributes(
        &self,
        t: &Tenant,
        vs_id: &str,
        file_id: &str,
        attributes: &Attributes,
    ) -> StoreResult<()> {
        let conn = self.conn().await?;
        let json = to_json(attributes)?;
        for dims in conn.store_dims(t, vs_id).await? {
            let update = format!(
                "UPDATE {} SET attributes = ? WHERE tenant = ? AND vector_store_id = ? \
                 AND bucket = ? AND file_id = ? AND chunk_no = ?",
                conn.table(&chunk_table(dims))
            );
            let rows = conn.chunk_rows(t, vs_id, file_id, dims).await?;
            let (conn, update, json) = (&conn, update.as_str(), json.as_str());
            let results: Vec<StoreResult<()>> = stream::iter(rows)
                .map(|(chunk_no, _, _)| async move {
                    let values = (json, t.as_str(), vs_id, bucket(file_id), file_id, chunk_no);
                    conn.chunk_write(dims, || async {
                        conn.exec(update, values).await.map(|_| ())
                    })
                    .await
                })
                .buffer_unordered(WRITERS_PER_TABLE)
                .collect()
                .await;
            results.into_iter().collect::<StoreResult<()>>()?;
        }
        Ok(())
    }

    async fn search(
        &self,
        t: &Tenant,
        vs_ids: &[String],
        query: &[f32],
        k: usize,
        filter: Option<&AttributeFilter>,
    ) -> StoreResult<Vec<ScoredChunk>> {
        // Cosine similarity is undefined for a zero query; nothing is similar to it.
        if k == 0 || vs_ids.is_empty() || query.len() > MAX_DIMS || !indexable(query) {
            return Ok(Vec::new());
        }
        let conn = self.conn().await?;
        let dims = query.len() as u32;
        let unique: HashSet<&str> = vs_ids.iter().map(String::as_str).collect();
        let mut stores = Vec::new();
        for vs in unique {
            if conn.store_dims(t, vs).await?.contains(&dims) {
                stores.push(vs);
            }
        }
        if stores.is_empty() {
            return Ok(Vec::new());
        }
        ensure_chunk_table(&conn, dims).await?;
        let conn = &conn;
        let spec = Search {
            t,
            dims,
            query,
            k,
            filter,
        };
        let parts = stores
            .iter()
            .flat_map(|vs| (0..BUCKETS as i32).map(move |b| (*vs, b)))
            .map(|(vs, b)| conn.search_partition(&spec, vs, b));
        let mut hits = Vec::new();
        for part in join_all(parts).await {
            hits.extend(part?);
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(k);
        Ok(hits)
    }
}
