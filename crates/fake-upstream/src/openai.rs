//! The OpenAI half of the fake upstream: `POST /v1/chat/completions` and `POST /v1/embeddings`
//! in OpenAI's exact wire format, with deterministic content so tests can assert on it.
//!
//! Reply selection is one pure function, [`select_reply`]; the handlers only turn its decision
//! into a JSON body or an SSE stream.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Abort, BodySummary, FakeBody, HandlerResult, Shared, code_model, json_response};

/// Reply used when the conversation has no user message.
pub const NO_USER_TEXT: &str = "Hello from the fake upstream.";
/// Chunk delay of models whose name contains `slow`.
pub const SLOW_MODEL_DELAY: Duration = Duration::from_millis(50);
/// Chunks streamed before the connection is cut for models whose name contains `drop`.
pub const DROP_MODEL_CHUNKS: usize = 3;
const FINGERPRINT: &str = "fp_fake_upstream";

/// A reply queued with `FakeUpstream::push_chat_script` for the next chat completion.
#[derive(Clone)]
pub enum ScriptedReply {
    /// Assistant text; streamed one word (plus the whitespace after it) per chunk.
    Text(String),
    /// Function calls `(name, arguments JSON text)`; several means parallel calls.
    ToolCalls(Vec<(String, String)>),
    /// An HTTP error with this JSON body (a 429 also gets `retry-after: 1`).
    Error { status: u16, body: Value },
    /// Stream the role chunk and `chunks` content chunks of `text`, then cut the connection (no
    /// finish chunk, no `[DONE]`). A non-streaming request gets its connection closed with no
    /// response at all.
    DropAfter { text: String, chunks: usize },
    /// Stream the role chunk and `chunks` content chunks of `text`, then send nothing more,
    /// keeping the connection open (an upstream that stalls). A non-streaming request gets a
    /// 200 head and a body that never comes.
    StallAfter { text: String, chunks: usize },
    /// Assistant text, ended with `finish_reason: "content_filter"`.
    Filtered(String),
    /// Decide from the request body.
    Custom(Arc<dyn Fn(&Value) -> ScriptedReply + Send + Sync>),
}

impl ScriptedReply {
    pub fn text(text: impl Into<String>) -> Self {
        ScriptedReply::Text(text.into())
    }

    pub fn tool_call(name: impl Into<String>, arguments: impl Into<String>) -> Self {
        ScriptedReply::ToolCalls(vec![(name.into(), arguments.into())])
    }

    pub fn custom(f: impl Fn(&Value) -> ScriptedReply + Send + Sync + 'static) -> Self {
        ScriptedReply::Custom(Arc::new(f))
    }

    /// The 429 OpenAI sends when rate limited.
    pub fn rate_limited() -> Self {
        ScriptedReply::Error {
            status: 429,
            body: error_body(
                "Rate limit reached for requests (fake upstream).",
                "requests",
                Some("rate_limit_exceeded"),
            ),
        }
    }

    /// The 500 OpenAI sends when it fails.
    pub fn server_error() -> Self {
        ScriptedReply::Error {
            status: 500,
            body: error_body(
                "The server had an error while processing your request. (fake upstream)",
                "server_error",
                None,
            ),
        }
    }
}

impl fmt::Debug for ScriptedReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScriptedReply::Text(t) => f.debug_tuple("Text").field(t).finish(),
            ScriptedReply::ToolCalls(c) => f.debug_tuple("ToolCalls").field(c).finish(),
            ScriptedReply::Error { status, body } => f
                .debug_struct("Error")
                .field("status", status)
                .field("body", body)
                .finish(),
            ScriptedReply::DropAfter { text, chunks } => f
                .debug_struct("DropAfter")
                .field("text", text)
                .field("chunks", chunks)
                .finish(),
            ScriptedReply::StallAfter { text, chunks } => f
                .debug_struct("StallAfter")
                .field("text", text)
                .field("chunks", chunks)
                .finish(),
            ScriptedReply::Filtered(t) => f.debug_tuple("Filtered").field(t).finish(),
            ScriptedReply::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// OpenAI's error envelope.
