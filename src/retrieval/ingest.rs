//! Ingestion of one vector-store file, as tracked background work (`Retrieval::tasks`): read the
//! file's content, extract its text, chunk it, embed the chunks, store them with their
//! vectors, and mark the file `completed` (with `usage_bytes`) or `failed` (with
//! `last_error`).
//!
//! Liveness: while a file is `in_progress` its row carries `ingest_lease_until` (now + 60 s,
//! renewed every 20 s by the task, including while it waits for a concurrency permit). A
//! reader that finds an in-progress file whose lease has run out knows its ingestion died —
//! a restart or crash took the task with it — and marks it `failed` with a `server_error`
//! ([`repair`], called wherever vector-store files are read), so nothing stays `in_progress`
//! forever and the SDKs' pollers always end.
//!
//! Shutdown: when the grace period ends (`Retrieval::shutdown`), a running ingestion stops and marks
//! its file `failed` with a `server_error` saying so; if even that write fails, the lease
//! expires and the next reader does it.
//!
//! Cancellation (file deleted, store deleted, membership deleted, batch cancelled, file added
//! again) stops the task through its registration token; the final write then checks the row
//! it would overwrite, so a cancelled or removed file is never brought back.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use serde_json::json;
use tokio::time::Instant;

use super::chunk::{self, ChunkSpec};
use super::embed::{self, Input};
use super::{FileKey, IngestError, Registration, Retrieval, extract};
use crate::error::Error;
use crate::ids::now_secs;
use crate::model::{Chunk, VectorStoreFile};
use crate::store::{Order, Store, Tenant, VsFileFilter, VsFilePos, VsFileQuery, content};
use crate::tenancy::Caller;

/// How long an ingestion's lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(60);
/// How often a live ingestion renews its lease (three chances before it runs out).
pub const RENEW_EVERY: Duration = Duration::from_secs(20);
/// Tokens per file at most (OpenAI's file-search limit is 5 M tokens per file).
pub const MAX_FILE_TOKENS: usize = 5_000_000;

/// The lease deadline for a file (re)entering `in_progress` now.
pub fn new_lease() -> i64 {
    now_secs() + LEASE.as_secs() as i64
}

/// How an ingestion ended.
#[derive(Debug)]
enum Outcome {
    Completed {
        usage_bytes: u64,
    },
    Failed(IngestError),
    /// Stopped by its registration token.
    Cancelled,
    /// Stopped by the proxy's shutdown.
    Shutdown,
    /// The file's membership (or the file, or the store) disappeared: nothing to record.
    Gone,
}

/// Starts ingesting a vector-store file whose row is already stored `in_progress` with a
/// lease. Returns at once; the work runs as tracked background work.
pub fn spawn(retrieval: &Arc<Retrieval>, caller: &Caller, vs_id: &str, file_id: &str) {
    let reg = retrieval.register(FileKey::new(&caller.tenant, vs_id, file_id));
    let task_retrieval = retrieval.clone();
    // The caller's own store (its Astra database, or the configured one): the task keeps
    // that handle, so its writes land where the request's did.
    let store = caller.store.clone();
    let tenant = caller.tenant.clone();
    let headers = caller.upstream_headers.clone();
    retrieval.tasks.spawn(async move {
        run(task_retrieval, store, tenant, headers, reg).await;
    });
}

async fn run(
    retrieval: Arc<Retrieval>,
    store: Store,
    tenant: Tenant,
    headers: HeaderMap,
    reg: Registration,
) {
    let store = &store;
    let key = reg.key.clone();
    let work = async {
        // Queued ingestions wait here; their lease is renewed meanwhile (see `supervise`).
        let _permit = match retrieval.permits.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return Outcome::Failed(IngestError::server("ingestion queue closed")),
        };
        match ingest(&retrieval, store, &tenant, &headers, &key).await {
            Ok(o) => o,
            Err(e) => Outcome::Failed(e),
        }
    };
    let outcome = supervise(&retrieval, store, &tenant, &reg, work).await;
    tracing::debug!(vector_store_id = %key.vector_store_id, file_id = %key.file_id, ?outcome, "ingestion ended");
    if retrieval.is_current(&reg)
        && let Err(e) = finish(store, &tenant, &key, outcome).await
    {
        // The lease runs out and a reader repairs the file.
        tracing::warn!(file_id = %key.file_id, error = %e, "could not record the ingestion result");
    }
    retrieval.unregister(&reg);
}

/// Drives the work while renewing the lease; stops on cancellation or shutdown.
async fn supervise(
    retrieval: &Retrieval,
    store: &Store,
    tenant: &Tenant,
    reg: &Registration,
    work: impl Future<Output = Outcome>,
) -> Outcome {
    tokio::pin!(work);
    let mut renew = tokio::time::interval_at(Instant::now() + RENEW_EVERY, RENEW_EVERY);
    loop {
        tokio::select! {
            out = &mut work => return out,
            () = reg.token.cancelled() => return Outcome::Cancelled,
            () = retrieval.shutdown.cancelled() => return Outcome::Shutdown,
            _ = renew.tick() => {
                match renew_lease(store, tenant, &reg.key).await {
                    Ok(true) => {}
                    Ok(false) => return Outcome::Gone,
                    Err(e) => tracing::warn!(file_id = %reg.key.file_id, error = %e, "lease renewal failed"),
                }
            }
        }
    }
}

