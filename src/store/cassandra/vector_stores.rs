//! Vector stores, their file memberships and file batches. Memberships live in the store's
//! partition (clustered by file id), so counts and lists (by attach time) are one partition
//! read; each membership is mirrored in `file_memberships` for the file-side cascade.

use std::collections::HashMap;

use async_trait::async_trait;

use super::docs::DocTable;
use super::{CassandraStore, Conn, from_json};
use crate::model::{FileBatch, FileCounts, VectorStore, VectorStoreFile};
use crate::store::{
    ListQuery, Page, StoreResult, Tenant, VectorStoreStore, VsFileFilter, VsFileQuery,
    apply_activity,
};

const STORES: DocTable = DocTable {
    name: "vector_stores",
    keys: &["tenant", "id"],
};

const VS_FILES: DocTable = DocTable {
    name: "vs_files",
    keys: &["tenant", "vector_store_id", "id"],
};

const BATCHES: DocTable = DocTable {
    name: "vs_batches",
    keys: &["tenant", "vector_store_id", "id"],
};

impl Conn {
    /// Removes a file from a store: its chunks, both membership rows.
    pub(super) async fn remove_vs_file(
        &self,
        t: &Tenant,
        vs_id: &str,
        file_id: &str,
    ) -> StoreResult<()> {
        self.delete_file_chunks(t, vs_id, file_id).await?;
        self.doc_delete_blind(&VS_FILES, &[t.as_str(), vs_id], file_id)
            .await?;
        self.set_membership(t, file_id, vs_id, false).await
    }
}

#[async_trait]
impl VectorStoreStore for CassandraStore {
    async fn put_vector_store(&self, t: &Tenant, vs: &VectorStore) -> StoreResult<()> {
        self.conn()
            .await?
            .doc_put(&STORES, &[t.as_str()], &vs.id, vs)
            .await
    }

    async fn get_vector_store(&self, t: &Tenant, id: &str) -> StoreResult<Option<VectorStore>> {
        let conn = self.conn().await?;
        let cql = format!(
            "SELECT doc, last_active_at FROM {} WHERE tenant = ? AND id = ?",
            conn.table(STORES.name)
        );
        let row: Option<(Option<String>, Option<i64>)> =
            conn.first_row(&cql, (t.as_str(), id)).await?;
        // A row without its document is a touch that raced the store's deletion: gone.
        let Some((Some(doc), active)) = row else {
            return Ok(None);
        };
        let mut vs: VectorStore = from_json(&doc)?;
        apply_activity(&mut vs, active);
        Ok(Some(vs))
    }

    async fn list_vector_stores(
        &self,
        t: &Tenant,
        q: &ListQuery,
    ) -> StoreResult<Page<VectorStore>> {
        let conn = self.conn().await?;
        let mut page: Page<VectorStore> = conn.doc_list(&STORES, &[t.as_str()], q, None).await?;
        if page.items.is_empty() {
            return Ok(page);
        }
        let ids: Vec<String> = page.items.iter().map(|vs| vs.id.clone()).collect();
        let cql = format!(
            "SELECT id, last_active_at FROM {} WHERE tenant = ? AND id IN ?",
            conn.table(STORES.name)
        );
        let active: HashMap<String, i64> = conn
            .rows::<(String, Option<i64>)>(&cql, (t.as_str(), ids))
            .await?
            .into_iter()
            .filter_map(|(id, at)| Some((id, at?)))
            .collect();
        for vs in &mut page.items {
            apply_activity(vs, active.get(&vs.id).copied());
        }
        Ok(page)
    }

    async fn touch_vector_store(&self, t: &Tenant, id: &str, at: i64) -> StoreResult<()> {
        let conn = self.conn().await?;
        // The write's timestamp is the activity time itself, so of two touches racing from
        // two proxies the later time wins whichever lands last, and a touch racing the
        // store's deletion (timestamped now, later than any activity second) loses to it.
        let cql = format!(
            "UPDATE {} USING TIMESTAMP ? SET last_active_at = ? WHERE tenant = ? AND id = ?",
            conn.table(STORES.name)
        );
        let micros = at.saturating_mul(1_000_000);
        conn.exec(&cql, (micros, at, t.as_str(), id)).await?;
        Ok(())
    }