pub fn error_body(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
}

// ---------------------------------------------------------------------------------------------
// Reply selection (pure)
// ---------------------------------------------------------------------------------------------

/// Decide the reply to a chat completion request. In order:
/// 1. `queued`, the next scripted reply, if any (a `Custom` one is asked with the request);
/// 2. the model name: `error-429` → 429 rate limit, `error-500` → 500, `drop` → the default
///    text cut after [`DROP_MODEL_CHUNKS`] chunks, `tool-call` → call the first offered function
///    tool (all of them if the name also has `parallel`) with `{"input": <last user text>}`, or,
///    when the last message is a tool result, `Tool results: <outputs joined by "; ">`;
///    `code-interpreter` → run the fenced code blocks of the last user message one by one
///    through the `code_interpreter` function (all remaining at once with `parallel`), then
///    summarise like `tool-call` (see `code_model::code_reply`);
/// 3. the default: `Echo: <last user text>` ([`NO_USER_TEXT`] without a user message), or
///    `{"echo": <last user text>}` when `response_format` asks for JSON.
///
/// (`slow` is a pacing, not a reply: see `chat_completions`.) Never returns `Custom`.
pub fn select_reply(queued: Option<ScriptedReply>, request: &Value) -> ScriptedReply {
    let mut reply = queued.unwrap_or_else(|| model_reply(request));
    // A Custom closure may return another Custom; the bound keeps a closure that always does
    // from hanging the server.
    for _ in 0..16 {
        match reply {
            ScriptedReply::Custom(f) => reply = f(request),
            other => return other,
        }
    }
    ScriptedReply::Error {
        status: 500,
        body: error_body(
            "fake upstream: Custom replies nested too deeply",
            "server_error",
            None,
        ),
    }
}

fn model_reply(request: &Value) -> ScriptedReply {
    let model = request["model"].as_str().unwrap_or_default();
    if model.contains("error-429") {
        return ScriptedReply::rate_limited();
    }
    if model.contains("error-500") {
        return ScriptedReply::server_error();
    }
    if model.contains("drop") {
        return ScriptedReply::DropAfter {
            text: default_text(request),
            chunks: DROP_MODEL_CHUNKS,
        };
    }
    if model.contains("code-interpreter") {
        let reply = code_model::code_reply(request, model.contains("parallel"));
        return reply.unwrap_or_else(|| ScriptedReply::Text(default_text(request)));
    }
    if model.contains("tool-call")
        && let Some(reply) = tool_reply(request, model.contains("parallel"), model.contains("cite"))
    {
        return reply;
    }
    ScriptedReply::Text(default_text(request))
}

fn default_text(request: &Value) -> String {
    let user = last_user_text(request);
    let format = request["response_format"]["type"].as_str();
    if matches!(format, Some("json_object" | "json_schema")) {
        return json!({ "echo": user.unwrap_or_default() }).to_string();
    }
    match user {
        Some(text) => format!("Echo: {text}"),
        None => NO_USER_TEXT.to_owned(),
    }
}

/// The `tool-call` model: results are present → summarise them (with `cite`: quote the first
/// passage marker `【…】` found in them, as a model citing file_search results would); tools
/// offered → call them; otherwise `None` (plain text).
fn tool_reply(request: &Value, parallel: bool, cite: bool) -> Option<ScriptedReply> {
    let messages = request["messages"].as_array()?;
    if cite && messages.last().is_some_and(|m| m["role"] == "tool") {
        let results = content_text(&messages.last()?["content"]).unwrap_or_default();
        if let (Some(start), Some(end)) = (results.find('【'), results.find('】')) {
            let marker = &results[start..end + '】'.len_utf8()];
            return Some(ScriptedReply::Text(format!(
                "According to the files, the answer is there {marker}."
            )));
        }
    }
    if let Some(text) = tool_results_text(request) {
        return Some(ScriptedReply::Text(text));
    }
    if request["tool_choice"] == "none" {
        return None;
    }
    let mut names: Vec<&str> = request["tools"]
        .as_array()?
        .iter()
        .filter(|t| t["type"] == "function")
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    if let Some(forced) = request["tool_choice"]["function"]["name"].as_str() {
        names.retain(|n| *n == forced);
    }
    if !parallel || request["parallel_tool_calls"] == false {
        names.truncate(1);
    }
    if names.is_empty() {
        return None;
    }
    let arguments = json!({ "input": last_user_text(request).unwrap_or_default() }).to_string();
    Some(ScriptedReply::ToolCalls(
        names
            .into_iter()
            .map(|n| (n.to_owned(), arguments.clone()))
            .collect(),
    ))
}

