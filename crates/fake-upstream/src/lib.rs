//! A deterministic fake of the OpenAI API (and of a few "proxy torture" routes) that every test
//! and benchmark of `assistants-proxy` uses as its upstream instead of api.openai.com.
//!
//! Why it exists: the proxy is a byte-for-byte forwarder for most of the OpenAI API and runs the
//! Assistants API locally on top of `/v1/chat/completions` and `/v1/embeddings`. Testing that
//! needs an upstream that (a) speaks OpenAI's exact wire format, streaming included, (b) answers
//! deterministically so assertions can be exact, (c) can be scripted to misbehave (errors, slow
//! streams, dropped connections) and (d) records what it received so tests can prove the proxy
//! forwarded bytes, headers and bodies faithfully.
//!
//! Layout: this file holds the server, the request log and the proxy-test routes; `openai.rs`
//! holds the OpenAI emulation (reply selection, chat completions, embeddings), `code_model.rs`
//! the code-calling model, `files.rs` the Files API and `tests.rs` the self-tests. It is a crate
//! of its own (a dev-dependency of assistants-proxy) so the integration tests, the benches and
//! `examples/fake_upstream.rs` share one copy; it does not depend on the proxy, so its types
//! are never compiled twice.
//!
//! Routes (each handler's doc comment below has the details):
//! - OpenAI: `POST /v1/chat/completions`, `POST /v1/embeddings`, `POST/GET /v1/files` and
//!   `GET /v1/files/{id}` (see `fake_upstream/files.rs`), anything else under `/v1/` is a
//!   404 in OpenAI's error envelope. Model names select behaviours (`error-429`, `error-500`,
//!   `drop`, `slow`, `tool-call`, `code-interpreter`, `parallel`), see [`select_reply`];
//!   `code-interpreter` runs the fenced code blocks of the user's message through a
//!   `code_interpreter` function tool, see `code_model.rs`.
//! - Proxy tests: `/echo/...`, `/bytes`, `/bytes-sha`, `/sse`, `/slow-head`, `/slow-body`,
//!   `/trailers`, `/hop`, `/status/{code}`, `/ws`, `/v1/realtime` (WebSocket echo), `/hold`.

// Test support code: a panic here is a test failure with a clear message, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod code_model;
mod files;
mod openai;
#[cfg(test)]
mod tests;

pub use code_model::{CODE_TOOL, code_blocks, code_pieces};
pub use openai::{ScriptedReply, error_body, fake_embedding, select_reply};

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::task::TaskTracker;

/// Bodies up to this size are kept in [`RecordedRequest::body`]; larger ones are only hashed, so
/// a multi-GiB upload through the proxy never sits in memory here.
pub const MAX_KEPT_BODY: usize = 1024 * 1024;
/// The request log is a ring: the oldest entries go first so a long benchmark that forgot
/// `set_recording(false)` cannot exhaust memory.
const MAX_RECORDED_REQUESTS: usize = 100_000;
const MAX_RECORDED_BODY_BYTES: usize = 256 * 1024 * 1024;
/// How long `shutdown` lets in-flight requests finish before connections are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Pause before an abrupt close, so the chunks already handed to hyper reach the socket first
/// (hyper only flushes when the body returns `Pending`; erroring right away could discard them).
const ABORT_FLUSH_GRACE: Duration = Duration::from_millis(20);

/// One request as the fake saw it. Header names are lowercase (hyper normalises them) and come
/// in `http::HeaderMap` order: names in first-seen order, each name's values in received order.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Raw path, percent-encoding preserved.
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body_len: u64,
    pub body_sha256: String,
    /// `None` when the body exceeded [`MAX_KEPT_BODY`].
    pub body: Option<Bytes>,
    /// "HTTP/1.1", "HTTP/2.0", ...
    pub version: String,
    /// Request trailers (chunked h1 or h2), in order.
    pub trailers: Vec<(String, Vec<u8>)>,
}

impl RecordedRequest {
    /// First value of a header (case-insensitive name), as lossy UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The body parsed as JSON (`Null` if absent or not JSON).
    pub fn json(&self) -> Value {
        self.body
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null)
    }
}

/// A running fake upstream. Its tasks run on the tokio runtime that started it (so a fake shared
/// between `#[tokio::test]`s dies with the first test's runtime: start one per test). Dropping it
/// also stops it (all tasks watch the shutdown channel, which closes with it);
/// [`FakeUpstream::shutdown`] additionally waits until everything has ended.
pub struct FakeUpstream {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tracker: TaskTracker,
}

