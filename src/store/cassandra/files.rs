//! Files: metadata documents in the tenant's partition, content in ≤ 1 MiB rows of the
//! file's own partition. `file_memberships` records the stores a file belongs to, so
//! deleting a file finds its chunks and memberships without scanning stores.

use async_trait::async_trait;
use bytes::Bytes;

use super::docs::DocTable;
use super::{CassandraStore, Conn};
use crate::model::FileObject;
use crate::store::{FileStore, ListQuery, Page, StoreResult, Tenant};

const FILES: DocTable = DocTable {
    name: "files",
    keys: &["tenant", "id"],
};

impl Conn {
    /// The stores a file is a member of.
    pub(super) async fn file_stores(&self, t: &Tenant, file_id: &str) -> StoreResult<Vec<String>> {
        let cql = format!(
            "SELECT vector_store_id FROM {} WHERE tenant = ? AND file_id = ?",
            self.table("file_memberships")
        );
        let rows: Vec<(String,)> = self.rows(&cql, (t.as_str(), file_id)).await?;
        Ok(rows.into_iter().map(|(vs,)| vs).collect())
    }

    pub(super) async fn set_membership(
        &self,
        t: &Tenant,
        file_id: &str,
        vs_id: &str,
        member: bool,
    ) -> StoreResult<()> {
        let cql = if member {
            format!(
                "INSERT INTO {} (tenant, file_id, vector_store_id) VALUES (?, ?, ?)",
                self.table("file_memberships")
            )
        } else {
            format!(
                "DELETE FROM {} WHERE tenant = ? AND file_id = ? AND vector_store_id = ?",
                self.table("file_memberships")
            )
        };
        self.exec(&cql, (t.as_str(), file_id, vs_id)).await?;
        Ok(())
    }
}

#[async_trait]
impl FileStore for CassandraStore {
    async fn put_file(&self, t: &Tenant, f: &FileObject) -> StoreResult<()> {
        self.conn()
            .await?
            .doc_put(&FILES, &[t.as_str()], &f.id, f)
            .await
    }

    async fn get_file(&self, t: &Tenant, id: &str) -> StoreResult<Option<FileObject>> {
        self.conn().await?.doc_get(&FILES, &[t.as_str()], id).await
    }

    async fn list_files(
        &self,
        t: &Tenant,
        purpose: Option<&str>,
        q: &ListQuery,
    ) -> StoreResult<Page<FileObject>> {
        let conn = self.conn().await?;
        match purpose {
            Some(p) => {
                let keep = move |f: &FileObject| f.purpose == p;
                conn.doc_list(&FILES, &[t.as_str()], q, Some(&keep)).await
            }
            None => conn.doc_list(&FILES, &[t.as_str()], q, None).await,
        }
    }

    async fn delete_file(&self, t: &Tenant, id: &str) -> StoreResult<bool> {
        let conn = self.conn().await?;
        let existed = conn.doc_exists(&FILES, &[t.as_str()], id).await?;
        // Memberships and chunks first, the metadata last: an interrupted delete can be
        // repeated and still finds what is left.
        for vs_id in conn.file_stores(t, id).await? {
            conn.remove_vs_file(t, &vs_id, id).await?;
        }
        let parts = format!(
            "DELETE FROM {} WHERE tenant = ? AND file_id = ?",
            conn.table("file_parts")
        );
        conn.exec(&parts, (t.as_str(), id)).await?;
        conn.doc_delete_blind(&FILES, &[t.as_str()], id).await?;
        Ok(existed)
    }

    async fn put_file_part(
        &self,
        t: &Tenant,
        file_id: &str,
        index: u32,
        data: Bytes,
    ) -> StoreResult<()> {
        let conn = self.conn().await?;
        let cql = format!(
            "INSERT INTO {} (tenant, file_id, idx, data) VALUES (?, ?, ?, ?)",
            conn.table("file_parts")
        );
        let idx = i32::try_from(index)
            .map_err(|_| crate::store::StoreError::Other(format!("file part {index} too large")))?;
        conn.exec(&cql, (t.as_str(), file_id, idx, data.as_ref()))
            .await?;
        Ok(())
    }

    async fn get_file_part(
        &self,
        t: &Tenant,
        file_id: &str,
        index: u32,
    ) -> StoreResult<Option<Bytes>> {
        let Ok(idx) = i32::try_from(index) else {
            return Ok(None);
        };
        let conn = self.conn().await?;
        let cql = format!(
            "SELECT data FROM {} WHERE tenant = ? AND file_id = ? AND idx = ?",
            conn.table("file_parts")
        );
        let row: Option<(Option<Vec<u8>>,)> =
            conn.first_row(&cql, (t.as_str(), file_id, idx)).await?;
        Ok(row.map(|(data,)| Bytes::from(data.unwrap_or_default())))
    }
}
