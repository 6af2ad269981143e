//! The HTTP/1.1 relay: forwards plain-text HTTP/1.1 requests whose route is not intercepted
//! without going through hyper, reading and writing both sockets from the client
//! connection's own task (the forward-or-answer split pingora makes).
//!
//! Why: forwarding is the proxy's hot path, and hyper's server and client dispatchers (a
//! request and a response object per exchange, header maps, a connection task on the upstream
//! side with channels to it) cost more CPU per request than nginx spends in total. Here a
//! request is parsed in place (httparse), its head rewritten into one buffer, written to a
//! pooled upstream socket together with its body, and the answer's head rewritten the same
//! way; bodies are relayed as they come, framing included.
//!
//! Only the common case is handled. Anything else (a route the proxy answers itself,
//! HTTP/1.0, chunked or large uploads, `Expect`, upgrades, malformed requests) hands the
//! connection to hyper's server with the bytes read so far ([`Ended::Handoff`]), and hyper
//! serves it from then on.

pub mod answer;
pub mod chunked;
pub mod head;
pub mod pool;
mod sockets;

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;
use tokio_util::sync::CancellationToken;

use crate::app::{AppState, RequestId};
use crate::config::Config;
use crate::error::Error;
use crate::forward::InFlight;
use crate::metrics::{Metrics, RouteClass};
use crate::routes::Resolution;
use crate::shutdown::CancelWatch;
use crate::upstream::{Connector, SendError, UpstreamBase};
use crate::upstream::{classify, head_timeout_error};
use chunked::ChunkedScanner;
use head::{BadResponse, Framing, Planned, RequestPlan, ResponsePlan, Target};
use pool::{Conn, ConnPool};
pub use sockets::Rewind;
use sockets::{Deadline, client_left, give_back, room, write_all};

/// Read buffers start at this size (and grow for larger heads and bodies).
const READ_CHUNK: usize = 8 * 1024;

/// What the relay needs, built once at start-up.
pub struct Relay {
    pool: ConnPool,
    target: Target,
    authority: Box<str>,
    header_timeout: Duration,
    head_timeout: Duration,
    idle_timeout: Duration,
    /// The shortest of the three: how often a connection's one timer may fire early.
    timer_step: Duration,
    metrics: Metrics,
}

impl Relay {
    pub fn new(
        config: &Config,
        connector: Connector,
        base: &UpstreamBase,
        metrics: Metrics,
    ) -> Result<Relay, String> {
        let up = &config.upstream;
        let target = base.origin().map_err(|e| e.to_string())?;
        Ok(Relay {
            pool: ConnPool::new(
                connector,
                target,
                up.pool_max_idle_per_host,
                up.pool_idle_timeout,
            ),
            target: Target {
                base_path: base.base_path().into(),
                host: base.host.as_bytes().into(),
            },
            authority: base.authority().into(),
            header_timeout: config.header_read_timeout,
            head_timeout: up.response_head_timeout,
            idle_timeout: up.idle_timeout,
            timer_step: config
                .header_read_timeout
                .min(up.response_head_timeout)
                .min(up.idle_timeout),
            metrics,
        })
    }

    /// Closes the idle upstream connections (at shutdown, after the last request).
    pub fn close(&self) {
        self.pool.close();
    }
}

/// How a relayed connection ended.
pub enum Ended {
    Closed,
    /// hyper's server serves the rest of the connection, starting with these bytes.
    Handoff(Rewind),
}

/// Relays requests on a plain-text HTTP/1.1 connection until it closes, shutdown drains it, or
/// a request needs hyper.
pub async fn serve(
    state: &AppState,
    relay: &Relay,
    client: TcpStream,
    draining: &CancellationToken,
) -> Ended {
    let mut conn = Connection {
        state,
        relay,
        client,
        cbuf: BytesMut::new(),
        ubuf: BytesMut::new(),
        out: Vec::new(),
        deadline: Deadline::new(relay.timer_step),
        draining: CancelWatch::new(draining.clone()),
    };
    match conn.run().await {
        Next::Close => Ended::Closed,
        Next::Handoff => Ended::Handoff(Rewind::with_prefix(conn.cbuf.freeze(), conn.client)),
    }
}

enum Next {
    Close,
    Handoff,
}

/// Why an exchange with the upstream produced no response head.
enum Failure {
    /// The client left while the relay waited: nothing to answer.
    ClientGone,
    /// Answered with OpenAI's error envelope.
    Upstream(Error),
}

struct Connection<'a> {
    state: &'a AppState,
    relay: &'a Relay,
    client: TcpStream,
    /// Bytes from the client not yet relayed: the request in progress and any pipelined after.
    cbuf: BytesMut,
    /// Bytes from the upstream: the response head, then body chunks.
    ubuf: BytesMut,
    /// A rewritten head (the request's for the upstream, then the response's for the client).
    out: Vec<u8>,
    deadline: Deadline,
    draining: CancelWatch,
}

