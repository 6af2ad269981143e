//! Vector-store rules shared by every resource that creates or fills stores (assistants' and
//! threads' `vector_stores` helpers, message attachments) and by the vector-store routes:
//! ids and timestamps, file membership with its background ingestion, and file batches.
//! Derived fields (file counts, usage, status), expiry and activity are `retrieval::stores`'s
//! (the run engine applies them too).

use std::sync::Arc;

use serde_json::Value;

use crate::api::files::service as files;
use crate::api::validate::default_chunking;
use crate::app::AppState;
use crate::error::Error;
use crate::ids::new_id;
use crate::model::{
    Attributes, ExpiresAfter, FileBatch, FileCounts, Metadata, VectorStore, VectorStoreFile,
};
use crate::retrieval::stores::{derive, is_expired, touch};
use crate::retrieval::{FileKey, ingest};
use crate::store::{ListQuery, Order, Page, Store, Tenant, VsFileFilter, VsFilePos, VsFileQuery};
use crate::tenancy::Caller;

/// Default embedding model of new stores when the configuration names none.
pub const DEFAULT_EMBEDDING_MODEL: &str = crate::config::DEFAULT_EMBEDDING_MODEL;

const DAY: i64 = 86_400;

/// What a new store is made from.
#[derive(Debug, Clone, Default)]
pub struct NewVectorStore {
    pub name: Option<String>,
    pub file_ids: Vec<String>,
    pub chunking_strategy: Option<Value>,
    pub expires_after: Option<ExpiresAfter>,
    pub metadata: Metadata,
}

/// What `POST …/vector_stores/{id}` may change; `None` keeps a field, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct StoreChanges {
    pub name: Option<Option<String>>,
    pub expires_after: Option<Option<ExpiresAfter>>,
    pub metadata: Option<Metadata>,
}

/// One file to add, with its own options.
#[derive(Debug, Clone, PartialEq)]
pub struct NewVsFile {
    pub file_id: String,
    pub chunking_strategy: Option<Value>,
    pub attributes: Option<Attributes>,
}

pub fn not_found(id: &str) -> Error {
    Error::not_found(format!("No vector store found with id '{id}'."))
}

pub fn file_not_found(vs_id: &str, file_id: &str) -> Error {
    Error::not_found(format!(
        "No file found with id '{file_id}' in vector store '{vs_id}'."
    ))
}

pub fn batch_not_found(vs_id: &str, batch_id: &str) -> Error {
    Error::not_found(format!(
        "No file batch found with id '{batch_id}' in vector store '{vs_id}'."
    ))
}

fn no_such_file(id: &str) -> Error {
    Error::NotFound {
        message: format!("No such File object: {id}"),
        param: Some("file_id".into()),
    }
}

/// Refuses work on an expired store.
pub fn check_not_expired(vs: &VectorStore, now: i64) -> Result<(), Error> {
    if is_expired(vs, now) {
        return Err(Error::invalid(
            format!("Vector store '{}' has expired", vs.id),
            None,
        ));
    }
    Ok(())
}

/// Checks that each file exists (before anything is written).
pub async fn check_files(
    state: &AppState,
    store: &Store,
    tenant: &Tenant,
    ids: &[String],
) -> Result<(), Error> {
    for id in ids {
        if files::find(state, store, tenant, id).await?.is_none() {
            return Err(no_such_file(id));
        }
    }
    Ok(())
}

