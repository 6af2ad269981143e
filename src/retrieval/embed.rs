//! The embeddings client: texts → vectors through the upstream's `POST /v1/embeddings`, over
//! the proxy's shared pooled client (`Upstream::send`) and with the caller's own credentials.
//!
//! Inputs are sent in batches (≤ [`MAX_INPUTS_PER_CALL`] texts and ≤ [`MAX_TOKENS_PER_CALL`]
//! tokens, under OpenAI's per-request limits of 2048 inputs and 300k tokens), as floats.
//! 429, 5xx and an unreachable upstream are retried with exponential backoff, honouring
//! `retry-after-ms` / `retry-after`; any other answer fails at once with the upstream's own
//! message, since retrying a bad key or an unknown model cannot help.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use super::Retrieval;
use crate::body;
use crate::error::Error;
use crate::secrets::Scrubber;
use crate::upstream::chat::{ReadError, read_to_end, retry_after};

/// Texts per embeddings call: large enough to amortize the round trip, small enough that one
/// slow call does not hold a whole file.
pub const MAX_INPUTS_PER_CALL: usize = 96;
/// Tokens per embeddings call (OpenAI refuses more than 300 000).
pub const MAX_TOKENS_PER_CALL: usize = 250_000;
/// Largest embeddings response read (96 × 3072 floats as JSON text is about 3 MB).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Longest wait a `retry-after` may impose before the next attempt.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Why embedding failed, after any retries.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedError {
    /// The upstream's status, if it answered.
    pub status: Option<u16>,
    pub message: String,
}

impl std::fmt::Display for EmbedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl EmbedError {
    /// The error a request-time caller (search) reports: the caller's own credential problems
    /// come back as such, anything else is an upstream failure (502).
    pub fn into_error(self) -> Error {
        match self.status {
            Some(401) => Error::Unauthorized {
                message: self.message,
            },
            Some(s) if (400..500).contains(&s) && s != 429 => Error::invalid(self.message, None),
            _ => Error::UpstreamUnavailable {
                message: self.message,
                code: "embedding_failed",
            },
        }
    }
}

#[derive(Deserialize)]
struct EmbeddingList {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

/// One text to embed with its token count (used to size batches).
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub text: &'a str,
    pub tokens: usize,
}

/// Splits inputs into consecutive batches within the per-call limits.
pub fn batches(inputs: &[Input<'_>]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut tokens = 0;
    for (i, input) in inputs.iter().enumerate() {
        let full = i - start >= MAX_INPUTS_PER_CALL
            || (i > start && tokens + input.tokens > MAX_TOKENS_PER_CALL);
        if full {
            out.push(start..i);
            start = i;
            tokens = 0;
        }
        tokens += input.tokens;
    }
    if start < inputs.len() {
        out.push(start..inputs.len());
    }
    out
}

/// Embeds every input, in order, batch by batch.
pub async fn embed_all(
    retrieval: &Retrieval,
    headers: &HeaderMap,
    model: &str,
    inputs: &[Input<'_>],
) -> Result<Vec<Vec<f32>>, EmbedError> {
    let mut out = Vec::with_capacity(inputs.len());
    for range in batches(inputs) {
        let texts: Vec<&str> = inputs[range].iter().map(|i| i.text).collect();
        out.extend(embed_batch(retrieval, headers, model, &texts).await?);
    }
    Ok(out)
}

/// One embeddings call (with retries) for at most a batch of texts.
pub async fn embed_batch(
    retrieval: &Retrieval,
    headers: &HeaderMap,
    model: &str,
    texts: &[&str],
) -> Result<Vec<Vec<f32>>, EmbedError> {
    let cfg = &retrieval.config;
    let body = Bytes::from(
        json!({"model": model, "input": texts, "encoding_format": "float"}).to_string(),
    );
    let mut attempt = 1;
    loop {
        let (err, wait_hint) = match call(retrieval, headers, body.clone()).await {
            Ok(Answer::Vectors(list)) => return vectors(list, texts.len()),
            Ok(Answer::Unusable(message)) => {
                return Err(EmbedError {
                    status: None,
                    message: format!("The embeddings request (model '{model}') failed: {message}"),
                });
            }
            Ok(Answer::Failed {
                status,
                message,
                retry_after,
            }) => {
                let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                let err = EmbedError {
                    status: Some(status.as_u16()),
                    message: format!(
                        "The embeddings request (model '{model}') failed with status {}: {message}",
                        status.as_u16()
                    ),
                };
                if !retryable {
                    return Err(err);
                }
                (err, retry_after)
            }
            Err(e) => {
                let err = EmbedError {
                    status: None,
                    message: format!("The embeddings request (model '{model}') failed: {e}"),
                };
                if !e.retryable() {
                    return Err(err);
                }
                (err, None)
            }
        };
        if attempt >= cfg.embed_max_attempts {
            return Err(EmbedError {
                message: format!("{} (gave up after {attempt} attempts)", err.message),
                ..err
            });
        }
        let backoff = cfg
            .embed_retry_base
            .saturating_mul(1u32 << (attempt - 1).min(10));
        let wait = wait_hint.unwrap_or(backoff).min(MAX_RETRY_WAIT);
        tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, error = %err, "retrying embeddings");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = retrieval.shutdown.cancelled() => {
                return Err(EmbedError {
                    status: None,
                    message: "The proxy is shutting down.".into(),
                });
            }
        }
        attempt += 1;
    }
}