    async fn delete_vector_store(&self, t: &Tenant, id: &str) -> StoreResult<bool> {
        let conn = self.conn().await?;
        let existed = self.get_vector_store(t, id).await?.is_some();
        let key = [t.as_str(), id];
        for file_id in conn.doc_ids(&VS_FILES, &key).await? {
            conn.set_membership(t, &file_id, id, false).await?;
        }
        conn.delete_store_chunks(t, id).await?;
        conn.doc_delete_partition(&VS_FILES, &key).await?;
        conn.doc_delete_partition(&BATCHES, &key).await?;
        conn.doc_delete_blind(&STORES, &[t.as_str()], id).await?;
        Ok(existed)
    }

    async fn put_vs_file(&self, t: &Tenant, f: &VectorStoreFile) -> StoreResult<()> {
        let conn = self.conn().await?;
        // The file-side row first: a membership it names but the store lacks is harmless.
        conn.set_membership(t, &f.id, &f.vector_store_id, true)
            .await?;
        conn.doc_put(&VS_FILES, &[t.as_str(), &f.vector_store_id], &f.id, f)
            .await
    }

    async fn get_vs_file(
        &self,
        t: &Tenant,
        vs_id: &str,
        file_id: &str,
    ) -> StoreResult<Option<VectorStoreFile>> {
        self.conn()
            .await?
            .doc_get(&VS_FILES, &[t.as_str(), vs_id], file_id)
            .await
    }

    async fn list_vs_files(
        &self,
        t: &Tenant,
        vs_id: &str,
        filter: &VsFileFilter,
        q: &VsFileQuery,
    ) -> StoreResult<Page<VectorStoreFile>> {
        // The partition is clustered by file id, but files are listed by attach time, which
        // lives in the documents. The whole partition is read and ordered here: every list
        // request already reads it whole to count the store's files (`count_vs_files`), so
        // this at most doubles that read. A clustering table by `(created_at, id)` would make
        // pages range reads, but a proxy of an older version sharing the keyspace during a
        // rolling upgrade would attach files without writing it, and lists would silently
        // miss them; reading the documents themselves cannot.
        let mut files: Vec<VectorStoreFile> = self
            .conn()
            .await?
            .doc_all(&VS_FILES, &[t.as_str(), vs_id])
            .await?;
        files.retain(|f| filter.matches(f));
        Ok(q.page_of(files))
    }

    async fn delete_vs_file(&self, t: &Tenant, vs_id: &str, file_id: &str) -> StoreResult<bool> {
        let conn = self.conn().await?;
        let existed = conn
            .doc_exists(&VS_FILES, &[t.as_str(), vs_id], file_id)
            .await?;
        conn.remove_vs_file(t, vs_id, file_id).await?;
        Ok(existed)
    }

    async fn count_vs_files(
        &self,
        t: &Tenant,
        vs_id: &str,
        batch_id: Option<&str>,
    ) -> StoreResult<(FileCounts, u64)> {
        let files: Vec<VectorStoreFile> = self
            .conn()
            .await?
            .doc_all(&VS_FILES, &[t.as_str(), vs_id])
            .await?;
        let mut counts = FileCounts::default();
        let mut bytes = 0u64;
        for f in files
            .iter()
            .filter(|f| batch_id.is_none_or(|b| f.batch_id.as_deref() == Some(b)))
        {
            counts.count(&f.status);
            bytes = bytes.saturating_add(f.usage_bytes);
        }
        Ok((counts, bytes))
    }

    async fn put_batch(&self, t: &Tenant, b: &FileBatch) -> StoreResult<()> {
        let key = [t.as_str(), b.vector_store_id.as_str()];
        self.conn().await?.doc_put(&BATCHES, &key, &b.id, b).await
    }

    async fn get_batch(&self, t: &Tenant, vs_id: &str, id: &str) -> StoreResult<Option<FileBatch>> {
        self.conn()
            .await?
            .doc_get(&BATCHES, &[t.as_str(), vs_id], id)
            .await
    }
}