/// Creates a store and adds its files (their ingestion runs in the background).
pub async fn create(
    state: &Arc<AppState>,
    caller: &Caller,
    new: NewVectorStore,
) -> Result<VectorStore, Error> {
    check_files(state, &caller.store, &caller.tenant, &new.file_ids).await?;
    let now = state.clock.now();
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
            .map(|e| now + i64::from(e.days) * DAY),
        expires_after: new.expires_after,
        last_active_at: Some(now),
        metadata: new.metadata,
        embedding_model: state.config.retrieval.embedding_model.clone(),
        dimensions: 0,
    };
    caller
        .store
        .vector_stores
        .put_vector_store(&caller.tenant, &vs)
        .await?;
    // A new store is as active as it gets: its files need not touch it.
    let mut seen = std::collections::HashSet::new();
    for file_id in &new.file_ids {
        if seen.insert(file_id) {
            attach(
                state,
                caller,
                &vs.id,
                file_id,
                new.chunking_strategy.clone(),
                None,
                None,
            )
            .await?;
        }
    }
    load(state, &caller.store, &caller.tenant, &vs.id).await
}

/// Adds (or re-adds) a file to a store and starts its ingestion as tracked background work.
/// A file already in the store starts over with the new options. Adding a file is activity
/// on the store (see [`touch`]).
pub async fn add_file(
    state: &Arc<AppState>,
    caller: &Caller,
    vs_id: &str,
    file_id: &str,
    chunking_strategy: Option<Value>,
    attributes: Option<Attributes>,
    batch_id: Option<&str>,
) -> Result<VectorStoreFile, Error> {
    let f = attach(
        state,
        caller,
        vs_id,
        file_id,
        chunking_strategy,
        attributes,
        batch_id,
    )
    .await?;
    touch(&state.retrieval, &caller.store, &caller.tenant, vs_id).await?;
    Ok(f)
}

/// [`add_file`] without the touch, for callers adding many files at once (they touch once).
async fn attach(
    state: &Arc<AppState>,
    caller: &Caller,
    vs_id: &str,
    file_id: &str,
    chunking_strategy: Option<Value>,
    attributes: Option<Attributes>,
    batch_id: Option<&str>,
) -> Result<VectorStoreFile, Error> {
    if files::find(state, &caller.store, &caller.tenant, file_id)
        .await?
        .is_none()
    {
        return Err(no_such_file(file_id));
    }
    let f = VectorStoreFile {
        id: file_id.to_owned(),
        object: "vector_store.file".into(),
        usage_bytes: 0,
        // The attach time: a store's files are listed by it.
        created_at: state.clock.now(),
        vector_store_id: vs_id.to_owned(),
        status: "in_progress".into(),
        last_error: None,
        chunking_strategy: chunking_strategy.unwrap_or_else(default_chunking),
        attributes,
        batch_id: batch_id.map(str::to_owned),
        ingest_lease_until: Some(ingest::new_lease()),
    };
    caller
        .store
        .vector_stores
        .put_vs_file(&caller.tenant, &f)
        .await?;
    ingest::spawn(&state.retrieval, caller, vs_id, file_id);
    Ok(f)
}

/// A store with its derived fields (file counts, usage, status) filled in; 404 if missing.
pub async fn load(
    state: &AppState,
    store: &Store,
    tenant: &Tenant,
    id: &str,
) -> Result<VectorStore, Error> {
    let Some(vs) = store.vector_stores.get_vector_store(tenant, id).await? else {
        return Err(not_found(id));
    };
    derive(&state.retrieval, store, tenant, vs).await
}

pub async fn modify(
    state: &AppState,
    store: &Store,
    tenant: &Tenant,
    id: &str,
    changes: StoreChanges,
) -> Result<VectorStore, Error> {
    let vss = &store.vector_stores;
    let Some(mut vs) = vss.get_vector_store(tenant, id).await? else {
        return Err(not_found(id));
    };
    if let Some(name) = changes.name {
        vs.name = name;
    }
    if let Some(expires_after) = changes.expires_after {
        let anchor = vs.last_active_at.unwrap_or(vs.created_at);
        vs.expires_at = expires_after
            .as_ref()
            .map(|e| anchor + i64::from(e.days) * DAY);
        vs.expires_after = expires_after;
    }
    if let Some(metadata) = changes.metadata {
        vs.metadata = metadata;
    }
    vss.put_vector_store(tenant, &vs).await?;
    derive(&state.retrieval, store, tenant, vs).await
}

