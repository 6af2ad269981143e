//! `VectorStoreStore`: stores keyed by (tenant, id) with their activity (`last_active_at`)
//! in a column of its own, file memberships keyed by (tenant, vs_id, file_id) with `status`,
//! `batch_id`, `usage_bytes` and `created_at` (their list order) beside them, and batches
//! keyed by (tenant, vs_id, id). File counts and usage are aggregated from the memberships
//! on request; nothing is kept as a counter.

use async_trait::async_trait;
use rusqlite::Connection;
use rusqlite::types::Value as SqlValue;

use super::doc::{self, Scope, Table, key, opt_text};
use super::{DbError, Durability, SqliteStore, chunks};
use crate::model::{FileBatch, FileCounts, VectorStore, VectorStoreFile};
use crate::store::{
    ListQuery, Page, StoreError, StoreResult, Tenant, VectorStoreStore, VsFileFilter, VsFileQuery,
    apply_activity,
};

static STORES: Table = Table::new("vector_stores", &["id"], &[]);
static MEMBERS: Table = Table::new(
    "vs_files",
    &["vs_id", "id"],
    &["status", "batch_id", "usage_bytes", "created_at"],
);
static BATCHES: Table = Table::new("vs_batches", &["vs_id", "id"], &[]);

/// Adds `n` files of `status` (the statuses `FileCounts::count` knows; others only count in
/// the total, as there).
fn add_counts(counts: &mut FileCounts, status: &str, n: u64) {
    match status {
        "in_progress" => counts.in_progress += n,
        "completed" => counts.completed += n,
        "failed" => counts.failed += n,
        "cancelled" => counts.cancelled += n,
        _ => {}
    }
    counts.total += n;
}

/// A store row with its activity column applied.
fn read_store(conn: &Connection, key: &[String]) -> Result<Option<VectorStore>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT body, last_active_at FROM vector_stores WHERE tenant = ?1 AND id = ?2",
    )?;
    let mut rows = stmt.query(rusqlite::params_from_iter(key))?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let mut vs: VectorStore = serde_json::from_str(row.get_ref(0)?.as_str()?)?;
    apply_activity(&mut vs, row.get(1)?);
    Ok(Some(vs))
}

/// One page of a store's files in attach order: a range of `(created_at, id)` over the
/// `vs_files_created` index (or the status or batch one, which order the same way), read
/// `limit + 1` rows deep.
fn list_members(
    conn: &Connection,
    key: &[String],
    filter: &VsFileFilter,
    q: &VsFileQuery,
) -> Result<Page<VectorStoreFile>, DbError> {
    let mut sql = String::from("SELECT body FROM vs_files WHERE tenant = ?1 AND vs_id = ?2");
    let mut params: Vec<SqlValue> = key.iter().map(|k| SqlValue::Text(k.clone())).collect();
    for (col, value) in [("status", &filter.status), ("batch_id", &filter.batch_id)] {
        if let Some(v) = value {
            params.push(SqlValue::Text(v.clone()));
            sql.push_str(&format!(" AND {col} = ?{}", params.len()));
        }
    }
    let (lower, upper) = q.bounds();
    for (op, bound) in [(">", lower), ("<", upper)] {
        if let Some(pos) = bound {
            params.push(SqlValue::Integer(pos.created_at));
            params.push(SqlValue::Text(pos.file_id.clone()));
            sql.push_str(&format!(
                " AND (created_at, id) {op} (?{}, ?{})",
                params.len() - 1,
                params.len()
            ));
        }
    }
    let dir = if q.ascending() { "ASC" } else { "DESC" };
    params.push(SqlValue::Integer(
        i64::try_from(q.limit.saturating_add(1)).unwrap_or(i64::MAX),
    ));
    sql.push_str(&format!(
        " ORDER BY created_at {dir}, id {dir} LIMIT ?{}",
        params.len()
    ));
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(serde_json::from_str(row.get_ref(0)?.as_str()?)?);
    }
    Ok(Page::from_rows(out, q.limit, q.reversed()))
}

#[async_trait]
impl VectorStoreStore for SqliteStore {
    async fn put_vector_store(&self, t: &Tenant, vs: &VectorStore) -> StoreResult<()> {
        // `VectorStore` serializes its internal fields (embedding model, dimension) itself;
        // the API layer leaves them out of the wire object.
        self.put_doc(&STORES, key(t, &[&vs.id]), vec![], vs).await
    }

    async fn get_vector_store(&self, t: &Tenant, id: &str) -> StoreResult<Option<VectorStore>> {
        let key = key(t, &[id]);
        self.db.read(move |conn| read_store(conn, &key)).await
    }

    async fn list_vector_stores(
        &self,
        t: &Tenant,
        q: &ListQuery,
    ) -> StoreResult<Page<VectorStore>> {
        let tenant = key(t, &[]);
        let q = q.clone();
        self.db
            .read(move |conn| {
                let scope = Scope {
                    key: &tenant,
                    filters: &[],
                };
                let mut page: Page<VectorStore> = doc::list(conn, &STORES, &scope, &q)?;
                // A page is at most 100 stores: one indexed lookup each for the activity.
                let mut stmt = conn.prepare_cached(
                    "SELECT last_active_at FROM vector_stores WHERE tenant = ?1 AND id = ?2",
                )?;
                for vs in &mut page.items {
                    let mut rows = stmt.query([&tenant[0], &vs.id])?;
                    if let Some(row) = rows.next()? {
                        apply_activity(vs, row.get(0)?);
                    }
                }
                Ok(page)
            })
            .await
    }

