//! hyper's own answers to HTTP/1 requests it cannot read carry OpenAI's error envelope.
//!
//! When hyper's HTTP/1 server fails to parse a request head (a malformed line, bad framing
//! such as `Content-Length: abc` or `Transfer-Encoding: gzip`, more than 100 header fields, a
//! head over its buffer, an over-long URI), it writes a bare `400`, `431` or `414` with
//! `content-length: 0` and closes; it has no hook to change that answer. Every other answer
//! the proxy makes carries `{"error": {...}}` with `Content-Type: application/json`, and the
//! SDKs show that message to the user.
//!
//! [`Answers`] wraps the connection's IO and rewrites exactly that write. It recognises hyper's
//! answer by two things at once:
//! - the bytes: a complete response head, nothing after it, status 400/414/431, and no header
//!   fields but `content-length: 0`, `date` and `connection: close` (every answer the proxy
//!   makes itself has a `content-type`);
//! - the moment: hyper writes it only when no response is in progress, and without calling the
//!   service. The [`Watch`] shared with the connection's service counts calls and live response
//!   bodies; the IO notes, at each completed flush with no response in progress, how many calls
//!   there had been. A write when that count is unchanged and no response is live cannot be a
//!   response the service made (a forwarded upstream's bare `400` included).
//!
//! After an upgrade (`101`, or a `CONNECT` accepted) the connection carries another protocol
//! and is never looked at again.
//!
//! HTTP/2 has no such answers to rewrite: hyper refuses bad requests there with stream or
//! connection errors (`RST_STREAM`, `GOAWAY`), which carry no body, and the h2 crate answers a
//! header list over its limit with a bare `431` HEADERS frame of its own, which no layer
//! above it can reach.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::Error;

/// What a connection's service tells its IO (one per connection).
#[derive(Default)]
pub struct Watch {
    /// Requests the service has been called for.
    calls: AtomicU64,
    /// Responses whose body hyper still holds (or that are still being made).
    live: AtomicUsize,
    /// The connection was upgraded: its bytes are no longer HTTP/1.
    upgraded: AtomicBool,
}

impl Watch {
    /// A request reached the service; the returned guard lives as long as its response body.
    pub fn begin(self: &Arc<Self>) -> Live {
        self.calls.fetch_add(1, Ordering::AcqRel);
        self.live.fetch_add(1, Ordering::AcqRel);
        Live(self.clone())
    }
}

/// One response in progress: dropped with its body.
pub struct Live(Arc<Watch>);

