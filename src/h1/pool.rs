//! The relay's idle upstream connections: plain sockets (or TLS streams) to the one upstream
//! origin, held between requests with no task of their own.
//!
//! Why not reuse the hyper pool (`crate::upstream::pool`): a hyper connection is a spawned
//! task driving the socket, and every request crosses to it and back through channels. The
//! relay reads and writes the upstream socket from the client connection's own task, so an
//! idle connection here is just the socket.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use http::Uri;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::upstream::{Connector, SendError};

/// A connection to the upstream: a bare socket, or TLS over one.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>>),
}

impl Conn {
    fn socket(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(tls) => match tls.inner() {
                MaybeHttpsStream::Http(s) => s.inner(),
                MaybeHttpsStream::Https(s) => s.inner().get_ref().0.inner().inner(),
            },
        }
    }

    /// Whether an idle connection may carry a request: nothing has arrived on it since its
    /// last response. On an idle HTTP/1 connection anything readable is the upstream closing
    /// it (or garbage), so it is not used.
    ///
    /// Costs no system call in the common case: tokio knows the socket is not readable.
    fn is_usable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.socket().poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readiness can be stale (set by a read that was not short); a plain socket can
            // ask the kernel. Under TLS the bytes must not be taken from rustls, so the
            // connection is given up (a new handshake at worst).
            Poll::Ready(Ok(())) => match self {
                Conn::Plain(s) => {
                    matches!(s.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
                }
                Conn::Tls(_) => false,
            },
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// Idle connections, most recently used last.
#[derive(Clone)]
pub struct ConnPool {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    /// Scheme and authority: what the connector dials.
    target: Uri,
    idle: Mutex<Vec<(Conn, Instant)>>,
    max_idle: usize,
    /// Used no more once idle this long: below the upstream's own keep-alive timeout, so a
    /// request is not sent just as the upstream closes the connection.
    idle_timeout: Duration,
}

impl ConnPool {
    pub fn new(connector: Connector, target: Uri, max_idle: usize, idle_timeout: Duration) -> Self {
        ConnPool {
            inner: Arc::new(Inner {
                connector,
                target,
                idle: Mutex::new(Vec::new()),
                max_idle,
                idle_timeout,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(Conn, Instant)>> {
        // Each operation is one push, pop or clear: a panicking holder leaves a usable list.
        self.inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection that is still usable.
    pub fn checkout(&self) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.lock();
        while let Some((conn, since)) = idle.pop() {
            if now.duration_since(since) > self.inner.idle_timeout {
                // Everything older is expired too.
                idle.clear();
                return None;
            }
            if conn.is_usable() {
                return Some(conn);
            }
        }
        None
    }

    /// Opens a new connection (TCP connect timeout, TLS, the connections counter).
    pub async fn connect(&self) -> Result<Conn, SendError> {
        let io = crate::upstream::dial(&self.inner.connector, &self.inner.target).await?;
        Ok(match io {
            MaybeHttpsStream::Http(tcp) => Conn::Plain(tcp.into_inner()),
            tls => Conn::Tls(Box::new(TokioIo::new(tls))),
        })
    }

    /// Returns a connection whose last exchange ended cleanly.
    pub fn checkin(&self, conn: Conn) {
        if self.inner.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        if idle.len() >= self.inner.max_idle {
            idle.remove(0);
        }
        idle.push((conn, now));
    }

    /// Closes the idle connections (at shutdown).
    pub fn close(&self) {
        self.lock().clear();
    }
}