    async fn touch_vector_store(&self, t: &Tenant, id: &str, at: i64) -> StoreResult<()> {
        let key = key(t, &[id]);
        // Bookkeeping: a power cut may lose its last moments (the next durable write keeps
        // them), which is not worth an fsync of its own.
        self.db
            .write_with(Durability::Progress, move |tx| {
                tx.conn
                    .prepare_cached(
                        "UPDATE vector_stores SET last_active_at = ?3 WHERE tenant = ?1 \
                         AND id = ?2 AND (last_active_at IS NULL OR last_active_at < ?3)",
                    )?
                    .execute(rusqlite::params![key[0], key[1], at])?;
                Ok(())
            })
            .await
    }

    async fn delete_vector_store(&self, t: &Tenant, id: &str) -> StoreResult<bool> {
        let key = key(t, &[id]);
        self.db
            .write(move |tx| {
                let existed = doc::delete(tx.conn, &STORES, &key)?;
                for sql in [
                    "DELETE FROM vs_files WHERE tenant = ?1 AND vs_id = ?2",
                    "DELETE FROM vs_batches WHERE tenant = ?1 AND vs_id = ?2",
                ] {
                    tx.conn.prepare_cached(sql)?.execute([&key[0], &key[1]])?;
                }
                chunks::drop_store_chunks(tx, &key[0], &key[1])?;
                Ok(existed)
            })
            .await
    }

    async fn put_vs_file(&self, t: &Tenant, f: &VectorStoreFile) -> StoreResult<()> {
        let usage = i64::try_from(f.usage_bytes).map_err(|_| {
            StoreError::Other(format!("usage_bytes {} out of range", f.usage_bytes))
        })?;
        let extras = vec![
            SqlValue::Text(f.status.clone()),
            opt_text(f.batch_id.as_deref()),
            SqlValue::Integer(usage),
            SqlValue::Integer(f.created_at),
        ];
        self.put_doc(&MEMBERS, key(t, &[&f.vector_store_id, &f.id]), extras, f)
            .await
    }

    async fn get_vs_file(
        &self,
        t: &Tenant,
        vs_id: &str,
        file_id: &str,
    ) -> StoreResult<Option<VectorStoreFile>> {
        self.get_doc(&MEMBERS, key(t, &[vs_id, file_id])).await
    }

    async fn list_vs_files(
        &self,
        t: &Tenant,
        vs_id: &str,
        filter: &VsFileFilter,
        q: &VsFileQuery,
    ) -> StoreResult<Page<VectorStoreFile>> {
        let key = key(t, &[vs_id]);
        let filter = filter.clone();
        let q = q.clone();
        self.db
            .read(move |conn| list_members(conn, &key, &filter, &q))
            .await
    }

    async fn delete_vs_file(&self, t: &Tenant, vs_id: &str, file_id: &str) -> StoreResult<bool> {
        let key = key(t, &[vs_id, file_id]);
        self.db
            .write(move |tx| {
                let existed = doc::delete(tx.conn, &MEMBERS, &key)?;
                chunks::remove_file_chunks(tx, &key[0], &key[1], &key[2])?;
                Ok(existed)
            })
            .await
    }

    async fn count_vs_files(
        &self,
        t: &Tenant,
        vs_id: &str,
        batch_id: Option<&str>,
    ) -> StoreResult<(FileCounts, u64)> {
        let key = key(t, &[vs_id]);
        let batch_id = batch_id.map(str::to_owned);
        // A count over every file of the store: thousands of rows for a large one.
        self.db
            .read_long(move |conn| {
                let mut stmt = match batch_id {
                    None => conn.prepare_cached(
                        "SELECT status, COUNT(*), SUM(usage_bytes) FROM vs_files \
                         WHERE tenant = ?1 AND vs_id = ?2 GROUP BY status",
                    )?,
                    Some(_) => conn.prepare_cached(
                        "SELECT status, COUNT(*), SUM(usage_bytes) FROM vs_files \
                         WHERE tenant = ?1 AND vs_id = ?2 AND batch_id = ?3 GROUP BY status",
                    )?,
                };
                let mut params: Vec<&dyn rusqlite::ToSql> = vec![&key[0], &key[1]];
                if let Some(b) = &batch_id {
                    params.push(b);
                }
                let mut rows = stmt.query(&*params)?;
                let (mut counts, mut usage) = (FileCounts::default(), 0u64);
                while let Some(row) = rows.next()? {
                    let n: i64 = row.get(1)?;
                    let bytes: i64 = row.get(2)?;
                    add_counts(&mut counts, row.get_ref(0)?.as_str()?, n.unsigned_abs());
                    usage = usage.saturating_add(bytes.unsigned_abs());
                }
                Ok((counts, usage))
            })
            .await
    }

    async fn put_batch(&self, t: &Tenant, b: &FileBatch) -> StoreResult<()> {
        self.put_doc(&BATCHES, key(t, &[&b.vector_store_id, &b.id]), vec![], b)
            .await
    }

    async fn get_batch(&self, t: &Tenant, vs_id: &str, id: &str) -> StoreResult<Option<FileBatch>> {
        self.get_doc(&BATCHES, key(t, &[vs_id, id])).await
    }
}
