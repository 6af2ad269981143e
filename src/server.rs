//! The listener: accepts connections (HTTP/1.1 and HTTP/2, clear or TLS), sends each request
//! through the route table to a local handler or the forwarder, and shuts down gracefully.
//!
//! `run` takes an already bound listener and a shutdown future, so tests bind port 0 and
//! drive the same code the binary runs.
//!
//! About 595 lines of code plus tests: accepting, serving, and the ordered shutdown belong
//! together (the shutdown order depends on how connections are served).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::app::{AppState, RequestId, StartError};
use crate::body::ProxyBody;
use crate::config::Config;
use crate::error::Error;
use crate::forward::{InFlight, RelayBody};
use crate::metrics::RouteClass;
use crate::routes::Resolution;
use crate::shutdown::CancelWatch;

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
    // The relay dials through the HTTP/1.1 pool's connector (one TLS set-up at start); with
    // `upstream.http2` there is no such pool, and no relay.
    let relay = match state.upstream.client().http1_connector() {
        Some(connector) if state.config.http1_fast_path => {
            match crate::h1::Relay::new(
                &state.config,
                connector,
                state.upstream.base(),
                state.metrics.clone(),
            ) {
                Ok(relay) => Some(relay),
                Err(e) => {
                    tracing::warn!(error = %e, "the HTTP/1 relay is off: it could not be set up");
                    None
                }
            }
        }
        _ => None,
    };
    let shared = Arc::new(Shared {
        builders: Builders::new(&state.config),
        relay,
    });
    // Cancelled when shutdown begins: each connection finishes the exchange in progress, then
    // closes (HTTP/1 after the current response, HTTP/2 with GOAWAY); the proxy's own
    // periodic work (`daemons`) stops at once.
    let draining = CancellationToken::new();
    let daemons = TaskTracker::new();
    daemons.spawn(crate::runs::sweeper::run(
        state.runs.clone(),
        draining.clone(),
    ));
    if let Some(sessions) = &state.astra {
        daemons.spawn(sessions.clone().sweep(draining.clone()));
    }
    daemons.spawn(state.runs.interpreter.clone().reap(draining.clone()));
    if let Some(poll) = state.busy_poll.clone() {
        let stop = draining.clone();
        daemons.spawn(async move { poll.run(stop).await });
    }
    daemons.close();
    let connections = TaskTracker::new();
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        upstream = %state.config.upstream.url,
        tls = tls.is_some(),
        "assistants-proxy serving"
    );
    tokio::pin!(shutdown);
    let mut accept_errors = AcceptErrors::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => {
                    accept_errors.accepted();
                    pair
                }
                Err(e) => {
                    // Usually EMFILE: wait for descriptors to be freed instead of spinning on
                    // a full table (which would also fill the log).
                    let (pause, log) = accept_errors.failed(Instant::now());
                    if let Some(suppressed) = log {
                        tracing::warn!(
                            error = %e,
                            suppressed,
                            "accept failed (further failures within a second are counted, not logged)"
                        );
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        // Each small SSE write must leave at once.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let shared = shared.clone();
        let state = state.clone();
        let tls = tls.clone();
        let draining = draining.clone();
        let cancel = state.shutdown.clone();
        connections.spawn(async move {
            serve_connection(stream, state, shared, tls, draining, cancel).await;
            tracing::trace!(%peer, "connection closed");
        });
    }
    drop(listener);
    tracing::info!("shutting down: no longer accepting connections");
    draining.cancel();
    connections.close();
    state.tasks.close();
    // The grace period: exchanges in progress, streams, runs and ingestions may finish.
    let grace = state.config.shutdown_grace;
    let work_done = async {
        tokio::join!(connections.wait(), state.tasks.wait(), daemons.wait());
    };
    if tokio::time::timeout(grace, work_done).await.is_err() {
        tracing::warn!(
            grace_seconds = grace.as_secs(),
            connections = connections.len(),
            tasks = state.tasks.len(),
            "grace period over; stopping what is left (runs fail, ingestions are left to resume)"
        );
    }
    // Then everything still running stops and saves its state, within the cleanup period;
    // whatever has not finished by then is abandoned (runs are resolved by lease), so the
    // process always exits.
    state.shutdown.cancel();
    let cleanup = state.config.shutdown_cleanup;
    let closed = async {
        tokio::join!(connections.wait(), state.tasks.wait());
        // Runs have stopped: their interpreter sessions (sandboxes, kernels) go.
        state.runs.interpreter.close_all().await;
        // Nothing can be sending upstream any more.
        state.upstream.client().close().await;
        if let Some(relay) = &shared.relay {
            relay.close();
        }
        // Last: runs and ingestion have written their final state through these.
        state.store_env.close().await;
    };
    if tokio::time::timeout(cleanup, closed).await.is_err() {
        tracing::warn!(
            cleanup_seconds = cleanup.as_secs(),
            connections = connections.len(),
            tasks = state.tasks.len(),
            "work still running after the cleanup period; exiting without it"
        );
    }
    tracing::info!("shutdown complete");
}

