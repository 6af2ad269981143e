//! The relay's socket plumbing: read buffers recycled between idle connections, vectored
//! writes, noticing a client that left, the one timer per connection, and the rewindable
//! stream that hands a connection to hyper with the bytes already read.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::{READ_CHUNK, head};

/// Notices, while the relay waits on the upstream, a client that closed its connection, so
/// the upstream request is abandoned (and its connection closed) at once. Bytes the client
/// sent meanwhile (a pipelined request) are kept for later.
pub(super) fn client_left(client: &TcpStream, cbuf: &mut BytesMut, cx: &mut Context<'_>) -> bool {
    loop {
        match client.poll_read_ready(cx) {
            Poll::Pending => return false,
            Poll::Ready(Err(_)) => return true,
            Poll::Ready(Ok(())) => {
                if cbuf.len() >= head::MAX_REQUEST_HEAD + head::MAX_REQUEST_BODY as usize {
                    // Enough buffered: the rest waits in the socket.
                    return false;
                }
                room(cbuf);
                match client.try_read_buf(cbuf) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    // Readiness was stale; polling again registers for the next event.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return true,
                }
            }
        }
    }
}

thread_local! {
    /// Read buffers of connections that went idle, for the next connection on this thread
    /// that has something to read: an idle keep-alive connection holds no buffer, and a busy
    /// one does not pay an allocation per request for that.
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}
/// Buffers kept per thread at most (beyond it, an idle connection's buffer is freed).
const SPARE_MAX: usize = 64;

/// Makes room for a read of a useful size.
pub(super) fn room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 1024 {
        if buf.capacity() == 0
            && let Some(spare) = SPARE.with(|s| s.borrow_mut().pop())
        {
            *buf = spare;
            return;
        }
        buf.reserve(READ_CHUNK);
    }
}

/// Takes an empty buffer from an idle connection, keeping it as a spare if it is of the usual
/// size (one grown for a large head or body is freed).
pub(super) fn give_back(buf: &mut BytesMut) {
    let mut spare = std::mem::take(buf);
    spare.clear();
    // Reclaims the space consumed reads left at the front; no allocation for a usual buffer.
    spare.reserve(READ_CHUNK);
    if spare.capacity() <= 2 * READ_CHUNK {
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < SPARE_MAX {
                s.push(spare);
            }
        });
    }
}

/// Writes `a` then `b` (a head and the body bytes after it) with as few writes as the socket
/// allows.
pub(super) async fn write_all<W: AsyncWrite + Unpin>(
    io: &mut W,
    a: &[u8],
    b: &[u8],
) -> io::Result<()> {
    let total = a.len() + b.len();
    let mut written = 0;
    while written < total {
        let n = if written < a.len() {
            let bufs = [io::IoSlice::new(&a[written..]), io::IoSlice::new(b)];
            poll_fn(|cx| Pin::new(&mut *io).poll_write_vectored(cx, &bufs)).await?
        } else {
            let rest = &b[written - a.len()..];
            poll_fn(|cx| Pin::new(&mut *io).poll_write(cx, rest)).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        written += n;
    }
    // A TLS stream may hold the last record until flushed.
    poll_fn(|cx| Pin::new(&mut *io).poll_flush(cx)).await
}

/// One timer per connection for every phase's timeout (head read, upstream answer, idle body).
///
/// Why not a `tokio::time::timeout` per phase: each would insert into and remove from the
/// timer wheel, several times per request. Here moving the deadline is a field write; the
/// timer only ever fires early (at most once per `step`) and is then re-armed for the current
/// deadline. A new deadline is never earlier than the armed one, because each phase's timeout
/// is at least `step`.
pub(super) struct Deadline {
    sleep: Option<Pin<Box<Sleep>>>,
    at: tokio::time::Instant,
    step: Duration,
}

impl Deadline {
    pub(super) fn new(step: Duration) -> Deadline {
        Deadline {
            sleep: None,
            at: tokio::time::Instant::now() + step,
            step,
        }
    }

    pub(super) fn set(&mut self, after: Duration) {
        self.at = tokio::time::Instant::now() + after;
    }

    pub(super) fn expired(&self) -> bool {
        tokio::time::Instant::now() >= self.at
    }

    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (at, step) = (self.at, self.step);
        let sleep = self.sleep.get_or_insert_with(|| {
            Box::pin(tokio::time::sleep_until(
                at.min(tokio::time::Instant::now() + step),
            ))
        });
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = tokio::time::Instant::now();
            if now >= self.at {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(self.at.min(now + step));
        }
    }

    /// Runs `fut` until it completes or the deadline passes (None).
    pub(super) async fn bound<F: std::future::Future>(&mut self, fut: F) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            self.poll(cx).map(|()| None)
        })
        .await
    }
}

/// A client connection handed to hyper: the bytes the relay already read come first.
pub struct Rewind {
    prefix: Bytes,
    stream: TcpStream,
}

impl Rewind {
    pub fn new(stream: TcpStream) -> Rewind {
        Rewind {
            prefix: Bytes::new(),
            stream,
        }
    }

    /// A connection whose first bytes (`prefix`) were already read off `stream`.
    pub(super) fn with_prefix(prefix: Bytes, stream: TcpStream) -> Rewind {
        Rewind { prefix, stream }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