/// `Tool results: <outputs joined by "; ">` over the trailing tool messages, when the last
/// message is a tool result.
pub(super) fn tool_results_text(request: &Value) -> Option<String> {
    let messages = request["messages"].as_array()?;
    if !messages.last().is_some_and(|m| m["role"] == "tool") {
        return None;
    }
    let mut outputs: Vec<String> = messages
        .iter()
        .rev()
        .take_while(|m| m["role"] == "tool")
        .map(|m| content_text(&m["content"]).unwrap_or_default())
        .collect();
    outputs.reverse();
    Some(format!("Tool results: {}", outputs.join("; ")))
}

/// Text of a message `content`: a string, or the text parts of an array joined by spaces.
pub(super) fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter(|p| {
                    matches!(
                        p["type"].as_str(),
                        Some("text" | "input_text" | "output_text")
                    )
                })
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    }
}

fn last_user_text(request: &Value) -> Option<String> {
    request["messages"]
        .as_array()?
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| content_text(&m["content"]).unwrap_or_default())
}

fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Deterministic prompt usage: words over all message contents plus one per message.
pub fn prompt_tokens(request: &Value) -> u64 {
    let Some(messages) = request["messages"].as_array() else {
        return 0;
    };
    messages
        .iter()
        .map(|m| 1 + content_text(&m["content"]).map_or(0, |t| word_count(&t)))
        .sum()
}

/// `text` cut into stream fragments: each is one word plus the whitespace after it (leading
/// whitespace stays with the first), so the fragments concatenate back to `text`.
pub fn fragments(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut seen_word = false;
    let mut after_word_space = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            after_word_space |= seen_word;
        } else {
            if after_word_space {
                out.push(&text[start..i]);
                start = i;
                after_word_space = false;
            }
            seen_word = true;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// `text` limited to `max` words, or `None` if it already fits.
pub(super) fn truncate_words(text: &str, max: u64) -> Option<String> {
    if word_count(text) <= max {
        return None;
    }
    let kept: String = fragments(text).into_iter().take(max as usize).collect();
    Some(kept.trim_end().to_owned())
}

/// Argument text cut into (at most) three pieces on character boundaries, as OpenAI streams it.
pub(super) fn argument_pieces(arguments: &str) -> Vec<String> {
    let chars: Vec<char> = arguments.chars().collect();
    let size = chars.len().div_ceil(3).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

// ---------------------------------------------------------------------------------------------
// POST /v1/chat/completions
// ---------------------------------------------------------------------------------------------

enum Answer {
    Text { text: String, finish: &'static str },
    Tools(Vec<(String, String)>),
}

/// What every completion object and chunk repeats.
struct Meta {
    id: String,
    n: u64,
    created: u64,
    model: String,
    include_usage: bool,
}

impl Meta {
    fn call_id(&self, i: usize) -> String {
        format!("call_fake{:010}{i:03}", self.n)
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        });
        if self.include_usage {
            // OpenAI sends `"usage": null` on every chunk once usage was asked for.
            chunk["usage"] = Value::Null;
        }
        sse(&chunk)
    }

    fn usage_chunk(&self, usage: Value) -> Bytes {
        sse(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": [],
            "usage": usage,
        }))
    }
}

fn sse(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion })
}

