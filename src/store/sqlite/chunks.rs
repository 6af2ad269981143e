//! `ChunkStore`: chunk rows keyed by (tenant, vs_id, file_id, idx) with the embedding as a
//! little-endian f32 blob, and the helpers every chunk-changing transaction uses (they bump
//! the store's epoch and queue the in-memory index change; see `search.rs`). Search itself
//! is in `search.rs`.

use async_trait::async_trait;

use super::index::decode_f32;
use super::kernel::MAX_DIMS;
use super::search::{IndexOp, StoreKey};
use super::{DbError, SqliteStore, Tx};
use crate::model::{AttributeFilter, Attributes, Chunk, ScoredChunk};
use crate::store::{ChunkStore, StoreError, StoreResult, Tenant};

/// Bumps the store's chunk epoch; returns the new one.
fn bump_epoch(tx: &Tx<'_>, tenant: &str, vs_id: &str) -> Result<i64, DbError> {
    Ok(tx
        .conn
        .prepare_cached(
            "INSERT INTO vs_epochs (tenant, vs_id, epoch) VALUES (?1, ?2, 1) \
             ON CONFLICT (tenant, vs_id) DO UPDATE SET epoch = epoch + 1 RETURNING epoch",
        )?
        .query_row([tenant, vs_id], |r| r.get(0))?)
}

fn store_key(tenant: &str, vs_id: &str) -> StoreKey {
    (tenant.to_owned(), vs_id.to_owned())
}

/// Deletes a file's chunks in one store (if it has any).
pub(super) fn remove_file_chunks(
    tx: &mut Tx<'_>,
    tenant: &str,
    vs_id: &str,
    file_id: &str,
) -> Result<(), DbError> {
    let n = tx
        .conn
        .prepare_cached("DELETE FROM chunks WHERE tenant = ?1 AND vs_id = ?2 AND file_id = ?3")?
        .execute([tenant, vs_id, file_id])?;
    if n > 0 {
        let epoch = bump_epoch(tx, tenant, vs_id)?;
        tx.index_op(IndexOp::RemoveFile {
            key: store_key(tenant, vs_id),
            epoch,
            file_id: file_id.to_owned(),
        });
    }
    Ok(())
}

/// Deletes every chunk of a store and its epoch (the store is going away).
pub(super) fn drop_store_chunks(tx: &mut Tx<'_>, tenant: &str, vs_id: &str) -> Result<(), DbError> {
    for sql in [
        "DELETE FROM chunks WHERE tenant = ?1 AND vs_id = ?2",
        "DELETE FROM vs_epochs WHERE tenant = ?1 AND vs_id = ?2",
    ] {
        tx.conn.prepare_cached(sql)?.execute([tenant, vs_id])?;
    }
    tx.index_op(IndexOp::DropStore {
        key: store_key(tenant, vs_id),
    });
    Ok(())
}

fn encode_attributes(a: &Attributes) -> StoreResult<String> {
    serde_json::to_string(a)
        .map_err(|e| StoreError::Other(format!("cannot encode attributes: {e}")))
}