/// Extends the lease; `false` if the file left `in_progress` (cancelled, removed).
async fn renew_lease(store: &Store, tenant: &Tenant, key: &FileKey) -> Result<bool, Error> {
    let vs = &store.vector_stores;
    let Some(mut f) = vs
        .get_vs_file(tenant, &key.vector_store_id, &key.file_id)
        .await?
    else {
        return Ok(false);
    };
    if f.status != "in_progress" {
        return Ok(false);
    }
    f.ingest_lease_until = Some(new_lease());
    vs.put_vs_file(tenant, &f).await?;
    Ok(true)
}

/// The pipeline proper. `Err` is the file's failure; store errors become `server_error`s.
async fn ingest(
    retrieval: &Retrieval,
    store: &Store,
    tenant: &Tenant,
    headers: &HeaderMap,
    key: &FileKey,
) -> Result<Outcome, IngestError> {
    let server = |e: Error| IngestError::server(e.to_string());
    let Some(vsf) = store
        .vector_stores
        .get_vs_file(tenant, &key.vector_store_id, &key.file_id)
        .await
        .map_err(|e| server(e.into()))?
    else {
        return Ok(Outcome::Gone);
    };
    let Some(file) = store
        .files
        .get_file(tenant, &key.file_id)
        .await
        .map_err(|e| server(e.into()))?
    else {
        return Ok(Outcome::Gone);
    };
    let max = retrieval.config.max_ingest_bytes;
    if file.bytes > max {
        return Err(IngestError::invalid(format!(
            "The file is {} bytes; vector stores ingest files of at most {max} bytes.",
            file.bytes
        )));
    }
    let bytes = content::read_all(store, tenant, &file)
        .await
        .map_err(|e| server(e.into()))?;

    let spec = ChunkSpec::from_strategy(&vsf.chunking_strategy);
    let filename = file.filename.clone();
    let chunks = tokio::task::spawn_blocking(move || {
        let text = extract::extract(&bytes, &filename)?;
        drop(bytes);
        chunk::chunk(&text, spec, Some(MAX_FILE_TOKENS))
    })
    .await
    .map_err(|e| IngestError::server(format!("text extraction failed: {e}")))??;
    if chunks.is_empty() {
        return Err(IngestError::invalid(
            "No text could be extracted from the file.",
        ));
    }

    let Some(vs) = store
        .vector_stores
        .get_vector_store(tenant, &key.vector_store_id)
        .await
        .map_err(|e| server(e.into()))?
    else {
        return Ok(Outcome::Gone);
    };
    let model = if vs.embedding_model.is_empty() {
        retrieval.config.embedding_model.clone()
    } else {
        vs.embedding_model.clone()
    };
    let inputs: Vec<Input<'_>> = chunks
        .iter()
        .map(|c| Input {
            text: &c.text,
            tokens: c.tokens,
        })
        .collect();
    let vectors = embed::embed_all(retrieval, headers, &model, &inputs)
        .await
        .map_err(|e| IngestError::server(e.message))?;
    let dims = vectors.first().map_or(0, Vec::len);
    ensure_dimensions(store, tenant, &key.vector_store_id, dims).await?;

    // The attributes as they are now (an update may have arrived while we embedded).
    let attributes = store
        .vector_stores
        .get_vs_file(tenant, &key.vector_store_id, &key.file_id)
        .await
        .map_err(|e| server(e.into()))?
        .and_then(|f| f.attributes)
        .unwrap_or_default();
    let text_bytes: u64 = chunks.iter().map(|c| c.text.len() as u64).sum();
    let usage_bytes = text_bytes + 4 * dims as u64 * chunks.len() as u64;
    let rows: Vec<Chunk> = chunks
        .into_iter()
        .zip(vectors)
        .enumerate()
        .map(|(i, (c, embedding))| Chunk {
            vector_store_id: key.vector_store_id.clone(),
            file_id: key.file_id.clone(),
            index: i as u32,
            text: c.text,
            embedding,
            attributes: attributes.clone(),
        })
        .collect();
    store
        .chunks
        .put_chunks(tenant, &key.vector_store_id, &key.file_id, rows)
        .await
        .map_err(|e| server(e.into()))?;
    Ok(Outcome::Completed { usage_bytes })
}

