//! `POST /v1/files`: a multipart upload, either stored locally or forwarded untouched.
//!
//! The `purpose` field decides: `batch`, `fine-tune` and `evals` uploads belong to the
//! upstream (its jobs read them) and are forwarded byte for byte; the rest are stored here,
//! streamed into the store in pieces of at most 1 MiB, never held whole.
//!
//! The decision needs `purpose` before the body can go anywhere, so the upload is read in two
//! phases (multipart parsing by `multer`):
//! 1. Parse fields until `purpose`, while a [`Recorder`] keeps every raw byte pulled from the
//!    connection. The Python SDK sends `purpose` first, so this is usually a few hundred bytes.
//!    When `file` comes first (Node's usual `{file, purpose}`), its bytes must be kept too:
//!    the first [`MEMORY_PREFIX`] in memory, the rest spilled to an anonymous temporary file
//!    (unlinked at creation, so nothing is left behind even after a crash). Memory stays
//!    bounded whatever the order; only that ordering pays a disk round trip.
//! 2. Replay the recorded bytes followed by the rest of the connection's body: to the
//!    forwarder as the request body (exactly the bytes the client sent), or into a fresh
//!    parser that stores the file.
//!
//! One file on purpose: the two-phase read above is one state machine (about 580 lines; the
//! rest is its tests, kept beside it).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, StreamExt};
use http::{Request, Response, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::service::{FORWARDED_PURPOSES, UPLOAD_PURPOSES};
use crate::api::common::{self};
use crate::api::ctx::{Ctx, Reply};
use crate::api::fields::{check_integer, invalid_value, missing};
use crate::app::AppState;
use crate::body::{BoxError, ProxyBody};
use crate::error::Error;
use crate::ids::{new_id, now_secs};
use crate::model::FileObject;
use crate::store::content::PART_SIZE;
use crate::store::{Store, Tenant};
use crate::tenancy::Caller;

/// Raw bytes kept in memory while `purpose` is unknown; beyond this they spill to disk.
pub const MEMORY_PREFIX: usize = 1024 * 1024;
/// Multipart framing and small fields on top of the file itself.
const ENVELOPE_SLACK: u64 = 1024 * 1024;
/// Longest text field accepted (`purpose`, `expires_after[…]`).
const MAX_TEXT_FIELD: usize = 1024;
/// Read size when replaying spilled bytes.
const SPILL_READ: usize = 64 * 1024;

/// Set when the raw body passed the limit, so a parser error can be told apart from a 413.
pub type TooLarge = Arc<AtomicBool>;

/// A replayable upload body: recorded bytes, then the rest of the connection's body.
pub type ReplayStream = futures_util::stream::BoxStream<'static, Result<Bytes, BoxError>>;

/// The connection's body, read through phase 1 with every byte kept.
struct Recorder<B> {
    body: B,
    memory_prefix: usize,
    ended: bool,
    memory: VecDeque<Bytes>,
    memory_len: usize,
    spill: Option<tokio::fs::File>,
    total: u64,
    limit: u64,
    too_large: TooLarge,
}

impl<B> Recorder<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// The next data chunk of the body, recorded before it is returned.
    async fn next(&mut self) -> Option<Result<Bytes, BoxError>> {
        let data = match next_data(&mut self.body, &mut self.ended).await? {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        self.total += data.len() as u64;
        if self.total > self.limit {
            self.too_large.store(true, Ordering::Relaxed);
            return Some(Err("upload too large".into()));
        }
        if let Err(e) = self.keep(data.clone()).await {
            return Some(Err(Box::new(e)));
        }
        Some(Ok(data))
    }

    async fn keep(&mut self, data: Bytes) -> std::io::Result<()> {
        if self.spill.is_none() && self.memory_len + data.len() <= self.memory_prefix {
            self.memory_len += data.len();
            self.memory.push_back(data);
            return Ok(());
        }
        if self.spill.is_none() {
            let file = tokio::task::spawn_blocking(tempfile::tempfile)
                .await
                .map_err(std::io::Error::other)??;
            self.spill = Some(tokio::fs::File::from_std(file));
        }
        match self.spill.as_mut() {
            Some(f) => f.write_all(&data).await,
            None => Ok(()),
        }
    }

    /// Everything recorded, then the rest of the body: exactly the bytes the client sent.
    async fn into_replay(mut self) -> std::io::Result<ReplayStream> {
        if let Some(f) = self.spill.as_mut() {
            f.flush().await?;
            f.rewind().await?;
        }
        let state = Replay {
            memory: self.memory,
            spill: self.spill,
            body: self.body,
            ended: self.ended,
            total: self.total,
            limit: self.limit,
            too_large: self.too_large,
        };
        Ok(stream::unfold(state, |mut r| async move {
            let item = r.next().await?;
            Some((item, r))
        })
        .boxed())
    }
}

struct Replay<B> {
    memory: VecDeque<Bytes>,
    spill: Option<tokio::fs::File>,
    body: B,
    ended: bool,
    total: u64,
    limit: u64,
    too_large: TooLarge,
}

impl<B> Replay<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    async fn next(&mut self) -> Option<Result<Bytes, BoxError>> {
        if let Some(b) = self.memory.pop_front() {
            return Some(Ok(b));
        }
        if let Some(f) = self.spill.as_mut() {
            let mut buf = BytesMut::with_capacity(SPILL_READ);
            match f.read_buf(&mut buf).await {
                Ok(0) => self.spill = None,
                Ok(_) => return Some(Ok(buf.freeze())),
                Err(e) => return Some(Err(Box::new(e))),
            }
        }
        let data = match next_data(&mut self.body, &mut self.ended).await? {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        self.total += data.len() as u64;
        if self.total > self.limit {
            self.too_large.store(true, Ordering::Relaxed);
            return Some(Err("upload too large".into()));
        }
        Some(Ok(data))
    }
}

/// The next non-empty data frame (trailers are skipped; multipart has none).
async fn next_data<B>(body: &mut B, ended: &mut bool) -> Option<Result<Bytes, BoxError>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    while !*ended {
        match body.frame().await {
            None => *ended = true,
            Some(Err(e)) => return Some(Err(e.into())),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    return Some(Ok(data));
                }
            }
        }
    }
    None
}