/// Failed accepts (EMFILE, ENFILE, ENOBUFS…): each waits a little longer before the next try,
/// and the log gets at most one line a second, saying how many failures it stands for.
#[derive(Default)]
struct AcceptErrors {
    /// Failures in a row; the next pause doubles with each, up to [`ACCEPT_PAUSE_MAX`].
    streak: u32,
    last_logged: Option<Instant>,
    /// Failures since the last line, not logged.
    unlogged: u64,
}

const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_millis(500);
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(1);

impl AcceptErrors {
    fn accepted(&mut self) {
        self.streak = 0;
    }

    /// Notes a failure at `now`: how long to wait before accepting again, and whether to log
    /// it (with the number of failures since the last line that were not logged).
    fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        let log = self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= ACCEPT_LOG_EVERY)
            .then(|| {
                self.last_logged = Some(now);
                std::mem::take(&mut self.unlogged)
            });
        if log.is_none() {
            self.unlogged += 1;
        }
        let pause = ACCEPT_PAUSE_MIN.saturating_mul(1 << self.streak.min(6));
        self.streak = self.streak.saturating_add(1);
        (pause.min(ACCEPT_PAUSE_MAX), log)
    }
}

/// What every connection of one listener shares (each holds an `Arc`, not a copy).
struct Shared {
    builders: Builders,
    /// The HTTP/1 relay for plain-text forwarded requests (`server.http1_fast_path`); it
    /// speaks HTTP/1.1 only, so it is off when the upstream may be reached over h2.
    relay: Option<crate::h1::Relay>,
}

/// The connection builders.
struct Builders {
    /// Plain-text connections that cannot be HTTP/2 (nearly all of them).
    http1: http1::Builder,
    /// TLS connections and plain-text ones that may be HTTP/2 prior knowledge (h2c).
    auto: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(config: &Config) -> Builders {
        // The same HTTP/1 settings on both: header_read_timeout needs a timer (without one,
        // hyper panics when it is set).
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .keep_alive(true);
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .keep_alive(true);
        auto.http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        Builders { http1, auto }
    }
}

/// The HTTP/2 connection preface: a plain-text connection that opens with it is h2c.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a plain-text connection's first bytes say about its protocol.
enum Opening {
    /// They cannot begin the HTTP/2 preface.
    Http1,
    /// They are the preface or a prefix of it: the auto builder reads on and decides.
    MaybeHttp2,
    /// The client closed, failed or sent nothing within the header read timeout.
    Gone,
}

/// Peeks at (without consuming) the first bytes of a plain-text connection.
///
/// Why not let hyper-util's auto builder decide for every connection: it reads the first bytes
/// itself and replays them through a wrapper, so hyper's first read returns those few bytes
/// alone and its 8 KB read buffer, no longer fully free, is reallocated at 16 KB for the next
/// read, for the life of the connection. That was the largest item of memory per connection.
/// A peek leaves the bytes in the socket, and HTTP/1 connections go straight to hyper.
async fn peek_opening(stream: &TcpStream, timeout: Duration) -> Opening {
    let mut buf = [0u8; H2_PREFACE.len()];
    match tokio::time::timeout(timeout, stream.peek(&mut buf)).await {
        Ok(Ok(0)) | Err(_) => Opening::Gone,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "reading the first bytes failed");
            Opening::Gone
        }
        Ok(Ok(n)) if buf[..n] == H2_PREFACE[..n] => Opening::MaybeHttp2,
        Ok(Ok(_)) => Opening::Http1,
    }
}

