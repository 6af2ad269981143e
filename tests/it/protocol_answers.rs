//! Answers the proxy makes at the protocol level (a request it cannot read: malformed head,
//! bad framing, too many or too large header fields) carry OpenAI's error envelope with
//! `Content-Type: application/json`, on every path an HTTP/1 request can take: the relay
//! (plain text, `http1_fast_path = true`), hyper (`false`), and TLS.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::proxy::split_head;
use crate::support::{self, FakeUpstream, TestProxy};

/// How a test reaches the proxy.
#[derive(Clone, Copy, Debug)]
enum Path {
    Relay,
    Hyper,
    Tls,
}

const PATHS: [Path; 3] = [Path::Relay, Path::Hyper, Path::Tls];

struct Target {
    proxy: TestProxy,
    path: Path,
    tls: Option<tokio_rustls::TlsConnector>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Target {
    async fn start(upstream: &str, path: Path) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let (toml, tls) = match path {
            Path::Relay => ("[server]\nhttp1_fast_path = true\n".to_owned(), None),
            Path::Hyper => ("[server]\nhttp1_fast_path = false\n".to_owned(), None),
            Path::Tls => {
                let (cert, key, cert_pem) = support::write_test_cert(dir.path());
                let cfg = support::tls_client_config(&cert_pem, b"http/1.1");
                (
                    format!(
                        "[server]\ntls_cert = {:?}\ntls_key = {:?}\n",
                        cert.display().to_string(),
                        key.display().to_string()
                    ),
                    Some(tokio_rustls::TlsConnector::from(Arc::new(cfg))),
                )
            }
        };
        let config = support::config_for(upstream, &toml, dir.path());
        Target {
            proxy: TestProxy::start_config(config, dir).await,
            path,
            tls,
        }
    }

    async fn connect(&self) -> Box<dyn Io> {
        let tcp = TcpStream::connect(self.proxy.addr).await.unwrap();
        match &self.tls {
            None => Box::new(tcp),
            Some(connector) => Box::new(
                connector
                    .connect("localhost".try_into().unwrap(), tcp)
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Sends `request` and reads until the proxy closes.
    async fn exchange(&self, request: &[u8]) -> Vec<u8> {
        let mut s = self.connect().await;
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        match read {
            Ok(Ok(_)) => {}
            // A TLS peer that closes without close_notify, or a reset after the answer.
            Ok(Err(_)) => {}
            Err(_) => panic!("{:?}: the proxy neither answered nor closed", self.path),
        }
        out
    }
}

/// Checks one answer: `status`, JSON content type, OpenAI's envelope, a closed connection.
fn assert_envelope(what: &str, resp: &[u8], status: u16) {
    assert!(!resp.is_empty(), "{what}: closed without an answer");
    let (head, body) = split_head(resp);
    assert!(
        head.starts_with(&format!("HTTP/1.1 {status} ")),
        "{what}: {head}"
    );
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/json"),
        "{what}: {head}"
    );
    assert!(lower.contains("connection: close"), "{what}: {head}");
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{what}: not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    let err = v["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: {v}"));
    assert_eq!(err.len(), 4, "{what}: {v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{what}: {v}");
    assert!(
        !v["error"]["message"].as_str().unwrap().is_empty(),
        "{what}: {v}"
    );
}

#[tokio::test]
async fn unreadable_requests_get_a_json_error() {
    let up = FakeUpstream::start().await;
    let many: String = (0..150).map(|i| format!("x-m-{i}: {i}\r\n")).collect();
    let cases: Vec<(String, Vec<u8>, u16)> = vec![
        ("bad header line".into(), b"GET /echo/a HTTP/1.1\r\nbad header\r\n\r\n".to_vec(), 400),
        ("space in a name".into(), b"GET /echo/a HTTP/1.1\r\nhost: x\r\nna me: v\r\n\r\n".to_vec(), 400),
        ("NUL in a value".into(), b"GET /echo/a HTTP/1.1\r\nhost: x\r\nx-nul: a\0b\r\n\r\n".to_vec(), 400),
        ("no request line".into(), b"BAD\r\n\r\n".to_vec(), 400),
        (
            "content-length: abc".into(),
            b"POST /echo/a HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n".to_vec(),
            400,
        ),
        (
            "two content-lengths".into(),
            b"POST /echo/a HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!".to_vec(),
            400,
        ),
        (
            "transfer-encoding: gzip".into(),
            b"POST /echo/a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\nxyz".to_vec(),
            400,
        ),
        (
            "bad framing on an intercepted route".into(),
            b"POST /v1/assistants HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "150 header fields".into(),
            format!("GET /echo/many HTTP/1.1\r\nhost: x\r\n{many}\r\n").into_bytes(),
            431,
        ),
    ];
    for path in PATHS {
        let target = Target::start(&up.url(), path).await;
        let before = up.request_count();
        for (name, request, status) in &cases {
            let what = format!("{path:?}, {name}");
            let resp = target.exchange(request).await;
            assert_envelope(&what, &resp, *status);
        }
        assert_eq!(
            up.request_count(),
            before,
            "{path:?}: a bad request was forwarded"
        );

        // After a good request on the same connection (kept alive), a bad one.
        let resp = target
            .exchange(
                b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /echo/b HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n",
            )
            .await;
        let (head, rest) = split_head(&resp);
        assert!(head.starts_with("HTTP/1.1 200"), "{path:?}: {head}");
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap();
        assert_envelope(&format!("{path:?}, second request"), &rest[len..], 400);
        target.proxy.shutdown().await;
    }
}

/// An upstream's own bare `400` (no body, only a date) is forwarded as it is: only hyper's
/// answers to requests it could not read are rewritten.
#[tokio::test]
async fn an_upstreams_bare_answer_is_not_rewritten() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Mon, 07 Dec 2026 00:00:00 GMT\r\n\r\n",
                    )
                    .await;
                let _ = s.read(&mut buf).await;
            });
        }
    });
    for path in PATHS {
        let target = Target::start(&format!("http://{addr}"), path).await;
        let resp = target
            .exchange(b"GET /anything HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await;
        let (head, body) = split_head(&resp);
        assert!(head.starts_with("HTTP/1.1 400"), "{path:?}: {head}");
        assert!(
            !head.to_ascii_lowercase().contains("content-type"),
            "{path:?}: the upstream's answer was rewritten: {head}"
        );
        assert!(
            body.is_empty(),
            "{path:?}: {:?}",
            String::from_utf8_lossy(body)
        );
        target.proxy.shutdown().await;
    }
}
