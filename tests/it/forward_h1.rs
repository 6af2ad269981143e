//! HTTP/1.1 forwarding conformance, driven over raw sockets.
//!
//! Every case runs against both ways a plain-text HTTP/1.1 request can be forwarded: the
//! proxy's own relay (`[server] http1_fast_path = true`) and hyper (`false`). The two must
//! behave the same, so the assertions are about semantics (status, body bytes, what the
//! upstream received, whether a connection is reused or closed), never about choices HTTP/1.1
//! leaves to the sender (a `date` header, chunked versus close-delimited framing of a body of
//! unknown length, grouping of repeated header fields).
//!
//! Most cases use [`Scripted`], a raw upstream whose answers are written byte for byte by the
//! test and which records the raw request heads it received; the rest use the fake upstream.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::proxy::{raw_exchange, split_head};
use crate::support::{FakeUpstream, TestProxy, client, get};

/// Both forwarding paths: every test runs its case once per value.
const MODES: [bool; 2] = [true, false];
/// The longest any single read or write may take before the test fails (so a regression
/// fails in seconds instead of hanging).
const IO_TIMEOUT: Duration = Duration::from_secs(5);

async fn start_proxy(upstream: &str, fast: bool) -> TestProxy {
    TestProxy::start_with(upstream, &format!("[server]\nhttp1_fast_path = {fast}\n")).await
}

/// The setting, for assertion messages.
fn mode(fast: bool) -> String {
    format!("http1_fast_path = {fast}")
}

// ---------------------------------------------------------------------------------------------
// Wire helpers: a buffered raw socket, HTTP/1 heads, chunked bodies
// ---------------------------------------------------------------------------------------------

/// Header fields as received: name as sent, value without surrounding whitespace.
type Headers = Vec<(String, Vec<u8>)>;

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn eof(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("connection closed {what}"),
    )
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// A raw socket with a read buffer.
struct Wire {
    s: TcpStream,
    buf: Vec<u8>,
    /// Per read; `None` waits for ever (the scripted upstream's idle connections).
    timeout: Option<Duration>,
}

impl Wire {
    fn new(s: TcpStream, timeout: Option<Duration>) -> Wire {
        Wire {
            s,
            buf: Vec::new(),
            timeout,
        }
    }

    /// Reads once more into the buffer; 0 at EOF.
    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let read = self.s.read(&mut chunk);
        let n = match self.timeout {
            Some(t) => tokio::time::timeout(t, read)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "read timed out"))??,
            None => read.await?,
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next head, CRLF CRLF included; `None` at an EOF before its first byte.
    async fn head(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                return Ok(Some(self.buf.drain(..pos + 4).collect()));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(eof("inside a head"))
                };
            }
        }
    }

    /// The next line, without its CRLF.
    async fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let mut line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                line.truncate(pos);
                return Ok(line);
            }
            if self.fill().await? == 0 {
                return Err(eof("inside a line"));
            }
        }
    }

    async fn exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(eof("inside a body"));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn until_eof(&mut self) -> io::Result<Vec<u8>> {
        while self.fill().await? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// A chunked body (extensions ignored): the decoded bytes and the trailer fields.
    async fn chunked(&mut self) -> io::Result<(Vec<u8>, Headers)> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = line.split(|&b| b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size)
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "bad chunk size line {:?}",
                        String::from_utf8_lossy(&line)
                    ))
                })?;
            if size == 0 {
                let mut trailers = Vec::new();
                loop {
                    let line = self.line().await?;
                    if line.is_empty() {
                        return Ok((body, trailers));
                    }
                    trailers.push(parse_field(&line)?);
                }
            }
            body.extend_from_slice(&self.exact(size).await?);
            let crlf = self.exact(2).await?;
            if crlf != b"\r\n" {
                return Err(bad(format!("chunk not followed by CRLF: {crlf:?}")));
            }
        }
    }
}

fn parse_field(line: &[u8]) -> io::Result<(String, Vec<u8>)> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| bad(format!("bad field {:?}", String::from_utf8_lossy(line))))?;
    let name = String::from_utf8_lossy(&line[..colon]).into_owned();
    let value = line[colon + 1..].trim_ascii().to_vec();
    Ok((name, value))
}

/// A parsed head: its first line and its fields.
struct Head {
    start: String,
    headers: Headers,
}

fn parse_head(raw: &[u8]) -> io::Result<Head> {
    let text = raw.strip_suffix(b"\r\n\r\n").unwrap_or(raw);
    let mut lines = text
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let start = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let headers = lines.map(parse_field).collect::<io::Result<_>>()?;
    Ok(Head { start, headers })
}

/// Every value of a field, in order (name compared case-insensitively).
fn values(headers: &Headers, name: &str) -> Vec<Vec<u8>> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .collect()
}

/// The first value of a field, as lossy text.
fn value(headers: &Headers, name: &str) -> Option<String> {
    values(headers, name)
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Whether a comma-separated field (e.g. `Connection`) lists `token`.
fn has_token(headers: &Headers, name: &str, token: &str) -> bool {
    values(headers, name).iter().any(|v| {
        String::from_utf8_lossy(v)
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// Fields grouped by lowercase name in first-seen order, each name's values in order. HTTP
/// gives meaning to the order of a name's values, not to how different names interleave, and
/// a proxy may regroup them (hyper does); this is what must survive a hop.
fn grouped(headers: &Headers) -> Vec<(String, Vec<Vec<u8>>)> {
    let mut out: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    for (name, v) in headers {
        let name = name.to_ascii_lowercase();
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, vs)) => vs.push(v.clone()),
            None => out.push((name, vec![v.clone()])),
        }
    }
    out
}

/// How a response body was delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body by definition (HEAD, 1xx, 204, 304).
    Empty,
    Length,
    Chunked,
    /// Read until the connection closed.
    Close,
}

#[derive(Debug)]
struct Resp {
    /// Interim (1xx) statuses relayed before the final one.
    interim: Vec<u16>,
    start: String,
    status: u16,
    headers: Headers,
    body: Vec<u8>,
    trailers: Headers,
    framing: Framing,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        value(&self.headers, name)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.start, self.text()))
    }
}

/// A client connection to the proxy.
struct Conn {
    wire: Wire,
    what: String,
}

impl Conn {
    async fn open(addr: SocketAddr, what: impl Into<String>) -> Conn {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            wire: Wire::new(s, Some(IO_TIMEOUT)),
            what: what.into(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(IO_TIMEOUT, self.wire.s.write_all(bytes))
            .await
            .unwrap_or_else(|_| panic!("{}: write timed out", self.what))
            .unwrap_or_else(|e| panic!("{}: write failed: {e}", self.what));
    }

    /// The next head (interim or final): status and head.
    async fn next_head(&mut self) -> (u16, Head) {
        let raw = match self.wire.head().await {
            Ok(Some(raw)) => raw,
            Ok(None) => panic!("{}: connection closed before a response", self.what),
            Err(e) => panic!("{}: reading a response head: {e}", self.what),
        };
        let head = parse_head(&raw).unwrap_or_else(|e| panic!("{}: {e}", self.what));
        let status = head
            .start
            .strip_prefix("HTTP/1.")
            .and_then(|s| s.get(2..5))
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("{}: bad status line {:?}", self.what, head.start));
        (status, head)
    }

