//! The proxy's own calls to the upstream's chat completions: an SSE parser (pure, unit-tested)
//! and a stream of `chat.completion.chunk` objects. Runs always call upstream with
//! `stream: true`, so a cancel or a client-facing stream can act on every chunk.

use std::collections::VecDeque;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, header};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::forward::Forwarder;
use crate::upstream::UpstreamBody;

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

/// Why an upstream call failed, in the terms a run's `last_error` uses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    /// `server_error`, `rate_limit_exceeded` or `invalid_prompt`.
    pub code: &'static str,
    pub message: String,
    /// The upstream's HTTP status, when it answered with one.
    pub status: Option<u16>,
    /// Seconds the upstream asked us to wait (`retry-after`).
    pub retry_after: Option<u64>,
}

impl CallError {
    fn server(message: impl Into<String>) -> CallError {
        CallError {
            code: "server_error",
            message: message.into(),
            status: None,
            retry_after: None,
        }
    }
}

/// Builds a request for the upstream with the caller's headers and, if given, a JSON body.
fn upstream_request(
    forwarder: &Forwarder,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: Option<&Value>,
) -> Result<Request<crate::body::ProxyBody>, CallError> {
    let uri = forwarder
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
    h.insert(header::HOST, forwarder.base().host.clone());
    if body.is_some() {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    Ok(req)
}

/// Builds a JSON POST for the upstream with the caller's headers.
fn json_request(
    forwarder: &Forwarder,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Request<crate::body::ProxyBody>, CallError> {
    upstream_request(forwarder, Method::POST, path, headers, Some(body))
}

/// Turns a non-success upstream answer into a `CallError`, keeping the upstream's message.
async fn error_from(resp: hyper::Response<UpstreamBody>) -> CallError {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
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
        message: format!("The upstream model returned HTTP {status}: {detail}"),
        status: Some(status),
        retry_after,
    }
}

/// POSTs JSON and returns the JSON answer (embeddings, non-streamed calls).
pub async fn post_json(
    forwarder: &Forwarder,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Value, CallError> {
    exchange_json(forwarder, json_request(forwarder, path, headers, body)?).await
}

/// GETs a JSON answer (`path` may carry a query), e.g. the upstream's file list.
pub async fn get_json(
    forwarder: &Forwarder,
    path: &str,
    headers: &HeaderMap,
) -> Result<Value, CallError> {
    let req = upstream_request(forwarder, Method::GET, path, headers, None)?;
    exchange_json(forwarder, req).await
}

/// Sends one of the proxy's own requests and reads the whole JSON answer: the forwarder's
/// response-head timeout applies, and a non-success status becomes a `CallError` carrying
/// the upstream's message.
async fn exchange_json(
    forwarder: &Forwarder,
    req: Request<crate::body::ProxyBody>,
) -> Result<Value, CallError> {
    let resp = forwarder
        .send(req)
        .await
        .map_err(|e| CallError::server(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(error_from(resp).await);
    }
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| CallError::server(format!("The upstream answer was cut off: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| CallError::server(format!("The upstream answer is not JSON: {e}")))
}

/// A streamed chat completion: yields each `chat.completion.chunk` object.
pub struct ChatStream {
    body: UpstreamBody,
    parser: SseParser,
    pending: VecDeque<Value>,
    done: bool,
}

impl ChatStream {
    /// Sends the request (the body must carry `"stream": true`).
    pub async fn open(
        forwarder: &Forwarder,
        headers: &HeaderMap,
        body: &Value,
    ) -> Result<ChatStream, CallError> {
        let req = json_request(forwarder, "/v1/chat/completions", headers, body)?;
        let resp = forwarder
            .send(req)
            .await
            .map_err(|e| CallError::server(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(error_from(resp).await);
        }
        Ok(ChatStream {
            body: resp.into_body(),
            parser: SseParser::default(),
            pending: VecDeque::new(),
            done: false,
        })
    }

    /// The next chunk; `None` after `data: [DONE]`. A connection that ends without `[DONE]`
    /// is an error: the answer is incomplete.
    pub async fn next(&mut self) -> Result<Option<Value>, CallError> {
        loop {
            if let Some(v) = self.pending.pop_front() {
                return Ok(Some(v));
            }
            if self.done {
                return Ok(None);
            }
            let frame = match self.body.frame().await {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    return Err(CallError::server(format!(
                        "The upstream stream broke off: {e}"
                    )));
                }
                None => {
                    return Err(CallError::server(
                        "The upstream closed the stream before it finished.",
                    ));
                }
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
                return Err(CallError::server(format!(
                    "The upstream reported an error mid-stream: {}",
                    v["error"]["message"].as_str().unwrap_or("unknown")
                )));
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
    fn lone_cr_ends_lines() {
        let mut p = SseParser::default();
        assert_eq!(p.push(b"data:x\r\rdata: y\n\n").len(), 2);
    }
}