impl Live {
    /// The service answered `status` to a request with `method`; an accepted upgrade ends
    /// the HTTP/1 part of the connection.
    pub fn answered(&self, method: &http::Method, status: StatusCode) {
        if status == StatusCode::SWITCHING_PROTOCOLS
            || (method == http::Method::CONNECT && status.is_success())
        {
            self.0.upgraded.store(true, Ordering::Release);
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its [`Live`] guard until hyper drops it.
pub struct Tracked<B> {
    inner: B,
    _live: Live,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, live: Live) -> Tracked<B> {
        Tracked { inner, _live: live }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's IO as hyper sees it, rewriting hyper's bare protocol-level answers.
pub struct Answers<I> {
    io: I,
    watch: Arc<Watch>,
    /// `calls` at the last flush that completed with no response in progress: the connection
    /// was idle then. A fresh connection is idle.
    idle_at: Option<u64>,
    /// The envelope being written instead of hyper's answer, and the length of hyper's write
    /// to report once it is out.
    replacing: Option<(Bytes, usize)>,
    /// One answer per connection: hyper closes after it.
    answered: bool,
}

impl<I> Answers<I> {
    pub fn new(io: I, watch: Arc<Watch>) -> Answers<I> {
        Answers {
            io,
            watch,
            idle_at: Some(0),
            replacing: None,
            answered: false,
        }
    }

    /// Whether the next write may be one of hyper's own answers.
    fn may_be_hypers(&self) -> bool {
        !self.answered
            && self.watch.live.load(Ordering::Acquire) == 0
            && self.idle_at == Some(self.watch.calls.load(Ordering::Acquire))
            && !self.watch.upgraded.load(Ordering::Acquire)
    }
}

impl<I: AsyncWrite + Unpin> Answers<I> {
    /// Writes the replacement; Ready(len of hyper's write) once all of it is out.
    fn poll_replace(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((bytes, reported)) = self.replacing.as_mut() {
            if !bytes.has_remaining() {
                let reported = *reported;
                self.replacing = None;
                return Poll::Ready(Ok(reported));
            }
            match Pin::new(&mut self.io).poll_write(cx, bytes.chunk()) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => bytes.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(0))
    }

    /// Starts replacing `written` if it is hyper's answer.
    fn intercept(&mut self, written: &[u8]) -> bool {
        match envelope_for(written) {
            Some(envelope) => {
                self.replacing = Some((envelope, written.len()));
                self.answered = true;
                true
            }
            None => false,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Answers<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

/// hyper's answer is a few dozen bytes; longer writes are never looked at.
const ANSWER_MAX: usize = 256;

impl<I: AsyncWrite + Unpin> AsyncWrite for Answers<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_some()
            || (buf.len() <= ANSWER_MAX && this.may_be_hypers() && this.intercept(buf))
        {
            return this.poll_replace(cx);
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_some() {
            return this.poll_replace(cx);
        }
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if len <= ANSWER_MAX && this.may_be_hypers() {
            let whole: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            if this.intercept(&whole) {
                return this.poll_replace(cx);
            }
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replacing.is_some() && this.poll_replace(cx)?.is_pending() {
            return Poll::Pending;
        }
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            // Everything hyper had to write is out; with no response live, the connection is
            // idle, and the next response head needs a new call of the service.
            this.idle_at = (this.watch.live.load(Ordering::Acquire) == 0)
                .then(|| this.watch.calls.load(Ordering::Acquire))
                .or(this.idle_at);
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replacing.is_some() && this.poll_replace(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// The envelope to send instead of `written`, if `written` is hyper's bare answer.
fn envelope_for(written: &[u8]) -> Option<Bytes> {
    let mut headers = [httparse::EMPTY_HEADER; 4];
    let mut head = httparse::Response::new(&mut headers);
    match head.parse(written) {
        Ok(httparse::Status::Complete(n)) if n == written.len() => {}
        _ => return None,
    }
    let (status, message) = match head.code? {
        400 => (
            StatusCode::BAD_REQUEST,
            "The request could not be read: its request line, header fields or body framing are not valid HTTP/1.1.",
        ),
        414 => (StatusCode::URI_TOO_LONG, "The request URI is too long."),
        431 => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "The request's header fields are too large (too many, or too long).",
        ),
        _ => return None,
    };
    let mut date = None;
    let mut empty = false;
    for h in head.headers.iter() {
        match h.name.to_ascii_lowercase().as_str() {
            "content-length" if h.value == b"0" => empty = true,
            "connection" if h.value.eq_ignore_ascii_case(b"close") => {}
            "date" => date = Some(h.value),
            _ => return None,
        }
    }
    if !empty {
        return None;
    }
    let mut out = Vec::with_capacity(512);
    super::error_response(Error::BadHttp { status, message }, true, &mut out);
    if let Some(date) = date {
        // After the status line, as hyper places it.
        let at = out.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        let line = [b"date: ".as_slice(), date, b"\r\n"].concat();
        out.splice(at..at, line);
    }
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bare_answers_are_replaced() {
        let date = "date: Mon, 07 Dec 2026 14:08:53 GMT\r\n";
        for (status, raw) in [
            (
                400,
                format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n{date}\r\n"),
            ),
            (
                431,
                format!(
                    "HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n{date}\r\n"
                ),
            ),
            (
                414,
                "HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n".to_owned(),
            ),
        ] {
            let out = envelope_for(raw.as_bytes()).unwrap_or_else(|| panic!("{raw}"));
            let text = String::from_utf8(out.to_vec()).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
            assert!(head.contains("content-type: application/json"), "{head}");
            assert!(head.contains("connection: close"), "{head}");
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{head}"
            );
            if raw.contains("date:") {
                assert!(head.contains(date.trim_end()), "{head}");
            }
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["error"]["type"], "invalid_request_error");
            assert!(v["error"]["message"].as_str().unwrap().len() > 10);
        }
        for other in [
            // A body, another header, another status, bytes after the head, half a head.
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\nno",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nserver: up\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            "HTTP/1.1 400 Bad Request\r\n\r\n",
        ] {
            assert!(envelope_for(other.as_bytes()).is_none(), "{other:?}");
        }
    }

    /// A write that looks like hyper's answer is left alone while a response is live, after
    /// a service call, and after an upgrade.
    #[tokio::test]
    async fn the_moment_decides_as_much_as_the_bytes() {
        use tokio::io::AsyncWriteExt;
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let wrote = |io: &Answers<Vec<u8>>| {
            io.io
                .starts_with(b"HTTP/1.1 400 Bad Request\r\ncontent-type")
        };

        // A fresh connection: hyper's answer.
        let mut io = Answers::new(Vec::new(), Arc::new(Watch::default()));
        io.write_all(bare).await.unwrap();
        io.flush().await.unwrap();
        assert!(wrote(&io));

        // A forwarded bare 400 whose body hyper dropped before writing its head.
        let watch = Arc::new(Watch::default());
        let mut io = Answers::new(Vec::new(), watch.clone());
        drop(watch.begin());
        io.write_all(bare).await.unwrap();
        io.flush().await.unwrap();
        assert_eq!(io.io, bare);
        // … and once that is flushed, the connection is idle again: hyper's next is rewritten.
        io.write_all(bare).await.unwrap();
        assert!(io.io.len() > 2 * bare.len());

        // While a response is live (its last bytes, say).
        let watch = Arc::new(Watch::default());
        let mut io = Answers::new(Vec::new(), watch.clone());
        let live = watch.begin();
        io.flush().await.unwrap();
        io.write_all(bare).await.unwrap();
        assert_eq!(io.io, bare);
        drop(live);

        // After an upgrade.
        let watch = Arc::new(Watch::default());
        let mut io = Answers::new(Vec::new(), watch.clone());
        let live = watch.begin();
        live.answered(&http::Method::GET, StatusCode::SWITCHING_PROTOCOLS);
        drop(live);
        io.flush().await.unwrap();
        io.write_all(bare).await.unwrap();
        assert_eq!(io.io, bare);
    }
}