    /// The next complete response (interim responses are collected, not returned).
    /// `head_request`: the request was HEAD, so the response has no body whatever it says.
    async fn response(&mut self, head_request: bool) -> Resp {
        let mut interim = Vec::new();
        loop {
            let (status, head) = self.next_head().await;
            if (100..200).contains(&status) && status != 101 {
                interim.push(status);
                continue;
            }
            let what = format!("{}: {} body", self.what, head.start);
            let chunked = has_token(&head.headers, "transfer-encoding", "chunked");
            let length = value(&head.headers, "content-length");
            let (body, trailers, framing) = if head_request || matches!(status, 204 | 304) {
                (Vec::new(), Vec::new(), Framing::Empty)
            } else if chunked {
                let (body, trailers) = self
                    .wire
                    .chunked()
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                (body, trailers, Framing::Chunked)
            } else if let Some(length) = length {
                let n: usize = length
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{what}: content-length {length:?}"));
                let body = self
                    .wire
                    .exact(n)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                (body, Vec::new(), Framing::Length)
            } else {
                let body = self
                    .wire
                    .until_eof()
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                (body, Vec::new(), Framing::Close)
            };
            return Resp {
                interim,
                start: head.start,
                status,
                headers: head.headers,
                body,
                trailers,
                framing,
            };
        }
    }

    /// Sends a request and reads its response.
    async fn exchange(&mut self, request: &[u8]) -> Resp {
        self.send(request).await;
        self.response(request.starts_with(b"HEAD ")).await
    }

    /// Fails unless the proxy closes the connection (EOF or reset) with nothing more sent.
    async fn expect_closed(&mut self) {
        match self.wire.fill().await {
            Ok(0) => {}
            Err(e) if is_reset(&e) => {}
            Ok(_) => panic!(
                "{}: expected the connection to close, got {:?}",
                self.what,
                String::from_utf8_lossy(&self.wire.buf)
            ),
            Err(e) => panic!("{}: expected the connection to close: {e}", self.what),
        }
    }

    /// Fails if anything arrives (or the connection closes) within `d`: no stray bytes after
    /// a response.
    async fn expect_quiet(&mut self, d: Duration) {
        let mut byte = [0u8; 1];
        if let Ok(r) = tokio::time::timeout(d, self.wire.s.peek(&mut byte)).await {
            let n = r.unwrap_or(0);
            panic!(
                "{}: expected silence, got {} ({:?})",
                self.what,
                if n == 0 { "a close" } else { "bytes" },
                String::from_utf8_lossy(&self.wire.buf)
            );
        }
        assert!(
            self.wire.buf.is_empty(),
            "{}: stray bytes buffered",
            self.what
        );
    }

    /// Everything until the connection ends (a reset counts as an end), for requests the proxy
    /// must refuse: the bytes it sent before closing.
    async fn until_closed(&mut self) -> Vec<u8> {
        loop {
            match self.wire.fill().await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if is_reset(&e) => break,
                Err(e) => panic!("{}: waiting for the close: {e}", self.what),
            }
        }
        std::mem::take(&mut self.wire.buf)
    }
}

/// Status of a refusal (`None` when the proxy just closed); fails unless it is a 4xx.
fn refusal_status(what: &str, bytes: &[u8]) -> Option<u16> {
    if bytes.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(bytes);
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|s| s.parse::<u16>().ok());
    assert!(
        status.is_some_and(|s| (400..500).contains(&s)),
        "{what}: expected a 4xx or a close, got {text:?}"
    );
    status
}

// ---------------------------------------------------------------------------------------------
// The scripted upstream
// ---------------------------------------------------------------------------------------------

/// One request as the scripted upstream received it.
#[derive(Clone, Debug)]
struct Seen {
    /// Which accepted connection (0-based) it came on.
    conn: usize,
    method: String,
    /// The request target, byte for byte.
    target: String,
    headers: Headers,
    /// Decoded body.
    body: Vec<u8>,
    trailers: Headers,
}

/// What the upstream does with a request, in order.
enum Step {
    Write(Vec<u8>),
    Sleep(Duration),
    /// Close the connection.
    Close,
    /// Never answer: wait until the proxy closes the connection.
    Hang,
}

type Script = Arc<dyn Fn(&Seen) -> Vec<Step> + Send + Sync>;

/// A raw HTTP/1.1 upstream: parses each request (answering `Expect: 100-continue` itself when
/// there is a body), records it, and runs the script's steps for it.
struct Scripted {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    accepted: Arc<AtomicUsize>,
    closed: Arc<watch::Sender<usize>>,
}

/// Counts a connection as closed when its task ends, however it ends.
struct CloseCount(Arc<watch::Sender<usize>>);

impl Drop for CloseCount {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n += 1);
    }
}

impl Scripted {
    async fn start(script: impl Fn(&Seen) -> Vec<Step> + Send + Sync + 'static) -> Scripted {
        let script: Script = Arc::new(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = Scripted {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            accepted: Arc::default(),
            closed: Arc::new(watch::Sender::new(0)),
        };
        let (seen, accepted, closed) = (up.seen.clone(), up.accepted.clone(), up.closed.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let conn = accepted.fetch_add(1, Ordering::SeqCst);
                let guard = CloseCount(closed.clone());
                tokio::spawn(serve_scripted(
                    Wire::new(s, None),
                    conn,
                    script.clone(),
                    seen.clone(),
                    guard,
                ));
            }
        });
        up
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream received no request")
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    async fn wait_seen(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.seen.lock().unwrap().len() < n {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    async fn wait_closed(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.closed.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|&c| c >= n)).await,
            Ok(Ok(_))
        )
    }
}

