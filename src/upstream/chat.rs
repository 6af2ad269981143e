//! The proxy's own calls to the upstream (chat completions, embeddings, and the other calls
//! the run engine and retrieval make with the caller's key): an SSE parser (pure,
//! unit-tested), a stream of `chat.completion.chunk` objects, JSON posts, and the rules every
//! one of these calls shares: no wait on the upstream without a limit (the head timeout of
//! [`Upstream::send`], then `upstream.idle_timeout_seconds` between two body frames), and
//! no upstream text kept or returned without the caller's key scrubbed out of it.
//!
//! Runs always call upstream with `stream: true`, so a cancel or a client-facing stream can
//! act on every chunk.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, header};
use http_body::Frame;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::secrets::Scrubber;
use crate::upstream::{Upstream, UpstreamBody};

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Incremental SSE parser (WHATWG rules: `\n`, `\r\n` or `\r` line ends; `data:` lines joined
/// by `\n`; a blank line dispatches; `:` lines are comments).
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    /// A `\r` ended the last line; a `\n` right after it belongs to the same line end.
    after_cr: bool,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(ev) = self.line_end(&line) {
                        out.push(ev);
                    }
                }
                _ => self.line.push(b),
            }
        }
        out
    }

    fn line_end(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let data = self.data.take()?;
            return Some(SseEvent {
                event: self.event.take(),
                data,
            });
        }
        if line[0] == b':' {
            return None;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f.to_owned(), v.strip_prefix(' ').unwrap_or(v).to_owned()),
            None => (text.into_owned(), String::new()),
        };
        match field.as_str() {
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(&value);
                }
                None => self.data = Some(value),
            },
            "event" => self.event = Some(value),
            _ => {}
        }
        None
    }
}

/// Why an upstream call failed, in the terms a run's `last_error` uses. Its message is
/// scrubbed of the caller's key (see [`crate::secrets`]): it may be stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    /// `server_error`, `rate_limit_exceeded` or `invalid_prompt`.
    pub code: &'static str,
    pub message: String,
    /// The upstream's HTTP status, when it answered with one.
    pub status: Option<u16>,
    /// How long the upstream asked us to wait (`retry-after-ms` / `retry-after`).
    pub retry_after: Option<Duration>,
    /// A later attempt may succeed: 429, 5xx, an upstream that could not be reached, broke
    /// the exchange or went silent. A refused request (bad key, unknown model) is not.
    pub transient: bool,
}

impl CallError {
    /// A failure on the proxy's side of the call or in the upstream's answer, not worth
    /// repeating (the same request would fail the same way).
    pub fn server(message: impl Into<String>) -> CallError {
        CallError {
            code: "server_error",
            message: message.into(),
            status: None,
            retry_after: None,
            transient: false,
        }
    }

    /// A failure of the transport or a silent upstream: worth another attempt.
    fn transient(message: impl Into<String>) -> CallError {
        CallError {
            transient: true,
            ..CallError::server(message)
        }
    }

    fn from_read(e: ReadError, what: &str) -> CallError {
        match e {
            ReadError::Stalled(idle) => CallError::transient(format!(
                "The upstream stopped sending: nothing arrived for {} s in its {what}.",
                idle.as_secs()
            )),
            ReadError::Broken(e) => {
                CallError::transient(format!("The upstream {what} broke off: {e}"))
            }
            ReadError::TooLarge(limit) => {
                CallError::server(format!("The upstream {what} is larger than {limit} bytes."))
            }
        }
    }
}

/// `retry-after-ms` (OpenAI's, in milliseconds) or `retry-after` (seconds).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let parse = |name: &str| -> Option<f64> {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    parse("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| parse("retry-after").map(Duration::from_secs_f64))
}

/// Why reading an upstream body failed.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing arrived for this long (`upstream.idle_timeout_seconds`).
    Stalled(Duration),
    /// The connection failed or closed mid-body.
    Broken(String),
    /// The body went over the reader's limit (bytes).
    TooLarge(usize),
}

