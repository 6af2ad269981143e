//! Vector-store rules shared by every resource that creates or fills stores (assistants' and
//! threads' `vector_stores` helpers, message attachments) and by the vector-store routes.

use serde_json::Value;

use crate::api::common::Caller;
use crate::api::validate::default_chunking;
use crate::error::Error;
use crate::ids::{new_id, now_secs};
use crate::model::{Attributes, ExpiresAfter, FileCounts, Metadata, VectorStore, VectorStoreFile};
use crate::store::{Store, Tenant};

/// Default embedding model of new stores.
pub const DEFAULT_EMBEDDING_MODEL: &str = "text-embedding-3-small";

/// What a new store is made from.
#[derive(Debug, Clone, Default)]
pub struct NewVectorStore {
    pub name: Option<String>,
    pub file_ids: Vec<String>,
    pub chunking_strategy: Option<Value>,
    pub expires_after: Option<ExpiresAfter>,
    pub metadata: Metadata,
}

pub fn not_found(id: &str) -> Error {
    Error::not_found(format!("No vector store found with id '{id}'."))
}

/// Creates a store and adds its files (their ingestion runs in the background).
pub async fn create(caller: &Caller, new: NewVectorStore) -> Result<VectorStore, Error> {
    let now = now_secs();
    let vs = VectorStore {
        id: new_id("vs_"),
        object: "vector_store".into(),
        created_at: now,
        name: new.name,
        usage_bytes: 0,
        file_counts: FileCounts::default(),
        status: "completed".into(),
        expires_at: new
            .expires_after
            .as_ref()
            .map(|e| now + i64::from(e.days) * 86_400),
        expires_after: new.expires_after,
        last_active_at: Some(now),
        metadata: new.metadata,
        embedding_model: DEFAULT_EMBEDDING_MODEL.into(),
        dimensions: 0,
    };
    caller
        .store
        .vector_stores
        .put_vector_store(&caller.tenant, &vs)
        .await?;
    for file_id in &new.file_ids {
        add_file(
            caller,
            &vs.id,
            file_id,
            new.chunking_strategy.clone(),
            None,
            None,
        )
        .await?;
    }
    load(&caller.store, &caller.tenant, &vs.id).await
}

/// Adds a file to a store; ingestion (extract, chunk, embed) runs as tracked background work.
pub async fn add_file(
    caller: &Caller,
    vs_id: &str,
    file_id: &str,
    chunking_strategy: Option<Value>,
    attributes: Option<Attributes>,
    batch_id: Option<&str>,
) -> Result<VectorStoreFile, Error> {
    let Some(_file) = caller.store.files.get_file(&caller.tenant, file_id).await? else {
        return Err(Error::NotFound {
            message: format!("No such File object: {file_id}"),
            param: Some("file_id".into()),
        });
    };
    let f = VectorStoreFile {
        id: file_id.to_owned(),
        object: "vector_store.file".into(),
        usage_bytes: 0,
        created_at: now_secs(),
        vector_store_id: vs_id.to_owned(),
        status: "in_progress".into(),
        last_error: None,
        chunking_strategy: chunking_strategy.unwrap_or_else(default_chunking),
        attributes,
        batch_id: batch_id.map(str::to_owned),
        ingest_lease_until: None,
    };
    caller
        .store
        .vector_stores
        .put_vs_file(&caller.tenant, &f)
        .await?;
    Ok(f)
}

/// A store with its derived fields (file counts, usage, status) filled in; 404 if missing.
pub async fn load(store: &Store, tenant: &Tenant, id: &str) -> Result<VectorStore, Error> {
    let Some(mut vs) = store.vector_stores.get_vector_store(tenant, id).await? else {
        return Err(not_found(id));
    };
    let (counts, usage) = store.vector_stores.count_vs_files(tenant, id, None).await?;
    vs.file_counts = counts;
    vs.usage_bytes = usage;
    vs.status = if vs.expires_at.is_some_and(|at| at <= now_secs()) {
        "expired".into()
    } else if counts.in_progress > 0 {
        "in_progress".into()
    } else {
        "completed".into()
    };
    Ok(vs)
}