/// Deletes a store with its memberships, batches and chunks, stopping its ingestions.
pub async fn delete(
    state: &AppState,
    store: &Store,
    tenant: &Tenant,
    id: &str,
) -> Result<bool, Error> {
    let deleted = store.vector_stores.delete_vector_store(tenant, id).await?;
    state
        .retrieval
        .cancel_where(|k: &FileKey| k.tenant == tenant.as_str() && k.vector_store_id == id);
    Ok(deleted)
}

// ---- files of a store --------------------------------------------------------------------

/// A membership, repaired if its ingestion died; 404 if missing.
pub async fn load_file(
    state: &AppState,
    store: &Store,
    tenant: &Tenant,
    vs_id: &str,
    file_id: &str,
) -> Result<VectorStoreFile, Error> {
    let Some(mut f) = store
        .vector_stores
        .get_vs_file(tenant, vs_id, file_id)
        .await?
    else {
        return Err(file_not_found(vs_id, file_id));
    };
    ingest::repair(&state.retrieval, store, tenant, &mut f).await?;
    Ok(f)
}

/// A page of a store's files (of one batch, with `filter.batch_id`) in attach order, ties by
/// id, as OpenAI lists them. The cursors are file ids; each is looked up for its attach time,
/// so a cursor that is not a file of the store is refused rather than guessed at.
pub async fn list_files(
    store: &Store,
    tenant: &Tenant,
    vs_id: &str,
    filter: &VsFileFilter,
    q: &ListQuery,
) -> Result<Page<VectorStoreFile>, Error> {
    let mut resolved = VsFileQuery::first(q.limit, q.order);
    for (param, cursor, slot) in [
        ("after", &q.after, &mut resolved.after),
        ("before", &q.before, &mut resolved.before),
    ] {
        if let Some(id) = cursor {
            let Some(f) = store.vector_stores.get_vs_file(tenant, vs_id, id).await? else {
                return Err(Error::invalid(
                    format!("Invalid '{param}': '{id}' is not a file of vector store '{vs_id}'."),
                    Some(param),
                ));
            };
            *slot = Some(VsFilePos::of(&f));
        }
    }
    Ok(store
        .vector_stores
        .list_vs_files(tenant, vs_id, filter, &resolved)
        .await?)
}

/// Replaces a membership's attributes, on the membership and on its chunks' copies.
pub async fn set_attributes(
    state: &AppState,
    store: &Store,
    tenant: &Tenant,
    vs_id: &str,
    file_id: &str,
    attributes: Option<Attributes>,
) -> Result<VectorStoreFile, Error> {
    let mut f = load_file(state, store, tenant, vs_id, file_id).await?;
    f.attributes = attributes;
    store.vector_stores.put_vs_file(tenant, &f).await?;
    store
        .chunks
        .set_chunk_attributes(
            tenant,
            vs_id,
            file_id,
            &f.attributes.clone().unwrap_or_default(),
        )
        .await?;
    Ok(f)
}

/// Removes a file from a store (the file itself survives).
pub async fn remove_file(
    state: &AppState,
    store: &Store,
    tenant: &Tenant,
    vs_id: &str,
    file_id: &str,
) -> Result<bool, Error> {
    let removed = store
        .vector_stores
        .delete_vs_file(tenant, vs_id, file_id)
        .await?;
    state.retrieval.cancel_where(|k: &FileKey| {
        k.tenant == tenant.as_str() && k.vector_store_id == vs_id && k.file_id == file_id
    });
    Ok(removed)
}

// ---- file batches ------------------------------------------------------------------------

