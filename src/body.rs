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
pub fn json(value: &serde_json::Value) -> ProxyBody {
    full(value.to_string())
}
