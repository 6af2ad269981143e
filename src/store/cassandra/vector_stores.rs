//! Vector stores, their file memberships and file batches. Memberships live in the store's
//! partition (clustered by file id), so counts are one partition read; each membership is
//! mirrored in `file_memberships` for the file-side cascade.

use async_trait::async_trait;
use serde::Deserialize;

use super::docs::DocTable;
use super::{CassandraStore, Conn};
use crate::model::{FileBatch, FileCounts, VectorStore, VectorStoreFile};
use crate::store::{ListQuery, Page, StoreResult, Tenant, VectorStoreStore, VsFileFilter};

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

/// The stored form of a vector store as read back. `VectorStore` serializes its embedding
/// model and dimension itself (the API layer leaves them out of the wire object); they are
/// also read by name here so rows written while the model skipped them still load.
#[derive(Deserialize)]
struct Stored {
    #[serde(flatten)]
    vs: VectorStore,
    #[serde(default)]
    embedding_model: String,
    #[serde(default)]
    dimensions: u32,
}

impl From<Stored> for VectorStore {
    fn from(s: Stored) -> VectorStore {
        VectorStore {
            embedding_model: s.embedding_model,
            dimensions: s.dimensions,
            ..s.vs
        }
    }
}

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
        let stored: Option<Stored> = self
            .conn()
            .await?
            .doc_get(&STORES, &[t.as_str()], id)
            .await?;
        Ok(stored.map(VectorStore::from))
    }

    async fn list_vector_stores(
        &self,
        t: &Tenant,
        q: &ListQuery,
    ) -> StoreResult<Page<VectorStore>> {
        let page: Page<Stored> = self
            .conn()
            .await?
            .doc_list(&STORES, &[t.as_str()], q, None)
            .await?;
        Ok(Page {
            items: page.items.into_iter().map(VectorStore::from).collect(),
            has_more: page.has_more,
        })
    }

    async fn delete_vector_store(&self, t: &Tenant, id: &str) -> StoreResult<bool> {
        let conn = self.conn().await?;
        let existed = conn.doc_exists(&STORES, &[t.as_str()], id).await?;
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
        q: &ListQuery,
    ) -> StoreResult<Page<VectorStoreFile>> {
        let conn = self.conn().await?;
        let key = [t.as_str(), vs_id];
        if filter.status.is_none() && filter.batch_id.is_none() {
            return conn.doc_list(&VS_FILES, &key, q, None).await;
        }
        let keep = |f: &VectorStoreFile| {
            filter.status.as_ref().is_none_or(|s| *s == f.status)
                && filter
                    .batch_id
                    .as_ref()
                    .is_none_or(|b| f.batch_id.as_ref() == Some(b))
        };
        conn.doc_list(&VS_FILES, &key, q, Some(&keep)).await
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