fn multipart_error(e: multer::Error, too_large: &TooLarge, limit: u64) -> Error {
    if too_large.load(Ordering::Relaxed) {
        return Error::PayloadTooLarge { limit };
    }
    if let multer::Error::StreamReadFailed(inner) = &e {
        return common::body_error(inner.as_ref());
    }
    Error::invalid(format!("The multipart body could not be parsed: {e}"), None)
}

async fn field_text(
    field: &mut multer::Field<'_>,
    name: &str,
    too_large: &TooLarge,
    limit: u64,
) -> Result<String, Error> {
    let mut buf = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| multipart_error(e, too_large, limit))?
    {
        buf.extend_from_slice(&chunk);
        if buf.len() > MAX_TEXT_FIELD {
            return Err(crate::api::fields::string_too_long(
                name,
                MAX_TEXT_FIELD,
                buf.len(),
            ));
        }
    }
    String::from_utf8(buf)
        .map(|s| s.trim().to_owned())
        .map_err(|_| Error::invalid(format!("Invalid '{name}': not UTF-8 text."), Some(name)))
}

async fn drain(
    field: &mut multer::Field<'_>,
    too_large: &TooLarge,
    limit: u64,
) -> Result<(), Error> {
    while field
        .chunk()
        .await
        .map_err(|e| multipart_error(e, too_large, limit))?
        .is_some()
    {}
    Ok(())
}

/// Handles `POST /v1/files`.
pub async fn create(ctx: Ctx<'_>) -> Reply {
    let state = ctx.state;
    let (caller, req) = ctx.into_request()?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let boundary = multer::parse_boundary(&content_type).map_err(|_| {
        Error::invalid(
            format!(
                "Invalid Content-Type header ({content_type}), expected multipart/form-data with a boundary."
            ),
            None,
        )
    })?;
    let max_file = state.config.limits.max_upload_bytes;
    let raw_limit = max_file.saturating_add(ENVELOPE_SLACK);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (parts, body) = req.into_parts();
    // Every read of the upload, both phases, forwarded or stored, waits at most this long
    // for the client's next bytes.
    let body = crate::body::IdleTimeout::new(body, state.config.body_read_timeout);
    if declared.is_some_and(|n| n > raw_limit) {
        crate::body::discard(body).await;
        return Err(Error::PayloadTooLarge { limit: max_file });
    }

    // The parser owns the body from here; if it refuses it part-way (a body without a
    // Content-Length that grows past the limit), the rest comes back to be drained, so the
    // client, often still sending, reads the 413 instead of a reset.
    let (body, rest) = crate::body::reclaimable(body);
    let result = receive(state, &caller, parts, body, boundary, max_file, raw_limit).await;
    if matches!(result, Err(Error::PayloadTooLarge { .. }))
        && let Some(body) = rest.take()
    {
        crate::body::discard(body).await;
    }
    result
}