/// Records the store's embedding dimension on its first embedded file; refuses vectors of
/// another size (a store holds one dimension: its search compares like with like).
async fn ensure_dimensions(
    store: &Store,
    tenant: &Tenant,
    vs_id: &str,
    dims: usize,
) -> Result<(), IngestError> {
    let server = |e: crate::store::StoreError| IngestError::server(e.to_string());
    let vss = &store.vector_stores;
    let Some(mut vs) = vss.get_vector_store(tenant, vs_id).await.map_err(server)? else {
        return Err(IngestError::server("The vector store was deleted."));
    };
    let dims32 = u32::try_from(dims).unwrap_or(u32::MAX);
    if vs.dimensions == 0 {
        vs.dimensions = dims32;
        vss.put_vector_store(tenant, &vs).await.map_err(server)?;
        Ok(())
    } else if vs.dimensions == dims32 {
        Ok(())
    } else {
        Err(IngestError::server(format!(
            "The embedding model '{}' returned {dims}-dimensional vectors, but this vector store holds {}-dimensional ones.",
            vs.embedding_model, vs.dimensions
        )))
    }
}

/// Writes the outcome onto the file's row, if the row is still the in-progress one this
/// ingestion owns.
async fn finish(
    store: &Store,
    tenant: &Tenant,
    key: &FileKey,
    outcome: Outcome,
) -> Result<(), Error> {
    let vss = &store.vector_stores;
    let chunks = &store.chunks;
    let current = vss
        .get_vs_file(tenant, &key.vector_store_id, &key.file_id)
        .await?;
    let Some(mut f) = current.filter(|f| f.status == "in_progress") else {
        // Removed or cancelled meanwhile: chunks written by a completed run must not linger.
        if matches!(outcome, Outcome::Completed { .. }) {
            chunks
                .delete_chunks(tenant, &key.vector_store_id, &key.file_id)
                .await?;
        }
        return Ok(());
    };
    f.ingest_lease_until = None;
    match outcome {
        Outcome::Completed { usage_bytes } => {
            f.status = "completed".into();
            f.usage_bytes = usage_bytes;
            f.last_error = None;
        }
        Outcome::Failed(e) => {
            f.status = "failed".into();
            f.usage_bytes = 0;
            f.last_error = Some(e.to_last_error());
        }
        Outcome::Shutdown => {
            f.status = "failed".into();
            f.usage_bytes = 0;
            f.last_error = Some(
                IngestError::server(
                    "The proxy shut down before this file was ingested; add it to the vector store again.",
                )
                .to_last_error(),
            );
        }
        Outcome::Cancelled => {
            f.status = "cancelled".into();
            f.usage_bytes = 0;
        }
        Outcome::Gone => return Ok(()),
    }
    if f.status != "completed" {
        chunks
            .delete_chunks(tenant, &key.vector_store_id, &key.file_id)
            .await?;
    }
    vss.put_vs_file(tenant, &f).await?;
    Ok(())
}

/// The `last_error` of a file whose ingestion died with its process.
fn interrupted() -> serde_json::Value {
    json!({
        "code": "server_error",
        "message": "The ingestion of this file was interrupted (the proxy that ran it stopped or crashed); add the file to the vector store again.",
    })
}

/// Marks `f` failed if it is `in_progress` without a live lease (see the module doc).
/// Returns whether it changed.
pub async fn repair(
    retrieval: &Retrieval,
    store: &Store,
    tenant: &Tenant,
    f: &mut VectorStoreFile,
) -> Result<bool, Error> {
    if f.status != "in_progress"
        || f.ingest_lease_until
            .is_some_and(|until| until >= now_secs())
        || retrieval.is_running(&FileKey::new(tenant, &f.vector_store_id, &f.id))
    {
        return Ok(false);
    }
    tracing::warn!(vector_store_id = %f.vector_store_id, file_id = %f.id, "ingestion lease expired; marking the file failed");
    f.status = "failed".into();
    f.last_error = Some(interrupted());
    f.ingest_lease_until = None;
    f.usage_bytes = 0;
    store.vector_stores.put_vs_file(tenant, f).await?;
    Ok(true)
}

/// Repairs every dead in-progress file of a store; returns how many it repaired. Scans a
/// store at most once per few seconds (callers only ask when it has files in progress).
pub async fn repair_store(
    retrieval: &Retrieval,
    store: &Store,
    tenant: &Tenant,
    vs_id: &str,
) -> Result<usize, Error> {
    if !retrieval.scan_due(tenant, vs_id) {
        return Ok(0);
    }
    let filter = VsFileFilter {
        status: Some("in_progress".into()),
        batch_id: None,
    };
    let mut q = VsFileQuery::first(100, Order::Asc);
    let mut repaired = 0;
    loop {
        let page = store
            .vector_stores
            .list_vs_files(tenant, vs_id, &filter, &q)
            .await?;
        for mut f in page.items.iter().cloned() {
            if repair(retrieval, store, tenant, &mut f).await? {
                repaired += 1;
            }
        }
        match (page.has_more, page.items.last()) {
            (true, Some(last)) => q.after = Some(VsFilePos::of(last)),
            _ => return Ok(repaired),
        }
    }
}