impl FakeUpstream {
    /// Plain HTTP/1.1 and h2c (prior knowledge) on 127.0.0.1, on a free port.
    pub async fn start() -> FakeUpstream {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(addr: SocketAddr) -> FakeUpstream {
        Self::launch(addr, None).await
    }

    /// HTTPS on 127.0.0.1 (use [`FakeUpstream::url`], which says `localhost`, so the
    /// certificate's name matches), ALPN `h2` and `http/1.1`.
    pub async fn start_tls(cert_chain_pem: &str, key_pem: &str) -> FakeUpstream {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};

        let certs = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("fake upstream: invalid certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .expect("fake upstream: invalid private key PEM");
        let mut config = rustls::ServerConfig::builder_with_provider(tls_provider())
            .with_safe_default_protocol_versions()
            .expect("fake upstream: TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("fake upstream: certificate/key mismatch");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::launch(SocketAddr::from(([127, 0, 0, 1], 0)), Some(acceptor)).await
    }

    async fn launch(addr: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> FakeUpstream {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("fake upstream: cannot bind {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::new());
        let (stop, stop_rx) = watch::channel(false);
        let tracker = TaskTracker::new();
        let is_tls = tls.is_some();
        tracker.spawn(accept_loop(
            listener,
            tls,
            shared.clone(),
            stop_rx,
            tracker.clone(),
        ));
        FakeUpstream {
            addr,
            tls: is_tls,
            shared,
            stop,
            tracker,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` for a TLS fake.
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// Everything received (while recording was on), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .log
            .lock()
            .unwrap()
            .entries
            .iter()
            .cloned()
            .collect()
    }

    /// Forget the recorded requests (counters are kept).
    pub fn clear_requests(&self) {
        let mut log = self.shared.log.lock().unwrap();
        log.entries.clear();
        log.body_bytes = 0;
    }

    /// Parsed bodies of `POST /v1/chat/completions` requests, oldest first.
    pub fn chat_requests(&self) -> Vec<Value> {
        self.json_bodies("/v1/chat/completions")
    }

    /// Parsed bodies of `POST /v1/embeddings` requests, oldest first.
    pub fn embedding_requests(&self) -> Vec<Value> {
        self.json_bodies("/v1/embeddings")
    }

    fn json_bodies(&self, path: &str) -> Vec<Value> {
        let log = self.shared.log.lock().unwrap();
        log.entries
            .iter()
            .filter(|r| r.method == "POST" && r.path == path)
            .map(RecordedRequest::json)
            .collect()
    }

    /// Turn the request log on or off (on by default). Benchmarks turn it off; counters keep
    /// counting either way.
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Ordering::Relaxed);
    }

    /// Requests received so far, recorded or not.
    pub fn request_count(&self) -> u64 {
        self.shared.total_requests.load(Ordering::Relaxed)
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// TCP connections currently open (an upgraded WebSocket counts until it ends).
    pub fn connections_open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// TCP connections closed so far.
    pub fn connections_closed(&self) -> usize {
        *self.shared.closed.borrow()
    }

    /// Resolves `true` as soon as a connection has closed that no earlier call reported (so a
    /// close that happened just before the call is not missed), `false` on timeout. For exact
    /// accounting use [`FakeUpstream::connections_closed`] and
    /// [`FakeUpstream::wait_for_connections_closed`].
    pub async fn wait_for_connection_closed(&self, timeout: Duration) -> bool {
        let reported = *self.shared.closed_reported.lock().unwrap();
        let mut rx = self.shared.closed.subscribe();
        let seen = match tokio::time::timeout(timeout, rx.wait_for(|&n| n > reported)).await {
            Ok(Ok(n)) => *n,
            _ => return false,
        };
        let mut r = self.shared.closed_reported.lock().unwrap();
        *r = (*r).max(seen);
        true
    }

    /// Resolves `true` once at least `total` connections have closed since start.
    pub async fn wait_for_connections_closed(&self, total: usize, timeout: Duration) -> bool {
        let mut rx = self.shared.closed.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|&n| n >= total)).await,
            Ok(Ok(_))
        )
    }

    /// Queue a reply for the next `/v1/chat/completions` request (FIFO, one per request).
    pub fn push_chat_script(&self, reply: ScriptedReply) {
        self.shared.scripts.lock().unwrap().push_back(reply);
    }

    /// Delay between streamed chat-completion chunks (default 0).
    pub fn set_chunk_delay(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.shared.chunk_delay_us.store(us, Ordering::Relaxed);
    }

    /// Hold every `/v1/embeddings` request (recorded, unanswered) until [`Self::release_embeddings`]:
    /// lets a test keep a vector-store file `in_progress` for as long as it needs.
    pub fn hold_embeddings(&self) {
        self.shared.embeddings_held.send_replace(true);
    }

    /// Answer the held embeddings requests and stop holding new ones.
    pub fn release_embeddings(&self) {
        self.shared.embeddings_held.send_replace(false);
    }

    /// Adds a file to the fake's `/v1/files` with the given `created_at`, as if uploaded
    /// then; returns its file object.
    pub fn add_file(&self, purpose: &str, filename: &str, created_at: i64) -> Value {
        self.shared.add_file(purpose, filename, 1, Some(created_at))
    }

    /// Makes `GET /v1/files` answer this status (an OpenAI error) until called with `None`.
    pub fn fail_file_list(&self, status: Option<u16>) {
        self.shared
            .file_list_status
            .store(status.unwrap_or(0), Ordering::Relaxed);
    }

    /// Stop accepting, let in-flight requests finish for up to a second, then cut the rest and
    /// wait until every connection task has ended.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// State shared by the handle, the accept loop and every connection.
struct Shared {
    recording: AtomicBool,
    log: Mutex<RequestLog>,
    total_requests: AtomicU64,
    scripts: Mutex<VecDeque<ScriptedReply>>,
    chunk_delay_us: AtomicU64,
    /// `true` while embeddings requests wait (a watch, so every waiter sees the release).
    embeddings_held: watch::Sender<bool>,
    /// The files of `/v1/files`.
    files: Mutex<files::FileSet>,
    /// Non-zero: the status `GET /v1/files` fails with.
    file_list_status: AtomicU16,
    accepted: AtomicUsize,
    open: AtomicUsize,
    /// Count of closed connections; a watch channel so waiters cannot miss an update.
    closed: watch::Sender<usize>,
    closed_reported: Mutex<usize>,
    /// Source of unique ids (chatcmpl-…, call_…, x-request-id).
    ids: AtomicU64,
}

#[derive(Default)]
struct RequestLog {
    entries: VecDeque<RecordedRequest>,
    body_bytes: usize,
}

impl Shared {
    fn new() -> Self {
        Shared {
            recording: AtomicBool::new(true),
            log: Mutex::new(RequestLog::default()),
            total_requests: AtomicU64::new(0),
            scripts: Mutex::new(VecDeque::new()),
            chunk_delay_us: AtomicU64::new(0),
            embeddings_held: watch::Sender::new(false),
            files: Mutex::new(files::FileSet::default()),
            file_list_status: AtomicU16::new(0),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            closed: watch::Sender::new(0),
            closed_reported: Mutex::new(0),
            ids: AtomicU64::new(1),
        }
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    fn chunk_delay(&self) -> Duration {
        Duration::from_micros(self.chunk_delay_us.load(Ordering::Relaxed))
    }

    fn record(&self, parts: &Parts, body: &BodySummary) {
        self.total_requests.fetch_add(1, Ordering::Relaxed);
        if !self.recording.load(Ordering::Relaxed) {
            return;
        }
        let entry = RecordedRequest {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: header_pairs(&parts.headers),
            body_len: body.len,
            body_sha256: body.sha256.clone(),
            body: body.bytes.clone(),
            version: format!("{:?}", parts.version),
            trailers: body.trailers.clone(),
        };
        let mut log = self.log.lock().unwrap();
        log.body_bytes += entry.body.as_ref().map_or(0, Bytes::len);
        log.entries.push_back(entry);
        while log.entries.len() > MAX_RECORDED_REQUESTS || log.body_bytes > MAX_RECORDED_BODY_BYTES
        {
            let Some(old) = log.entries.pop_front() else {
                break;
            };
            log.body_bytes -= old.body.as_ref().map_or(0, Bytes::len);
        }
    }
}

/// Counts one accepted TCP connection for as long as it lives. Shared (`Arc`) between the
/// connection task and, after a WebSocket upgrade, the echo task that owns the socket then.
struct ConnGuard(Arc<Shared>);

impl ConnGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        shared.open.fetch_add(1, Ordering::SeqCst);
        ConnGuard(shared)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.closed.send_modify(|n| *n += 1);
    }
}

/// What every request handler gets: the shared state plus what it needs to spawn work that
/// outlives the request (WebSocket echo) and still stops on shutdown.
#[derive(Clone)]
struct ConnCtx {
    shared: Arc<Shared>,
    guard: Arc<ConnGuard>,
    tracker: TaskTracker,
    stop: watch::Receiver<bool>,
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    tracker: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // EMFILE and friends: back off instead of spinning.
                Err(_) => { tokio::time::sleep(Duration::from_millis(10)).await; continue; }
            },
            // Err means the FakeUpstream was dropped: stop as well.
            _ = stop.changed() => break,
        };
        // Streamed chunks must leave as soon as they are written, not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let ctx = ConnCtx {
            guard: Arc::new(ConnGuard::new(shared.clone())),
            shared: shared.clone(),
            tracker: tracker.clone(),
            stop: stop.clone(),
        };
        tracker.spawn(serve_tcp(stream, tls.clone(), ctx));
    }
}

async fn serve_tcp(stream: TcpStream, tls: Option<tokio_rustls::TlsAcceptor>, ctx: ConnCtx) {
    match tls {
        None => serve_io(TokioIo::new(stream), ctx).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
            if let Ok(Ok(stream)) = handshake.await {
                serve_io(TokioIo::new(stream), ctx).await;
            }
        }
    }
}

async fn serve_io<I>(io: TokioIo<I>, ctx: ConnCtx)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stop = ctx.stop.clone();
    let service_ctx = ctx.clone();
    let service = hyper::service::service_fn(move |req| handle(service_ctx.clone(), req));
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
        }
    }
}

/// Returned by a handler to make hyper drop the connection without a response (h1) or reset the
/// stream (h2); also the error a [`FakeBody`] yields to cut a response short.
#[derive(Debug)]
pub struct Abort;

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fake upstream: deliberate abort")
    }
}

impl std::error::Error for Abort {}

type HandlerResult = Result<Response<FakeBody>, Abort>;

async fn handle(ctx: ConnCtx, req: hyper::Request<Incoming>) -> HandlerResult {
    let (mut parts, body) = req.into_parts();
    // Read (and hash) the whole body before answering, so every route records it the same way.
    let body = read_body(body).await?;
    ctx.shared.record(&parts, &body);

    let path = parts.uri.path();
    let query = parts.uri.query();
    let method = &parts.method;
    if path == "/echo" || path.starts_with("/echo/") {
        return Ok(echo(&parts, &body));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return Ok(status_route(code));
    }
    let resp = match (method, path) {
        (&Method::POST, "/v1/chat/completions") => openai::chat_completions(&ctx.shared, &body)?,
        (&Method::POST, "/v1/embeddings") => {
            let mut held = ctx.shared.embeddings_held.subscribe();
            // Err only if the sender is gone, which outlives every connection.
            let _ = held.wait_for(|held| !held).await;
            openai::embeddings(&ctx.shared, &body)
        }
        (&Method::POST, "/v1/files") => {
            let ct = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            files::upload(&ctx.shared, ct, &body).await
        }
        (&Method::GET, "/v1/files") => files::list(&ctx.shared, query),
        (&Method::GET, p) if p.starts_with("/v1/files/") => {
            files::retrieve(&ctx.shared, &p["/v1/files/".len()..])
        }
        (&Method::GET, "/ws" | "/v1/realtime") => websocket(&ctx, &mut parts),
        (&Method::GET, "/bytes") => bytes_route(query),
        (&Method::GET, "/bytes-sha") => bytes_sha_route(query).await,
        (&Method::GET, "/sse") => sse_route(query),
        (&Method::GET, "/slow-head") => {
            let ms = param_u64(query, "ms").unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json_response(StatusCode::OK, &json!({ "slept_ms": ms }))
        }
        (&Method::GET, "/slow-body") => slow_body_route(query),
        (&Method::GET, "/trailers") => trailers_route(),
        (&Method::GET, "/hop") => hop_route(),
        (&Method::GET, "/hold") => hold_route(query),
        _ => invalid_url(method, path),
    };
    Ok(resp)
}

/// The body as read: its length and SHA-256 always, the bytes only if small enough.
struct BodySummary {
    len: u64,
    sha256: String,
    bytes: Option<Bytes>,
    trailers: Vec<(String, Vec<u8>)>,
}

async fn read_body(mut body: Incoming) -> Result<BodySummary, Abort> {
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    // Chunks kept while the total stays under MAX_KEPT_BODY; the usual single-chunk body is
    // then kept without copying.
    let mut kept: Option<Vec<Bytes>> = Some(Vec::new());
    let mut trailers = Vec::new();
    while let Some(frame) = body.frame().await {
        // A client that vanished mid-body: nothing sensible to answer.
        let frame = frame.map_err(|_| Abort)?;
        match frame.into_data() {
            Ok(data) => {
                hasher.update(&data);
                len += data.len() as u64;
                if len > MAX_KEPT_BODY as u64 {
                    kept = None;
                } else if let Some(chunks) = kept.as_mut() {
                    chunks.push(data);
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = header_pairs(&t);
                }
            }
        }
    }
    let bytes = kept.map(|mut chunks| match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap(),
        _ => {
            let mut all = BytesMut::with_capacity(len as usize);
            chunks.iter().for_each(|c| all.extend_from_slice(c));
            all.freeze()
        }
    });
    Ok(BodySummary {
        len,
        sha256: hex::encode(hasher.finalize()),
        bytes,
        trailers,
    })
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Response bodies
// ---------------------------------------------------------------------------------------------

/// The one body type of every response: a full buffer, or a lazily produced, paced sequence of
/// chunks (each chunk is a separate DATA frame / h1 chunk, flushed whenever the next one is not
/// ready yet), optionally ending with trailers or with an abrupt abort.
pub struct FakeBody(BodyKind);

enum BodyKind {
    Full(Option<Bytes>),
    Paced(Paced),
}

struct Paced {
    /// Produces chunk `i` (0-based) when it is due, so e.g. SSE timestamps are taken at send time.
    next: Box<dyn FnMut(usize) -> Bytes + Send>,
    count: usize,
    sent: usize,
    first_delay: Duration,
    first_delay_done: bool,
    delay: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes still to come, when known up front (then it is also the Content-Length).
    remaining: Option<u64>,
    end: Option<End>,
    abort_armed: bool,
    done: bool,
}

enum End {
    Trailers(HeaderMap),
    Abort,
    /// Never end: the body stays open with nothing more to send.
    Stall,
}

impl FakeBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        FakeBody(BodyKind::Full(Some(bytes.into())))
    }

    pub fn empty() -> Self {
        FakeBody(BodyKind::Full(None))
    }

    /// `count` chunks from `next`, `delay` apart (the first after `first_delay`).
    fn paced(
        count: usize,
        first_delay: Duration,
        delay: Duration,
        next: impl FnMut(usize) -> Bytes + Send + 'static,
    ) -> Self {
        FakeBody(BodyKind::Paced(Paced {
            next: Box::new(next),
            count,
            sent: 0,
            first_delay,
            first_delay_done: false,
            delay,
            sleep: None,
            remaining: None,
            end: None,
            abort_armed: false,
            done: false,
        }))
    }

    /// Pre-built chunks, `delay` apart.
    fn chunks(chunks: Vec<Bytes>, delay: Duration) -> Self {
        let count = chunks.len();
        let mut it = chunks.into_iter();
        Self::paced(count, Duration::ZERO, delay, move |_| {
            it.next().unwrap_or_default()
        })
    }

    /// Declare the exact total length (advertised as size hint, so hyper uses Content-Length).
    fn with_len(mut self, len: u64) -> Self {
        if let BodyKind::Paced(p) = &mut self.0 {
            p.remaining = Some(len);
        }
        self
    }

    fn with_trailers(mut self, trailers: HeaderMap) -> Self {
        if let BodyKind::Paced(p) = &mut self.0 {
            p.end = Some(End::Trailers(trailers));
        }
        self
    }

    /// End with an error instead of a clean end: hyper then closes the h1 connection without
    /// the terminating chunk, or resets the h2 stream.
    fn then_abort(mut self) -> Self {
        if let BodyKind::Paced(p) = &mut self.0 {
            p.end = Some(End::Abort);
        }
        self
    }

    /// Never end: after the chunks, the body stays open and silent until the client leaves.
    pub(crate) fn then_stall(mut self) -> Self {
        if let BodyKind::Paced(p) = &mut self.0 {
            p.end = Some(End::Stall);
        }
        self
    }
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = Abort;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Abort>>> {
        match &mut self.get_mut().0 {
            BodyKind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            BodyKind::Paced(p) => p.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            BodyKind::Full(bytes) => bytes.is_none(),
            BodyKind::Paced(p) => p.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            BodyKind::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            BodyKind::Paced(Paced {
                remaining: Some(n), ..
            }) => SizeHint::with_exact(*n),
            BodyKind::Paced(_) => SizeHint::default(),
        }
    }
}

impl Paced {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Abort>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            if let Some(sleep) = self.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
            }
            if self.sent < self.count {
                if self.sent == 0 && !self.first_delay.is_zero() && !self.first_delay_done {
                    self.first_delay_done = true;
                    self.sleep = Some(Box::pin(tokio::time::sleep(self.first_delay)));
                    continue;
                }
                let chunk = (self.next)(self.sent);
                self.sent += 1;
                // Pause between chunks only, so the end of the body is not delayed.
                if self.sent < self.count && !self.delay.is_zero() {
                    self.sleep = Some(Box::pin(tokio::time::sleep(self.delay)));
                }
                if let Some(rem) = self.remaining.as_mut() {
                    *rem = rem.saturating_sub(chunk.len() as u64);
                }
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            match self.end.take() {
                None => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Some(End::Trailers(t)) => {
                    self.done = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                Some(End::Abort) if !self.abort_armed => {
                    self.abort_armed = true;
                    self.end = Some(End::Abort);
                    self.sleep = Some(Box::pin(tokio::time::sleep(ABORT_FLUSH_GRACE)));
                }
                Some(End::Abort) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(Abort)));
                }
                Some(End::Stall) => {
                    // Kept, so every later poll stalls too; no waker is kept: nothing will
                    // ever come (hyper still notices the client closing the connection).
                    self.end = Some(End::Stall);
                    return Poll::Pending;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// The crypto provider of the fake's TLS, named rather than the process default: a test may or
/// may not have installed one, and rustls panics if it has to guess. aws-lc-rs, the one provider
/// the proxy compiles (a second, ring, would be built only for this).
fn tls_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn json_response(status: StatusCode, value: &Value) -> Response<FakeBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(FakeBody::full(serde_json::to_vec(value).unwrap()))
        .unwrap()
}

/// OpenAI's error envelope.
fn openai_error(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: Option<&str>,
) -> Response<FakeBody> {
    json_response(
        status,
        &json!({ "error": { "message": message, "type": kind, "param": null, "code": code } }),
    )
}

fn invalid_url(method: &Method, path: &str) -> Response<FakeBody> {
    openai_error(
        StatusCode::NOT_FOUND,
        &format!("Invalid URL ({method} {path})"),
        "invalid_request_error",
        None,
    )
}

/// A query parameter's raw value (no percent-decoding: every parameter here is numeric).
fn param<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

fn param_u64(query: Option<&str>, key: &str) -> Option<u64> {
    param(query, key)?.parse().ok()
}

fn unix_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

// ---------------------------------------------------------------------------------------------
// Proxy-test routes
// ---------------------------------------------------------------------------------------------

/// `ANY /echo/...`: what arrived, as JSON. Header values are given lossily as UTF-8 and exactly
/// as hex (`headers_raw_hex`) so obs-text bytes can be compared.
fn echo(parts: &Parts, body: &BodySummary) -> Response<FakeBody> {
    let lossy = |pairs: &[(String, Vec<u8>)]| -> Vec<Value> {
        pairs
            .iter()
            .map(|(n, v)| json!([n, String::from_utf8_lossy(v)]))
            .collect()
    };
    let headers = header_pairs(&parts.headers);
    let raw: Vec<Value> = headers
        .iter()
        .map(|(n, v)| json!([n, hex::encode(v)]))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "version": format!("{:?}", parts.version),
            "headers": lossy(&headers),
            "headers_raw_hex": raw,
            "trailers": lossy(&body.trailers),
            "body_len": body.len,
            "body_sha256": body.sha256,
        }),
    )
}

/// Deterministic byte stream for `/bytes`: splitmix64 output, little-endian, independent of how
/// it is cut into chunks (a hand-rolled generator because rand's seeded RNGs are not promised to
/// be stable across versions).
struct ByteStream {
    state: u64,
    leftover: [u8; 8],
    leftover_len: usize,
}

impl ByteStream {
    fn new(seed: u64) -> Self {
        ByteStream {
            state: seed,
            leftover: [0; 8],
            leftover_len: 0,
        }
    }

    fn next_word(&mut self) -> [u8; 8] {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).to_le_bytes()
    }

    fn fill(&mut self, mut out: &mut [u8]) {
        // Bytes left over from the previous word come first ...
        let take = self.leftover_len.min(out.len());
        let start = 8 - self.leftover_len;
        out[..take].copy_from_slice(&self.leftover[start..start + take]);
        self.leftover_len -= take;
        out = &mut out[take..];
        // ... then whole words ...
        let mut words = out.chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.next_word());
        }
        // ... and the start of one more, keeping its tail for next time.
        let tail = words.into_remainder();
        if !tail.is_empty() {
            let word = self.next_word();
            tail.copy_from_slice(&word[..tail.len()]);
            self.leftover = word;
            self.leftover_len = 8 - tail.len();
        }
    }
}

/// `GET /bytes?n=N&seed=S[&chunked=1][&chunk=K]`: N deterministic bytes in K-byte frames
/// (default 16 KiB), with Content-Length unless `chunked=1`.
fn bytes_route(query: Option<&str>) -> Response<FakeBody> {
    let n = param_u64(query, "n").unwrap_or(0);
    let seed = param_u64(query, "seed").unwrap_or(0);
    let chunk = param_u64(query, "chunk")
        .unwrap_or(16 * 1024)
        .clamp(1, 4 * 1024 * 1024);
    let chunked = param(query, "chunked") == Some("1");
    let count = n.div_ceil(chunk) as usize;
    let mut stream = ByteStream::new(seed);
    let mut left = n;
    let mut body = FakeBody::paced(count, Duration::ZERO, Duration::ZERO, move |_| {
        let len = left.min(chunk) as usize;
        left -= len as u64;
        let mut buf = BytesMut::zeroed(len);
        stream.fill(&mut buf);
        buf.freeze()
    });
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("x-fake-seed", seed);
    if !chunked {
        resp = resp.header(header::CONTENT_LENGTH, n);
        body = body.with_len(n);
    }
    resp.body(body).unwrap()
}

/// `GET /bytes-sha?n=N&seed=S`: hex SHA-256 of what `/bytes` sends for the same N and seed.
async fn bytes_sha_route(query: Option<&str>) -> Response<FakeBody> {
    let n = param_u64(query, "n").unwrap_or(0);
    let seed = param_u64(query, "seed").unwrap_or(0);
    // Hashing a few GiB takes seconds: keep it off the async workers.
    let digest = tokio::task::spawn_blocking(move || bytes_sha256(n, seed))
        .await
        .unwrap();
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(FakeBody::full(digest))
        .unwrap()
}

fn bytes_sha256(n: u64, seed: u64) -> String {
    let mut stream = ByteStream::new(seed);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let len = left.min(buf.len() as u64) as usize;
        stream.fill(&mut buf[..len]);
        hasher.update(&buf[..len]);
        left -= len as u64;
    }
    hex::encode(hasher.finalize())
}

/// `GET /sse?n=50&interval_ms=20`: n timestamped events, `interval_ms` apart, then `[DONE]`.
fn sse_route(query: Option<&str>) -> Response<FakeBody> {
    let n = param_u64(query, "n").unwrap_or(50) as usize;
    let interval = Duration::from_millis(param_u64(query, "interval_ms").unwrap_or(20));
    let body = FakeBody::paced(n + 1, Duration::ZERO, interval, move |i| {
        if i < n {
            Bytes::from(format!(
                "data: {{\"i\":{i},\"sent_us\":{}}}\n\n",
                unix_micros()
            ))
        } else {
            Bytes::from_static(b"data: [DONE]\n\n")
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap()
}

/// `GET /slow-body?ms=M`: the head at once, the (Content-Length-framed) body after M ms.
fn slow_body_route(query: Option<&str>) -> Response<FakeBody> {
    let ms = param_u64(query, "ms").unwrap_or(0);
    let text = Bytes::from(format!("{{\"slept_ms\":{ms}}}"));
    let len = text.len() as u64;
    let body = FakeBody::paced(1, Duration::from_millis(ms), Duration::ZERO, move |_| {
        text.clone()
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, len)
        .body(body.with_len(len))
        .unwrap()
}

pub const TRAILERS_BODY: [&str; 3] = [
    "trailer chunk 1\n",
    "trailer chunk 2\n",
    "trailer chunk 3\n",
];

/// `GET /trailers`: three chunks then trailers `x-checksum` (SHA-256 of the body) and
/// `grpc-status: 0`. Over HTTP/1.1 hyper only sends them if the request said `TE: trailers`
/// and the response announces them in `Trailer` (done here); otherwise the body just ends.
fn trailers_route() -> Response<FakeBody> {
    let checksum = hex::encode(Sha256::digest(TRAILERS_BODY.concat().as_bytes()));
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_str(&checksum).unwrap());
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let chunks = TRAILERS_BODY
        .iter()
        .map(|s| Bytes::from_static(s.as_bytes()))
        .collect();
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .header(header::TRAILER, "x-checksum, grpc-status")
        .body(FakeBody::chunks(chunks, Duration::ZERO).with_trailers(trailers))
        .unwrap()
}

/// `GET /hop`: hop-by-hop headers a proxy must strip next to end-to-end ones it must keep.
/// hyper's HTTP/1.1 server writes all of them as given; its HTTP/2 server drops `connection`,
/// the headers that `connection` names, `keep-alive`, `proxy-connection`, `upgrade` and
/// `transfer-encoding` itself (they are illegal in h2), so only h1 shows the full set.
fn hop_route() -> Response<FakeBody> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .header(header::CONNECTION, "x-hop-custom, keep-alive")
        .header("x-hop-custom", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header(header::PROXY_AUTHENTICATE, "Basic")
        .header(header::UPGRADE, "h2c")
        .header("x-end-to-end", "yes")
        .header("x-end-to-end", "yes-again")
        .header(header::SET_COOKIE, "a=1; Path=/")
        .header(header::SET_COOKIE, "b=2; Path=/")
        .body(FakeBody::full("hop\n"))
        .unwrap()
}

/// `ANY /status/{code}`: that status with OpenAI's error envelope and `x-fake-status`.
fn status_route(code: &str) -> Response<FakeBody> {
    let Some(status) = code
        .parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
    else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "bad status code",
            "invalid_request_error",
            None,
        );
    };
    if status.is_informational() {
        // A 1xx cannot be a final response; hyper would refuse it.
        return openai_error(
            StatusCode::BAD_REQUEST,
            "1xx is not a final status",
            "invalid_request_error",
            None,
        );
    }
    let mut resp = if matches!(status.as_u16(), 204 | 205 | 304) {
        // These must not carry a body.
        Response::new(FakeBody::empty())
    } else {
        json_response(
            status,
            &json!({ "error": { "message": "fake error", "type": "server_error", "param": null, "code": null } }),
        )
    };
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("x-fake-status", HeaderValue::from(status.as_u16()));
    resp
}

/// `GET /hold?ms=M`: the head at once, then one byte every 100 ms until M ms have passed. A
/// test drops the client and then watches for the fake's connection to close.
fn hold_route(query: Option<&str>) -> Response<FakeBody> {
    let ms = param_u64(query, "ms").unwrap_or(1000);
    let count = (ms / 100 + 1) as usize;
    let body = FakeBody::paced(count, Duration::ZERO, Duration::from_millis(100), |_| {
        Bytes::from_static(b".")
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .unwrap()
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// `GET /ws`, `GET /v1/realtime` with `Upgrade: websocket`: an echo server. Text and binary
/// messages come back unchanged; the text message `close` makes the server close.
fn websocket(ctx: &ConnCtx, parts: &mut Parts) -> Response<FakeBody> {
    let headers = &parts.headers;
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()));
    let upgrade_asked = header_has_token(headers, header::UPGRADE, "websocket")
        && header_has_token(headers, header::CONNECTION, "upgrade");
    let (Some(accept), true, Some(on_upgrade)) = (
        key,
        upgrade_asked,
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
    ) else {
        let mut resp = openai_error(
            StatusCode::UPGRADE_REQUIRED,
            "expected a WebSocket upgrade",
            "invalid_request_error",
            None,
        );
        resp.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return resp;
    };
    // A client that offers subprotocols fails the handshake unless one is selected (OpenAI's
    // Realtime API picks "realtime"); echo the first offered.
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|p| p.trim().to_owned());

    let guard = ctx.guard.clone();
    let mut stop = ctx.stop.clone();
    ctx.tracker.spawn(async move {
        // The upgraded socket is still "the connection": keep counting it as open.
        let _guard = guard;
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        loop {
            let msg = tokio::select! {
                msg = ws.next() => msg,
                _ = stop.changed() => { let _ = ws.close(None).await; return; }
            };
            match msg {
                Some(Ok(Message::Text(t))) if t.as_str() == "close" => {
                    let _ = ws.close(None).await;
                    // Wait for the peer's close reply so the closing handshake completes.
                    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
                    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
                    return;
                }
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    if ws.send(m).await.is_err() {
                        return;
                    }
                }
                // Pings are answered and close frames replied to by tungstenite itself while we
                // keep polling; the stream then ends with `None`.
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return,
            }
        }
    });

    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(p) = protocol {
        resp = resp.header(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    resp.body(FakeBody::empty()).unwrap()
}