/// The two phases of an upload whose declared size (if any) is within the limit.
async fn receive(
    state: &Arc<AppState>,
    caller: &Caller,
    parts: http::request::Parts,
    body: crate::body::Reclaim<crate::body::IdleTimeout<Incoming>>,
    boundary: String,
    max_file: u64,
    raw_limit: u64,
) -> Result<Response<ProxyBody>, Error> {
    // Phase 1: find the purpose, recording the bytes it takes.
    let too_large = TooLarge::default();
    let (purpose, replay) = read_purpose(
        body,
        boundary.clone(),
        MEMORY_PREFIX,
        raw_limit,
        max_file,
        &too_large,
    )
    .await?;

    // Phase 2.
    if FORWARDED_PURPOSES.contains(&purpose.as_str()) {
        let body = StreamBody::new(replay.map(|r| r.map(Frame::data)).boxed()).boxed_unsync();
        return Ok(state
            .forwarder
            .forward_request(Request::from_parts(parts, body))
            .await);
    }
    let mut mp = multer::Multipart::new(replay, boundary);
    let file = store_upload(
        &caller.store,
        &caller.tenant,
        &mut mp,
        purpose,
        &too_large,
        max_file,
    )
    .await?;
    common::ok(&file)
}

/// Phase 1: parses fields until `purpose` (validated against the upload enum) and returns it
/// with the replay of the whole body.
pub async fn read_purpose<B>(
    body: B,
    boundary: String,
    memory_prefix: usize,
    raw_limit: u64,
    max_file: u64,
    too_large: &TooLarge,
) -> Result<(String, ReplayStream), Error>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let recorder = Arc::new(tokio::sync::Mutex::new(Recorder {
        body,
        memory_prefix,
        ended: false,
        memory: VecDeque::new(),
        memory_len: 0,
        spill: None,
        total: 0,
        limit: raw_limit,
        too_large: too_large.clone(),
    }));
    let purpose = {
        let feed = stream::unfold(recorder.clone(), |rec| async move {
            let item = rec.lock().await.next().await?;
            Some((item, rec))
        });
        let mut mp = multer::Multipart::new(feed, boundary);
        find_purpose(&mut mp, too_large, max_file).await?
    };
    let recorder = Arc::try_unwrap(recorder)
        .map_err(|_| Error::internal("upload recorder still shared"))?
        .into_inner();
    let replay = recorder
        .into_replay()
        .await
        .map_err(|e| Error::internal(format!("upload spill file: {e}")))?;
    Ok((purpose, replay))
}

async fn find_purpose(
    mp: &mut multer::Multipart<'_>,
    too_large: &TooLarge,
    limit: u64,
) -> Result<String, Error> {
    while let Some(mut field) = mp
        .next_field()
        .await
        .map_err(|e| multipart_error(e, too_large, limit))?
    {
        if field.name() == Some("purpose") {
            let purpose = field_text(&mut field, "purpose", too_large, limit).await?;
            if !UPLOAD_PURPOSES.contains(&purpose.as_str()) {
                return Err(invalid_value("purpose", &purpose, UPLOAD_PURPOSES));
            }
            return Ok(purpose);
        }
        drain(&mut field, too_large, limit).await?;
    }
    Err(missing("purpose"))
}

/// Phase 2 for a local purpose: stores the `file` field piece by piece, then the metadata.
async fn store_upload(
    store: &Store,
    tenant: &Tenant,
    mp: &mut multer::Multipart<'_>,
    purpose: String,
    too_large: &TooLarge,
    max_file: u64,
) -> Result<FileObject, Error> {
    let id = new_id("file-");
    let result = store_fields(store, tenant, &id, mp, purpose, too_large, max_file).await;
    if result.is_err() {
        // Pieces already written must not linger without their metadata.
        if let Err(e) = store.files.delete_file(tenant, &id).await {
            tracing::warn!(file_id = %id, error = %e, "could not clean up a failed upload");
        }
    }
    result
}

#[derive(Default)]
struct Expiry {
    anchor: Option<String>,
    seconds: Option<String>,
}