/// The request body as a JSON object, if it is one (kept bodies only).
fn json_object(body: &BodySummary) -> Option<Value> {
    body.bytes
        .as_deref()
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .filter(Value::is_object)
}

pub(super) fn chat_completions(shared: &Shared, body: &BodySummary) -> HandlerResult {
    let Some(request) = json_object(body) else {
        return Ok(invalid_request(
            "We could not parse the JSON body of your request.",
        ));
    };
    if !request["messages"].is_array() {
        return Ok(invalid_request("Missing required parameter: 'messages'."));
    }
    let queued = shared.scripts.lock().unwrap().pop_front();
    let reply = select_reply(queued, &request);

    let model = request["model"].as_str().unwrap_or_default().to_owned();
    let stream = request["stream"] == true;
    let mut delay = shared.chunk_delay();
    if model.contains("slow") {
        delay = delay.max(SLOW_MODEL_DELAY);
    }
    let n = shared.next_id();
    let meta = Meta {
        id: format!("chatcmpl-fake{n:012}"),
        n,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
        model,
        include_usage: stream && request["stream_options"]["include_usage"] == true,
    };

    let answer = match reply {
        ScriptedReply::Error { status, body } => return Ok(error_response(status, &body, n)),
        ScriptedReply::DropAfter { .. } if !stream => return Err(Abort),
        ScriptedReply::DropAfter { text, chunks } => {
            let out = first_chunks(&meta, &text, chunks);
            return Ok(event_stream(FakeBody::chunks(out, delay).then_abort(), n));
        }
        ScriptedReply::StallAfter { .. } if !stream => {
            return Ok(json_head_then(
                FakeBody::chunks(Vec::new(), delay).then_stall(),
            ));
        }
        ScriptedReply::StallAfter { text, chunks } => {
            let out = first_chunks(&meta, &text, chunks);
            return Ok(event_stream(FakeBody::chunks(out, delay).then_stall(), n));
        }
        ScriptedReply::Filtered(text) => Answer::Text {
            text,
            finish: "content_filter",
        },
        ScriptedReply::Text(text) => {
            let max = request["max_completion_tokens"]
                .as_u64()
                .or(request["max_tokens"].as_u64());
            match max.and_then(|m| truncate_words(&text, m)) {
                Some(cut) => Answer::Text {
                    text: cut,
                    finish: "length",
                },
                None => Answer::Text {
                    text,
                    finish: "stop",
                },
            }
        }
        ScriptedReply::ToolCalls(calls) => Answer::Tools(calls),
        ScriptedReply::Custom(_) => unreachable!("select_reply resolves Custom"),
    };

    let prompt = prompt_tokens(&request);
    let completion = match &answer {
        Answer::Text { text, .. } => word_count(text),
        Answer::Tools(calls) => calls.iter().map(|(_, a)| word_count(a)).sum::<u64>().max(1),
    };
    let usage = usage(prompt, completion);
    if stream {
        Ok(event_stream(
            FakeBody::chunks(stream_chunks(&meta, &answer, usage), delay),
            n,
        ))
    } else {
        let mut resp = json_response(StatusCode::OK, &completion_object(&meta, &answer, usage));
        add_request_id(&mut resp, n);
        Ok(resp)
    }
}

/// The role chunk and the first `chunks` content chunks of `text` (a reply cut short).
fn first_chunks(meta: &Meta, text: &str, chunks: usize) -> Vec<Bytes> {
    let mut out = vec![meta.chunk(
        json!({ "role": "assistant", "content": "", "refusal": null }),
        None,
    )];
    out.extend(
        fragments(text)
            .into_iter()
            .take(chunks)
            .map(|f| meta.chunk(json!({ "content": f }), None)),
    );
    out
}

/// A 200 JSON head over `body`.
fn json_head_then(body: FakeBody) -> Response<FakeBody> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap()
}