impl Connection<'_> {
    async fn run(&mut self) -> Next {
        loop {
            let plan = match self.next_request().await {
                Ok(plan) => plan,
                Err(next) => return next,
            };
            let close = match self.forward(&plan).await {
                Some(close) => close,
                None => return Next::Close,
            };
            self.cbuf.advance(plan.head_len + plan.body_len);
            if close || self.draining.check() {
                return Next::Close;
            }
            if self.cbuf.is_empty() {
                // An idle connection holds no buffers (thousands of keep-alive clients).
                give_back(&mut self.cbuf);
                give_back(&mut self.ubuf);
            }
        }
    }

    /// Reads until a whole request (head and body) is buffered and planned.
    async fn next_request(&mut self) -> Result<RequestPlan, Next> {
        self.deadline.set(self.relay.header_timeout);
        loop {
            if !self.cbuf.is_empty() {
                let routes = &self.state.routes;
                let planned = head::plan_request(
                    &self.cbuf,
                    &self.relay.target,
                    &mut self.out,
                    |method, path| matches!(routes.resolve(method, path), Resolution::Forward),
                );
                match planned {
                    Planned::Ready(plan) => return Ok(plan),
                    Planned::Handoff => return Err(Next::Handoff),
                    Planned::Incomplete => {}
                }
            }
            if !self.read_client().await {
                return Err(Next::Close);
            }
        }
    }

    /// Reads more from the client; false when it closed, the head timed out, or the
    /// connection is idle while shutdown drains.
    async fn read_client(&mut self) -> bool {
        poll_fn(|cx| {
            // An idle connection takes buffer memory only once there is something to read.
            if self.cbuf.is_empty() && self.cbuf.capacity() == 0 {
                match self.client.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Poll::Ready(false),
                    Poll::Pending => return self.poll_idle(cx),
                }
            }
            room(&mut self.cbuf);
            match poll_read_buf(Pin::new(&mut self.client), cx, &mut self.cbuf) {
                Poll::Ready(Ok(n)) => Poll::Ready(n > 0),
                Poll::Ready(Err(_)) => Poll::Ready(false),
                Poll::Pending => self.poll_idle(cx),
            }
        })
        .await
    }

    /// While waiting for a request: Ready(false) once the wait must end.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.cbuf.is_empty() && self.draining.poll_cancelled(cx).is_ready() {
            return Poll::Ready(false);
        }
        if self.deadline.poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        Poll::Pending
    }

    /// Forwards one planned request and relays its answer. Returns whether the client's
    /// connection closes afterwards, or None when it is already unusable.
    async fn forward(&mut self, plan: &RequestPlan) -> Option<bool> {
        self.state.request_arrived();
        // Taken first, so the relay's debug lines about this request carry it too.
        let id = self.state.next_request_id();
        let metrics = &self.relay.metrics;
        let started = self.state.config.access_log.then(Instant::now);
        let _in_flight = InFlight::new(&metrics.in_flight);
        metrics.upstream_requests.inc();
        let head_started = Instant::now();
        let result = self.exchange(plan).await;
        metrics.observe_upstream_head(head_started.elapsed());
        let close_client = plan.close || self.draining.check();
        // `close` is None when the connection is unusable; the request is logged either way,
        // as hyper's path logs a request once its response head is out.
        let (status, close) = match result {
            Ok((upstream, resp)) => {
                metrics.request_done(RouteClass::Forwarded, resp.status);
                metrics.bytes_to_upstream.inc_by(plan.body_len as u64);
                let close = self.relay_body(upstream, &resp, id).await;
                (resp.status, close.map(|c| c || resp.client_close))
            }
            Err(Failure::ClientGone) => return None,
            Err(Failure::Upstream(e)) => {
                let status = e.status().as_u16();
                metrics.request_done(RouteClass::Forwarded, status);
                error_response(e, close_client, &mut self.out);
                let written = write_all(&mut self.client, &self.out, &[]).await.ok();
                (status, written.map(|()| close_client))
            }
        };
        if let Some(started) = started {
            // Method and path only, as the hyper path logs: a query string may carry secrets.
            let line = &self.cbuf[..plan.head_len];
            let mut words = line.split(|b| *b == b' ');
            let method = words.next().unwrap_or_default();
            let target = words.next().unwrap_or_default();
            let path = target.split(|b| *b == b'?').next().unwrap_or_default();
            tracing::info!(
                id = %id,
                method = %String::from_utf8_lossy(method),
                path = %String::from_utf8_lossy(path),
                status,
                class = RouteClass::Forwarded.as_str(),
                elapsed_us = started.elapsed().as_micros() as u64,
                "request"
            );
        }
        close
    }

    /// Sends the request and reads the response head, relaying interim (1xx) answers to the
    /// client. A reused connection that fails before any answer is replaced once, for methods
    /// that may be repeated (and for any request that could not even be written).
    async fn exchange(&mut self, plan: &RequestPlan) -> Result<(Conn, ResponsePlan), Failure> {
        let pool = &self.relay.pool;
        let mut retried = false;
        loop {
            let (mut upstream, reused) = match pool.checkout() {
                Some(conn) if !retried => (conn, true),
                _ => match pool.connect().await {
                    Ok(conn) => (conn, false),
                    Err(e) => return Err(Failure::Upstream(classify(&e, &self.relay.authority))),
                },
            };
            self.deadline.set(self.relay.head_timeout);
            after_ready_reads().await;
            let body = &self.cbuf[plan.head_len..plan.head_len + plan.body_len];
            let written = self
                .deadline
                .bound(write_all(&mut upstream, &self.out, body))
                .await;
            let received = match written {
                Some(Ok(())) => self.read_head(&mut upstream, plan).await,
                Some(Err(e)) => Err(Received::Nothing(e, true)),
                None => Err(Received::TimedOut),
            };
            match received {
                Ok(resp) => return Ok((upstream, resp)),
                Err(Received::Nothing(_, unsent))
                    if reused && !retried && (unsent || plan.idempotent) =>
                {
                    retried = true;
                }
                Err(Received::Nothing(e, _)) | Err(Received::Partial(e)) => {
                    let e = SendError::Exchange(Box::new(e));
                    return Err(Failure::Upstream(classify(&e, &self.relay.authority)));
                }
                Err(Received::Bad(what)) => {
                    return Err(Failure::Upstream(Error::UpstreamUnavailable {
                        message: format!(
                            "The upstream {} sent an invalid response: {what}.",
                            self.relay.authority
                        ),
                        code: "upstream_error",
                    }));
                }
                Err(Received::TimedOut) => {
                    return Err(Failure::Upstream(head_timeout_error(
                        &self.relay.authority,
                        self.relay.head_timeout,
                    )));
                }
                Err(Received::ClientGone) => return Err(Failure::ClientGone),
            }
        }
    }

    /// Reads the response head into `ubuf`, relaying interim (1xx) answers to the client; the
    /// client's version of the final head is left in `out`.
    async fn read_head(
        &mut self,
        upstream: &mut Conn,
        plan: &RequestPlan,
    ) -> Result<ResponsePlan, Received> {
        self.ubuf.clear();
        let mut got_any = false;
        loop {
            if !self.ubuf.is_empty() {
                let close_client = plan.close || self.draining.check();
                match head::plan_response(&self.ubuf, plan.head, close_client, &mut self.out) {
                    Ok(resp) if resp.interim => {
                        write_all(&mut self.client, &self.out, &[])
                            .await
                            .map_err(|_| Received::ClientGone)?;
                        self.ubuf.advance(resp.head_len);
                        continue;
                    }
                    Ok(resp) => return Ok(resp),
                    Err(BadResponse::Incomplete) => {}
                    Err(BadResponse::Malformed(what)) => return Err(Received::Bad(what)),
                }
            }
            let read = self.read_upstream(upstream).await;
            match read {
                Some(Ok(0)) => {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before the response head",
                    );
                    return Err(if got_any {
                        Received::Partial(e)
                    } else {
                        Received::Nothing(e, false)
                    });
                }
                Some(Ok(_)) => got_any = true,
                Some(Err(e)) if got_any => return Err(Received::Partial(e)),
                Some(Err(e)) => return Err(Received::Nothing(e, false)),
                None if self.deadline.expired() => return Err(Received::TimedOut),
                None => return Err(Received::ClientGone),
            }
        }
    }

    /// Reads what the upstream sends next into `ubuf`. None when the client left meanwhile or
    /// the deadline passed (`deadline.expired()` tells which).
    async fn read_upstream(&mut self, upstream: &mut Conn) -> Option<io::Result<usize>> {
        poll_fn(|cx| {
            room(&mut self.ubuf);
            match poll_read_buf(Pin::new(&mut *upstream), cx, &mut self.ubuf) {
                Poll::Ready(result) => Poll::Ready(Some(result)),
                Poll::Pending => {
                    if client_left(&self.client, &mut self.cbuf, cx)
                        || self.deadline.poll(cx).is_ready()
                    {
                        return Poll::Ready(None);
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Writes the response head and relays the body. Returns whether the client's connection
    /// must close (the body ended with the upstream's connection), or None when the relay
    /// broke off (the client left, or the upstream failed mid-body: the client sees its
    /// connection close, as HTTP/1 has no other way to say a body is incomplete).
    async fn relay_body(
        &mut self,
        mut upstream: Conn,
        resp: &ResponsePlan,
        id: RequestId,
    ) -> Option<bool> {
        let bytes_to_client = &self.relay.metrics.bytes_to_client;
        self.ubuf.advance(resp.head_len);
        let mut body = BodyState::new(resp.framing);
        let first = body.take(&self.ubuf).ok()?;
        // Bytes past the end of the response: the upstream connection is not clean.
        let mut clean = first.wire == self.ubuf.len();
        let mut done = first.done;
        after_ready_reads().await;
        write_all(&mut self.client, &self.out, &self.ubuf[..first.wire])
            .await
            .ok()?;
        bytes_to_client.inc_by(first.payload);
        while !done {
            self.ubuf.clear();
            self.deadline.set(self.relay.idle_timeout);
            match self.read_upstream(&mut upstream).await {
                Some(Ok(0)) if resp.framing == Framing::UntilClose => return Some(true),
                Some(Ok(0)) | Some(Err(_)) => {
                    tracing::debug!(id = %id, "the upstream connection ended mid-body");
                    return None;
                }
                Some(Ok(_)) => {}
                None => {
                    if self.deadline.expired() {
                        tracing::debug!(id = %id, idle = ?self.relay.idle_timeout, "no data from the upstream; response cut");
                    }
                    return None;
                }
            }
            let taken = match body.take(&self.ubuf) {
                Ok(t) => t,
                Err(what) => {
                    tracing::debug!(id = %id, error = what, "malformed body from the upstream");
                    return None;
                }
            };
            done = taken.done;
            clean = taken.wire == self.ubuf.len();
            write_all(&mut self.client, &self.ubuf[..taken.wire], &[])
                .await
                .ok()?;
            bytes_to_client.inc_by(taken.payload);
        }
        if clean && !resp.upstream_close {
            self.relay.pool.checkin(upstream);
        }
        Some(false)
    }
}

/// Lets every other connection that has input read it before this one writes: the first
/// write of a request (to the upstream) or of an answer (to the client) waits until the
/// runtime has polled its other ready tasks and its I/O driver. Writing at once wakes the
/// peer's core for each message while this core still has ready input, so the peer takes the
/// messages one by one; deferred, a busy moment's writes go out together and the peer handles
/// them in one wake-up. On the 2-core rig this brought what each request costs the core
/// running the upstream and the load generator down to what nginx's requests cost it, and the
/// added latency at a third of nginx's rate with it (README, Latency). An idle proxy pays one
/// more non-blocking poll of the driver per write.
async fn after_ready_reads() {
    tokio::task::yield_now().await;
}

/// Why no response head was read.
enum Received {
    /// Nothing arrived; the flag says the request was not (fully) written either.
    Nothing(io::Error, bool),
    /// Part of a head arrived, then the connection failed.
    Partial(io::Error),
    Bad(&'static str),
    TimedOut,
    ClientGone,
}

/// Where a response body ends, as its bytes go by.
enum BodyState {
    Empty,
    Length(u64),
    Chunked(ChunkedScanner),
    UntilClose,
}

impl BodyState {
    fn new(framing: Framing) -> BodyState {
        match framing {
            Framing::Empty | Framing::Length(0) => BodyState::Empty,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(ChunkedScanner::default()),
            Framing::UntilClose => BodyState::UntilClose,
        }
    }

    /// How many bytes of `buf` belong to the body (as relayed, chunk framing included), how
    /// many of those are payload (what `body_bytes` counts, as hyper's path counts data
    /// frames), and whether the body has ended.
    fn take(&mut self, buf: &[u8]) -> Result<Taken, &'static str> {
        Ok(match self {
            BodyState::Empty => Taken::whole(0, true),
            BodyState::Length(left) => {
                let take = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= take as u64;
                Taken::whole(take, *left == 0)
            }
            BodyState::Chunked(scanner) => {
                let before = scanner.data_len();
                let wire = scanner.scan(buf)?;
                Taken {
                    wire,
                    payload: scanner.data_len() - before,
                    done: scanner.is_done(),
                }
            }
            BodyState::UntilClose => Taken::whole(buf.len(), false),
        })
    }
}

/// What [`BodyState::take`] found in one read.
struct Taken {
    wire: usize,
    payload: u64,
    done: bool,
}

impl Taken {
    /// A read that is all payload (no framing).
    fn whole(wire: usize, done: bool) -> Taken {
        Taken {
            wire,
            payload: wire as u64,
            done,
        }
    }
}

/// An error answer (OpenAI's envelope), with the headers the hyper path sends.
pub(crate) fn error_response(e: Error, close: bool, out: &mut Vec<u8>) {
    use std::io::Write;
    e.log();
    let (status, headers, body) = e.response_parts();
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
    );
    for (name, value) in &headers {
        head::push_header(out, name.as_str(), value.as_bytes());
    }
    let _ = write!(out, "content-length: {}\r\n", body.len());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
}