async fn store_fields(
    store: &Store,
    tenant: &Tenant,
    id: &str,
    mp: &mut multer::Multipart<'_>,
    purpose: String,
    too_large: &TooLarge,
    max_file: u64,
) -> Result<FileObject, Error> {
    let created_at = now_secs();
    let mut stored: Option<(String, u64)> = None;
    let mut expiry = Expiry::default();
    while let Some(mut field) = mp
        .next_field()
        .await
        .map_err(|e| multipart_error(e, too_large, max_file))?
    {
        match field.name() {
            Some("file") => {
                if stored.is_some() {
                    return Err(Error::invalid(
                        "Only one 'file' may be uploaded per request.",
                        Some("file"),
                    ));
                }
                let filename = field
                    .file_name()
                    .filter(|n| !n.is_empty())
                    .unwrap_or("file")
                    .to_owned();
                check_filename(&filename)?;
                let bytes =
                    store_content(store, tenant, id, &mut field, too_large, max_file).await?;
                stored = Some((filename, bytes));
            }
            Some("expires_after[anchor]") => {
                expiry.anchor = Some(
                    field_text(&mut field, "expires_after.anchor", too_large, max_file).await?,
                );
            }
            Some("expires_after[seconds]") => {
                expiry.seconds = Some(
                    field_text(&mut field, "expires_after.seconds", too_large, max_file).await?,
                );
            }
            // `purpose` was read in phase 1; other fields are ignored, as OpenAI does.
            _ => drain(&mut field, too_large, max_file).await?,
        }
    }
    let Some((filename, bytes)) = stored else {
        return Err(missing("file"));
    };
    let expires_at = expires_at(created_at, expiry)?;
    let file = FileObject {
        id: id.to_owned(),
        object: "file".into(),
        bytes,
        created_at,
        expires_at,
        filename,
        purpose,
        status: "processed".into(),
        status_details: None,
    };
    store.files.put_file(tenant, &file).await?;
    Ok(file)
}

/// Longest filename kept, in bytes: what file systems allow for a name, so a file the caller
/// downloads can be saved under its own name.
pub const MAX_FILENAME_BYTES: usize = 255;

/// Refuses a filename too long to keep, before any of the content is stored. (OpenAI
/// documents no limit; refusing is clearer than a silently shortened name.)
fn check_filename(name: &str) -> Result<(), Error> {
    if name.len() <= MAX_FILENAME_BYTES {
        return Ok(());
    }
    Err(Error::invalid_code(
        format!(
            "Invalid 'file': filename too long. Expected a filename of at most {MAX_FILENAME_BYTES} bytes, but got one of {} bytes instead.",
            name.len()
        ),
        Some("file"),
        "string_above_max_length",
    ))
}

/// Streams the field into pieces of exactly [`PART_SIZE`] (the last one shorter).
async fn store_content(
    store: &Store,
    tenant: &Tenant,
    id: &str,
    field: &mut multer::Field<'_>,
    too_large: &TooLarge,
    max_file: u64,
) -> Result<u64, Error> {
    let mut buf = BytesMut::with_capacity(PART_SIZE);
    let mut index = 0u32;
    let mut total = 0u64;
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| multipart_error(e, too_large, max_file))?
    {
        total += chunk.len() as u64;
        if total > max_file {
            return Err(Error::PayloadTooLarge { limit: max_file });
        }
        buf.extend_from_slice(&chunk);
        while buf.len() >= PART_SIZE {
            let piece = buf.split_to(PART_SIZE).freeze();
            store.files.put_file_part(tenant, id, index, piece).await?;
            index += 1;
        }
    }
    if !buf.is_empty() {
        store
            .files
            .put_file_part(tenant, id, index, buf.freeze())
            .await?;
    }
    Ok(total)
}

