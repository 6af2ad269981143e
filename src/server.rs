//! The listener: accepts connections (HTTP/1.1 and HTTP/2, clear or TLS), sends each request
//! through the route table to a local handler or the forwarder, and shuts down gracefully.
//!
//! `run` takes an already bound listener and a shutdown future, so tests bind port 0 and
//! drive the same code the binary runs.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::body::ProxyBody;
use crate::config::Config;
use crate::error::Error;
use crate::forward::{Forwarder, InFlight, RelayBody};
use crate::metrics::{Metrics, RouteClass};
use crate::routes::{Resolution, RouteTable};
use crate::store::astra::AstraSessions;
use crate::store::{Store, StoreEnv, StoreUrl};
use crate::upstream::{UpstreamBase, build_client};

/// Everything a request handler may need, shared by all connections.
pub struct AppState {
    pub config: Config,
    pub metrics: Metrics,
    pub forwarder: Forwarder,
    pub store: Store,
    /// Per-request Astra databases (`astra-api-token`), when `astra.per_request_headers`.
    pub astra: Option<Arc<AstraSessions>>,
    /// The stores' own background work (Astra forwarders), closed after `tasks`.
    pub store_env: StoreEnv,
    pub routes: RouteTable,
    /// Background work (upgrade tunnels, later runs and ingestion); shutdown waits for it.
    pub tasks: TaskTracker,
    /// Cancelled when the grace period ends: long-lived work stops and saves its state.
    pub shutdown: CancellationToken,
    /// Run timestamps and expiry (tests can move it forward).
    pub clock: crate::runs::Clock,
    /// Runs executing in this process (for immediate local cancels).
    pub run_registry: crate::runs::Registry,
    /// This process's identity in run leases.
    pub instance_id: String,
    /// Vector-store ingestion: concurrency bound and the ingestions this process runs.
    pub retrieval: crate::retrieval::Retrieval,
    request_ids: RequestIds,
}

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("TLS: {0}")]
    Tls(String),
}

impl AppState {
    /// Builds the shared state: upstream client, store, metrics.
    pub async fn build(config: Config) -> Result<Arc<AppState>, StartError> {
        let metrics = Metrics::new();
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let client = build_client(&config.upstream, metrics.upstream_connections.clone())
            .map_err(StartError::Config)?;
        let base = UpstreamBase::new(&config.upstream.url).map_err(StartError::Config)?;
        let forwarder = Forwarder::new(
            client,
            base,
            config.upstream.response_head_timeout,
            config.upstream.idle_timeout,
            metrics.clone(),
            tasks.clone(),
            shutdown.clone(),
        );
        let store_url =
            StoreUrl::parse(&config.store_url).map_err(|e| StartError::Config(e.to_string()))?;
        let store_env = StoreEnv::new(config.astra.clone());
        let store = Store::open_with(&store_url, &store_env).await?;
        let astra = if config.astra.per_request_headers {
            Some(Arc::new(
                AstraSessions::new(&config.astra, &store_env).map_err(StartError::Config)?,
            ))
        } else {
            None
        };
        let retrieval =
            crate::retrieval::Retrieval::new(config.retrieval.max_concurrent_ingestions);
        Ok(Arc::new(AppState {
            config,
            metrics,
            forwarder,
            store,
            astra,
            store_env,
            routes: RouteTable::new(),
            tasks,
            shutdown,
            clock: crate::runs::Clock::default(),
            run_registry: crate::runs::Registry::default(),
            instance_id: crate::ids::new_id("proxy_"),
            retrieval,
            request_ids: RequestIds::new(),
        }))
    }
}

/// Runs the proxy on `listener` until `shutdown` resolves, then drains gracefully.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let tls = match &config.tls {
        Some(files) => Some(tls_acceptor(&files.cert, &files.key)?),
        None => None,
    };
    let state = AppState::build(config).await?;
    serve(listener, state, tls, shutdown).await;
    Ok(())
}