/// The next frame of an upstream body, waiting at most `idle` for it.
pub async fn next_frame(
    body: &mut UpstreamBody,
    idle: Duration,
) -> Result<Option<Frame<Bytes>>, ReadError> {
    match tokio::time::timeout(idle, body.frame()).await {
        Err(_) => Err(ReadError::Stalled(idle)),
        Ok(None) => Ok(None),
        Ok(Some(Ok(frame))) => Ok(Some(frame)),
        Ok(Some(Err(e))) => Err(ReadError::Broken(e.to_string())),
    }
}

/// A whole upstream body, at most `limit` bytes, with at most `idle` between two frames.
pub async fn read_to_end(
    mut body: UpstreamBody,
    idle: Duration,
    limit: usize,
) -> Result<Bytes, ReadError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = next_frame(&mut body, idle).await? {
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(ReadError::TooLarge(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Most of an error answer the proxy reads: enough for any upstream's message.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Most of a JSON answer [`post_json`] reads (an embeddings answer for one query is ~40 KB).
const MAX_JSON_BODY: usize = 16 * 1024 * 1024;

/// Builds a request for the upstream with the caller's headers and, if given, a JSON body.
fn upstream_request(
    upstream: &Upstream,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: Option<&Value>,
) -> Result<Request<crate::body::ProxyBody>, CallError> {
    let uri = upstream
        .base()
        .uri_for(path)
        .map_err(|e| CallError::server(e.to_string()))?;
    let payload = match body {
        Some(b) => crate::body::full(b.to_string()),
        None => crate::body::empty(),
    };
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(payload)
        .map_err(|e| CallError::server(e.to_string()))?;
    let h = req.headers_mut();
    for (k, v) in headers {
        h.append(k, v.clone());
    }
    h.insert(header::HOST, upstream.base().host.clone());
    if body.is_some() {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    Ok(req)
}

/// Sends a request and returns the response if it succeeded (2xx), or the failure as a
/// scrubbed `CallError`.
async fn send(
    upstream: &Upstream,
    req: Request<crate::body::ProxyBody>,
    scrub: &Scrubber,
) -> Result<UpstreamBody, CallError> {
    let resp = match upstream.send(req).await {
        Ok(resp) => resp,
        Err(e) => {
            let message = scrub.scrub(&e.to_string());
            return Err(if e.retryable() {
                CallError::transient(message)
            } else {
                CallError::server(message)
            });
        }
    };
    if resp.status().is_success() {
        return Ok(resp.into_body());
    }
    Err(error_from(resp, upstream.idle_timeout(), scrub).await)
}

/// Turns a non-success upstream answer into a `CallError`, keeping the upstream's message
/// (without the caller's key).
async fn error_from(
    resp: hyper::Response<UpstreamBody>,
    idle: Duration,
    scrub: &Scrubber,
) -> CallError {
    let status = resp.status().as_u16();
    let retry_after = retry_after(resp.headers());
    // A body that stalls or breaks off still leaves the status to report.
    let body = read_to_end(resp.into_body(), idle, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let detail = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
    let code = match status {
        429 => "rate_limit_exceeded",
        400 | 404 | 413 | 422 => "invalid_prompt",
        _ => "server_error",
    };
    CallError {
        code,
        message: scrub.scrub(&format!(
            "The upstream model returned HTTP {status}: {detail}"
        )),
        status: Some(status),
        retry_after,
        transient: status == 429 || (500..600).contains(&status),
    }
}

/// POSTs JSON and returns the JSON answer (embeddings, non-streamed calls).
pub async fn post_json(
    upstream: &Upstream,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Value, CallError> {
    let req = upstream_request(upstream, Method::POST, path, headers, Some(body))?;
    exchange_json(upstream, req, headers).await
}

/// GETs a JSON answer (`path` may carry a query), e.g. the upstream's file list.
pub async fn get_json(
    upstream: &Upstream,
    path: &str,
    headers: &HeaderMap,
) -> Result<Value, CallError> {
    let req = upstream_request(upstream, Method::GET, path, headers, None)?;
    exchange_json(upstream, req, headers).await
}

/// Sends one of the proxy's own requests (carrying `headers`) and reads the whole JSON
/// answer, within the response-head and idle timeouts; a non-success status becomes a
/// scrubbed `CallError` carrying the upstream's message.
async fn exchange_json(
    upstream: &Upstream,
    req: Request<crate::body::ProxyBody>,
    headers: &HeaderMap,
) -> Result<Value, CallError> {
    let scrub = Scrubber::for_headers(headers);
    let body = send(upstream, req, &scrub).await?;
    let bytes = read_to_end(body, upstream.idle_timeout(), MAX_JSON_BODY)
        .await
        .map_err(|e| CallError::from_read(e, "answer"))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| CallError::server(format!("The upstream answer is not JSON: {e}")))
}

/// A streamed chat completion: yields each `chat.completion.chunk` object.
pub struct ChatStream {
    body: UpstreamBody,
    parser: SseParser,
    pending: VecDeque<Value>,
    done: bool,
    /// The longest silence allowed between two pieces of the stream.
    idle: Duration,
    scrub: Scrubber,
}

impl ChatStream {
    /// Sends the request (the body must carry `"stream": true`).
    pub async fn open(
        upstream: &Upstream,
        headers: &HeaderMap,
        body: &Value,
    ) -> Result<ChatStream, CallError> {
        let scrub = Scrubber::for_headers(headers);
        let req = upstream_request(
            upstream,
            Method::POST,
            "/v1/chat/completions",
            headers,
            Some(body),
        )?;
        let body = send(upstream, req, &scrub).await?;
        Ok(ChatStream {
            body,
            parser: SseParser::default(),
            pending: VecDeque::new(),
            done: false,
            idle: upstream.idle_timeout(),
            scrub,
        })
    }

    /// The next chunk; `None` after `data: [DONE]`. A connection that ends without `[DONE]`
    /// is an error: the answer is incomplete. So is an upstream silent for longer than
    /// `upstream.idle_timeout_seconds` (a stream that has stalled would otherwise hold its
    /// run `in_progress` for ever).
    pub async fn next(&mut self) -> Result<Option<Value>, CallError> {
        loop {
            if let Some(v) = self.pending.pop_front() {
                return Ok(Some(v));
            }
            if self.done {
                return Ok(None);
            }
            let frame = match next_frame(&mut self.body, self.idle).await {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    return Err(CallError::transient(
                        "The upstream closed the stream before it finished.",
                    ));
                }
                Err(e) => return Err(CallError::from_read(e, "stream")),
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            self.feed(&data)?;
        }
    }

    fn feed(&mut self, data: &Bytes) -> Result<(), CallError> {
        for ev in self.parser.push(data) {
            if ev.data.trim() == "[DONE]" {
                self.done = true;
                break;
            }
            let v: Value = serde_json::from_str(&ev.data).map_err(|e| {
                CallError::server(format!("The upstream sent a malformed chunk: {e}"))
            })?;
            if v.get("error").is_some() {
                return Err(CallError::server(self.scrub.scrub(&format!(
                    "The upstream reported an error mid-stream: {}",
                    v["error"]["message"].as_str().unwrap_or("unknown")
                ))));
            }
            self.pending.push_back(v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_across_arbitrary_splits() {
        let stream = b"data: {\"a\":1}\n\n: comment\n\nevent: x\r\ndata: l1\r\ndata: l2\r\n\r\ndata: [DONE]\n\n";
        for split in 1..stream.len() {
            let mut p = SseParser::default();
            let mut events = p.push(&stream[..split]);
            events.extend(p.push(&stream[split..]));
            assert_eq!(
                events,
                vec![
                    SseEvent {
                        event: None,
                        data: "{\"a\":1}".into()
                    },
                    SseEvent {
                        event: Some("x".into()),
                        data: "l1\nl2".into()
                    },
                    SseEvent {
                        event: None,
                        data: "[DONE]".into()
                    },
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn retry_after_headers() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn lone_cr_ends_lines() {
        let mut p = SseParser::default();
        assert_eq!(p.push(b"data:x\r\rdata: y\n\n").len(), 2);
    }
}
