//! The upstream's own HTTP/1.1 connection pool: idle connections to the one upstream origin,
//! handed to one request at a time and taken back when its response body has been read.
//!
//! Why not hyper-util's pooled `Client` (still used when `upstream.http2` is on): it serves any
//! number of hosts and both protocols, and every forwarded request paid for that generality: a
//! pool key hashed with SipHash under a lock, a connect future built (and dropped unused) per
//! request, and, whenever the response body was still unread when its head arrived (every
//! forwarded response), a spawned task whose only job was to put the connection back once it
//! was ready. Here the pool is a list of idle senders: a request pops the most recently used
//! one, and its response body pushes it back in the same poll that reads the body's last byte.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use pin_project_lite::pin_project;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Connector;
use crate::body::{BoxError, ProxyBody};

/// Why a request did not get a response head.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened (refused, unreachable, DNS, TLS, connect timeout).
    Connect(BoxError),
    /// A connection was open but the exchange failed (closed early, malformed answer).
    Exchange(BoxError),
}

impl SendError {
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Connect(_) => f.write_str("connecting to the upstream failed"),
            SendError::Exchange(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl StdError for SendError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            SendError::Connect(e) => Some(&**e),
            SendError::Exchange(e) => Some(&**e),
        }
    }
}

/// Idle HTTP/1.1 connections to the upstream, most recently used last.
#[derive(Clone)]
pub struct Http1Pool {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    /// Scheme and authority: what the connector dials.
    target: Uri,
    builder: http1::Builder,
    idle: Mutex<VecDeque<IdleSender>>,
    max_idle: usize,
    /// A connection idle longer than this is closed instead of used: it must never be sent a
    /// request just as the upstream's own keep-alive timeout closes it.
    idle_timeout: Duration,
    /// Connection tasks, tracked so shutdown can close them and wait: [`Http1Pool::close`].
    tasks: TaskTracker,
    closing: CancellationToken,
}

struct IdleSender {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

impl Http1Pool {
    pub fn new(
        connector: Connector,
        target: Uri,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Http1Pool {
        Http1Pool {
            inner: Arc::new(Inner {
                connector,
                target,
                builder: http1::Builder::new(),
                idle: Mutex::new(VecDeque::new()),
                max_idle,
                idle_timeout,
                tasks: TaskTracker::new(),
                closing: CancellationToken::new(),
            }),
        }
    }

    /// Sends a request whose URI is in origin form (path and query only). The response body
    /// returns the connection to the pool when it has been read to its end.
    pub async fn send(
        &self,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        // A pooled connection may turn out closed only when the request is handed to it (the
        // upstream closed it while idle, and its task had not noticed yet). hyper gives the
        // request back when it was not written, so it can go out on another connection.
        loop {
            let (mut sender, fresh) = match self.checkout() {
                Some(sender) => (sender, false),
                None => (self.connect().await?, true),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let body = UpstreamBody::pooled(body, self.inner.clone(), sender);
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !fresh => req = unsent,
                    _ => return Err(SendError::Exchange(Box::new(e.into_error()))),
                },
            }
        }
    }

    pub fn connector(&self) -> Connector {
        self.inner.connector.clone()
    }

    /// Closes every connection and waits for their tasks. Called last at shutdown, once no
    /// request or run can still be using one.
    pub async fn close(&self) {
        self.inner.closing.cancel();
        self.inner.tasks.close();
        self.inner.lock_idle().clear();
        self.inner.tasks.wait().await;
    }

    /// The most recently used idle connection that is ready for a request, if any.
    ///
    /// A connection is never waited for: one still busy (its upstream answered before it had
    /// read the whole request, and the upload goes on) stays pooled for later, and the request
    /// goes out on another. Waiting could hold a small request behind a long upload.
    fn checkout(&self) -> Option<SendRequest<ProxyBody>> {
        let mut busy = Vec::new();
        let found = loop {
            let Some(IdleSender { sender, since }) = self.inner.lock_idle().pop_back() else {
                break None;
            };
            if self.inner.expired(since, Instant::now()) {
                // Everything older is expired too.
                self.inner.lock_idle().clear();
                break None;
            }
            if sender.is_ready() {
                break Some(sender);
            }
            if !sender.is_closed() {
                busy.push(IdleSender { sender, since });
            }
        };
        if !busy.is_empty() {
            let mut idle = self.inner.lock_idle();
            for s in busy.into_iter().rev() {
                idle.push_front(s);
            }
        }
        found
    }

    async fn connect(&self) -> Result<SendRequest<ProxyBody>, SendError> {
        let io = super::dial(&self.inner.connector, &self.inner.target).await?;
        let (sender, conn) = self
            .inner
            .builder
            .handshake(io)
            .await
            .map_err(|e| SendError::Exchange(Box::new(e)))?;
        let closing = self.inner.closing.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                result = conn.with_upgrades() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "upstream connection ended with an error");
                    }
                }
                () = closing.cancelled() => {}
            }
        });
        Ok(sender)
    }
}

impl Inner {
    fn lock_idle(&self) -> MutexGuard<'_, VecDeque<IdleSender>> {
        // The list stays consistent whatever a panicking holder did (each operation is one
        // push or pop), so a poisoned lock is still usable.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection idle since `since` must not be used any more at `now`.
    fn expired(&self, since: Instant, now: Instant) -> bool {
        now.duration_since(since) > self.idle_timeout
    }

    fn checkin(&self, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() || self.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock_idle();
        while idle.front().is_some_and(|s| self.expired(s.since, now)) {
            idle.pop_front();
        }
        if idle.len() >= self.max_idle {
            idle.pop_front();
        }
        idle.push_back(IdleSender { sender, since: now });
    }
}

pin_project! {
    /// An upstream response body. Read to its end, it puts its connection back in the pool;
    /// dropped before that, it takes the connection with it (hyper closes a connection whose
    /// response was abandoned, which is how a client's disconnect reaches the upstream).
    pub struct UpstreamBody {
        #[pin]
        inner: Incoming,
        checkin: Option<Checkin>,
    }

    impl PinnedDrop for UpstreamBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // A body nobody polled to its end may still be complete (an empty body, or one
            // whose last frame was read but whose end was never asked for).
            if this.inner.is_end_stream()
                && let Some(c) = this.checkin.take()
            {
                c.pool.checkin(c.sender);
            }
        }
    }
}

struct Checkin {
    pool: Arc<Inner>,
    sender: SendRequest<ProxyBody>,
}

impl UpstreamBody {
    fn pooled(inner: Incoming, pool: Arc<Inner>, sender: SendRequest<ProxyBody>) -> UpstreamBody {
        UpstreamBody {
            inner,
            checkin: Some(Checkin { pool, sender }),
        }
    }

    /// A body from a connection this pool does not own (hyper-util's client).
    pub fn unpooled(inner: Incoming) -> UpstreamBody {
        UpstreamBody {
            inner,
            checkin: None,
        }
    }

    /// The connection was upgraded (101): it belongs to the tunnel now, not the pool.
    pub fn detach(&mut self) {
        self.checkin = None;
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Ready(Some(Err(_))) => {
                // The connection is broken; it goes with this body.
                this.checkin.take();
                false
            }
            Poll::Pending => false,
        };
        if ended && let Some(c) = this.checkin.take() {
            c.pool.checkin(c.sender);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
