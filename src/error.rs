//! The one error type of the proxy and its mappings to HTTP.
//!
//! Every answer the proxy writes itself (intercepted routes, its own routes, and forwarder
//! failures) uses OpenAI's envelope `{"error":{"message","type","param","code"}}`. Each variant
//! says where the fault lies; status, `type`, `code`, log level and retryability each come from an
//! exhaustive match, so adding a variant forces a decision in every one of them.
//! A pass-through error is the upstream's own response and never becomes an `Error`.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::body::{self, ProxyBody};

/// Where a failure came from: decides the status family and who should act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The caller sent something we refuse (4xx).
    Client,
    /// The upstream could not be reached or misbehaved (502/504).
    Upstream,
    /// Our store or our own code failed (5xx).
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed or invalid request: bad JSON, a bad field, a conflict such as an active run.
    /// OpenAI answers conflicts with 400 too (the SDKs retry 409s silently).
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
        code: Option<&'static str>,
    },
    /// A missing object, or one owned by another tenant (never 403: existence is not leaked).
    #[error("{message}")]
    NotFound {
        message: String,
        param: Option<String>,
    },
    /// A path/method pair that does not exist on an intercepted surface.
    #[error("Invalid URL ({method} {path})")]
    InvalidUrl { method: String, path: String },
    /// No usable bearer key on a route that needs one.
    #[error("{message}")]
    Unauthorized { message: String },
    /// A request body larger than the configured or specified limit.
    #[error("Request body too large: the limit is {limit} bytes.")]
    PayloadTooLarge { limit: u64 },
    /// The client sent part of a request body, then nothing for `seconds`
    /// (`server.body_read_timeout_seconds`).
    #[error("The request body was not received in time: no bytes arrived for {seconds} seconds.")]
    BodyTimeout { seconds: u64 },
    /// A request the HTTP layer cannot read: a malformed head, bad body framing, a head or URI
    /// over the limits. Answered for hyper, which would send the status without a body.
    #[error("{message}")]
    BadHttp {
        status: StatusCode,
        message: &'static str,
    },
    /// The upstream refused the connection, failed TLS, or broke the exchange.
    #[error("{message}")]
    UpstreamUnavailable { message: String, code: &'static str },
    /// The upstream did not answer (connect or response head) in time.
    #[error("{message}")]
    UpstreamTimeout { message: String },
    /// The store cannot be reached right now; the caller may retry.
    #[error("The store is unavailable: {message}")]
    StoreUnavailable { message: String },
    /// The store failed in a way a retry will not fix.
    #[error("Store error: {message}")]
    Store { message: String },
    /// The caller's database exists but cannot serve yet (an Astra database being created,
    /// resumed or given its keyspace); retry after `retry_after_secs`.
    #[error("{message}")]
    DatabaseNotReady {
        message: String,
        retry_after_secs: u32,
    },
    /// A bug or an impossible state in the proxy itself.
    #[error("Internal error: {message}")]
    Internal { message: String },
}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::Unavailable(message) => Error::StoreUnavailable { message },
            StoreError::Other(message) => Error::Store { message },
            StoreError::Refused(message) => Error::Unauthorized { message },
            StoreError::NoDatabase(message) => Error::NotFound {
                message,
                param: None,
            },
            StoreError::NotReady {
                message,
                retry_after_secs,
            } => Error::DatabaseNotReady {
                message,
                retry_after_secs,
            },
        }
    }
}

impl Error {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Error {
        Error::InvalidRequest {
            message: message.into(),
            param: param.map(str::to_owned),
            code: None,
        }
    }