async fn serve_scripted(
    mut wire: Wire,
    conn: usize,
    script: Script,
    seen: Arc<Mutex<Vec<Seen>>>,
    _guard: CloseCount,
) {
    while let Ok(Some(raw)) = wire.head().await {
        let Ok(head) = parse_head(&raw) else { return };
        let mut parts = head.start.splitn(3, ' ');
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default().to_owned();
        let chunked = has_token(&head.headers, "transfer-encoding", "chunked");
        let length: usize = value(&head.headers, "content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if (chunked || length > 0) && has_token(&head.headers, "expect", "100-continue") {
            let _ = wire.s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        }
        let (body, trailers) = if chunked {
            match wire.chunked().await {
                Ok(b) => b,
                Err(_) => return,
            }
        } else {
            match wire.exact(length).await {
                Ok(b) => (b, Vec::new()),
                Err(_) => return,
            }
        };
        let request = Seen {
            conn,
            method,
            target,
            headers: head.headers,
            body,
            trailers,
        };
        let steps = script(&request);
        seen.lock().unwrap().push(request);
        for step in steps {
            match step {
                Step::Write(bytes) => {
                    if wire.s.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::Close => return,
                Step::Hang => {
                    while let Ok(n) = wire.fill().await {
                        if n == 0 {
                            break;
                        }
                    }
                    return;
                }
            }
        }
    }
}

/// A complete response with a Content-Length.
fn reply(status_line: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{status_line}\r\n{headers}content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn ok(body: &str) -> Vec<Step> {
    vec![Step::Write(reply("HTTP/1.1 200 OK", "", body.as_bytes()))]
}

/// A GET with a Host header and nothing else.
fn get_req(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nhost: client.example\r\n\r\n").into_bytes()
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------------

/// Pipelined requests (two, then three with bodies, in one write each) are answered in order.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let up = FakeUpstream::start().await;
    for fast in MODES {
        let m = mode(fast);
        let proxy = start_proxy(&up.url(), fast).await;
        let mut c = Conn::open(proxy.addr, format!("pipelining, {m}")).await;
        c.send(
            b"GET /echo/p1 HTTP/1.1\r\nhost: x\r\n\r\nGET /echo/p2?x=2 HTTP/1.1\r\nhost: x\r\n\r\n",
        )
        .await;
        for path in ["/echo/p1", "/echo/p2"] {
            let r = c.response(false).await;
            assert_eq!(r.status, 200, "{m}: {}", r.text());
            assert_eq!(r.json()["path"], path, "{m}");
        }
        c.send(
            b"POST /echo/q1 HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello\
GET /echo/q2 HTTP/1.1\r\nhost: x\r\n\r\n\
POST /echo/q3 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .await;
        for (path, body) in [
            ("/echo/q1", &b"hello"[..]),
            ("/echo/q2", b""),
            ("/echo/q3", b"abc"),
        ] {
            let r = c.response(false).await;
            assert_eq!(r.status, 200, "{m}: {}", r.text());
            let echo = r.json();
            assert_eq!(echo["path"], path, "{m}");
            assert_eq!(echo["body_len"], body.len(), "{m}: {path}");
            assert_eq!(echo["body_sha256"], sha_hex(body), "{m}: {path}");
        }
        c.expect_quiet(Duration::from_millis(50)).await;
        proxy.shutdown().await;
    }
}

/// Forwarded requests and the proxy's own endpoints alternate on one keep-alive connection,
/// one at a time and then pipelined.
#[tokio::test]
async fn forwarded_and_own_requests_share_a_connection() {
    let up = FakeUpstream::start().await;
    for fast in MODES {
        let m = mode(fast);
        let proxy = start_proxy(&up.url(), fast).await;
        let mut c = Conn::open(proxy.addr, format!("mixed, {m}")).await;
        let r = c
            .exchange(b"GET /echo/m1 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        assert_eq!(
            (r.status, r.json()["path"].clone()),
            (200, "/echo/m1".into()),
            "{m}"
        );
        let r = c
            .exchange(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        assert_eq!(r.status, 200, "{m}");
        assert_eq!(r.json()["status"], "ok", "{m}");
        let r = c
            .exchange(b"POST /echo/m2 HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
            .await;
        assert_eq!(r.status, 200, "{m}");
        assert_eq!(r.json()["body_sha256"], sha_hex(b"hi"), "{m}");
        let r = c
            .exchange(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        assert_eq!(r.status, 200, "{m}");
        let text = r.text();
        for needle in [
            "assistants_proxy_requests_total{class=\"forwarded\",status=\"200\"} 2",
            "assistants_proxy_requests_total{class=\"own\",status=\"200\"} 1",
        ] {
            assert!(text.contains(needle), "{m}: missing {needle} in\n{text}");
        }
        // The same mix, pipelined in one write.
        c.send(
            b"GET /echo/n1 HTTP/1.1\r\nhost: x\r\n\r\n\
GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n\
POST /echo/n2 HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc\
GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n\
GET /echo/n3 HTTP/1.1\r\nhost: x\r\n\r\n",
        )
        .await;
        let r = c.response(false).await;
        assert_eq!(r.json()["path"], "/echo/n1", "{m}");
        let r = c.response(false).await;
        assert_eq!(r.json()["status"], "ok", "{m}");
        let r = c.response(false).await;
        assert_eq!(r.json()["path"], "/echo/n2", "{m}");
        assert_eq!(r.json()["body_sha256"], sha_hex(b"abc"), "{m}");
        let r = c.response(false).await;
        assert!(r.text().contains("assistants_proxy_requests_total"), "{m}");
        let r = c.response(false).await;
        assert_eq!(r.json()["path"], "/echo/n3", "{m}");
        c.expect_quiet(Duration::from_millis(50)).await;
        proxy.shutdown().await;
    }
}

/// A chunked upstream response with chunk extensions and trailers: the client gets the same
/// decoded body, and the trailers when it said `TE: trailers` (as `trailers_pass_through`).
#[tokio::test]
async fn chunked_response_with_extensions_and_trailers() {
    // In two writes, the second from the middle of a chunk's data: the relay meets the body
    // both with the head and on its own.
    let up = Scripted::start(|_| {
        let answer =
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\
trailer: x-checksum, x-count\r\n\r\n\
5;a=b\r\nhello\r\n7;name=\"v x\";flag\r\n, world\r\n1\r\n!\r\n\
0;last=1\r\nx-checksum: abc123\r\nx-count: 3\r\n\r\n";
        let split = find(answer, b"orld").unwrap();
        vec![
            Step::Write(answer[..split].to_vec()),
            Step::Sleep(Duration::from_millis(20)),
            Step::Write(answer[split..].to_vec()),
        ]
    })
    .await;
    for fast in MODES {
        let m = mode(fast);
        let proxy = start_proxy(&up.url(), fast).await;
        let mut c = Conn::open(proxy.addr, format!("chunked extensions, {m}")).await;
        let r = c
            .exchange(b"GET /chunked HTTP/1.1\r\nhost: x\r\nte: trailers\r\n\r\n")
            .await;
        assert_eq!(r.status, 200, "{m}");
        assert_eq!(r.text(), "hello, world!", "{m}");
        assert_eq!(
            r.framing,
            Framing::Chunked,
            "{m}: trailers need chunked framing"
        );
        assert_eq!(
            value(&r.trailers, "x-checksum").as_deref(),
            Some("abc123"),
            "{m}: {:?}",
            r.trailers
        );
        assert_eq!(value(&r.trailers, "x-count").as_deref(), Some("3"), "{m}");
        // Without TE: trailers the trailers may be dropped; the body is the same, and the
        // connection carries on.
        let r = c
            .exchange(b"GET /chunked HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        assert_eq!(r.status, 200, "{m}");
        assert_eq!(r.text(), "hello, world!", "{m}");
        c.expect_quiet(Duration::from_millis(50)).await;
        // Body bytes are the payload on both paths: twice the 13 data bytes, without the
        // chunk-size lines, extensions and trailers.
        let r = c
            .exchange(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        assert!(
            r.text()
                .contains("assistants_proxy_body_bytes_total{direction=\"to_client\"} 26\n"),
            "{m}: {}",
            r.text()
        );
        proxy.shutdown().await;
    }
}

/// An upstream body delimited by the upstream closing (no length, not chunked), from an
/// HTTP/1.1 and an HTTP/1.0 upstream: the client gets it whole; a client connection that got
/// it close-delimited too is closed after it, one that got it chunked (or with a length) is
/// still usable.
#[tokio::test]
async fn close_delimited_upstream_body_is_relayed_whole() {
    let up = Scripted::start(|req| {
        let version = if req.target == "/close10" {
            "1.0"
        } else {
            "1.1"
        };
        vec![
            Step::Write(
                format!("HTTP/{version} 200 OK\r\ncontent-type: text/plain\r\n\r\n").into_bytes(),
            ),
            Step::Write(b"part one,".to_vec()),
            Step::Sleep(Duration::from_millis(20)),
            Step::Write(b"part two,".to_vec()),
            Step::Sleep(Duration::from_millis(20)),
            Step::Write(b"end".to_vec()),
            Step::Close,
        ]
    })
    .await;
    for fast in MODES {
        let m = mode(fast);
        let proxy = start_proxy(&up.url(), fast).await;
        for target in ["/close11", "/close10"] {
            let mut c = Conn::open(proxy.addr, format!("close-delimited {target}, {m}")).await;
            let r = c.exchange(&get_req(target)).await;
            assert_eq!(r.status, 200, "{m} {target}");
            // The proxy speaks its own version, not an HTTP/1.0 upstream's (RFC 9110 §6.2).
            assert!(
                r.start.starts_with("HTTP/1.1 200"),
                "{m} {target}: {}",
                r.start
            );
            assert_eq!(r.text(), "part one,part two,end", "{m} {target}");
            if r.framing == Framing::Close {
                c.expect_closed().await;
            } else {
                let r = c.exchange(&get_req(target)).await;
                assert_eq!(r.text(), "part one,part two,end", "{m} {target}: second");
            }
        }
        proxy.shutdown().await;
    }
}

/// HEAD: the upstream's Content-Length (or chunked) head comes back with no body bytes, and
/// the connection goes on.
#[tokio::test]
async fn head_response_has_no_body_and_the_connection_goes_on() {
    let up = Scripted::start(|req| match (req.method.as_str(), req.target.as_str()) {
        ("HEAD", "/len") => vec![Step::Write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\n".to_vec(),
        )],
        ("HEAD", _) => vec![Step::Write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
                .to_vec(),
        )],
        _ => ok("after head"),
    })
    .await;
    for fast in MODES {
        let m = mode(fast);
        let before = up.accepted();
        let proxy = start_proxy(&up.url(), fast).await;
        let mut c = Conn::open(proxy.addr, format!("HEAD, {m}")).await;
        let r = c.exchange(b"HEAD /len HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert_eq!(r.status, 200, "{m}");
        assert_eq!(
            r.header("content-length").as_deref(),
            Some("100"),
            "{m}: {:?}",
            r.headers
        );
        c.expect_quiet(Duration::from_millis(100)).await;
        let r = c.exchange(&get_req("/after")).await;
        assert_eq!((r.status, r.text().as_str()), (200, "after head"), "{m}");
        let r = c
            .exchange(b"HEAD /chunked HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        assert_eq!(r.status, 200, "{m}");
        c.expect_quiet(Duration::from_millis(100)).await;
        let r = c.exchange(&get_req("/after")).await;
        assert_eq!((r.status, r.text().as_str()), (200, "after head"), "{m}");
        assert_eq!(
            up.accepted() - before,
            1,
            "{m}: one upstream connection for all"
        );
        proxy.shutdown().await;
    }
}

/// 204 and 304 (the latter with the representation's Content-Length, as RFC 9110 allows)
/// carry no body; the connection goes on.
#[tokio::test]
async fn no_content_and_not_modified_have_no_body() {
    let up = Scripted::start(|req| match req.target.as_str() {
        "/204" => vec![Step::Write(
            b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n".to_vec(),
        )],
        "/304" => vec![Step::Write(
            b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncontent-length: 10\r\n\r\n".to_vec(),
        )],
        _ => ok("fine"),
    })
    .await;
    for fast in MODES {
        let m = mode(fast);
        let proxy = start_proxy(&up.url(), fast).await;
        let mut c = Conn::open(proxy.addr, format!("204/304, {m}")).await;
        for _ in 0..2 {
            let r = c.exchange(&get_req("/204")).await;
            assert_eq!(r.status, 204, "{m}");
            assert_eq!(r.header("x-a").as_deref(), Some("1"), "{m}");
            c.expect_quiet(Duration::from_millis(50)).await;
            let r = c
                .exchange(b"GET /304 HTTP/1.1\r\nhost: x\r\nif-none-match: \"v1\"\r\n\r\n")
                .await;
            assert_eq!(r.status, 304, "{m}");
            assert_eq!(r.header("etag").as_deref(), Some("\"v1\""), "{m}");
            c.expect_quiet(Duration::from_millis(50)).await;
            let r = c.exchange(&get_req("/ok")).await;
            assert_eq!((r.status, r.text().as_str()), (200, "fine"), "{m}");
        }
        proxy.shutdown().await;
    }
}

/// A 103 Early Hints before the final response: the 200 and its body arrive (the 103 may be
/// relayed, as a well-formed interim response before the 200, or dropped).
#[tokio::test]
async fn early_hints_then_the_final_response() {
    let up = Scripted::start(|_| {
        vec![
            Step::Write(
                b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n".to_vec(),
            ),
            Step::Sleep(Duration::from_millis(20)),
            Step::Write(reply("HTTP/1.1 200 OK", "x-final: yes\r\n", b"final")),
        ]
    })
    .await;
    for fast in MODES {
        let m = mode(fast);
        let proxy = start_proxy(&up.url(), fast).await;
        let mut c = Conn::open(proxy.addr, format!("103, {m}")).await;
        for _ in 0..2 {
            let r = c.exchange(&get_req("/hints")).await;
            assert_eq!(r.status, 200, "{m}");
            assert!(r.interim.iter().all(|&s| s == 103), "{m}: {:?}", r.interim);
            assert_eq!(r.header("x-final").as_deref(), Some("yes"), "{m}");
            assert_eq!(r.text(), "final", "{m}");
        }
        c.expect_quiet(Duration::from_millis(50)).await;
        proxy.shutdown().await;
    }
}

/// `Connection: close` from the client closes the client connection after the response, but
/// is not passed on: the upstream connection is reused by the next client connection.
#[tokio::test]
async fn client_connection_close_is_not_forwarded() {
    let up = Scripted::start(|_| ok("bye")).await;
    for fast in MODES {
        let m = mode(fast);
        let accepted_before = up.accepted();
        let seen_before = up.seen().len();
        let proxy = start_proxy(&up.url(), fast).await;
        for i in 0..2 {
            let mut c = Conn::open(proxy.addr, format!("connection: close #{i}, {m}")).await;
            let r = c
                .exchange(b"GET /close HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await;
            assert_eq!((r.status, r.text().as_str()), (200, "bye"), "{m}");
            c.expect_closed().await;
        }
        let seen = &up.seen()[seen_before..];
        assert_eq!(seen.len(), 2, "{m}");
        for s in seen {
            assert!(
                !has_token(&s.headers, "connection", "close"),
                "{m}: the client's Connection: close reached the upstream: {:?}",
                s.headers
            );
        }
        assert_eq!(
            up.accepted() - accepted_before,
            1,
            "{m}: both client connections' requests share one upstream connection"
        );
        proxy.shutdown().await;
    }
}

/// An HTTP/1.0 request (no keep-alive) is answered without chunked framing (an HTTP/1.0
/// client cannot decode it), then the connection is closed.
#[tokio::test]
async fn http10_request_is_answered_and_closed() {
    let up = FakeUpstream::start().await;
    let (_, expected) = get(&client(), &format!("{}/bytes?n=3000&seed=3", up.url())).await;
    for fast in MODES {
        let m = mode(fast);
        let proxy = start_proxy(&up.url(), fast).await;
        let mut c = Conn::open(proxy.addr, format!("HTTP/1.0, {m}")).await;
        let r = c
            .exchange(b"GET /echo/ten?a=1 HTTP/1.0\r\nhost: x\r\n\r\n")
            .await;
        assert_eq!(r.status, 200, "{m}");
        assert_ne!(
            r.framing,
            Framing::Chunked,
            "{m}: chunked to an HTTP/1.0 client"
        );
        assert_eq!(r.json()["path"], "/echo/ten", "{m}");
        assert_eq!(r.json()["query"], "a=1", "{m}");
        c.expect_closed().await;
        // An upstream body of unknown length (chunked upstream) too.
        let mut c = Conn::open(proxy.addr, format!("HTTP/1.0 chunked upstream, {m}")).await;
        let r = c
            .exchange(b"GET /bytes?n=3000&seed=3&chunked=1 HTTP/1.0\r\nhost: x\r\n\r\n")
            .await;
        assert_eq!(r.status, 200, "{m}");
        assert_ne!(
            r.framing,
            Framing::Chunked,
            "{m}: chunked to an HTTP/1.0 client"
        );
        assert_eq!(r.body, expected.to_vec(), "{m}");
        c.expect_closed().await;
        // And the whole exchange as a one-shot client sees it.
        let raw = raw_exchange(proxy.addr, b"GET /echo/ten2 HTTP/1.0\r\n\r\n").await;
        let (head, body) = split_head(&raw);
        assert!(head.contains(" 200 "), "{m}: {head}");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(body).unwrap()["path"],
            "/echo/ten2"
        );
        proxy.shutdown().await;
    }
}

/// `Expect: 100-continue` with a body: the client gets `100 Continue` before it sends the
/// body, the upstream gets the body, and the final response is the upstream's.
#[tokio::test]
async fn expect_continue_gets_the_body_through() {
    let up = FakeUpstream::start().await;
    for fast in MODES {
        let m = mode(fast);
        let proxy = start_proxy(&up.url(), fast).await;
        let mut c = Conn::open(proxy.addr, format!("expect, {m}")).await;
        for i in 0..2 {
            c.send(
                b"POST /echo/expect HTTP/1.1\r\nhost: x\r\ncontent-length: 11\r\n\
expect: 100-continue\r\n\r\n",
            )
            .await;
            let (status, head) = c.next_head().await;
            assert_eq!(
                status, 100,
                "{m} #{i}: a final response before the body was sent: {}",
                head.start
            );
            c.send(b"hello world").await;
            let r = c.response(false).await;
            assert_eq!(r.status, 200, "{m}");
            let echo = r.json();
            assert_eq!(echo["body_len"], 11, "{m}");
            assert_eq!(echo["body_sha256"], sha_hex(b"hello world"), "{m}");
        }
        c.expect_quiet(Duration::from_millis(50)).await;
        proxy.shutdown().await;
    }
}

/// Malformed requests get a 4xx (or a close), never reach the upstream, and do not disturb
/// the proxy.
#[tokio::test]
async fn malformed_requests_are_refused() {
    let up = FakeUpstream::start().await;
    let cases: [&[u8]; 7] = [
        b"GET /echo/a HTTP/1.1\r\nbad header\r\n\r\n",
        b"GET /echo/a HTTP/1.1\r\nhost: x\r\nna me: v\r\n\r\n",
        b"GET /echo/a HTTP/1.1\r\nhost: x\r\nx-nul: a\0b\r\n\r\n",
        b"BAD\r\n\r\n",
        b"GET /echo/a HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n",
        b"POST /echo/a HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
        b"POST /echo/a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\nxyz",
    ];
    for fast in MODES {
        let m = mode(fast);
        let proxy = start_proxy(&up.url(), fast).await;
        let before = up.request_count();
        for case in cases {
            let what = format!("{m}: {:?}", String::from_utf8_lossy(case));
            let mut c = Conn::open(proxy.addr, what.clone()).await;
            c.send(case).await;
            let bytes = c.until_closed().await;
            refusal_status(&what, &bytes);
        }
        assert_eq!(
            up.request_count(),
            before,
            "{m}: a malformed request was forwarded: {:?}",
            up.requests()
        );
        let mut c = Conn::open(proxy.addr, format!("after malformed, {m}")).await;
        let r = c
            .exchange(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        assert_eq!(r.status, 200, "{m}");
        let r = c
            .exchange(b"GET /echo/fine HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        assert_eq!(r.json()["path"], "/echo/fine", "{m}");
        proxy.shutdown().await;
    }
}

/// A chunked request body with a malformed chunk size is the client's error: a 4xx (or a
/// close), and the proxy carries on. The head may already have gone upstream by then (the
/// error is only found in the body). This used to be a 502 `upstream_error` with
/// `x-should-retry: true`, blaming the upstream and inviting SDKs to repeat the bad request.
#[tokio::test]
async fn malformed_chunked_request_body_is_a_client_error() {
    let up = FakeUpstream::start().await;
    let request: &[u8] =
        b"POST /echo/a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n";
    for fast in MODES {
        let m = mode(fast);
        let proxy = start_proxy(&up.url(), fast).await;
        let what = format!("{m}: {:?}", String::from_utf8_lossy(request));
        let mut c = Conn::open(proxy.addr, what.clone()).await;
        c.send(request).await;
        let bytes = c.until_closed().await;
        refusal_status(&what, &bytes);
        let mut c = Conn::open(proxy.addr, format!("after a bad chunk, {m}")).await;
        let r = c
            .exchange(b"GET /echo/fine HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        assert_eq!(r.json()["path"], "/echo/fine", "{m}");
        proxy.shutdown().await;
    }
}

/// A Content-Length body written in pieces (head first, then three parts, with pauses) and a
/// chunked body cut at awkward places reach the upstream byte for byte.
#[tokio::test]
async fn request_body_in_pieces_arrives_exactly() {
    let up = FakeUpstream::start().await;
    for fast in MODES {
        let m = mode(fast);
        let proxy = start_proxy(&up.url(), fast).await;
        let mut c = Conn::open(proxy.addr, format!("body in pieces, {m}")).await;
        let body = b"first part|second part|third part";
        c.send(
            format!(
                "POST /echo/pieces HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await;
        for piece in [&body[..11], &body[11..23], &body[23..]] {
            tokio::time::sleep(Duration::from_millis(20)).await;
            c.send(piece).await;
        }
        let r = c.response(false).await;
        assert_eq!(r.status, 200, "{m}");
        assert_eq!(r.json()["body_sha256"], sha_hex(body), "{m}");
        let seen = up.requests().pop().unwrap();
        assert_eq!(seen.body.as_deref(), Some(&body[..]), "{m}");

        // Chunked, cut inside a size line, inside data, inside the CRLF after data and inside
        // the last chunk.
        let request =
            b"POST /echo/chunked-pieces HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n\
a\r\n0123456789\r\n10;ext=1\r\nabcdefghijklmnop\r\n0\r\n\r\n";
        let head_end = find(request, b"\r\n\r\n").unwrap() + 4;
        let cuts = [
            head_end,
            head_end + 1,
            head_end + 8,
            head_end + 15,
            head_end + 16,
            head_end + 40,
            request.len() - 3,
        ];
        let mut start = 0;
        for end in cuts.into_iter().chain([request.len()]) {
            c.send(&request[start..end]).await;
            start = end;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = c.response(false).await;
        assert_eq!(r.status, 200, "{m}");
        let expected = b"0123456789abcdefghijklmnop";
        assert_eq!(
            r.json()["body_sha256"],
            sha_hex(expected),
            "{m}: {}",
            r.text()
        );
        c.expect_quiet(Duration::from_millis(50)).await;
        proxy.shutdown().await;
    }
}

/// A chunked request body with extensions and a trailer reaches the upstream decoded, with
/// its trailer.
#[tokio::test]
async fn chunked_request_body_with_trailer() {
    let up = FakeUpstream::start().await;
    for fast in MODES {
        let m = mode(fast);
        let proxy = start_proxy(&up.url(), fast).await;
        let mut c = Conn::open(proxy.addr, format!("chunked request, {m}")).await;
        let r = c
            .exchange(
                b"POST /echo/chunked HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\
trailer: x-trail\r\n\r\n4\r\nwiki\r\n5;ext=\"a b\"\r\npedia\r\n0\r\nx-trail: done\r\n\r\n",
            )
            .await;
        assert_eq!(r.status, 200, "{m}");
        let seen = up.requests().pop().unwrap();
        assert_eq!(seen.body.as_deref(), Some(&b"wikipedia"[..]), "{m}");
        assert_eq!(
            seen.trailers,
            vec![("x-trail".to_owned(), b"done".to_vec())],
            "{m}: the request trailer"
        );
        // The connection is in sync after the trailer.
        let r = c
            .exchange(b"GET /echo/next HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        assert_eq!(r.json()["path"], "/echo/next", "{m}");
        proxy.shutdown().await;
    }
}

/// A 1 MiB Content-Length body arrives exactly (SHA-256), and the connection is in sync
/// afterwards.
#[tokio::test]
async fn one_mebibyte_body_arrives_exactly() {
    let up = FakeUpstream::start().await;
    let body: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(31) % 251) as u8)
        .collect();
    for fast in MODES {
        let m = mode(fast);
        let proxy = start_proxy(&up.url(), fast).await;
        let mut c = Conn::open(proxy.addr, format!("1 MiB body, {m}")).await;
        let mut request = format!(
            "PUT /echo/big HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        let r = c.exchange(&request).await;
        assert_eq!(r.status, 200, "{m}");
        let echo = r.json();
        assert_eq!(echo["body_len"], body.len(), "{m}");
        assert_eq!(echo["body_sha256"], sha_hex(&body), "{m}");
        let r = c
            .exchange(b"GET /echo/after HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        assert_eq!(r.json()["path"], "/echo/after", "{m}");
        proxy.shutdown().await;
    }
}

/// A client that leaves before the upstream answered (no head yet, or a body still coming)
/// gets its upstream connection closed.
#[tokio::test]
async fn client_disconnect_closes_the_upstream_connection() {
    let hang = Scripted::start(|_| vec![Step::Hang]).await;
    let up = FakeUpstream::start().await;
    for (i, fast) in MODES.into_iter().enumerate() {
        let m = mode(fast);
        // No response head yet.
        let proxy = start_proxy(&hang.url(), fast).await;
        let mut c = Conn::open(proxy.addr, format!("disconnect before head, {m}")).await;
        c.send(&get_req("/never")).await;
        assert!(
            hang.wait_seen(i + 1, IO_TIMEOUT).await,
            "{m}: request not forwarded"
        );
        drop(c);
        assert!(
            hang.wait_closed(i + 1, IO_TIMEOUT).await,
            "{m}: the upstream connection outlived the client waiting for its head"
        );
        proxy.shutdown().await;

        // Head sent, body still coming.
        let proxy = start_proxy(&up.url(), fast).await;
        let mut c = Conn::open(proxy.addr, format!("disconnect mid-body, {m}")).await;
        c.send(b"GET /hold?ms=20000 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        let (status, _) = c.next_head().await;
        assert_eq!(status, 200, "{m}");
        drop(c);
        assert!(
            up.wait_for_connections_closed(i + 1, IO_TIMEOUT).await,
            "{m}: the upstream kept streaming to a client that left"
        );
        proxy.shutdown().await;
    }
}

/// An upstream that closes each connection right after its answer (saying so with
/// `Connection: close`, or not): five GETs in a row on one client connection all succeed.
#[tokio::test]
async fn upstream_closing_after_each_answer() {
    for announce in [true, false] {
        let up = Scripted::start(move |_| {
            let headers = if announce {
                "connection: close\r\n"
            } else {
                ""
            };
            vec![
                Step::Write(reply("HTTP/1.1 200 OK", headers, b"ok")),
                Step::Close,
            ]
        })
        .await;
        for fast in MODES {
            let m = mode(fast);
            let before = up.accepted();
            let proxy = start_proxy(&up.url(), fast).await;
            let mut c = Conn::open(proxy.addr, format!("closing upstream ({announce}), {m}")).await;
            for i in 0..5 {
                let r = c.exchange(&get_req("/v1/models")).await;
                assert_eq!(
                    (r.status, r.text().as_str()),
                    (200, "ok"),
                    "{m}, connection: close announced: {announce}, request {i}"
                );
            }
            assert_eq!(up.accepted() - before, 5, "{m}");
            proxy.shutdown().await;
        }
    }
}

/// Request header fidelity: repeated fields, obs-text bytes, an 8 KB value, 90 fields, all
/// arrive with the same values in the same order; hop-by-hop fields are removed, `Host` is the
/// upstream's, nothing is added.
#[tokio::test]
async fn request_headers_arrive_faithfully() {
    let up = Scripted::start(|_| ok("ok")).await;
    let long = "L".repeat(8 * 1024);
    let kept = format!(
        "X-Rep: one\r\nAccept: */*\r\nX-Rep: two\r\nX-Obs: caf\u{e9}\r\nMixed-Case-Name: V a l\r\n\
x-long: {long}\r\nAuthorization: Bearer sk-1\r\nx-rep: three\r\nX-Empty:\r\nX-Last: end\r\n"
    );
    let mut main = format!(
        "GET /fidelity HTTP/1.1\r\nHost: client.example\r\n{kept}\
Connection: keep-alive, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: timeout=5\r\n\
Proxy-Connection: keep-alive\r\nTE: gzip\r\nUpgrade: foo/1\r\nProxy-Authorization: Basic abc\r\n\r\n"
    )
    .into_bytes();
    // A Latin-1 é and two other obs-text bytes, as raw bytes (not UTF-8).
    let obs = find(&main, "caf\u{e9}".as_bytes()).unwrap();
    main.splice(obs..obs + 5, b"caf\xe9 \x80\xff".iter().copied());
    let expected = {
        let kept = kept.replace("caf\u{e9}", "CAFE");
        let head = format!("X\r\n{kept}\r\n");
        let mut h = parse_head(head.as_bytes()).unwrap().headers;
        for (n, v) in &mut h {
            if n == "X-Obs" {
                *v = b"caf\xe9 \x80\xff".to_vec();
            }
        }
        grouped(&h)
    };
    let many: String = (0..90)
        .map(|i| format!("x-h-{i:02}: value {i}\r\n"))
        .collect();
    let many_req = format!("GET /many HTTP/1.1\r\nhost: x\r\n{many}\r\n");

    for fast in MODES {
        let m = mode(fast);
        let proxy = start_proxy(&up.url(), fast).await;
        let mut c = Conn::open(proxy.addr, format!("header fidelity, {m}")).await;

        let r = c.exchange(&main).await;
        assert_eq!(r.status, 200, "{m}");
        let seen = up.last();
        assert_eq!(
            values(&seen.headers, "host"),
            vec![up.addr.to_string().into_bytes()],
            "{m}: Host is the upstream's"
        );
        let without_host: Headers = seen
            .headers
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("host"))
            .cloned()
            .collect();
        // Hop-by-hop fields gone, nothing added (no X-Forwarded-For, Via, ...), the rest as
        // sent.
        assert_eq!(grouped(&without_host), expected, "{m}: {:?}", seen.headers);

        let r = c.exchange(many_req.as_bytes()).await;
        assert_eq!(r.status, 200, "{m}");
        let seen = up.last();
        let got: Vec<String> = seen
            .headers
            .iter()
            .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-h-"))
            .map(|(n, v)| format!("{}: {}", n.to_ascii_lowercase(), String::from_utf8_lossy(v)))
            .collect();
        let want: Vec<String> = (0..90).map(|i| format!("x-h-{i:02}: value {i}")).collect();
        assert_eq!(got, want, "{m}");

        // TE: trailers is kept (it only says trailers are welcome); TE: gzip was dropped above.
        c.exchange(b"GET /te HTTP/1.1\r\nhost: x\r\nte: trailers\r\n\r\n")
            .await;
        assert_eq!(
            values(&up.last().headers, "te"),
            vec![b"trailers".to_vec()],
            "{m}"
        );

        // The client's Transfer-Encoding is hop-by-hop: the upstream gets the body in one
        // framing of the proxy's (a length or a single chunked coding), never both.
        let r = c
            .exchange(b"POST /te-body HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            .await;
        assert_eq!(r.status, 200, "{m}");
        let seen = up.last();
        assert_eq!(seen.body, b"abc", "{m}");
        assert!(seen.trailers.is_empty(), "{m}: {:?}", seen.trailers);
        let te = values(&seen.headers, "transfer-encoding");
        let cl = values(&seen.headers, "content-length");
        assert!(
            (te.is_empty() && cl.len() == 1) || (te == vec![b"chunked".to_vec()] && cl.is_empty()),
            "{m}: framing {:?}",
            seen.headers
        );
        proxy.shutdown().await;
    }
}

/// Large request heads: 20 KB is forwarded intact; beyond the limit (a 70 KB field, where
/// hyper's limit and the relay's differ, 150 fields, a 1 MiB field) the answer is a 4xx or a
/// close, never a hang, and the proxy carries on.
#[tokio::test]
async fn large_request_heads() {
    let up = Scripted::start(|_| ok("ok")).await;
    for fast in MODES {
        let m = mode(fast);
        let proxy = start_proxy(&up.url(), fast).await;

        let v20 = "a".repeat(20 * 1024);
        let mut c = Conn::open(proxy.addr, format!("20 KB head, {m}")).await;
        let r = c
            .exchange(format!("GET /big20 HTTP/1.1\r\nhost: x\r\nx-big: {v20}\r\n\r\n").as_bytes())
            .await;
        assert_eq!(r.status, 200, "{m}");
        assert_eq!(value(&up.last().headers, "x-big"), Some(v20), "{m}");

        // 70 KB: over a 64 KB head limit but under hyper's (about 400 KB). Either a refusal
        // or an intact forward is acceptable; a partial or altered forward, or a hang, is not.
        let v70 = "b".repeat(70 * 1024);
        let what = format!("70 KB head, {m}");
        let mut c = Conn::open(proxy.addr, what.clone()).await;
        c.send(
            format!("GET /big70 HTTP/1.1\r\nhost: x\r\nx-big: {v70}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        let bytes = c.until_closed().await;
        if bytes.starts_with(b"HTTP/1.1 200") {
            let seen = up.last();
            assert_eq!(seen.target, "/big70", "{what}");
            assert_eq!(value(&seen.headers, "x-big"), Some(v70), "{what}");
        } else {
            refusal_status(&what, &bytes);
        }

        let many: String = (0..150).map(|i| format!("x-m-{i}: {i}\r\n")).collect();
        let what = format!("150 fields, {m}");
        let mut c = Conn::open(proxy.addr, what.clone()).await;
        c.send(format!("GET /many150 HTTP/1.1\r\nhost: x\r\n{many}\r\n").as_bytes())
            .await;
        let bytes = c.until_closed().await;
        refusal_status(&what, &bytes);

        // 1 MiB: over both limits. The proxy may close while the client is still writing.
        let what = format!("1 MiB head, {m}");
        let mut c = Conn::open(proxy.addr, what.clone()).await;
        let huge = format!(
            "GET /huge HTTP/1.1\r\nhost: x\r\nx-huge: {}\r\n\r\n",
            "c".repeat(1 << 20)
        );
        let write = tokio::time::timeout(IO_TIMEOUT, c.wire.s.write_all(huge.as_bytes())).await;
        assert!(
            write.is_ok(),
            "{what}: the proxy stopped reading but kept the connection"
        );
        let bytes = c.until_closed().await;
        refusal_status(&what, &bytes);

        assert!(
            up.seen()
                .iter()
                .all(|s| s.target != "/many150" && s.target != "/huge"),
            "{m}: an oversized head was forwarded"
        );
        let mut c = Conn::open(proxy.addr, format!("after large heads, {m}")).await;
        let r = c
            .exchange(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        assert_eq!(r.status, 200, "{m}");
        let r = c.exchange(&get_req("/after")).await;
        assert_eq!(r.status, 200, "{m}");
        proxy.shutdown().await;
    }
}

/// Response header fidelity: a 20 KB value, obs-text, repeated fields and 90 fields come back
/// intact and in order.
#[tokio::test]
async fn large_response_headers_are_relayed_intact() {
    let big = "z".repeat(20 * 1024);
    let many: String = (0..90).map(|i| format!("x-r-{i:02}: v{i}\r\n")).collect();
    let headers =
        format!("x-big: {big}\r\nset-cookie: a=1\r\nx-obs: caf\u{e9}\r\nset-cookie: b=2\r\n{many}");
    let mut head =
        format!("HTTP/1.1 200 OK\r\n{headers}content-length: 4\r\n\r\nbody").into_bytes();
    let obs = find(&head, "caf\u{e9}".as_bytes()).unwrap();
    head.splice(obs..obs + 5, b"caf\xe9".iter().copied());
    let up = Scripted::start(move |_| vec![Step::Write(head.clone())]).await;
    for fast in MODES {
        let m = mode(fast);
        let proxy = start_proxy(&up.url(), fast).await;
        let mut c = Conn::open(proxy.addr, format!("response headers, {m}")).await;
        for _ in 0..2 {
            let r = c.exchange(&get_req("/resp-headers")).await;
            assert_eq!(r.status, 200, "{m}");
            assert_eq!(r.text(), "body", "{m}");
            assert_eq!(r.header("x-big").as_deref(), Some(big.as_str()), "{m}");
            assert_eq!(
                values(&r.headers, "x-obs"),
                vec![b"caf\xe9".to_vec()],
                "{m}"
            );
            assert_eq!(
                values(&r.headers, "set-cookie"),
                vec![b"a=1".to_vec(), b"b=2".to_vec()],
                "{m}"
            );
            let got: Vec<String> = r
                .headers
                .iter()
                .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-r-"))
                .map(|(n, v)| format!("{}: {}", n.to_ascii_lowercase(), String::from_utf8_lossy(v)))
                .collect();
            let want: Vec<String> = (0..90).map(|i| format!("x-r-{i:02}: v{i}")).collect();
            assert_eq!(got, want, "{m}");
        }
        proxy.shutdown().await;
    }
}

/// When shutdown begins, idle connections (one after an exchange, one that never sent
/// anything) are closed, and a response in flight still completes before its connection
/// closes.
#[tokio::test]
async fn graceful_shutdown_closes_idle_connections_and_finishes_in_flight() {
    let up = FakeUpstream::start().await;
    for fast in MODES {
        let m = mode(fast);
        let mut proxy = start_proxy(&up.url(), fast).await;
        let mut idle = Conn::open(proxy.addr, format!("idle at shutdown, {m}")).await;
        let r = idle
            .exchange(b"GET /echo/idle HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        assert_eq!(r.status, 200, "{m}");
        let mut silent = Conn::open(proxy.addr, format!("silent at shutdown, {m}")).await;
        let mut busy = Conn::open(proxy.addr, format!("in flight at shutdown, {m}")).await;
        busy.send(b"GET /slow-body?ms=400 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        let (status, head) = busy.next_head().await;
        assert_eq!(status, 200, "{m}");

        let done = proxy.begin_shutdown();
        idle.expect_closed().await;
        silent.expect_closed().await;
        // The slow body (Content-Length framed) still arrives whole.
        let length: usize = value(&head.headers, "content-length")
            .unwrap()
            .parse()
            .unwrap();
        let body = busy
            .wire
            .exact(length)
            .await
            .unwrap_or_else(|e| panic!("{m}: {e}"));
        assert_eq!(body, b"{\"slept_ms\":400}", "{m}");
        busy.expect_closed().await;
        tokio::time::timeout(Duration::from_secs(10), done)
            .await
            .unwrap_or_else(|_| panic!("{m}: shutdown did not finish"))
            .unwrap();
    }
}

/// Request targets: an absolute-form target is forwarded as its path and query (and routed
/// like one: an absolute `/healthz` is answered locally); percent-encoding and other bytes of
/// the path and query arrive exactly.
#[tokio::test]
async fn request_targets_arrive_exactly() {
    let up = Scripted::start(|_| ok("ok")).await;
    let cases = [
        ("http://example.com/v1/models?x=1", "/v1/models?x=1"),
        ("http://example.com", "/"),
        (
            "/v1/a%2Fb%20c?q=%E2%9C%93&x=1+2",
            "/v1/a%2Fb%20c?q=%E2%9C%93&x=1+2",
        ),
        (
            "/v1/x;p=1/%7Euser/?a=%00&b=&&c",
            "/v1/x;p=1/%7Euser/?a=%00&b=&&c",
        ),
        ("//double//slash/", "//double//slash/"),
        ("/v1/models?", "/v1/models?"),
    ];
    for fast in MODES {
        let m = mode(fast);
        let proxy = start_proxy(&up.url(), fast).await;
        let mut c = Conn::open(proxy.addr, format!("targets, {m}")).await;
        for (target, expected) in cases {
            let r = c
                .exchange(format!("GET {target} HTTP/1.1\r\nhost: example.com\r\n\r\n").as_bytes())
                .await;
            assert_eq!(r.status, 200, "{m}: {target}");
            let seen = up.last();
            assert_eq!(seen.target, expected, "{m}: {target}");
            assert_eq!(
                values(&seen.headers, "host"),
                vec![up.addr.to_string().into_bytes()],
                "{m}: {target}"
            );
        }
        let before = up.seen().len();
        let r = c
            .exchange(b"GET http://example.com/healthz HTTP/1.1\r\nhost: example.com\r\n\r\n")
            .await;
        assert_eq!(r.status, 200, "{m}");
        assert_eq!(r.json()["status"], "ok", "{m}: {}", r.text());
        assert_eq!(up.seen().len(), before, "{m}: /healthz was forwarded");
        proxy.shutdown().await;
    }
}

/// Sequential requests on one client connection reuse one upstream connection (keep-alive on
/// both legs).
#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let up = Scripted::start(|_| ok("ok")).await;
    for fast in MODES {
        let m = mode(fast);
        let before = up.accepted();
        let proxy = start_proxy(&up.url(), fast).await;
        let mut c = Conn::open(proxy.addr, format!("reuse, {m}")).await;
        for i in 0..3 {
            let r = c.exchange(&get_req("/reuse")).await;
            assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{m}: #{i}");
        }
        let seen = up.seen();
        let conns: Vec<usize> = seen[seen.len() - 3..].iter().map(|s| s.conn).collect();
        assert_eq!(
            conns,
            vec![before; 3],
            "{m}: the upstream connection of each request"
        );
        assert_eq!(up.accepted(), before + 1, "{m}");
        proxy.shutdown().await;
    }
}
