//! The transparent forwarder: fidelity, streaming, upgrades, HTTP/2, TLS, failures, shutdown.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{self, FakeUpstream, TestProxy, client, get, json, send};

/// Sends raw bytes on a fresh connection and reads the whole response (connection: close).
pub(crate) async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("raw exchange timed out")
        .unwrap();
    out
}

pub(crate) fn split_head(resp: &[u8]) -> (String, &[u8]) {
    let pos = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    (
        String::from_utf8_lossy(&resp[..pos]).into_owned(),
        &resp[pos + 4..],
    )
}

#[tokio::test]
async fn small_json_round_trips_byte_for_byte() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&up.url()).await;
    let c = client();
    let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"h\u00e9llo"}],"n":1}"#;
    let (resp, bytes) = send(
        &c,
        Request::post(proxy.url("/echo/v1/chat?x=1"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let echo = json(&bytes);
    assert_eq!(echo["body_len"], body.len());
    assert_eq!(echo["body_sha256"], hex::encode(Sha256::digest(body)));
    assert_eq!(echo["method"], "POST");
    proxy.shutdown().await;
}

#[tokio::test]
async fn hundred_megabytes_stream_both_ways_unchanged() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&up.url()).await;
    let n: u64 = 100 * 1024 * 1024;

    // Download, Content-Length framed.
    let c = client();
    let resp = c
        .request(
            Request::get(proxy.url(&format!("/bytes?n={n}&seed=7")))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], n.to_string().as_str());
    let mut body = resp.into_body();
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len() as u64;
            hasher.update(&data);
        }
    }
    assert_eq!(total, n);
    let (_, expected) = get(&c, &format!("{}/bytes-sha?n={n}&seed=7", up.url())).await;
    assert_eq!(
        hex::encode(hasher.finalize()),
        String::from_utf8_lossy(&expected).trim()
    );

    // Upload, chunked (no Content-Length): 100 MiB generated on the fly, never held whole.
    let chunk = Bytes::from(vec![0xa5u8; 1024 * 1024]);
    let mut expected = Sha256::new();
    for _ in 0..100 {
        expected.update(&chunk);
    }
    let stream = futures_util::stream::iter(
        (0..100).map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone()))),
    );
    let upload_client: Client<HttpConnector, StreamBody<_>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let resp = upload_client
        .request(
            Request::post(proxy.url("/echo/upload"))
                .body(StreamBody::new(stream))
                .unwrap(),
        )
        .await
        .unwrap();
    let echo = json(&resp.into_body().collect().await.unwrap().to_bytes());
    assert_eq!(echo["body_len"], 100 * 1024 * 1024);
    assert_eq!(echo["body_sha256"], hex::encode(expected.finalize()));
    let te = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "transfer-encoding")
        .expect("a chunked upload stays chunked upstream");
    assert_eq!(te[1], "chunked");
    proxy.shutdown().await;
}