/// Runs a connection to its end; once `draining` is cancelled, `graceful_shutdown` is called on
/// it, so it finishes the exchange in progress and closes; once `cancel` is (the grace period
/// is over), it is dropped wherever it is.
async fn drive<C, E>(
    conn: C,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    draining: &CancellationToken,
    cancel: &CancellationToken,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    let mut draining = CancelWatch::new(draining.clone());
    let mut cancel = CancelWatch::new(cancel.clone());
    let mut graceful_shutdown = Some(graceful_shutdown);
    let result = std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            if cancel.poll_cancelled(cx).is_ready() {
                return Poll::Ready(None);
            }
            if graceful_shutdown.is_some() && draining.poll_cancelled(cx).is_ready() {
                if let Some(shutdown) = graceful_shutdown.take() {
                    shutdown(conn.as_mut());
                }
                // Polled again at once: an idle connection can close now.
                continue;
            }
            return Poll::Pending;
        }
    })
    .await;
    if let Some(Err(e)) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Runs `fut` until it completes, or until `cancel` fires (None): the grace period is over.
async fn until_cancelled<F: Future>(fut: F, cancel: &CancellationToken) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cancel = CancelWatch::new(cancel.clone());
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        cancel.poll_cancelled(cx).map(|()| None)
    })
    .await
}

/// A response body as the connection's service gives it to hyper.
type ConnBody = crate::h1::answer::Tracked<ProxyBody>;

/// Answers one request through `handle` while `live` marks its response as in progress.
async fn tracked(
    live: crate::h1::answer::Live,
    method: http::Method,
    handle: impl Future<Output = Result<Response<ProxyBody>, std::convert::Infallible>>,
) -> Result<Response<ConnBody>, std::convert::Infallible> {
    let resp = handle.await?;
    live.answered(&method, resp.status());
    Ok(resp.map(|body| crate::h1::answer::Tracked::new(body, live)))
}

/// A connection through hyper-util's auto builder (HTTP/1 or HTTP/2, decided from its first
/// bytes): TLS ones, and cleartext ones that may open with the HTTP/2 preface.
async fn serve_auto<I, S>(
    auto: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    draining: &CancellationToken,
    cancel: &CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<ConnBody>,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    let conn = auto.serve_connection_with_upgrades(TokioIo::new(io), service);
    drive(
        conn,
        auto::UpgradeableConnection::graceful_shutdown,
        draining,
        cancel,
    )
    .await;
}