    pub fn invalid_code(
        message: impl Into<String>,
        param: Option<&str>,
        code: &'static str,
    ) -> Error {
        Error::InvalidRequest {
            message: message.into(),
            param: param.map(str::to_owned),
            code: Some(code),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Error {
        Error::NotFound {
            message: message.into(),
            param: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::Internal {
            message: message.into(),
        }
    }

    /// Replaces the message, keeping status, type, param and code.
    pub fn with_message(self, message: String) -> Error {
        match self {
            Error::InvalidRequest { param, code, .. } => Error::InvalidRequest {
                message,
                param,
                code,
            },
            other => other,
        }
    }

    pub fn origin(&self) -> Origin {
        match self {
            Error::InvalidRequest { .. }
            | Error::NotFound { .. }
            | Error::InvalidUrl { .. }
            | Error::Unauthorized { .. }
            | Error::PayloadTooLarge { .. }
            | Error::BodyTimeout { .. }
            | Error::BadHttp { .. } => Origin::Client,
            Error::UpstreamUnavailable { .. } | Error::UpstreamTimeout { .. } => Origin::Upstream,
            Error::StoreUnavailable { .. }
            | Error::Store { .. }
            | Error::DatabaseNotReady { .. }
            | Error::Internal { .. } => Origin::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Error::NotFound { .. } | Error::InvalidUrl { .. } => StatusCode::NOT_FOUND,
            Error::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Error::BadHttp { status, .. } => *status,
            Error::UpstreamUnavailable { .. } => StatusCode::BAD_GATEWAY,
            Error::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::StoreUnavailable { .. } | Error::DatabaseNotReady { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Store { .. } | Error::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `error.type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::InvalidRequest { .. }
            | Error::NotFound { .. }
            | Error::InvalidUrl { .. }
            | Error::Unauthorized { .. }
            | Error::PayloadTooLarge { .. }
            | Error::BodyTimeout { .. }
            | Error::BadHttp { .. } => "invalid_request_error",
            Error::UpstreamUnavailable { .. }
            | Error::UpstreamTimeout { .. }
            | Error::StoreUnavailable { .. }
            | Error::Store { .. }
            | Error::DatabaseNotReady { .. }
            | Error::Internal { .. } => "server_error",
        }
    }

    /// OpenAI's `error.code`.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Error::InvalidRequest { code, .. } => *code,
            Error::NotFound { .. } | Error::InvalidUrl { .. } => None,
            Error::Unauthorized { .. } => Some("invalid_api_key"),
            Error::PayloadTooLarge { .. } => Some("request_too_large"),
            Error::BodyTimeout { .. } => Some("request_timeout"),
            Error::BadHttp { .. } => None,
            Error::UpstreamUnavailable { code, .. } => Some(code),
            Error::UpstreamTimeout { .. } => Some("upstream_timeout"),
            Error::StoreUnavailable { .. } => Some("store_unavailable"),
            Error::DatabaseNotReady { .. } => Some("database_not_ready"),
            Error::Store { .. } | Error::Internal { .. } => None,
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            Error::InvalidRequest { param, .. } | Error::NotFound { param, .. } => param.as_deref(),
            Error::InvalidUrl { .. }
            | Error::Unauthorized { .. }
            | Error::PayloadTooLarge { .. }
            | Error::BodyTimeout { .. }
            | Error::BadHttp { .. }
            | Error::UpstreamUnavailable { .. }
            | Error::UpstreamTimeout { .. }
            | Error::StoreUnavailable { .. }
            | Error::Store { .. }
            | Error::DatabaseNotReady { .. }
            | Error::Internal { .. } => None,
        }
    }

    /// Whether a client retry may succeed (sets `x-should-retry`, which both SDKs honour).
    pub fn retryable(&self) -> bool {
        match self {
            Error::InvalidRequest { .. }
            | Error::NotFound { .. }
            | Error::InvalidUrl { .. }
            | Error::Unauthorized { .. }
            | Error::PayloadTooLarge { .. }
            | Error::BadHttp { .. }
            | Error::Store { .. }
            | Error::Internal { .. } => false,
            // A stalled link may well carry the next attempt.
            Error::BodyTimeout { .. }
            | Error::UpstreamUnavailable { .. }
            | Error::UpstreamTimeout { .. }
            | Error::StoreUnavailable { .. }
            | Error::DatabaseNotReady { .. } => true,
        }
    }

    /// Client mistakes are routine (debug); upstream trouble is an operator concern (warn);
    /// our own failures are bugs or outages (error).
    pub fn log(&self) {
        if let Error::DatabaseNotReady { .. } = self {
            // Expected while a database is created: the caller is told when to come back.
            tracing::info!(status = self.status().as_u16(), error = %self, "database not ready");
            return;
        }
        match self.origin() {
            Origin::Client => {
                tracing::debug!(status = self.status().as_u16(), error = %self, "request refused")
            }
            Origin::Upstream => {
                tracing::warn!(status = self.status().as_u16(), error = %self, "upstream failure")
            }
            Origin::Internal => {
                tracing::error!(status = self.status().as_u16(), error = %self, "internal failure")
            }
        }
    }

    /// The JSON envelope OpenAI's SDKs parse.
    pub fn envelope(&self) -> serde_json::Value {
        let message: Cow<'_, str> = Cow::Owned(self.to_string());
        json!({
            "error": {
                "message": message,
                "type": self.error_type(),
                "param": self.param(),
                "code": self.code(),
            }
        })
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        self.log();
        let (status, headers, bytes) = self.response_parts();
        let mut resp = Response::new(body::full(bytes));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }

    /// The answer's status, headers and body (the envelope): what `into_response` sends, and
    /// what the HTTP/1 relay writes itself.
    pub fn response_parts(&self) -> (StatusCode, HeaderMap, Bytes) {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            "x-should-retry",
            HeaderValue::from_static(if self.retryable() { "true" } else { "false" }),
        );
        match self {
            Error::StoreUnavailable { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Error::DatabaseNotReady {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        let bytes = Bytes::from(self.envelope().to_string());
        (self.status(), headers, bytes)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_all_four_keys() {
        let e = Error::not_found("No thread found with id 'thread_x'.");
        let v = e.envelope();
        let obj = v["error"].as_object().unwrap();
        assert_eq!(obj.len(), 4);
        assert_eq!(v["error"]["message"], "No thread found with id 'thread_x'.");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["param"].is_null());
        assert!(v["error"]["code"].is_null());
        assert_eq!(e.status(), 404);
    }

    #[test]
    fn upstream_errors_are_gateway_statuses() {
        let e = Error::UpstreamUnavailable {
            message: "refused".into(),
            code: "upstream_unreachable",
        };
        assert_eq!(e.status(), 502);
        assert_eq!(e.origin(), Origin::Upstream);
        assert!(e.retryable());
        let t = Error::UpstreamTimeout {
            message: "slow".into(),
        };
        assert_eq!(t.status(), 504);
    }

    #[test]
    fn database_not_ready_is_a_503_with_retry_after() {
        let e = Error::DatabaseNotReady {
            message: "The Astra database is being created.".into(),
            retry_after_secs: 7,
        };
        assert_eq!(e.envelope()["error"]["code"], "database_not_ready");
        assert_eq!(e.envelope()["error"]["type"], "server_error");
        let r = e.into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "7");
        assert_eq!(r.headers()["x-should-retry"], "true");
    }

    #[test]
    fn response_carries_json_and_retry_hint() {
        let r = Error::invalid_code("Invalid 'limit'", Some("limit"), "integer_above_max_value")
            .into_response();
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["x-should-retry"], "false");
    }
}
