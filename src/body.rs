//! Body types shared by every route: one boxed body type for responses and upstream requests,
//! and small constructors. Bodies stay streams; nothing here collects one whole.

use std::future::Future;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the proxy sends: a forwarded `Incoming`, a synthesized JSON answer, an SSE stream.
/// Unsync because hyper only needs `Send`, and it spares `Sync` bounds on every stream we build.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A JSON response body from a serializable value.
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> ProxyBody {
    match serde_json::to_vec(value) {
        Ok(bytes) => full(bytes),
        // Only a map with non-string keys or a failing `Serialize` impl gets here, and the
        // crate's response types have neither; the body still says what went wrong.
        Err(e) => full(
            serde_json::json!({"error": {
                "message": format!("cannot encode the response: {e}"),
                "type": "server_error", "param": null, "code": null,
            }})
            .to_string(),
        ),
    }
}

/// How much of a refused body is read and thrown away before answering. A client still
/// sending when the server answers and closes gets a TCP reset that can destroy the answer
/// in flight, so the error it should see (a 413) is lost; reading the rest first lets it
/// arrive. Past this many bytes, or this long, the connection is closed anyway.
pub const DISCARD_CAP: u64 = 64 * 1024 * 1024;
pub const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and drops what is left of `body`, up to [`DISCARD_CAP`] bytes or [`DISCARD_TIME`].
pub async fn discard<B>(body: B)
where
    B: http_body::Body + Unpin,
{
    let drain = async {
        let mut body = body;
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen += bytes::Buf::remaining(data) as u64;
                if seen > DISCARD_CAP {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
}

/// A request body that fails with [`BodyTimedOut`] when no frame arrives for `idle`: the
/// proxy's own reads of a request body (JSON, multipart uploads) must not wait for ever on a
/// client that sent part of a body and went quiet, holding a connection and its descriptor.
///
/// The gap is measured between frames, never over the whole body, so a large upload on a slow
/// link lives as long as it keeps sending. The timer is touched only while the body is
/// waiting: a frame just moves the deadline (a field write), and the sleep, armed for the
/// deadline it last saw, re-arms itself when it fires early (as the relay's `Deadline` does).
pub struct IdleTimeout<B> {
    inner: B,
    idle: std::time::Duration,
    deadline: tokio::time::Instant,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

/// The error of an [`IdleTimeout`] body whose client stopped sending.
#[derive(Debug, thiserror::Error)]
#[error("no request body bytes arrived for {} s", .idle.as_secs())]
pub struct BodyTimedOut {
    pub idle: std::time::Duration,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: std::time::Duration) -> IdleTimeout<B> {
        IdleTimeout {
            inner,
            idle,
            deadline: tokio::time::Instant::now() + idle,
            sleep: None,
        }
    }
}

/// The body idle timeout behind an error, if that is what it is (directly or as a source).
pub fn timed_out<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyTimedOut> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<BodyTimedOut>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = self.get_mut();
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            this.deadline = tokio::time::Instant::now() + this.idle;
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        loop {
            let deadline = this.deadline;
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if tokio::time::Instant::now() >= this.deadline {
                return Poll::Ready(Some(Err(Box::new(BodyTimedOut { idle: this.idle }))));
            }
            // Fired for an older deadline: frames arrived since.
            sleep.as_mut().reset(deadline);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A body that hands itself back when it is dropped unfinished. A handler that gives a body
/// to a parser (multipart) and then refuses it part-way can still [`discard`] the rest, which
/// the parser has dropped by then, so the client reads the refusal instead of a reset.
pub struct Reclaim<B> {
    inner: Option<B>,
    slot: std::sync::Arc<std::sync::Mutex<Option<B>>>,
}

/// Where a dropped [`Reclaim`] leaves its unfinished body.
pub struct Reclaimed<B>(std::sync::Arc<std::sync::Mutex<Option<B>>>);

pub fn reclaimable<B>(body: B) -> (Reclaim<B>, Reclaimed<B>) {
    let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
    let reclaimed = Reclaimed(slot.clone());
    (
        Reclaim {
            inner: Some(body),
            slot,
        },
        reclaimed,
    )
}

impl<B> Reclaimed<B> {
    /// The unfinished body, once every `Reclaim` holding it has been dropped.
    pub fn take(&self) -> Option<B> {
        // A poisoned lock only means a panic elsewhere while swapping an Option; the value
        // inside is still whole.
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Reclaim<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match self.get_mut().inner.as_mut() {
            Some(b) => std::pin::Pin::new(b).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl<B> Drop for Reclaim<B> {
    fn drop(&mut self) {
        if let Some(body) = self.inner.take() {
            *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use http_body_util::StreamBody;

    #[tokio::test]
    async fn the_idle_timeout_measures_gaps_between_frames_not_the_whole_body() {
        use std::time::{Duration, Instant};
        let idle = Duration::from_secs(1);
        // Six frames 250 ms apart: 1.5 s in all, longer than the gap allowed, never idle.
        let slow = futures_util::stream::unfold(0u8, |i| async move {
            if i == 6 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            Some((
                Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(vec![i]))),
                i + 1,
            ))
        });
        let body = IdleTimeout::new(StreamBody::new(Box::pin(slow)), idle);
        let all = body.collect().await.expect("a steady body never times out");
        assert_eq!(&all.to_bytes()[..], &[0, 1, 2, 3, 4, 5]);

        // One frame, then silence: an error after the gap, that says what it was.
        let stalled = futures_util::stream::iter([Ok::<_, BoxError>(http_body::Frame::data(
            Bytes::from_static(b"x"),
        ))])
        .chain(futures_util::stream::pending());
        let mut body = IdleTimeout::new(StreamBody::new(stalled), idle);
        assert!(body.frame().await.unwrap().is_ok());
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(900));
        let timed_out = timed_out(err.as_ref()).expect("a BodyTimedOut");
        assert_eq!(timed_out.idle, idle);
    }

    #[tokio::test]
    async fn a_dropped_reclaim_hands_back_what_was_not_read() {
        let frames =
            (0..3).map(|i| Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(vec![i; 4]))));
        let (mut body, rest) = reclaimable(StreamBody::new(futures_util::stream::iter(frames)));
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], &[0; 4]);
        assert!(rest.take().is_none(), "still held by the reader");
        drop(body);
        let mut left = rest.take().expect("handed back");
        let mut seen = Vec::new();
        while let Some(Ok(f)) = left.frame().await {
            seen.extend_from_slice(&f.into_data().unwrap());
        }
        assert_eq!(seen, [1, 1, 1, 1, 2, 2, 2, 2]);
        assert!(rest.take().is_none());
    }
}