fn completion_object(meta: &Meta, answer: &Answer, usage: Value) -> Value {
    let (message, finish) = match answer {
        Answer::Text { text, finish } => (
            json!({ "role": "assistant", "content": text, "refusal": null }),
            *finish,
        ),
        Answer::Tools(calls) => {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, (name, args))| {
                    json!({ "id": meta.call_id(i), "type": "function", "function": { "name": name, "arguments": args } })
                })
                .collect();
            let message = json!({ "role": "assistant", "content": null, "tool_calls": calls, "refusal": null });
            (message, "tool_calls")
        }
    };
    json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish }],
        "usage": usage,
    })
}

/// The SSE events of a streamed answer, `[DONE]` included.
fn stream_chunks(meta: &Meta, answer: &Answer, usage: Value) -> Vec<Bytes> {
    let mut out = Vec::new();
    let finish = match answer {
        Answer::Text { text, finish } => {
            out.push(meta.chunk(
                json!({ "role": "assistant", "content": "", "refusal": null }),
                None,
            ));
            for piece in fragments(text) {
                out.push(meta.chunk(json!({ "content": piece }), None));
            }
            *finish
        }
        Answer::Tools(calls) => {
            for (i, (name, args)) in calls.iter().enumerate() {
                let start = json!({
                    "index": i,
                    "id": meta.call_id(i),
                    "type": "function",
                    "function": { "name": name, "arguments": "" },
                });
                // Like OpenAI, the role rides on the first call's opening chunk.
                let delta = if i == 0 {
                    json!({ "role": "assistant", "content": null, "tool_calls": [start], "refusal": null })
                } else {
                    json!({ "tool_calls": [start] })
                };
                out.push(meta.chunk(delta, None));
                let pieces = if name == code_model::CODE_TOOL {
                    code_model::code_pieces(args)
                } else {
                    argument_pieces(args)
                };
                for piece in pieces {
                    let delta = json!({ "tool_calls": [{ "index": i, "function": { "arguments": piece } }] });
                    out.push(meta.chunk(delta, None));
                }
            }
            "tool_calls"
        }
    };
    out.push(meta.chunk(json!({}), Some(finish)));
    if meta.include_usage {
        out.push(meta.usage_chunk(usage));
    }
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

fn event_stream(body: FakeBody, n: u64) -> Response<FakeBody> {
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap();
    add_request_id(&mut resp, n);
    resp
}

fn add_request_id(resp: &mut Response<FakeBody>, n: u64) {
    let id = HeaderValue::from_str(&format!("req_fake{n:012}")).unwrap();
    resp.headers_mut().insert("x-request-id", id);
}

fn error_response(status: u16, body: &Value, n: u64) -> Response<FakeBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json_response(status, body);
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    add_request_id(&mut resp, n);
    resp
}

fn invalid_request(message: &str) -> Response<FakeBody> {
    json_response(
        StatusCode::BAD_REQUEST,
        &error_body(message, "invalid_request_error", None),
    )
}

// ---------------------------------------------------------------------------------------------
// POST /v1/embeddings
// ---------------------------------------------------------------------------------------------

/// The largest `dimensions` accepted (OpenAI's largest model has 3072).
const MAX_DIMENSIONS: u64 = 16_384;

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: EmbeddingData,
}

/// Serialised through serde (not `json!`) so floats keep their short f32 form.
#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingData {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// Default vector size of a model when the request has no `dimensions`.
pub fn default_dimensions(model: &str) -> usize {
    if model.contains("text-embedding-3-large") {
        3072
    } else {
        1536
    }
}

/// `input` as `(text, token count)` pairs; token-id inputs become words `token<id>`.
fn embedding_inputs(input: &Value) -> Option<Vec<(String, u64)>> {
    let tokens_text = |ids: &[Value]| -> Option<(String, u64)> {
        let ids: Option<Vec<u64>> = ids.iter().map(Value::as_u64).collect();
        let ids = ids?;
        let text = ids
            .iter()
            .map(|t| format!("token{t}"))
            .collect::<Vec<_>>()
            .join(" ");
        Some((text, ids.len() as u64))
    };
    match input {
        Value::String(s) => Some(vec![(s.clone(), word_count(s))]),
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) if items.iter().all(Value::is_string) => Some(
            items
                .iter()
                .map(|s| s.as_str().unwrap_or_default())
                .map(|s| (s.to_owned(), word_count(s)))
                .collect(),
        ),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            Some(vec![tokens_text(items)?])
        }
        Value::Array(items) => items.iter().map(|i| tokens_text(i.as_array()?)).collect(),
        _ => None,
    }
}