/// Creates a batch and adds its files (duplicates once).
pub async fn create_batch(
    state: &Arc<AppState>,
    caller: &Caller,
    vs_id: &str,
    items: Vec<NewVsFile>,
) -> Result<FileBatch, Error> {
    let ids: Vec<String> = items.iter().map(|i| i.file_id.clone()).collect();
    check_files(state, &caller.store, &caller.tenant, &ids).await?;
    let batch = FileBatch {
        id: new_id("vsfb_"),
        object: "vector_store.files_batch".into(),
        created_at: state.clock.now(),
        vector_store_id: vs_id.to_owned(),
        status: "in_progress".into(),
        file_counts: FileCounts::default(),
        cancel_requested: false,
    };
    caller
        .store
        .vector_stores
        .put_batch(&caller.tenant, &batch)
        .await?;
    let mut seen = std::collections::HashSet::new();
    for item in items {
        if seen.insert(item.file_id.clone()) {
            attach(
                state,
                caller,
                vs_id,
                &item.file_id,
                item.chunking_strategy,
                item.attributes,
                Some(&batch.id),
            )
            .await?;
        }
    }
    touch(&state.retrieval, &caller.store, &caller.tenant, vs_id).await?;
    derive_batch(state, &caller.store, &caller.tenant, batch).await
}

/// Fills in a batch's counts and status. The status follows the counts, so the SDK pollers
/// (Python: until no file is in progress; Node: until a terminal status) stop together.
pub async fn derive_batch(
    state: &AppState,
    store: &Store,
    tenant: &Tenant,
    mut b: FileBatch,
) -> Result<FileBatch, Error> {
    let vss = &store.vector_stores;
    let vs_id = b.vector_store_id.clone();
    let (mut counts, _) = vss.count_vs_files(tenant, &vs_id, Some(&b.id)).await?;
    if counts.in_progress > 0
        && ingest::repair_store(&state.retrieval, store, tenant, &vs_id).await? > 0
    {
        (counts, _) = vss.count_vs_files(tenant, &vs_id, Some(&b.id)).await?;
    }
    b.file_counts = counts;
    b.status = if b.cancel_requested {
        "cancelled".into()
    } else if counts.in_progress > 0 {
        "in_progress".into()
    } else {
        "completed".into()
    };
    Ok(b)
}

pub async fn load_batch(
    state: &AppState,
    store: &Store,
    tenant: &Tenant,
    vs_id: &str,
    batch_id: &str,
) -> Result<FileBatch, Error> {
    let Some(b) = store
        .vector_stores
        .get_batch(tenant, vs_id, batch_id)
        .await?
    else {
        return Err(batch_not_found(vs_id, batch_id));
    };
    derive_batch(state, store, tenant, b).await
}

/// Cancels a batch: its files still in progress become `cancelled` and their ingestion stops.
/// A batch that already finished is returned unchanged (cancel is best effort, and a race
/// with the last file finishing must not turn into an error).
pub async fn cancel_batch(
    state: &AppState,
    store: &Store,
    tenant: &Tenant,
    vs_id: &str,
    batch_id: &str,
) -> Result<FileBatch, Error> {
    let mut b = load_batch(state, store, tenant, vs_id, batch_id).await?;
    if b.status != "in_progress" {
        return Ok(b);
    }
    b.cancel_requested = true;
    b.status = "cancelled".into();
    let vss = &store.vector_stores;
    vss.put_batch(tenant, &b).await?;
    let filter = VsFileFilter {
        status: Some("in_progress".into()),
        batch_id: Some(batch_id.to_owned()),
    };
    let mut q = VsFileQuery::first(100, Order::Asc);
    loop {
        let page = vss.list_vs_files(tenant, vs_id, &filter, &q).await?;
        for mut f in page.items.iter().cloned() {
            f.status = "cancelled".into();
            f.ingest_lease_until = None;
            vss.put_vs_file(tenant, &f).await?;
            state.retrieval.cancel_where(|k: &FileKey| {
                k.tenant == tenant.as_str() && k.vector_store_id == vs_id && k.file_id == f.id
            });
        }
        match (page.has_more, page.items.last()) {
            // Rows just cancelled left the filter; page on from the last one all the same.
            (true, Some(last)) => q.after = Some(VsFilePos::of(last)),
            _ => break,
        }
    }
    derive_batch(state, store, tenant, b).await
}
