//! Test support shared by the integration tests: a proxy started in-process on port 0, and
//! small HTTP client helpers; the fake OpenAI upstream and the Astra stand-in are the rig crates
//! (crates/fake-upstream, crates/fake-astra), re-exported here under their old paths.
#![allow(dead_code)]

// Each crate that includes this module uses a different part of it.
#[allow(unused_imports)]
pub use ::fake_astra as astra;
#[allow(unused_imports)]
pub use ::fake_upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use assistants_proxy::app::AppState;
use assistants_proxy::config::{Config, FileConfig, ServeArgs};
use assistants_proxy::server;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use ::fake_upstream::FakeUpstream;

/// A proxy running in this process on 127.0.0.1:0.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// Which store an API test runs on. Every API test runs on both (see `both_backends!`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Cassandra,
}

/// The store URL for a backend: a fresh SQLite file in `dir`, or the shared test keyspace on
/// the Cassandra node at `ASSISTANTS_PROXY_TEST_CASSANDRA` (tests stay apart by using their
/// own API keys, i.e. tenants). Without that variable the Cassandra tests fail, never skip.
pub fn store_url(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("test.db").display()),
        Backend::Cassandra => {
            let hosts = std::env::var("ASSISTANTS_PROXY_TEST_CASSANDRA").unwrap_or_else(|_| {
                panic!(
                    "ASSISTANTS_PROXY_TEST_CASSANDRA is not set: start a node with \
                     scripts/cassandra.sh start and set it to 127.0.0.1:9042 (scripts/test.sh does both)"
                )
            });
            format!("cassandra://{hosts}/ap_api_tests")
        }
    }
}

/// A fake upstream, a proxy in front of it on `backend` (with extra TOML settings, or ""),
/// and an API client of a fresh tenant: how most API tests begin.
pub async fn setup(backend: Backend, toml: &str) -> (FakeUpstream, TestProxy, Api) {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start_backend_with(&up.url(), backend, toml).await;
    let api = Api::new(&proxy);
    (up, proxy, api)
}

/// A TLS client configuration trusting one PEM certificate (a test server's), offering `alpn`.
pub fn tls_client_config(cert_pem: &str, alpn: &[u8]) -> rustls::ClientConfig {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap())
        .unwrap();
    let mut cfg = assistants_proxy::tls::client_config(roots).unwrap();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    cfg
}

/// An object's `id`.
pub fn id(v: &serde_json::Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

/// A fresh random API key: a new tenant for the test that uses it.
pub fn new_key() -> String {
    format!("sk-test-{}", assistants_proxy::ids::new_id(""))
}

/// Runs an async test body once per backend: `both_backends!(name, |backend| async move {..})`
/// defines `name::sqlite` and `name::cassandra`. The Cassandra half is `#[ignore]`d, so a
/// plain `cargo test` runs without services and lists what it left out; `scripts/test.sh`
/// passes `--include-ignored`, and there a missing node fails the test.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                ($body)($crate::support::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs Cassandra: ASSISTANTS_PROXY_TEST_CASSANDRA=HOST:PORT cargo test -- --include-ignored (scripts/test.sh starts a node and does that)"]
            async fn cassandra() {
                ($body)($crate::support::Backend::Cassandra).await;
            }
        }
    };
}

/// Builds a configuration from TOML text plus the upstream URL, with a fresh SQLite file.
pub fn config_for(upstream: &str, toml: &str, dir: &std::path::Path) -> Config {
    config_for_backend(upstream, toml, dir, Backend::Sqlite)
}

pub fn config_for_backend(
    upstream: &str,
    toml: &str,
    dir: &std::path::Path,
    backend: Backend,
) -> Config {
    let args = ServeArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(upstream.to_owned()),
        store: Some(store_url(backend, dir)),
        ..ServeArgs::default()
    };
    Config::resolve(&args, FileConfig::parse(toml).expect("test TOML")).expect("test config")
}

impl TestProxy {
    pub async fn start(upstream: &str) -> TestProxy {
        TestProxy::start_with(upstream, "").await
    }

    /// Starts with extra TOML configuration (e.g. shorter timeouts).
    pub async fn start_with(upstream: &str, toml: &str) -> TestProxy {
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(upstream, toml, dir.path());
        TestProxy::start_config(config, dir).await
    }

    /// Starts on the given backend (the API tests run every case on both).
    pub async fn start_backend(upstream: &str, backend: Backend) -> TestProxy {
        TestProxy::start_backend_with(upstream, backend, "").await
    }