#[tokio::test]
async fn chunked_response_framing_is_preserved() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&up.url()).await;
    let raw = raw_exchange(
        proxy.addr,
        b"GET /bytes?n=70000&seed=1&chunked=1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    let (head, _) = split_head(&raw);
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("transfer-encoding: chunked"), "{head}");
    assert!(!lower.contains("content-length"), "{head}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn method_path_query_and_headers_are_faithful() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&up.url()).await;
    let request = b"PURGE /echo/a%2Fb/%E2%9C%93;x=1?q=%20a+b&q=2&empty=&%F0%9F%98%80 HTTP/1.1\r\n\
host: client.example\r\n\
x-repeated: one\r\n\
X-Repeated: two\r\n\
x-latin: caf\xe9\r\n\
x-utf8: \xe2\x9c\x93 ok\r\n\
authorization: Bearer sk-test-123\r\n\
content-length: 5\r\n\
connection: close\r\n\r\nhello";
    let raw = raw_exchange(proxy.addr, request).await;
    let (head, body) = split_head(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let echo: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(echo["method"], "PURGE");
    assert_eq!(echo["path"], "/echo/a%2Fb/%E2%9C%93;x=1");
    assert_eq!(echo["query"], "q=%20a+b&q=2&empty=&%F0%9F%98%80");
    let headers: Vec<(String, String)> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_owned(),
                h[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let values = |name: &str| -> Vec<String> {
        headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(values("x-repeated"), vec!["one", "two"]);
    assert_eq!(values("authorization"), vec!["Bearer sk-test-123"]);
    assert_eq!(values("host"), vec![up.addr().to_string()]);
    assert_eq!(values("x-utf8"), vec!["✓ ok"]);
    assert!(
        values("x-forwarded-for").is_empty(),
        "no client address is leaked"
    );
    // The Latin-1 byte must arrive as the same byte, not re-encoded.
    let raw_hex = echo["headers_raw_hex"].as_array().unwrap();
    let latin = raw_hex
        .iter()
        .find(|h| h[0] == "x-latin")
        .expect("x-latin forwarded");
    assert_eq!(latin[1], hex::encode(b"caf\xe9"));
    assert_eq!(echo["body_sha256"], hex::encode(Sha256::digest(b"hello")));
    proxy.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&up.url()).await;
    let raw = raw_exchange(
        proxy.addr,
        b"GET /echo/hop HTTP/1.1\r\nhost: x\r\nconnection: close, x-drop-me\r\nx-drop-me: 1\r\n\
keep-alive: timeout=5\r\nproxy-connection: keep-alive\r\nte: gzip\r\n\
proxy-authorization: Basic abc\r\nx-keep: yes\r\n\r\n",
    )
    .await;
    let (_, body) = split_head(&raw);
    let echo: serde_json::Value = serde_json::from_slice(body).unwrap();
    let names: Vec<&str> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap())
        .collect();
    for gone in [
        "x-drop-me",
        "keep-alive",
        "proxy-connection",
        "te",
        "proxy-authorization",
    ] {
        assert!(
            !names.contains(&gone),
            "{gone} reached the upstream: {names:?}"
        );
    }
    assert!(names.contains(&"x-keep"));

    let c = client();
    let (resp, _) = get(&c, &proxy.url("/hop")).await;
    let h = resp.headers();
    assert!(h.get("x-hop-custom").is_none(), "{h:?}");
    assert!(h.get("keep-alive").is_none(), "{h:?}");
    assert!(h.get("proxy-connection").is_none(), "{h:?}");
    assert!(h.get("proxy-authenticate").is_none(), "{h:?}");
    assert!(h.get("upgrade").is_none(), "{h:?}");
    assert_eq!(h.get_all("x-end-to-end").iter().count(), 2);
    assert_eq!(h.get_all("set-cookie").iter().count(), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn trailers_pass_through() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&up.url()).await;
    let c = client();
    let resp = c
        .request(
            Request::get(proxy.url("/trailers"))
                .header("te", "trailers")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers reached the client");
    assert_eq!(trailers["grpc-status"], "0");
    let body = collected.to_bytes();
    assert_eq!(
        trailers["x-checksum"],
        hex::encode(Sha256::digest(&body)).as_str()
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn sse_events_arrive_before_the_next_is_produced() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&up.url()).await;
    let c = client();
    let resp = c
        .request(
            Request::get(proxy.url("/sse?n=8&interval_ms=150"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut events: Vec<(u64, u64)> = Vec::new(); // (sent_us, received_us)
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..pos + 2).collect();
            let text = String::from_utf8_lossy(&event);
            let payload = text.trim().trim_start_matches("data: ");
            if payload == "[DONE]" {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(payload).unwrap();
            events.push((v["sent_us"].as_u64().unwrap(), now));
        }
    }
    assert_eq!(events.len(), 8);
    for pair in events.windows(2) {
        let (_, received) = pair[0];
        let (next_sent, _) = pair[1];
        assert!(
            received < next_sent,
            "an event was held back until the next one was produced: {events:?}"
        );
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&up.url()).await;
    let (mut ws, resp) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/realtime?model=x", proxy.addr))
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(tokio_tungstenite::tungstenite::Message::text("ping 1"))
        .await
        .unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "ping 1");
    ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1u8, 2, 3,
    ]))
    .await
    .unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_data().as_ref(), &[1u8, 2, 3]);
    ws.close(None).await.unwrap();
    // A tunnel lives until both ends close (shutdown gives it the grace period to).
    drop(ws);
    proxy.shutdown().await;
}