/// The accept loop over a prepared state (tests that need the state's handles call this).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let builder = connection_builder(&state.config);
    let graceful = GracefulShutdown::new();
    state.tasks.spawn(crate::runs::sweeper::run(state.clone()));
    if let Some(sessions) = &state.astra {
        state
            .tasks
            .spawn(sessions.clone().sweep(state.shutdown.clone()));
    }
    let connections = TaskTracker::new();
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        upstream = %state.config.upstream.url,
        tls = tls.is_some(),
        "assistants-proxy serving"
    );
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning on a full fd table.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Each small SSE write must leave at once.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let state = state.clone();
        let tls = tls.clone();
        let cancel = state.shutdown.clone();
        connections.spawn(async move {
            tokio::select! {
                () = serve_connection(stream, state, builder, tls, watcher) => {}
                // The grace period is over: drop whatever is still open.
                () = cancel.cancelled() => {}
            }
            tracing::trace!(%peer, "connection closed");
        });
    }
    drop(listener);
    tracing::info!("shutting down: no longer accepting connections");
    let grace = state.config.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_seconds = grace.as_secs(),
            "grace period over; closing remaining connections"
        );
    }
    state.shutdown.cancel();
    connections.close();
    state.tasks.close();
    connections.wait().await;
    state.tasks.wait().await;
    // Last: runs and ingestion have written their final state through these.
    state.store_env.close().await;
    tracing::info!("shutdown complete");
}

fn connection_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // header_read_timeout needs a timer (without one, hyper panics when it is set).
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

async fn serve_connection(
    stream: TcpStream,
    state: Arc<AppState>,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(state, req).await) }
    });
    let result =
        match tls {
            None => {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                watcher.watch(conn.into_owned()).await
            }
            Some(acceptor) => {
                let stream =
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    };
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                watcher.watch(conn.into_owned()).await
            }
        };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// One request: resolve the route, answer locally or forward, record metrics and an access log.
async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let id = state.request_ids.next();
    let span =
        tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
    async move {
        // Counted from arrival until the response body ends (or the client leaves).
        let in_flight = InFlight::new(&state.metrics.in_flight);
        let (class, resp) = match state.routes.resolve(req.method(), req.uri().path()) {
            Resolution::Forward => (
                RouteClass::Forwarded,
                state.forwarder.forward(req, in_flight).await,
            ),
            Resolution::InvalidUrl => {
                let resp = Error::InvalidUrl {
                    method: req.method().to_string(),
                    path: req.uri().path().to_owned(),
                }
                .into_response();
                (
                    RouteClass::Intercepted,
                    local_response(&state, RouteClass::Intercepted, resp, &id, in_flight),
                )
            }
            Resolution::Local { endpoint, params } => {
                let class = endpoint.class();
                // Boxed: the local handlers' futures are large, and hyper keeps one slot the
                // size of this whole future per connection, busy or idle. Forwarding (the
                // common case) should not pay for them in memory.
                let resp = Box::pin(crate::api::dispatch(endpoint, &state, req, params))
                    .await
                    .unwrap_or_else(Error::into_response);
                (class, local_response(&state, class, resp, &id, in_flight))
            }
        };
        if state.config.access_log {
            tracing::info!(
                status = resp.status().as_u16(),
                class = class.as_str(),
                elapsed_us = started.elapsed().as_micros() as u64,
                "request"
            );
        }
        resp
    }
    .instrument(span)
    .await
}

/// Finishes a locally answered response: metrics, in-flight tracking and the request id.
fn local_response(
    state: &AppState,
    class: RouteClass,
    resp: Response<ProxyBody>,
    id: &RequestId,
    in_flight: InFlight,
) -> Response<ProxyBody> {
    state.metrics.request_done(class, resp.status().as_u16());
    let (mut parts, body) = resp.into_parts();
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        parts.headers.insert("x-request-id", v);
    }
    let body = RelayBody::new(
        body,
        state.metrics.bytes_to_client.clone(),
        None,
        Some(in_flight),
    );
    Response::from_parts(parts, http_body_util::BodyExt::boxed_unsync(body))
}

/// A request id: `req_` + a per-process random prefix + a counter. Cheap, unique, and
/// meaningless to anyone who sees it. Kept as its two numbers and formatted only when shown
/// (a disabled span or a forwarded request never needs the text).
#[derive(Clone, Copy)]
pub struct RequestId {
    prefix: u32,
    n: u64,
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "req_{:08x}{:012x}", self.prefix, self.n)
    }
}

struct RequestIds {
    prefix: u32,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or(0);
        RequestIds {
            prefix: nanos ^ std::process::id().rotate_left(16),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> RequestId {
        RequestId {
            prefix: self.prefix,
            n: self.counter.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// A TLS acceptor from PEM files, offering h2 and http/1.1 by ALPN.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<TlsAcceptor, StartError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| StartError::Tls(format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| StartError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!(
            "{} holds no certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| StartError::Tls(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