    pub async fn start_backend_with(upstream: &str, backend: Backend, toml: &str) -> TestProxy {
        let dir = tempfile::tempdir().unwrap();
        let config = config_for_backend(upstream, toml, dir.path(), backend);
        TestProxy::start_config(config, dir).await
    }

    pub async fn start_config(config: Config, dir: tempfile::TempDir) -> TestProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = config
            .tls
            .as_ref()
            .map(|t| server::tls_acceptor(&t.cert, &t.key).unwrap());
        let state = AppState::build(config).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(server::serve(listener, state.clone(), tls, async move {
            let _ = stopped.await;
        }));
        TestProxy {
            addr,
            state,
            stop: Some(stop),
            handle: Some(handle),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Signals shutdown; the returned handle resolves when the server has drained.
    pub fn begin_shutdown(&mut self) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.handle.take().expect("already shut down")
    }

    pub async fn shutdown(mut self) {
        let h = self.begin_shutdown();
        tokio::time::timeout(Duration::from_secs(30), h)
            .await
            .expect("shutdown timed out")
            .unwrap();
    }
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

/// A plain HTTP/1.1 client with its own pool.
pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends a request and collects the whole response body.
pub async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> (Response<()>, Bytes) {
    let resp = client.request(req).await.expect("request failed");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body failed").to_bytes();
    (Response::from_parts(parts, ()), bytes)
}

pub async fn get(client: &TestClient, url: &str) -> (Response<()>, Bytes) {
    send(
        client,
        Request::get(url).body(Full::new(Bytes::new())).unwrap(),
    )
    .await
}

pub fn json(bytes: &Bytes) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
        )
    })
}

/// Self-signed test certificate for `localhost` and 127.0.0.1, written to `dir`.
pub fn write_test_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_pem = cert.cert.pem();
    let key_pem = cert.signing_key.serialize_pem();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, &key_pem).unwrap();
    (cert_path, key_path, cert_pem)
}

/// A JSON client for the intercepted API, with one API key (one tenant).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub key: String,
    pub client: TestClient,
    /// Extra headers on every request (e.g. `OpenAI-Beta: assistants=v1`).
    pub headers: Vec<(String, String)>,
}

impl Api {
    pub fn new(proxy: &TestProxy) -> Api {
        Api {
            base: format!("http://{}", proxy.addr),
            key: new_key(),
            client: client(),
            headers: vec![("openai-beta".into(), "assistants=v2".into())],
        }
    }

    /// Same proxy, another tenant.
    pub fn other_tenant(&self) -> Api {
        Api {
            key: new_key(),
            ..self.clone()
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Api {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Any request; returns status, headers and the raw body.
    pub async fn raw(
        &self,
        method: http::Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> (http::StatusCode, http::HeaderMap, Bytes) {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header("authorization", format!("Bearer {}", self.key));
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        let (resp, bytes) = send(&self.client, b.body(Full::new(body)).unwrap()).await;
        (resp.status(), resp.headers().clone(), bytes)
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (http::StatusCode, serde_json::Value) {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let (status, _, out) = self
            .raw(method, path, Some("application/json"), bytes)
            .await;
        let v = if out.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&out).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&out).into_owned())
            })
        };
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (http::StatusCode, serde_json::Value) {
        self.call(http::Method::GET, path, None).await
    }

    pub async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> (http::StatusCode, serde_json::Value) {
        self.call(http::Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (http::StatusCode, serde_json::Value) {
        self.call(http::Method::DELETE, path, None).await
    }

    /// POST that must succeed; returns the body.
    pub async fn ok(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let (status, v) = self.post(path, body).await;
        assert_eq!(status, 200, "POST {path}: {v}");
        v
    }
}

/// Asserts an OpenAI error envelope with the given status and (optionally) code/param.
pub fn assert_error(
    got: &(http::StatusCode, serde_json::Value),
    status: u16,
    code: Option<&str>,
    param: Option<&str>,
) {
    assert_eq!(got.0, status, "{}", got.1);
    let err = got.1["error"]
        .as_object()
        .unwrap_or_else(|| panic!("no error envelope: {}", got.1));
    assert_eq!(err.len(), 4, "{}", got.1);
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    if let Some(code) = code {
        assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    }
    if let Some(param) = param {
        assert_eq!(got.1["error"]["param"], param, "{}", got.1);
    }
}
