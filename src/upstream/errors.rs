//! What a failed upstream exchange means for the caller: the proxy's error for a request that
//! never got an answer head (unreachable, TLS, timeouts, a broken exchange, or the client's
//! own body failing on the way), naming the upstream but nothing secret.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use super::SendError;
use crate::body::BoxError;
use crate::error::Error;

/// Looks through an error chain, including the custom payloads of (nested) `io::Error`s,
/// which `source()` alone skips: hyper-rustls wraps rustls errors in two io::Error layers.
fn find_in_chain<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut stack: Vec<&'a (dyn StdError + 'static)> = vec![err];
    while let Some(e) = stack.pop() {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(inner) = io.get_ref()
        {
            stack.push(inner);
        }
        if let Some(next) = e.source() {
            stack.push(next);
        }
    }
    None
}

fn is_timeout(err: &(dyn StdError + 'static)) -> bool {
    let mut stack: Vec<&(dyn StdError + 'static)> = vec![err];
    while let Some(e) = stack.pop() {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::TimedOut {
                return true;
            }
            if let Some(inner) = io.get_ref() {
                stack.push(inner);
            }
        }
        if let Some(next) = e.source() {
            stack.push(next);
        }
    }
    false
}

/// The answer when the upstream's response head did not arrive within `timeout`.
pub fn head_timeout_error(authority: &str, timeout: Duration) -> Error {
    Error::UpstreamTimeout {
        message: format!(
            "The upstream {authority} did not answer within {} s.",
            timeout.as_secs()
        ),
    }
}

/// The request body failed while it was being sent upstream: the client's doing (malformed
/// chunked framing, a disconnect mid-upload), not the upstream's.
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read: {0}")]
pub struct ClientBodyError(pub BoxError);

/// Maps a client error to the proxy's error, naming the upstream but nothing secret.
pub fn classify(err: &SendError, authority: &str) -> Error {
    if let Some(body) = find_in_chain::<ClientBodyError>(err) {
        // A body the proxy read with a time limit (an upload replayed upstream) that stalled.
        if let Some(t) = crate::body::timed_out(body.0.as_ref()) {
            return Error::BodyTimeout {
                seconds: t.idle.as_secs(),
            };
        }
        // Not retryable and not the upstream's fault: a 400 the SDK will not repeat.
        return Error::invalid(format!("The request body is invalid: {}", body.0), None);
    }
    if let Some(tls) = find_in_chain::<rustls::Error>(err) {
        return Error::UpstreamUnavailable {
            message: format!("TLS handshake with the upstream {authority} failed: {tls}"),
            code: "upstream_tls_error",
        };
    }
    if err.is_connect() && is_timeout(err) {
        return Error::UpstreamTimeout {
            message: format!("Connecting to the upstream {authority} timed out."),
        };
    }
    // The error's own text and its innermost cause (an io error's "Connection refused", say).
    let first = StdError::source(err).map(ToString::to_string);
    let mut innermost = None;
    let mut source = StdError::source(err);
    while let Some(s) = source {
        innermost = Some(s);
        source = s.source();
    }
    let innermost = innermost.map(ToString::to_string).unwrap_or_default();
    if err.is_connect() {
        Error::UpstreamUnavailable {
            message: format!("The upstream {authority} is unreachable: {innermost}"),
            code: "upstream_unreachable",
        }
    } else {
        let detail = match first {
            Some(first) if first != innermost => format!("{first}: {innermost}"),
            _ => innermost,
        };
        Error::UpstreamUnavailable {
            message: format!("The exchange with the upstream {authority} failed: {detail}"),
            code: "upstream_error",
        }
    }
}