#[async_trait]
impl ChunkStore for SqliteStore {
    async fn put_chunks(
        &self,
        t: &Tenant,
        vs_id: &str,
        file_id: &str,
        chunks: Vec<Chunk>,
    ) -> StoreResult<()> {
        if let Some(c) = chunks.iter().find(|c| c.embedding.len() > MAX_DIMS) {
            return Err(StoreError::Other(format!(
                "chunk {} of {file_id} has {} dimensions; at most {MAX_DIMS} are supported",
                c.index,
                c.embedding.len()
            )));
        }
        // The file's attributes: the same on every chunk (they are copied from the file).
        let attributes = chunks
            .first()
            .map(|c| c.attributes.clone())
            .unwrap_or_default();
        let rows = chunks
            .iter()
            .map(|c| {
                let attrs = if c.attributes == attributes {
                    None
                } else {
                    Some(encode_attributes(&c.attributes)?)
                };
                let blob: Vec<u8> = c.embedding.iter().flat_map(|x| x.to_le_bytes()).collect();
                Ok((attrs, blob))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let shared_attrs = encode_attributes(&attributes)?;
        let (tenant, vs_id, file_id) =
            (t.as_str().to_owned(), vs_id.to_owned(), file_id.to_owned());
        self.db
            .write(move |tx| {
                tx.conn
                    .prepare_cached(
                        "DELETE FROM chunks WHERE tenant = ?1 AND vs_id = ?2 AND file_id = ?3",
                    )?
                    .execute([&tenant, &vs_id, &file_id])?;
                let mut insert = tx.conn.prepare_cached(
                    "INSERT INTO chunks (tenant, vs_id, file_id, idx, text, attributes, embedding) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                let mut vectors = Vec::with_capacity(chunks.len());
                let mut odd_attributes = false;
                for (c, (attrs, blob)) in chunks.into_iter().zip(rows) {
                    odd_attributes |= attrs.is_some();
                    let attrs = attrs.as_deref().unwrap_or(&shared_attrs);
                    insert.execute(rusqlite::params![
                        tenant, vs_id, file_id, c.index, c.text, attrs, blob
                    ])?;
                    vectors.push((tx.conn.last_insert_rowid(), c.embedding));
                }
                drop(insert);
                let epoch = bump_epoch(tx, &tenant, &vs_id)?;
                let key = store_key(&tenant, &vs_id);
                if odd_attributes {
                    // Chunks of one file with different attributes do not happen through
                    // the service; should they, the index is rebuilt from the rows rather
                    // than taught a second grouping rule.
                    tx.index_op(IndexOp::DropStore { key });
                } else {
                    tx.index_op(IndexOp::ReplaceFile {
                        key,
                        epoch,
                        file_id,
                        attributes,
                        vectors,
                    });
                }
                Ok(())
            })
            .await
    }

    async fn delete_chunks(&self, t: &Tenant, vs_id: &str, file_id: &str) -> StoreResult<()> {
        let (tenant, vs_id, file_id) =
            (t.as_str().to_owned(), vs_id.to_owned(), file_id.to_owned());
        self.db
            .write(move |tx| remove_file_chunks(tx, &tenant, &vs_id, &file_id))
            .await
    }

    async fn file_chunks(&self, t: &Tenant, vs_id: &str, file_id: &str) -> StoreResult<Vec<Chunk>> {
        let (tenant, vs_id, file_id) =
            (t.as_str().to_owned(), vs_id.to_owned(), file_id.to_owned());
        self.db
            .read_long(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT idx, text, attributes, embedding FROM chunks \
                     WHERE tenant = ?1 AND vs_id = ?2 AND file_id = ?3 ORDER BY idx",
                )?;
                let mut rows = stmt.query([&tenant, &vs_id, &file_id])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let mut embedding = Vec::new();
                    decode_f32(row.get_ref(3)?.as_blob()?, &mut embedding);
                    out.push(Chunk {
                        vector_store_id: vs_id.clone(),
                        file_id: file_id.clone(),
                        index: row.get(0)?,
                        text: row.get(1)?,
                        embedding,
                        attributes: serde_json::from_str(row.get_ref(2)?.as_str()?)?,
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn set_chunk_attributes(
        &self,
        t: &Tenant,
        vs_id: &str,
        file_id: &str,
        attributes: &Attributes,
    ) -> StoreResult<()> {
        let json = encode_attributes(attributes)?;
        let attributes = attributes.clone();
        let (tenant, vs_id, file_id) =
            (t.as_str().to_owned(), vs_id.to_owned(), file_id.to_owned());
        self.db
            .write(move |tx| {
                let n = tx
                    .conn
                    .prepare_cached(
                        "UPDATE chunks SET attributes = ?1 \
                         WHERE tenant = ?2 AND vs_id = ?3 AND file_id = ?4",
                    )?
                    .execute([&json, &tenant, &vs_id, &file_id])?;
                if n > 0 {
                    let epoch = bump_epoch(tx, &tenant, &vs_id)?;
                    tx.index_op(IndexOp::SetAttributes {
                        key: store_key(&tenant, &vs_id),
                        epoch,
                        file_id,
                        attributes,
                    });
                }
                Ok(())
            })
            .await
    }

    async fn search(
        &self,
        t: &Tenant,
        vs_ids: &[String],
        query: &[f32],
        k: usize,
        filter: Option<&AttributeFilter>,
    ) -> StoreResult<Vec<ScoredChunk>> {
        if k == 0 || vs_ids.is_empty() {
            return Ok(Vec::new());
        }
        let index = self.db.index();
        let tenant = t.as_str().to_owned();
        let vs_ids = vs_ids.to_vec();
        let query = query.to_vec();
        let filter = filter.cloned();
        self.db
            .read_long(move |conn| index.search(conn, &tenant, &vs_ids, &query, k, filter.as_ref()))
            .await
    }
}
