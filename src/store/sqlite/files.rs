//! `FileStore`: metadata documents keyed by (tenant, id) with `purpose` beside them, and the
//! content in pieces of at most 1 MiB (`file_parts`). Deleting a file removes, in one
//! transaction, its content, its memberships in every vector store and its chunks there.

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::types::Value as SqlValue;

use super::doc::{self, Table, key};
use super::{SqliteStore, chunks};
use crate::model::FileObject;
use crate::store::{FileStore, ListQuery, Page, StoreError, StoreResult, Tenant};

static FILES: Table = Table::new("files", &["id"], &["purpose"]);

/// The largest content piece: the contract's bound, which keeps every row's blob small
/// enough to read and write without holding a whole file in memory.
const MAX_PART: usize = 1 << 20;

#[async_trait]
impl FileStore for SqliteStore {
    async fn put_file(&self, t: &Tenant, f: &FileObject) -> StoreResult<()> {
        let extras = vec![SqlValue::Text(f.purpose.clone())];
        self.put_doc(&FILES, key(t, &[&f.id]), extras, f).await
    }

    async fn get_file(&self, t: &Tenant, id: &str) -> StoreResult<Option<FileObject>> {
        self.get_doc(&FILES, key(t, &[id])).await
    }

    async fn list_files(
        &self,
        t: &Tenant,
        purpose: Option<&str>,
        q: &ListQuery,
    ) -> StoreResult<Page<FileObject>> {
        let filters = purpose
            .map(|p| vec![("purpose", SqlValue::Text(p.to_owned()))])
            .unwrap_or_default();
        self.list_doc(&FILES, key(t, &[]), filters, q).await
    }

    async fn delete_file(&self, t: &Tenant, id: &str) -> StoreResult<bool> {
        let key = key(t, &[id]);
        self.db
            .write(move |tx| {
                let existed = doc::delete(tx.conn, &FILES, &key)?;
                let (tenant, file_id) = (&key[0], &key[1]);
                tx.conn
                    .prepare_cached("DELETE FROM file_parts WHERE tenant = ?1 AND file_id = ?2")?
                    .execute([tenant, file_id])?;
                tx.conn
                    .prepare_cached("DELETE FROM vs_files WHERE tenant = ?1 AND id = ?2")?
                    .execute([tenant, file_id])?;
                let stores: Vec<String> = tx
                    .conn
                    .prepare_cached(
                        "SELECT DISTINCT vs_id FROM chunks WHERE tenant = ?1 AND file_id = ?2",
                    )?
                    .query_map([tenant, file_id], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                for vs_id in stores {
                    chunks::remove_file_chunks(tx, tenant, &vs_id, file_id)?;
                }
                Ok(existed)
            })
            .await
    }

    async fn put_file_part(
        &self,
        t: &Tenant,
        file_id: &str,
        index: u32,
        data: Bytes,
    ) -> StoreResult<()> {
        if data.len() > MAX_PART {
            return Err(StoreError::Other(format!(
                "piece {index} of {file_id} is {} bytes; pieces are at most {MAX_PART}",
                data.len()
            )));
        }
        let key = key(t, &[file_id]);
        self.db
            .write(move |tx| {
                tx.conn
                    .prepare_cached(
                        "INSERT INTO file_parts (tenant, file_id, idx, data) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT (tenant, file_id, idx) DO UPDATE SET data = excluded.data",
                    )?
                    .execute(rusqlite::params![key[0], key[1], index, &data[..]])?;
                Ok(())
            })
            .await
    }

    async fn get_file_part(
        &self,
        t: &Tenant,
        file_id: &str,
        index: u32,
    ) -> StoreResult<Option<Bytes>> {
        let key = key(t, &[file_id]);
        self.db
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT data FROM file_parts WHERE tenant = ?1 AND file_id = ?2 AND idx = ?3",
                )?;
                let mut rows = stmt.query(rusqlite::params![key[0], key[1], index])?;
                match rows.next()? {
                    Some(row) => Ok(Some(Bytes::copy_from_slice(row.get_ref(0)?.as_blob()?))),
                    None => Ok(None),
                }
            })
            .await
    }
}