/// `POST /v1/embeddings`: deterministic vectors; a model whose name has `error-429` or
/// `error-500` fails so, and one with `stall` answers a head and then nothing.
pub(super) fn embeddings(shared: &Shared, body: &BodySummary) -> Response<FakeBody> {
    let n = shared.next_id();
    let Some(request) = json_object(body) else {
        return invalid_request("We could not parse the JSON body of your request.");
    };
    let model = request["model"].as_str().unwrap_or_default();
    let error = if model.contains("error-429") {
        Some(ScriptedReply::rate_limited())
    } else if model.contains("error-500") {
        Some(ScriptedReply::server_error())
    } else {
        None
    };
    if let Some(ScriptedReply::Error { status, body }) = error {
        return error_response(status, &body, n);
    }
    if model.contains("stall") {
        // The head, then a body that never comes.
        return json_head_then(FakeBody::chunks(Vec::new(), Duration::ZERO).then_stall());
    }
    let Some(inputs) = embedding_inputs(&request["input"]) else {
        return invalid_request("'$.input' is invalid. Please check the API reference.");
    };
    let dims = match &request["dimensions"] {
        Value::Null => default_dimensions(model),
        d => match d.as_u64() {
            Some(d) if (1..=MAX_DIMENSIONS).contains(&d) => d as usize,
            _ => return invalid_request("Invalid value for 'dimensions'."),
        },
    };
    let base64 = request["encoding_format"] == "base64";
    let tokens: u64 = inputs.iter().map(|(_, t)| t).sum();
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, (text, _))| {
            let vector = fake_embedding(text, dims);
            let embedding = if base64 {
                EmbeddingData::Base64(embedding_to_base64(&vector))
            } else {
                EmbeddingData::Float(vector)
            };
            EmbeddingItem {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let list = EmbeddingList {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    };
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(FakeBody::full(serde_json::to_vec(&list).unwrap()))
        .unwrap();
    add_request_id(&mut resp, n);
    resp
}

/// What `encoding_format: "base64"` returns: the little-endian f32 bytes, base64-encoded.
pub fn embedding_to_base64(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// FNV-1a (64 bit): fixed and seedless, so vectors are the same in every process, unlike std's
/// randomised `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// splitmix64's finaliser: derives a second, independent-looking hash from the first.
fn remix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The deterministic embedding the fake returns for `text`: a unit vector whose cosine
/// similarity to another text's grows with the words they share (lowercased, split on
/// non-alphanumerics; each word adds ±1 at two hashed positions). Never the zero vector: a
/// text without words (or whose words cancel out) gets a fixed unit vector, because vector
/// indexes such as Cassandra's reject zero vectors for cosine similarity.
pub fn fake_embedding(text: &str, dims: usize) -> Vec<f32> {
    let dims = dims.max(1);
    let mut v = vec![0f32; dims];
    let slot = |h: u64| {
        (
            (h % dims as u64) as usize,
            if h >> 63 == 0 { 1.0 } else { -1.0 },
        )
    };
    for word in text
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let h = fnv1a(word.as_bytes());
        let (i1, s1) = slot(h);
        let (i2, mut s2) = slot(remix(h));
        if i2 == i1 {
            // Same position: same sign, so a single word can never cancel itself out.
            s2 = s1;
        }
        v[i1] += s1;
        v[i2] += s2;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm < 1e-6 {
        return vec![1.0 / (dims as f32).sqrt(); dims];
    }
    v.iter_mut().for_each(|x| *x /= norm);
    v
}