enum Answer {
    Vectors(EmbeddingList),
    Failed {
        status: StatusCode,
        message: String,
        retry_after: Option<Duration>,
    },
    /// A 2xx whose body is not an embeddings list.
    Unusable(String),
}

async fn call(retrieval: &Retrieval, headers: &HeaderMap, body: Bytes) -> Result<Answer, Error> {
    let upstream = &retrieval.upstream;
    let uri = upstream
        .base()
        .uri_for("/v1/embeddings")
        .map_err(|e| Error::internal(format!("embeddings URI: {e}")))?;
    let mut req = Request::post(uri)
        .body(body::full(body))
        .map_err(|e| Error::internal(format!("embeddings request: {e}")))?;
    let h = req.headers_mut();
    for (name, value) in headers {
        h.insert(name, value.clone());
    }
    h.insert(header::HOST, upstream.base().host.clone());
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let resp = upstream.send(req).await?;
    let status = resp.status();
    let retry_after = retry_after(resp.headers());
    let bytes = match read_to_end(
        resp.into_body(),
        upstream.idle_timeout(),
        MAX_RESPONSE_BYTES,
    )
    .await
    {
        Ok(bytes) => bytes,
        Err(ReadError::Stalled(idle)) => {
            return Err(Error::UpstreamTimeout {
                message: format!(
                    "The upstream stopped sending the embeddings response: nothing arrived for {} s.",
                    idle.as_secs()
                ),
            });
        }
        Err(e) => {
            return Err(Error::UpstreamUnavailable {
                message: format!("reading the embeddings response failed: {e:?}"),
                code: "upstream_broken",
            });
        }
    };
    // The upstream's words are kept (a file's `last_error`) and shown: never with a key.
    let scrub = Scrubber::for_headers(headers);
    if !status.is_success() {
        return Ok(Answer::Failed {
            status,
            message: scrub.scrub(&upstream_message(&bytes)),
            retry_after,
        });
    }
    match serde_json::from_slice::<EmbeddingList>(&bytes) {
        Ok(list) => Ok(Answer::Vectors(list)),
        // Not retried: a malformed success will not become well-formed.
        Err(e) => Ok(Answer::Unusable(scrub.scrub(&format!(
            "the upstream's embeddings response could not be parsed: {e}"
        )))),
    }
}

/// The upstream's `error.message`, or a prefix of its body.
fn upstream_message(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned())
}

fn vectors(list: EmbeddingList, expected: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
    let bad = |m: String| EmbedError {
        status: None,
        message: format!("The upstream's embeddings response is unusable: {m}"),
    };
    if list.data.len() != expected {
        return Err(bad(format!(
            "{} vectors for {expected} inputs",
            list.data.len()
        )));
    }
    let mut out: Vec<Option<Vec<f32>>> = vec![None; expected];
    for item in list.data {
        match out.get_mut(item.index) {
            Some(slot @ None) => *slot = Some(item.embedding),
            _ => return Err(bad(format!("unexpected index {}", item.index))),
        }
    }
    let out: Vec<Vec<f32>> = out.into_iter().flatten().collect();
    let dims = out.first().map_or(0, Vec::len);
    if dims == 0 || out.iter().any(|v| v.len() != dims) {
        return Err(bad("vectors of differing or zero length".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_input_and_token_limits() {
        let text = "x";
        let many: Vec<Input<'_>> = (0..200).map(|_| Input { text, tokens: 10 }).collect();
        assert_eq!(batches(&many), vec![0..96, 96..192, 192..200]);
        let big: Vec<Input<'_>> = (0..5)
            .map(|_| Input {
                text,
                tokens: 100_000,
            })
            .collect();
        assert_eq!(batches(&big), vec![0..2, 2..4, 4..5]);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn vectors_are_put_in_input_order() {
        let list: EmbeddingList = serde_json::from_str(
            r#"{"data":[{"index":1,"embedding":[0.0,1.0]},{"index":0,"embedding":[1.0,0.0]}]}"#,
        )
        .unwrap();
        assert_eq!(
            vectors(list, 2).unwrap(),
            vec![vec![1.0, 0.0], vec![0.0, 1.0]]
        );
        let short: EmbeddingList =
            serde_json::from_str(r#"{"data":[{"index":0,"embedding":[1.0]}]}"#).unwrap();
        assert!(vectors(short, 2).is_err());
    }

    #[test]
    fn errors_map_to_the_callers_view() {
        let e = |status| EmbedError {
            status,
            message: "m".into(),
        };
        assert_eq!(e(Some(401)).into_error().status(), 401);
        assert_eq!(e(Some(404)).into_error().status(), 400);
        assert_eq!(e(Some(500)).into_error().status(), 502);
        assert_eq!(e(None).into_error().status(), 502);
    }
}