/// `expires_after` of an upload: anchor `created_at`, 3600..=2592000 seconds.
fn expires_at(created_at: i64, e: Expiry) -> Result<Option<i64>, Error> {
    match (e.anchor, e.seconds) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(missing("expires_after.anchor")),
        (Some(_), None) => Err(missing("expires_after.seconds")),
        (Some(anchor), Some(seconds)) => {
            if anchor != "created_at" {
                return Err(invalid_value(
                    "expires_after.anchor",
                    &anchor,
                    &["created_at"],
                ));
            }
            let n: i64 = seconds.parse().map_err(|_| {
                Error::invalid_code(
                    format!(
                        "Invalid type for 'expires_after.seconds': expected an integer, but got '{seconds}' instead."
                    ),
                    Some("expires_after.seconds"),
                    "invalid_type",
                )
            })?;
            check_integer("expires_after.seconds", n, 3600, 2_592_000)?;
            Ok(Some(created_at + n))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    const BOUNDARY: &str = "XyZboundary";

    fn multipart(fields: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, filename, data) in fields {
            out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
            match filename {
                Some(f) => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
                ),
                None => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        out
    }

    type TestBody = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

    /// The body in small frames, as a slow connection would deliver it.
    fn body(bytes: &[u8], frame: usize) -> TestBody {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = bytes
            .chunks(frame)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        StreamBody::new(stream::iter(frames))
    }

    async fn collect(replay: ReplayStream) -> Vec<u8> {
        let parts: Vec<Result<Bytes, BoxError>> = replay.collect().await;
        parts
            .into_iter()
            .flat_map(|p| p.unwrap().to_vec())
            .collect()
    }

    #[tokio::test]
    async fn purpose_first_replays_the_exact_body() {
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let raw = multipart(&[
            ("purpose", None, b"batch"),
            ("file", Some("x.jsonl"), &content),
        ]);
        let tl = TooLarge::default();
        let (purpose, replay) = read_purpose(
            body(&raw, 1000),
            BOUNDARY.into(),
            MEMORY_PREFIX,
            1 << 30,
            1 << 30,
            &tl,
        )
        .await
        .unwrap();
        assert_eq!(purpose, "batch");
        assert_eq!(collect(replay).await, raw);
    }

    #[tokio::test]
    async fn file_first_spills_to_disk_and_replays_the_exact_body() {
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let raw = multipart(&[
            ("file", Some("x.bin"), &content),
            ("expires_after[anchor]", None, b"created_at"),
            ("purpose", None, b"fine-tune"),
        ]);
        let tl = TooLarge::default();
        // A 4 KiB memory prefix: nearly everything goes through the spill file.
        let (purpose, replay) = read_purpose(
            body(&raw, 7000),
            BOUNDARY.into(),
            4096,
            1 << 30,
            1 << 30,
            &tl,
        )
        .await
        .unwrap();
        assert_eq!(purpose, "fine-tune");
        assert_eq!(collect(replay).await, raw);
    }

    #[tokio::test]
    async fn purpose_problems() {
        let tl = TooLarge::default();
        let raw = multipart(&[("file", Some("a.txt"), b"hello")]);
        let e = read_purpose(body(&raw, 64), BOUNDARY.into(), 4096, 1 << 20, 1 << 20, &tl)
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), Some("missing_required_parameter"));
        let raw = multipart(&[("purpose", None, b"answers")]);
        let e = read_purpose(body(&raw, 64), BOUNDARY.into(), 4096, 1 << 20, 1 << 20, &tl)
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), Some("invalid_value"));
        let raw = multipart(&[
            ("file", Some("a.txt"), &[7u8; 10_000]),
            ("purpose", None, b"batch"),
        ]);
        let e = read_purpose(body(&raw, 512), BOUNDARY.into(), 4096, 5000, 5000, &tl)
            .await
            .err()
            .unwrap();
        assert_eq!(e.status(), 413);
    }

    #[test]
    fn filenames_up_to_255_bytes() {
        assert!(check_filename(&"a".repeat(255)).is_ok());
        // Bytes, not characters: 128 two-byte characters are 256 bytes.
        let e = check_filename(&"é".repeat(128)).unwrap_err();
        assert_eq!(e.param(), Some("file"));
        assert!(e.to_string().contains("got one of 256 bytes"), "{e}");
    }

    #[test]
    fn expiry_rules() {
        let e = |a: Option<&str>, s: Option<&str>| Expiry {
            anchor: a.map(str::to_owned),
            seconds: s.map(str::to_owned),
        };
        assert_eq!(expires_at(100, e(None, None)).unwrap(), None);
        assert_eq!(
            expires_at(100, e(Some("created_at"), Some("3600"))).unwrap(),
            Some(3700)
        );
        let err = expires_at(100, e(Some("created_at"), Some("10"))).unwrap_err();
        assert_eq!(err.code(), Some("integer_below_min_value"));
        assert_eq!(err.param(), Some("expires_after.seconds"));
        let err = expires_at(100, e(Some("last_active_at"), Some("3600"))).unwrap_err();
        assert_eq!(err.code(), Some("invalid_value"));
        assert_eq!(
            expires_at(100, e(Some("created_at"), None))
                .unwrap_err()
                .code(),
            Some("missing_required_parameter")
        );
    }
}
