//! Body types shared by every route: one boxed body type for responses and upstream requests,
//! and small constructors. Bodies stay streams; nothing here collects one whole.

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