async fn serve_connection(
    stream: TcpStream,
    state: Arc<AppState>,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    draining: CancellationToken,
    cancel: CancellationToken,
) {
    let timeout = state.config.header_read_timeout;
    let relay_state = state.clone();
    // hyper's service for the connection, and the IO wrapper that lets it tell hyper's own
    // bare answers to unreadable requests from the service's, to give them OpenAI's error
    // body (`h1::answer`). Made only when hyper gets the connection (not for the relay's).
    let for_hyper = move || {
        let watch = Arc::new(crate::h1::answer::Watch::default());
        let answers = watch.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            // Boxed: hyper keeps a slot the size of this future for the connection's whole
            // life, busy or idle (and through a whole SSE stream, after the response head has
            // left). Boxed, the slot is a pointer, and the future's memory is held only while
            // a request is being answered; the allocation per request costs far less than it
            // saves.
            let method = req.method().clone();
            Box::pin(tracked(watch.begin(), method, handle(state.clone(), req)))
        });
        (answers, service)
    };
    // The future of this function is the bulk of each connection's task, and it is as large
    // as its largest branch: the rare ones (TLS, h2c) are boxed so plain HTTP/1 does not pay
    // for them.
    match tls {
        None => {
            // A connection that has sent nothing yet when shutdown begins has no exchange to
            // finish.
            let opening = tokio::select! {
                opening = peek_opening(&stream, timeout) => opening,
                () = draining.cancelled() => Opening::Gone,
            };
            match opening {
                Opening::Http1 => {
                    let io = match &shared.relay {
                        Some(relay) => {
                            let relayed = crate::h1::serve(&relay_state, relay, stream, &draining);
                            match until_cancelled(relayed, &cancel).await {
                                Some(crate::h1::Ended::Handoff(io)) => io,
                                Some(crate::h1::Ended::Closed) | None => return,
                            }
                        }
                        None => crate::h1::Rewind::new(stream),
                    };
                    let (watch, service) = for_hyper();
                    let io = crate::h1::answer::Answers::new(io, watch);
                    let conn = shared
                        .builders
                        .http1
                        .serve_connection(TokioIo::new(io), service)
                        .with_upgrades();
                    drive(
                        conn,
                        http1::UpgradeableConnection::graceful_shutdown,
                        &draining,
                        &cancel,
                    )
                    .await;
                }
                Opening::MaybeHttp2 => {
                    let (watch, service) = for_hyper();
                    Box::pin(serve_auto(
                        &shared.builders.auto,
                        crate::h1::answer::Answers::new(stream, watch),
                        service,
                        &draining,
                        &cancel,
                    ))
                    .await;
                }
                Opening::Gone => {}
            }
        }
        Some(acceptor) => {
            Box::pin(async {
                let handshake =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                let stream = tokio::select! {
                    result = handshake => result,
                    // The grace period is over.
                    () = cancel.cancelled() => return,
                };
                let stream = match stream {
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
                let (watch, service) = for_hyper();
                let io = crate::h1::answer::Answers::new(stream, watch);
                serve_auto(&shared.builders.auto, io, service, &draining, &cancel).await;
            })
            .await
        }
    }
}

/// One request: resolve the route, answer locally or forward, record metrics and an access log.
async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    state.request_arrived();
    // Read only for the access log: a clock read per request is not free.
    let started = state.config.access_log.then(Instant::now);
    let id = state.next_request_id();
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
                let http1 = req.version() < http::Version::HTTP_2;
                let mut resp = Box::pin(crate::api::dispatch(endpoint, &state, req, params))
                    .await
                    .unwrap_or_else(Error::into_response);
                // The rest of a stalled body is not awaited: the connection cannot carry
                // another request, and the client is told so (HTTP/2 ends only the stream).
                if http1 && resp.status() == http::StatusCode::REQUEST_TIMEOUT {
                    resp.headers_mut()
                        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                (class, local_response(&state, class, resp, &id, in_flight))
            }
        };
        if let Some(started) = started {
            tracing::info!(
                status = resp.status().as_u16(),
                class = class.as_str(),
                elapsed_us = started.elapsed().as_micros() as u64,
                "request"
            );
        }
        Ok(resp)
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

/// A TLS acceptor from PEM files, offering h2 and http/1.1 by ALPN.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<TlsAcceptor, StartError> {
    let config =
        crate::tls::server_config(cert, key, &[b"h2", b"http/1.1"]).map_err(StartError::Tls)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_and_are_logged_once_a_second() {
        let mut errors = AcceptErrors::default();
        let start = Instant::now();
        let mut pauses = Vec::new();
        let mut lines = Vec::new();
        // A full descriptor table for 3.5 s, retried after each pause.
        let mut t = start;
        while t < start + Duration::from_millis(3500) {
            let (pause, log) = errors.failed(t);
            pauses.push(pause);
            if let Some(suppressed) = log {
                lines.push((t - start, suppressed));
            }
            t += pause;
        }
        assert_eq!(pauses[0], ACCEPT_PAUSE_MIN);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]), "{pauses:?}");
        assert_eq!(*pauses.last().unwrap(), ACCEPT_PAUSE_MAX);
        // One line at once, then at most one a second, each counting the failures in between.
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0], (Duration::ZERO, 0));
        for w in lines.windows(2) {
            assert!(w[1].0 - w[0].0 >= ACCEPT_LOG_EVERY, "{lines:?}");
        }
        let logged = lines.len() as u64 + lines.iter().map(|l| l.1).sum::<u64>();
        assert_eq!(logged + errors.unlogged, pauses.len() as u64);
        // A success starts the next streak at the shortest pause again.
        errors.accepted();
        assert_eq!(errors.failed(t).0, ACCEPT_PAUSE_MIN);
    }
}
