//! File rules: content stored in pieces (`store::content`), metadata written last (so a
//! listed file is whole), expiry, the download refusal for private purposes, and deletion,
//! which also detaches the file from every vector store.

use futures_util::stream::{self, StreamExt};
use http::{HeaderValue, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

use crate::app::AppState;
use crate::body::{BoxError, ProxyBody};
use crate::error::Error;
use crate::ids::now_secs;
use crate::model::FileObject;
use crate::retrieval::FileKey;
use crate::store::content::{part_count, read_part};
use crate::store::{Store, Tenant};

/// Purposes accepted on upload.
pub const UPLOAD_PURPOSES: &[&str] = &[
    "assistants",
    "batch",
    "fine-tune",
    "vision",
    "user_data",
    "evals",
];

/// Purposes whose uploads belong to the upstream: its batch, fine-tuning and eval jobs must be
/// able to read them, so they are forwarded instead of stored.
pub const FORWARDED_PURPOSES: &[&str] = &["batch", "fine-tune", "evals"];

/// Purposes whose content OpenAI refuses to hand back.
pub const PRIVATE_PURPOSES: &[&str] = &["assistants", "user_data"];

pub fn not_found(id: &str) -> Error {
    Error::NotFound {
        message: format!("No such File object: {id}"),
        param: Some("id".into()),
    }
}

fn expired(f: &FileObject) -> bool {
    f.expires_at.is_some_and(|at| at <= now_secs())
}

/// The file if it exists locally and has not expired (an expired file is deleted on sight,
/// as OpenAI deletes files when they expire).
pub async fn find(
    state: &AppState,
    store: &Store,
    tenant: &Tenant,
    id: &str,
) -> Result<Option<FileObject>, Error> {
    match store.files.get_file(tenant, id).await? {
        Some(f) if expired(&f) => {
            delete(state, store, tenant, id).await?;
            Ok(None)
        }
        other => Ok(other),
    }
}

/// Lists files with expired ones left out.
pub fn visible(files: Vec<FileObject>) -> Vec<FileObject> {
    files.into_iter().filter(|f| !expired(f)).collect()
}

/// Deletes a file with its content, chunks and vector-store memberships, and stops any
/// ingestion of it. `false` if it did not exist.
pub async fn delete(
    state: &AppState,
    store: &Store,
    tenant: &Tenant,
    id: &str,
) -> Result<bool, Error> {
    let deleted = store.files.delete_file(tenant, id).await?;
    state
        .retrieval
        .cancel_where(|k: &FileKey| k.tenant == tenant.as_str() && k.file_id == id);
    Ok(deleted)
}

/// The raw content as a streamed response: one piece read per frame, so a download holds at
/// most one piece in memory however large the file.
pub fn content_response(store: &Store, tenant: &Tenant, f: &FileObject) -> Response<ProxyBody> {
    let parts = part_count(f.bytes);
    let (store, tenant, id) = (store.clone(), tenant.clone(), f.id.clone());
    let frames = stream::unfold(0u32, move |i| {
        let (store, tenant, id) = (store.clone(), tenant.clone(), id.clone());
        async move {
            if i >= parts {
                return None;
            }
            let item = read_part(&store, &tenant, &id, i)
                .await
                .map(Frame::data)
                .map_err(|e| -> BoxError { Box::new(Error::from(e)) });
            Some((item, i + 1))
        }
    });
    let mut resp = Response::new(StreamBody::new(frames.boxed()).boxed_unsync());
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(f.bytes));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        f.filename.replace(['"', '\\', '\r', '\n'], "_")
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}
