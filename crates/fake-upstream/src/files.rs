//! The Files half of the fake upstream: `POST /v1/files` (multipart), `GET /v1/files` (list,
//! OpenAI's cursor semantics) and `GET /v1/files/{id}`, over an in-memory set of files. Tests
//! seed files with chosen `created_at` values (`FakeUpstream::add_file`) and can make the
//! list fail (`FakeUpstream::fail_file_list`).
//!
//! Like OpenAI's, the ids are random-looking (their order says nothing about time), so a
//! merge that sorted by id instead of `created_at` would show.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::stream;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::{BodySummary, FakeBody, Shared, json_response, openai_error, param};

/// The files the fake holds, in insertion order (a tie-break within one `created_at`).
#[derive(Default)]
pub(super) struct FileSet {
    files: Vec<Value>,
}

impl Shared {
    /// Adds a file object; `created_at` defaults to now.
    pub(super) fn add_file(
        &self,
        purpose: &str,
        filename: &str,
        bytes: u64,
        created_at: Option<i64>,
    ) -> Value {
        let n = self.next_id();
        let file = json!({
            "id": format!("file-{}", scrambled(n)),
            "object": "file",
            "bytes": bytes,
            "created_at": created_at.unwrap_or_else(now_secs),
            "expires_at": null,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": null,
        });
        self.files.lock().unwrap().files.push(file.clone());
        file
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// 22 base62 characters from a counter, in no particular order.
fn scrambled(n: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..22)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 62) as usize] as char
        })
        .collect()
}

/// `POST /v1/files`: stores the upload's metadata (the bytes are only counted).
pub(super) async fn upload(
    shared: &Shared,
    content_type: Option<&str>,
    body: &BodySummary,
) -> Response<FakeBody> {
    let bad = |m: &str| openai_error(StatusCode::BAD_REQUEST, m, "invalid_request_error", None);
    let Some(boundary) = content_type.and_then(|ct| multer::parse_boundary(ct).ok()) else {
        return bad("fake upstream: expected multipart/form-data");
    };
    let Some(raw) = body.bytes.clone() else {
        return bad("fake upstream: upload too large to parse");
    };
    let mut mp = multer::Multipart::new(
        stream::once(async move { Ok::<Bytes, std::io::Error>(raw) }),
        boundary,
    );
    let (mut purpose, mut file) = (None, None);
    while let Ok(Some(field)) = mp.next_field().await {
        match field.name() {
            Some("purpose") => purpose = field.text().await.ok(),
            Some("file") => {
                let name = field.file_name().unwrap_or("file").to_owned();
                let len = field.bytes().await.map_or(0, |b| b.len() as u64);
                file = Some((name, len));
            }
            _ => {}
        }
    }
    match (purpose, file) {
        (Some(purpose), Some((name, len))) => {
            json_response(StatusCode::OK, &shared.add_file(&purpose, &name, len, None))
        }
        _ => bad("fake upstream: 'purpose' and 'file' are required"),
    }
}

/// `GET /v1/files`: `purpose`, `limit` (default and max 10,000), `order` (default desc by
/// `created_at`, ties in insertion order), `after`.
pub(super) fn list(shared: &Shared, query: Option<&str>) -> Response<FakeBody> {
    let status = shared.file_list_status.load(Ordering::Relaxed);
    if status != 0 {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return openai_error(
            status,
            "fake upstream: the file list is failing",
            "server_error",
            None,
        );
    }
    let limit = param(query, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(10_000);
    if !(1..=10_000).contains(&limit) {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "Invalid 'limit'",
            "invalid_request_error",
            None,
        );
    }
    let desc = param(query, "order") != Some("asc");
    let purpose = param(query, "purpose");
    let mut files: Vec<(usize, Value)> = shared
        .files
        .lock()
        .unwrap()
        .files
        .iter()
        .cloned()
        .enumerate()
        .filter(|(_, f)| purpose.is_none_or(|p| f["purpose"] == p))
        .collect();
    files.sort_by_key(|(i, f)| (f["created_at"].as_i64().unwrap_or(0), *i));
    if desc {
        files.reverse();
    }
    let mut files: Vec<Value> = files.into_iter().map(|(_, f)| f).collect();
    if let Some(after) = param(query, "after") {
        match files.iter().position(|f| f["id"] == after) {
            Some(i) => {
                files.drain(..=i);
            }
            None => {
                return openai_error(
                    StatusCode::NOT_FOUND,
                    &format!("No such File object: {after}"),
                    "invalid_request_error",
                    None,
                );
            }
        }
    }
    let has_more = files.len() > limit;
    files.truncate(limit);
    json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": files,
            "first_id": files.first().map(|f| f["id"].clone()),
            "last_id": files.last().map(|f| f["id"].clone()),
            "has_more": has_more,
        }),
    )
}

/// `GET /v1/files/{id}`.
pub(super) fn retrieve(shared: &Shared, id: &str) -> Response<FakeBody> {
    let found = shared
        .files
        .lock()
        .unwrap()
        .files
        .iter()
        .find(|f| f["id"] == id)
        .cloned();
    match found {
        Some(f) => json_response(StatusCode::OK, &f),
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": {"message": format!("No such File object: {id}"),
                "type": "invalid_request_error", "param": "id", "code": null}}),
        ),
    }
}