async fn h2_get(
    io: impl hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    uri: &str,
) -> (StatusCode, Bytes) {
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::get(uri)
                .header("x-h2", "yes")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn http2_in_clear_text() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&up.url()).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (status, body) = h2_get(TokioIo::new(tcp), &proxy.url("/echo/h2?a=1")).await;
    assert_eq!(status, 200);
    let echo = json(&body);
    assert_eq!(echo["path"], "/echo/h2");
    assert_eq!(echo["query"], "a=1");
    assert_eq!(echo["version"], "HTTP/1.1", "the upstream leg is HTTP/1.1");
    proxy.shutdown().await;
}

#[tokio::test]
async fn http2_and_http1_over_tls() {
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, cert_pem) = support::write_test_cert(dir.path());
    let toml = format!(
        "[server]\ntls_cert = {:?}\ntls_key = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let proxy = TestProxy::start_with(&up.url(), &toml).await;

    for alpn in [b"h2".to_vec(), b"http/1.1".to_vec()] {
        let cfg = crate::support::tls_client_config(&cert_pem, &alpn);
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
        let tcp = TcpStream::connect(proxy.addr).await.unwrap();
        let tls = connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn.as_slice()));
        let uri = format!("https://localhost:{}/echo/tls", proxy.addr.port());
        let (status, body) = if alpn == b"h2" {
            h2_get(TokioIo::new(tls), &uri).await
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            let resp = sender
                .send_request(
                    Request::get("/echo/tls")
                        .header("host", "localhost")
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = resp.status();
            (status, resp.into_body().collect().await.unwrap().to_bytes())
        };
        assert_eq!(status, 200);
        assert_eq!(json(&body)["path"], "/echo/tls");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn five_hundred_concurrent_requests() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&up.url()).await;
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..500 {
        let c = c.clone();
        let url = proxy.url(&format!("/echo/c{i}"));
        tasks.push(tokio::spawn(async move {
            let (resp, body) = send(
                &c,
                Request::post(url)
                    .body(Full::new(Bytes::from(format!("body {i}"))))
                    .unwrap(),
            )
            .await;
            assert_eq!(resp.status(), 200);
            assert_eq!(json(&body)["path"], format!("/echo/c{i}"));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The capped pool keeps at most 64 idle upstream connections afterwards.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        up.connections_open() <= 64,
        "{} idle upstream sockets",
        up.connections_open()
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&up.url()).await;
    let c = client();
    for _ in 0..50 {
        let (resp, _) = get(&c, &proxy.url("/echo/reuse")).await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        up.connections_accepted(),
        1,
        "sequential requests share one connection"
    );
    let (_, metrics) = get(&c, &proxy.url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics);
    assert!(
        text.contains("assistants_proxy_upstream_requests_total 50"),
        "{text}"
    );
    assert!(
        text.contains("assistants_proxy_upstream_connections_total 1"),
        "{text}"
    );
    proxy.shutdown().await;
}

/// A raw upstream that answers each request on a connection with a fixed body, and then, when
/// `close_after` is set, closes the connection that long after the answer (as an upstream's
/// keep-alive timeout does). Returns its address and the count of accepted connections.
async fn raw_upstream(
    close_after: Option<Duration>,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                        if let Some(delay) = close_after {
                            tokio::time::sleep(delay).await;
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_not_used() {
    let (addr, accepted) = raw_upstream(Some(Duration::from_millis(10))).await;
    let proxy = TestProxy::start(&format!("http://{addr}")).await;
    let c = client();
    for i in 0..5 {
        let (resp, body) = get(&c, &proxy.url("/v1/models")).await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(&body[..], b"ok");
        // Long enough for the upstream's close to arrive before the next request.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 5);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_pooled_connection_idle_past_the_pool_timeout_is_replaced() {
    let (addr, accepted) = raw_upstream(None).await;
    let proxy = TestProxy::start_with(
        &format!("http://{addr}"),
        "[upstream]\npool_idle_timeout_seconds = 1\n",
    )
    .await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(get(&c, &proxy.url("/v1/models")).await.0.status(), 200);
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(get(&c, &proxy.url("/v1/models")).await.0.status(), 200);
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "a connection idle longer than the pool's timeout is not reused"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_request_does_not_wait_for_a_connection_still_sending_an_upload() {
    // The upstream answers as soon as it has a request head, before the body: the proxy's
    // connection is then back in the pool while it still streams the upload.
    let (addr, accepted) = raw_upstream(None).await;
    let proxy = TestProxy::start(&format!("http://{addr}")).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    tx.send(Ok(Frame::data(Bytes::from_static(b"first part"))))
        .await
        .unwrap();
    let upload_client: Client<HttpConnector, StreamBody<_>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let body = StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let resp = upload_client
        .request(Request::post(proxy.url("/v1/uploads")).body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        &resp.into_body().collect().await.unwrap().to_bytes()[..],
        b"ok"
    );

    // The upload is still open (`tx` is held); another request must not queue behind it.
    let c = client();
    let (resp, body) =
        tokio::time::timeout(Duration::from_secs(5), get(&c, &proxy.url("/v1/models")))
            .await
            .expect("the second request waited for the upload's connection");
    assert_eq!(resp.status(), 200);
    assert_eq!(&body[..], b"ok");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    drop(tx);
    proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_errors_pass_through_untouched() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&up.url()).await;
    let c = client();
    for code in [400u16, 401, 404, 429, 500, 503] {
        let (resp, body) = get(&c, &proxy.url(&format!("/status/{code}"))).await;
        let (direct, direct_body) = get(&c, &format!("{}/status/{code}", up.url())).await;
        assert_eq!(resp.status(), code);
        assert_eq!(resp.headers()["x-fake-status"], code.to_string().as_str());
        assert_eq!(body, direct_body);
        assert_eq!(direct.status(), code);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn unreachable_upstream_is_a_502_envelope() {
    // A port nobody listens on: bind, learn the port, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let proxy = TestProxy::start(&format!("http://127.0.0.1:{port}")).await;
    let c = client();
    let (resp, body) = get(&c, &proxy.url("/v1/models")).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v = json(&body);
    let err = v["error"].as_object().unwrap();
    assert_eq!(err.len(), 4);
    assert_eq!(v["error"]["type"], "server_error");
    assert_eq!(v["error"]["code"], "upstream_unreachable");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&port.to_string())
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn slow_response_head_is_a_504() {
    let up = FakeUpstream::start().await;
    let proxy =
        TestProxy::start_with(&up.url(), "[upstream]\nresponse_head_timeout_seconds = 1\n").await;
    let c = client();
    let started = Instant::now();
    let (resp, body) = get(&c, &proxy.url("/slow-head?ms=5000")).await;
    assert_eq!(resp.status(), 504);
    assert_eq!(json(&body)["error"]["code"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(4));
    proxy.shutdown().await;
}

#[tokio::test]
async fn idle_stream_is_cut_but_a_slow_steady_stream_is_not() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start_with(&up.url(), "[upstream]\nidle_timeout_seconds = 1\n").await;
    let c = client();
    // A stream that keeps producing every 150 ms for 2 s outlives the 1 s idle timeout.
    let (resp, body) = get(&c, &proxy.url("/sse?n=14&interval_ms=150")).await;
    assert_eq!(resp.status(), 200);
    assert!(String::from_utf8_lossy(&body).contains("[DONE]"));
    // A body that goes silent for 3 s is cut.
    let resp = c
        .request(
            Request::get(proxy.url("/slow-body?ms=3000"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.into_body().collect().await.is_err());
    proxy.shutdown().await;
}

#[tokio::test]
async fn client_disconnect_closes_the_upstream_connection() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&up.url()).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /hold?ms=20000 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    assert!(n > 0);
    assert_eq!(up.connections_open(), 1);
    drop(s);
    assert!(
        up.wait_for_connection_closed(Duration::from_secs(5)).await,
        "the upstream kept streaming to a client that left"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn own_endpoints() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&up.url()).await;
    let c = client();
    let (resp, body) = get(&c, &proxy.url("/healthz")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(&body)["status"], "ok");
    let (resp, body) = get(&c, &proxy.url("/readyz")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(&body)["store"], "ok");
    let _ = get(&c, &proxy.url("/echo/x")).await;
    let (resp, body) = get(&c, &proxy.url("/metrics")).await;
    assert_eq!(resp.status(), 200);
    let text = String::from_utf8_lossy(&body);
    for needle in [
        "assistants_proxy_requests_total{class=\"own\",status=\"200\"} 2",
        "assistants_proxy_requests_total{class=\"forwarded\",status=\"200\"} 1",
        "assistants_proxy_in_flight_requests 1", // this very /metrics response
        "assistants_proxy_upstream_response_head_seconds_count 1",
        "assistants_proxy_body_bytes_total{direction=\"to_client\"}",
        "assistants_proxy_upstream_connections_total 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    // A proxy-owned path with a wrong method is refused locally in OpenAI's shape.
    let (resp, body) = send(
        &c,
        Request::post(proxy.url("/healthz"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        json(&body)["error"]["message"],
        "Invalid URL (POST /healthz)"
    );
    assert!(up.requests().iter().all(|r| r.path != "/healthz"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_stream_finish() {
    let up = FakeUpstream::start().await;
    let mut proxy = TestProxy::start(&up.url()).await;
    let c = client();
    let resp = c
        .request(
            Request::get(proxy.url("/sse?n=10&interval_ms=100"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    let done = proxy.begin_shutdown();
    // New connections are refused once shutdown began.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(proxy.addr).await.is_err());
    let rest = body.collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&rest);
    assert_eq!(text.matches("data: {").count(), 9, "{text}");
    assert!(text.contains("[DONE]"));
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn https_upstream_with_an_extra_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(
        {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p
        },
        rcgen::KeyPair::generate().unwrap(),
    )
    .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let up = FakeUpstream::start_tls(&leaf.pem(), &leaf_key.serialize_pem()).await;
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();

    let c = client();
    let trusted = TestProxy::start_with(
        &up.url(),
        &format!(
            "[upstream]\nextra_ca_file = {:?}\n",
            ca_path.display().to_string()
        ),
    )
    .await;
    let (resp, body) = get(&c, &trusted.url("/echo/tls-upstream")).await;
    assert_eq!(resp.status(), 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["path"], "/echo/tls-upstream");
    // The TLS connection is pooled and reused (a handshake per request would be the cost of
    // every call to api.openai.com).
    for i in 0..5 {
        let (resp, _) = get(&c, &trusted.url(&format!("/echo/again-{i}"))).await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        up.connections_accepted(),
        1,
        "TLS upstream connections were not reused"
    );
    trusted.shutdown().await;

    let untrusted = TestProxy::start(&up.url()).await;
    let (resp, body) = get(&c, &untrusted.url("/echo/tls-upstream")).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(json(&body)["error"]["code"], "upstream_tls_error");
    untrusted.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_cassandra_degrades_only_intercepted_routes() {
    let up = FakeUpstream::start().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let args = assistants_proxy::config::ServeArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(up.url()),
        store: Some(format!("cassandra://127.0.0.1:{dead}/ap_unreachable")),
        ..Default::default()
    };
    let config = assistants_proxy::config::Config::resolve(&args, Default::default()).unwrap();
    let proxy = TestProxy::start_config(config, dir).await;
    let c = client();
    // Pass-through traffic is unaffected.
    let (resp, _) = get(&c, &proxy.url("/echo/still-forwarding")).await;
    assert_eq!(resp.status(), 200);
    let (resp, _) = get(&c, &proxy.url("/healthz")).await;
    assert_eq!(resp.status(), 200);
    let (resp, body) = get(&c, &proxy.url("/readyz")).await;
    assert_eq!(resp.status(), 503, "{}", String::from_utf8_lossy(&body));
    // Intercepted routes answer 503 in OpenAI's envelope (retryable).
    let (resp, body) = send(
        &c,
        Request::get(proxy.url("/v1/assistants"))
            .header("authorization", "Bearer sk-x")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-should-retry"], "true");
    let v = json(&body);
    assert_eq!(v["error"]["code"], "store_unavailable");
    assert_eq!(v["error"]["type"], "server_error");
    proxy.shutdown().await;
}
