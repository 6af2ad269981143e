//! Request bodies the proxy reads itself (JSON, multipart uploads) that stop arriving: the
//! request is answered 408 in OpenAI's envelope once `server.body_read_timeout_seconds` pass
//! without a byte, and its connection is closed, so stalled clients cannot hold connections
//! (and descriptors) for ever.

use std::time::{Duration, Instant};

use super::proxy::{raw_exchange, split_head};
use crate::support::{FakeUpstream, TestProxy, json, new_key};

const BOUNDARY: &str = "stallboundary";

/// Sends `request` (a head and part of its body), then nothing: the answer must be a 408 with
/// OpenAI's error envelope, sent after the idle gap, followed by the connection's close
/// (`raw_exchange` reads until the proxy closes, failing after 10 s).
async fn assert_times_out(proxy: &TestProxy, request: &[u8], what: &str) {
    let started = Instant::now();
    let resp = raw_exchange(proxy.addr, request).await;
    let waited = started.elapsed();
    let (head, body) = split_head(&resp);
    assert!(head.starts_with("HTTP/1.1 408"), "{what}: {head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/json"),
        "{what}: {head}"
    );
    assert!(lower.contains("connection: close"), "{what}: {head}");
    let err = json(&bytes::Bytes::copy_from_slice(body));
    assert_eq!(
        err["error"]["type"], "invalid_request_error",
        "{what}: {err}"
    );
    assert_eq!(err["error"]["code"], "request_timeout", "{what}: {err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 seconds"),
        "{what}: {err}"
    );
    // The gap is measured, not a fixed deadline per request: the answer cannot come sooner.
    assert!(
        waited >= Duration::from_millis(900),
        "{what}: answered after {waited:?}"
    );
}

fn multipart_start(purpose: &str) -> String {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
         Content-Type: text/plain\r\n\r\nthe first bytes of a file that never ends"
    )
}

fn upload(key: &str, purpose: &str) -> Vec<u8> {
    let part = multipart_start(purpose);
    format!(
        "POST /v1/files HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
         content-type: multipart/form-data; boundary={BOUNDARY}\r\ncontent-length: 100000\r\n\r\n{part}"
    )
    .into_bytes()
}

#[tokio::test]
async fn a_stalled_json_body_is_answered_408_and_closed() {
    let up = FakeUpstream::start().await;
    for fast in [true, false] {
        let proxy = TestProxy::start_with(
            &up.url(),
            &format!("[server]\nbody_read_timeout_seconds = 1\nhttp1_fast_path = {fast}\n"),
        )
        .await;
        let key = new_key();
        let what = format!("JSON body, http1_fast_path = {fast}");
        let request = format!(
            "POST /v1/assistants HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
             content-type: application/json\r\ncontent-length: 200\r\n\r\n{{\"model\": \"gpt-4o\", "
        );
        assert_times_out(&proxy, request.as_bytes(), &what).await;
        // A chunked body that stops between chunks, on a route that ignores its body.
        let request = format!(
            "POST /v1/threads/thread_x/runs/run_y/cancel HTTP/1.1\r\nhost: x\r\n\
             authorization: Bearer {key}\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{{}}\r\n"
        );
        assert_times_out(&proxy, request.as_bytes(), &format!("chunked, {what}")).await;
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_stalled_multipart_upload_is_answered_408_and_closed() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start_with(&up.url(), "[server]\nbody_read_timeout_seconds = 1\n").await;
    let key = new_key();
    // Stored here: the stall is in the second phase, while the file part is being stored.
    assert_times_out(&proxy, &upload(&key, "assistants"), "local upload").await;
    // Forwarded (purpose `batch`): the stall is while the body is replayed to the upstream.
    assert_times_out(&proxy, &upload(&key, "batch"), "forwarded upload").await;
    // Still in the first phase: `purpose` has not arrived yet.
    let request = format!(
        "POST /v1/files HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
         content-type: multipart/form-data; boundary={BOUNDARY}\r\ncontent-length: 5000\r\n\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"pur"
    );
    assert_times_out(&proxy, request.as_bytes(), "upload before its purpose").await;
    proxy.shutdown().await;
}

/// The binary under a small descriptor limit (`ulimit -n`), logging to a file (a pipe nobody
/// reads would block it once full). Killed on drop.
struct Limited {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Limited {
    fn log_lines(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }
}

/// `GET /healthz` on a fresh connection, within `within`.
async fn healthz(port: u16, within: Duration) -> bool {
    let attempt = raw_exchange_within(
        port,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    matches!(
        tokio::time::timeout(within, attempt).await,
        Ok(Some(resp)) if resp.starts_with(b"HTTP/1.1 200")
    )
}

async fn raw_exchange_within(port: u16, request: &[u8]) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(request).await.ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.ok()?;
    Some(out)
}

/// More stalled uploads than the process has descriptors: the accept loop backs off and logs
/// a line a second at most while the table is full, and once the body timeout has closed the
/// stalled connections the proxy answers again.
#[tokio::test]
async fn stalled_bodies_beyond_the_descriptor_limit_do_not_flood_the_log_or_wedge_the_proxy() {
    use tokio::io::AsyncWriteExt;
    const LIMIT: usize = 64;
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, "[server]\nbody_read_timeout_seconds = 4\n").unwrap();
    let log = dir.path().join("proxy.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {LIMIT} && exec \"$0\" serve",))
        .arg(env!("CARGO_BIN_EXE_assistants-proxy"))
        .env("ASSISTANTS_PROXY_LISTEN", format!("127.0.0.1:{port}"))
        .env("ASSISTANTS_PROXY_UPSTREAM", up.url())
        .env(
            "ASSISTANTS_PROXY_STORE",
            format!("sqlite://{}", dir.path().join("fd.db").display()),
        )
        .env("ASSISTANTS_PROXY_CONFIG", &config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let proxy = Limited { child, log };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !healthz(port, Duration::from_secs(2)).await {
        assert!(Instant::now() < deadline, "the proxy did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Enough stalled requests to use every free descriptor, and as many again waiting in the
    // listen backlog.
    let free = LIMIT.saturating_sub(proxy.open_fds());
    let key = new_key();
    let request = format!(
        "POST /v1/assistants HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: 200\r\n\r\n{{\"model\": "
    );
    let mut stalled = Vec::new();
    let started = Instant::now();
    for _ in 0..free + 40 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        stalled.push(s);
    }
    // The table is full: a health check cannot get in now.
    assert!(
        !healthz(port, Duration::from_secs(1)).await,
        "the descriptor table was not exhausted ({free} free)"
    );
    // Once the stalled bodies time out (4 s), their connections close and the proxy serves
    // again, the backlog's stalled requests included (they time out in turn).
    let deadline = Instant::now() + Duration::from_secs(40);
    while !healthz(port, Duration::from_secs(2)).await {
        assert!(
            Instant::now() < deadline,
            "/healthz never answered again; log:\n{}",
            std::fs::read_to_string(&proxy.log).unwrap_or_default()
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let lines = proxy.log_lines("accept failed");
    assert!(
        lines >= 1,
        "no accept failure logged: the limit was never reached"
    );
    assert!(
        lines as f64 <= elapsed + 2.0,
        "{lines} accept-failure lines in {elapsed:.1} s:\n{}",
        std::fs::read_to_string(&proxy.log).unwrap_or_default()
    );
    drop(stalled);
}
