//! Self-tests of the fake upstream: the pure parts directly, the routes over real sockets with a
//! bare hyper client (no proxy involved), so a proxy test failure can't be the fake's fault.

use super::code_model::{CODE_PIECE_CHARS, tool_messages_since_user};
use super::openai::{
    argument_pieces, embedding_to_base64, fragments, prompt_tokens, truncate_words,
};
use super::*;

use base64::Engine as _;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// Pure parts
// ---------------------------------------------------------------------------------------------

fn chat(model: &str, messages: Value) -> Value {
    json!({ "model": model, "messages": messages })
}

fn text_of(reply: ScriptedReply) -> String {
    match reply {
        ScriptedReply::Text(t) => t,
        other => panic!("expected text, got {other:?}"),
    }
}

fn weather_tools() -> Value {
    json!([
        { "type": "function", "function": { "name": "get_weather", "parameters": { "type": "object" } } },
        { "type": "function", "function": { "name": "get_time", "parameters": { "type": "object" } } },
    ])
}

#[test]
fn default_reply_echoes_the_last_user_message() {
    let req = chat(
        "gpt-4o-mini",
        json!([
            { "role": "system", "content": "be brief" },
            { "role": "user", "content": "first" },
            { "role": "assistant", "content": "ok" },
            { "role": "user", "content": [{ "type": "text", "text": "second" }, { "type": "image_url", "image_url": {} }, { "type": "text", "text": "part" }] },
        ]),
    );
    assert_eq!(text_of(select_reply(None, &req)), "Echo: second part");
    let no_user = chat("gpt-4o-mini", json!([{ "role": "system", "content": "x" }]));
    assert_eq!(text_of(select_reply(None, &no_user)), openai::NO_USER_TEXT);
}

#[test]
fn queued_reply_wins_and_custom_sees_the_request() {
    let req = chat("error-429", json!([{ "role": "user", "content": "hi" }]));
    assert_eq!(
        text_of(select_reply(Some(ScriptedReply::text("scripted")), &req)),
        "scripted"
    );
    let custom = ScriptedReply::custom(|r| {
        // Nested Custom is resolved too.
        let model = r["model"].as_str().unwrap().to_owned();
        ScriptedReply::custom(move |_| ScriptedReply::text(format!("model was {model}")))
    });
    assert_eq!(
        text_of(select_reply(Some(custom), &req)),
        "model was error-429"
    );
}

#[test]
fn model_names_select_behaviours() {
    let msgs = json!([{ "role": "user", "content": "hi there" }]);
    match select_reply(None, &chat("x-error-429", msgs.clone())) {
        ScriptedReply::Error { status: 429, body } => {
            assert_eq!(body["error"]["type"], "requests");
            assert_eq!(body["error"]["code"], "rate_limit_exceeded");
            assert_eq!(body["error"]["param"], Value::Null);
        }
        other => panic!("{other:?}"),
    }
    match select_reply(None, &chat("x-error-500", msgs.clone())) {
        ScriptedReply::Error { status: 500, body } => {
            assert_eq!(body["error"]["type"], "server_error")
        }
        other => panic!("{other:?}"),
    }
    match select_reply(None, &chat("gpt-drop", msgs.clone())) {
        ScriptedReply::DropAfter { text, chunks: 3 } => assert_eq!(text, "Echo: hi there"),
        other => panic!("{other:?}"),
    }
    // `slow` only paces; the reply is the default.
    assert_eq!(
        text_of(select_reply(None, &chat("slow-model", msgs))),
        "Echo: hi there"
    );
}

#[test]
fn tool_call_model_calls_tools_then_summarises_results() {
    let mut req = chat(
        "fake-tool-call",
        json!([{ "role": "user", "content": "weather in \"Paris\"" }]),
    );
    // No tools offered: plain text.
    assert_eq!(
        text_of(select_reply(None, &req)),
        "Echo: weather in \"Paris\""
    );

    req["tools"] = weather_tools();
    let args = r#"{"input":"weather in \"Paris\""}"#;
    match select_reply(None, &req) {
        ScriptedReply::ToolCalls(calls) => {
            assert_eq!(calls, vec![("get_weather".to_owned(), args.to_owned())])
        }
        other => panic!("{other:?}"),
    }
    req["model"] = json!("fake-tool-call-parallel");
    match select_reply(None, &req) {
        ScriptedReply::ToolCalls(calls) => {
            let names: Vec<_> = calls.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["get_weather", "get_time"]);
        }
        other => panic!("{other:?}"),
    }
    req["tool_choice"] = json!({ "type": "function", "function": { "name": "get_time" } });
    match select_reply(None, &req) {
        ScriptedReply::ToolCalls(calls) => assert_eq!(calls[0].0, "get_time"),
        other => panic!("{other:?}"),
    }
    req["tool_choice"] = json!("none");
    assert!(matches!(select_reply(None, &req), ScriptedReply::Text(_)));

    req["messages"] = json!([
        { "role": "user", "content": "weather?" },
        { "role": "assistant", "content": null, "tool_calls": [] },
        { "role": "tool", "tool_call_id": "a", "content": "sunny" },
        { "role": "tool", "tool_call_id": "b", "content": [{ "type": "text", "text": "12:00" }] },
    ]);
    assert_eq!(
        text_of(select_reply(None, &req)),
        "Tool results: sunny; 12:00"
    );
}

fn code_tools() -> Value {
    json!([
        { "type": "function", "function": { "name": "get_time", "parameters": { "type": "object" } } },
        { "type": "function", "function": { "name": "code_interpreter", "parameters": {
            "type": "object", "properties": { "code": { "type": "string" } }, "required": ["code"] } } },
    ])
}

/// The `code` argument of each call of a `ToolCalls` reply (asserting they call code_interpreter).
fn codes_of(reply: ScriptedReply) -> Vec<String> {
    match reply {
        ScriptedReply::ToolCalls(calls) => calls
            .into_iter()
            .map(|(name, args)| {
                assert_eq!(name, CODE_TOOL);
                let args: Value = serde_json::from_str(&args).unwrap();
                assert_eq!(args.as_object().unwrap().len(), 1, "{args}");
                args["code"].as_str().unwrap().to_owned()
            })
            .collect(),
        other => panic!("expected code_interpreter calls, got {other:?}"),
    }
}

const TWO_BLOCKS: &str = "Run these:\n```python\nx = 6 * 7\nprint(x)\n```\nthen\n```\nx + 1\n```\n";

#[test]
fn code_blocks_are_the_fenced_blocks_in_order() {
    assert_eq!(code_blocks(TWO_BLOCKS), ["x = 6 * 7\nprint(x)", "x + 1"]);
    assert_eq!(
        code_blocks("inline ```print(1)``` and ```py\r\na\r\n```"),
        ["print(1)", "a"]
    );
    // A tag not followed by a line break is code; an unclosed fence is not a block.
    assert_eq!(code_blocks("```x=1``` ```y = 2"), ["x=1"]);
    assert_eq!(code_blocks("```python\n```"), [""]);
    assert!(code_blocks("no code here").is_empty());
    assert_eq!(
        code_blocks("```\nprint(\"a\\tb\")\n```"),
        ["print(\"a\\tb\")"]
    );
}

#[test]
fn code_interpreter_model_runs_one_block_per_turn_then_summarises() {
    let mut req = chat(
        "fake-code-interpreter",
        json!([
            { "role": "user", "content": "earlier ```print('old')```" },
            { "role": "assistant", "content": "ok" },
            { "role": "user", "content": [{ "type": "text", "text": TWO_BLOCKS }] },
        ]),
    );
    // The code_interpreter function is not offered: the default echo.
    assert_eq!(
        text_of(select_reply(None, &req)),
        format!("Echo: {TWO_BLOCKS}")
    );
    req["tools"] = code_tools();
    assert_eq!(codes_of(select_reply(None, &req)), ["x = 6 * 7\nprint(x)"]);
    assert_eq!(tool_messages_since_user(&req), 0);

    // k = tool messages after the last user message (the older ones do not count).
    let messages = req["messages"].as_array_mut().unwrap();
    messages.insert(
        1,
        json!({ "role": "tool", "tool_call_id": "old", "content": "old" }),
    );
    messages.push(json!({ "role": "assistant", "content": null, "tool_calls": [] }));
    messages.push(json!({ "role": "tool", "tool_call_id": "a", "content": "42\n" }));
    assert_eq!(tool_messages_since_user(&req), 1);
    assert_eq!(codes_of(select_reply(None, &req)), ["x + 1"]);

    let messages = req["messages"].as_array_mut().unwrap();
    messages.push(json!({ "role": "assistant", "content": null, "tool_calls": [] }));
    messages.push(json!({ "role": "tool", "tool_call_id": "b", "content": "43" }));
    assert_eq!(text_of(select_reply(None, &req)), "Tool results: 43");

    // No blocks at all: the echo, even with the tool offered.
    let mut plain = chat(
        "fake-code-interpreter",
        json!([{ "role": "user", "content": "hi" }]),
    );
    plain["tools"] = code_tools();
    assert_eq!(text_of(select_reply(None, &plain)), "Echo: hi");
}

#[test]
fn code_interpreter_model_parallel_forced_and_none() {
    let mut req = chat(
        "fake-code-interpreter-parallel",
        json!([{ "role": "user", "content": format!("{TWO_BLOCKS} ```z = 3```") }]),
    );
    req["tools"] = code_tools();
    assert_eq!(
        codes_of(select_reply(None, &req)),
        ["x = 6 * 7\nprint(x)", "x + 1", "z = 3"]
    );
    // Remaining blocks only, all in one turn; the trailing results are summarised together.
    let messages = req["messages"].as_array_mut().unwrap();
    messages.push(json!({ "role": "assistant", "content": null, "tool_calls": [] }));
    messages.push(json!({ "role": "tool", "tool_call_id": "a", "content": "42" }));
    assert_eq!(codes_of(select_reply(None, &req)), ["x + 1", "z = 3"]);
    req["parallel_tool_calls"] = json!(false);
    assert_eq!(codes_of(select_reply(None, &req)), ["x + 1"]);
    let messages = req["messages"].as_array_mut().unwrap();
    messages.push(json!({ "role": "tool", "tool_call_id": "b", "content": "43" }));
    messages.push(json!({ "role": "tool", "tool_call_id": "c", "content": "" }));
    assert_eq!(text_of(select_reply(None, &req)), "Tool results: 42; 43; ");

    let mut req = chat(
        "fake-code-interpreter",
        json!([{ "role": "user", "content": TWO_BLOCKS }]),
    );
    req["tools"] = code_tools();
    req["tool_choice"] = json!({ "type": "function", "function": { "name": "code_interpreter" } });
    assert_eq!(codes_of(select_reply(None, &req)), ["x = 6 * 7\nprint(x)"]);
    req["tool_choice"] = json!("required");
    assert_eq!(codes_of(select_reply(None, &req)), ["x = 6 * 7\nprint(x)"]);
    // Another function forced, or "none": no code runs.
    req["tool_choice"] = json!({ "type": "function", "function": { "name": "get_time" } });
    assert_eq!(
        text_of(select_reply(None, &req)),
        format!("Echo: {TWO_BLOCKS}")
    );
    req["tool_choice"] = json!("none");
    assert_eq!(
        text_of(select_reply(None, &req)),
        format!("Echo: {TWO_BLOCKS}")
    );
    req["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "role": "tool", "tool_call_id": "a", "content": "42" }));
    assert_eq!(text_of(select_reply(None, &req)), "Tool results: 42");
}

#[test]
fn code_pieces_are_small_and_cut_inside_escapes() {
    let args = json!({ "code": "print(\"hé\")\nx = '\u{1}'" }).to_string();
    assert!(args.contains("\\u0001"), "{args}");
    let pieces = code_pieces(&args);
    assert_eq!(pieces.concat(), args);
    assert!(
        pieces.len() >= args.chars().count() / CODE_PIECE_CHARS,
        "{pieces:?}"
    );
    assert!(
        pieces
            .iter()
            .all(|p| !p.is_empty() && p.chars().count() <= CODE_PIECE_CHARS)
    );
    // 12-character pieces, plus a cut after the backslash of the first escape (`\"`) and one
    // inside `\u0001`.
    assert_eq!(
        pieces,
        [
            r#"{"code":"pri"#,
            r#"nt(\"#,
            r#""hé\")\n"#,
            r#"x = '\u00"#,
            "01'",
            r#""}"#
        ]
    );
    // Without escapes: plain 12-character pieces.
    let plain = code_pieces(r#"{"code":"print(12345)"}"#);
    assert_eq!(plain, [r#"{"code":"pri"#, r#"nt(12345)"}"#]);
    assert_eq!(code_pieces(""), [""]);
}

#[test]
fn json_response_format_replies_with_a_json_object() {
    for format in [
        json!({ "type": "json_object" }),
        json!({ "type": "json_schema", "json_schema": {} }),
    ] {
        let mut req = chat(
            "gpt-4o",
            json!([{ "role": "user", "content": "say \"hi\"" }]),
        );
        req["response_format"] = format;
        let text = text_of(select_reply(None, &req));
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, json!({ "echo": "say \"hi\"" }));
    }
}

#[test]
fn fragments_usage_and_truncation() {
    assert_eq!(
        fragments("Echo: hello  big\nworld"),
        ["Echo: ", "hello  ", "big\n", "world"]
    );
    assert_eq!(fragments("  lead trail "), ["  lead ", "trail "]);
    assert!(fragments("").is_empty());
    assert_eq!(truncate_words("a b c d", 2).as_deref(), Some("a b"));
    assert_eq!(truncate_words("a b", 2), None);
    let req = chat(
        "m",
        json!([
            { "role": "system", "content": "one two" },
            { "role": "user", "content": [{ "type": "text", "text": "three four five" }] },
            { "role": "assistant", "content": null },
        ]),
    );
    assert_eq!(prompt_tokens(&req), 2 + 1 + 3 + 1 + 1);
    assert_eq!(
        argument_pieces(r#"{"input":"é"}"#).concat(),
        r#"{"input":"é"}"#
    );
    assert_eq!(argument_pieces(r#"{"input":"é"}"#).len(), 3);
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn embeddings_are_deterministic_unit_vectors_that_track_shared_words() {
    let a = fake_embedding("Cats like milk", 1536);
    assert_eq!(a, fake_embedding("cats LIKE milk!", 1536));
    assert_eq!(a.len(), 1536);
    assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
    let close = fake_embedding("milk for cats", 1536);
    let far = fake_embedding("stock market report", 1536);
    assert!(
        cosine(&a, &close) > cosine(&a, &far) + 0.3,
        "{} vs {}",
        cosine(&a, &close),
        cosine(&a, &far)
    );
    // Stable across processes, builds and platforms (tests may hard-code rankings): pin values.
    let h = std::f32::consts::FRAC_1_SQRT_2;
    assert_eq!(
        fake_embedding("hello", 8),
        [0.0, 0.0, 0.0, -h, 0.0, 0.0, 0.0, h]
    );
    // "world" hits slot 3 with the opposite sign: the shared slot cancels.
    assert_eq!(
        fake_embedding("hello world", 8),
        [0.0, 0.0, 0.0, 0.0, 0.0, h, 0.0, h]
    );
    for text in ["", "  ,;! ", "x"] {
        for dims in [1, 2, 3, 64] {
            let v = fake_embedding(text, dims);
            assert_eq!(v.len(), dims);
            assert!((cosine(&v, &v) - 1.0).abs() < 1e-5, "{text:?} {dims}");
        }
    }
}

#[test]
fn base64_embeddings_decode_to_the_same_floats() {
    let v = fake_embedding("round trip", 256);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(embedding_to_base64(&v))
        .unwrap();
    let back: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(back, v);
}

#[test]
fn byte_stream_does_not_depend_on_chunking() {
    let mut whole = vec![0u8; 1000];
    ByteStream::new(7).fill(&mut whole);
    let mut pieces = Vec::new();
    let mut s = ByteStream::new(7);
    for size in [3usize, 1, 8, 13, 0, 975] {
        let mut buf = vec![0u8; size];
        s.fill(&mut buf);
        pieces.extend(buf);
    }
    assert_eq!(pieces, whole);
    assert_ne!(whole, {
        let mut other = vec![0u8; 1000];
        ByteStream::new(8).fill(&mut other);
        other
    });
}

// ---------------------------------------------------------------------------------------------
// Over the wire
// ---------------------------------------------------------------------------------------------

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn h1(addr: SocketAddr) -> (Sender, tokio::task::JoinHandle<()>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    (sender, task)
}

fn request(method: &str, path: &str, body: Option<&Value>) -> hyper::Request<Full<Bytes>> {
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "fake")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .unwrap()
}

/// One request on a fresh h1 connection: status, headers, whole body.
async fn call(
    fake: &FakeUpstream,
    req: hyper::Request<Full<Bytes>>,
) -> (StatusCode, HeaderMap, Bytes) {
    let (mut sender, _task) = h1(fake.addr()).await;
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

async fn post_json(fake: &FakeUpstream, path: &str, body: Value) -> (StatusCode, HeaderMap, Value) {
    let (status, headers, bytes) = call(fake, request("POST", path, Some(&body))).await;
    (status, headers, serde_json::from_slice(&bytes).unwrap())
}

/// SSE body → the JSON of each `data:` event, `[DONE]` as the string "[DONE]".
fn sse_events(body: &[u8]) -> Vec<Value> {
    std::str::from_utf8(body)
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data event: {e:?}"));
            if data == "[DONE]" {
                json!("[DONE]")
            } else {
                serde_json::from_str(data).unwrap()
            }
        })
        .collect()
}

/// Raw HTTP/1.1 exchange: the head as text and the body (by Content-Length, else to EOF).
async fn raw_http(addr: SocketAddr, request: &[u8]) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            });
            let mut body = buf[end + 4..].to_vec();
            while len.is_none_or(|l| body.len() < l) {
                let n = stream.read(&mut tmp).await.unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&tmp[..n]);
            }
            return (head, body);
        }
        let n = stream.read(&mut tmp).await.unwrap();
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&tmp[..n]);
    }
}

#[tokio::test]
async fn chat_completion_non_streaming_shape() {
    let fake = FakeUpstream::start().await;
    let body = json!({ "model": "gpt-4o-mini", "max_tokens": 3, "messages": [
        { "role": "system", "content": "be nice" },
        { "role": "user", "content": "one two three four" },
    ]});
    let (status, headers, resp) = post_json(&fake, "/v1/chat/completions", body.clone()).await;
    assert_eq!(status, 200);
    assert!(
        headers["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    assert!(resp["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(resp["object"], "chat.completion");
    assert_eq!(resp["model"], "gpt-4o-mini");
    assert!(resp["created"].as_u64().unwrap() > 1_600_000_000);
    let choice = &resp["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(
        choice["message"],
        json!({ "role": "assistant", "content": "Echo: one two", "refusal": null })
    );
    assert_eq!(choice["finish_reason"], "length");
    assert_eq!(choice["logprobs"], Value::Null);
    assert_eq!(
        resp["usage"],
        json!({ "prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11 })
    );
    assert_eq!(fake.chat_requests(), vec![body]);

    // Non-streamed tool calls.
    fake.push_chat_script(ScriptedReply::ToolCalls(vec![
        ("f".into(), "{}".into()),
        ("g".into(), r#"{"a":1}"#.into()),
    ]));
    let (_, _, resp) = post_json(
        &fake,
        "/v1/chat/completions",
        json!({ "model": "m", "messages": [] }),
    )
    .await;
    let message = &resp["choices"][0]["message"];
    assert_eq!(resp["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["tool_calls"][1]["type"], "function");
    assert_eq!(
        message["tool_calls"][1]["function"],
        json!({ "name": "g", "arguments": r#"{"a":1}"# })
    );
    assert!(
        message["tool_calls"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("call_")
    );
    assert_ne!(
        message["tool_calls"][0]["id"],
        message["tool_calls"][1]["id"]
    );
}

#[tokio::test]
async fn chat_stream_text_chunks_are_exact_and_paced() {
    let fake = FakeUpstream::start().await;
    fake.set_chunk_delay(Duration::from_millis(30));
    let body = json!({ "model": "gpt-4o", "stream": true, "stream_options": { "include_usage": true },
        "messages": [{ "role": "user", "content": "hello big world" }] });
    let (mut sender, _task) = h1(fake.addr()).await;
    let started = std::time::Instant::now();
    let resp = sender
        .send_request(request("POST", "/v1/chat/completions", Some(&body)))
        .await
        .unwrap();
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/event-stream; charset=utf-8"
    );
    let mut body = resp.into_body();
    let mut all = Vec::new();
    let mut frames = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            frames += 1;
            all.extend_from_slice(&data);
        }
    }
    let events = sse_events(&all);
    // role, 4 words, finish, usage, [DONE]
    assert_eq!(events.len(), 8);
    assert!(started.elapsed() >= Duration::from_millis(7 * 30));
    assert!(frames > 1, "chunks must not be buffered into one write");
    let id = events[0]["id"].clone();
    for e in &events[..6] {
        assert_eq!(e["object"], "chat.completion.chunk");
        assert_eq!(e["id"], id);
        assert_eq!(e["model"], "gpt-4o");
        assert_eq!(e["usage"], Value::Null);
        assert!(
            e.get("usage").is_some(),
            "usage: null is present when include_usage"
        );
        assert_eq!(e["choices"][0]["index"], 0);
        assert_eq!(e["choices"][0]["logprobs"], Value::Null);
    }
    assert_eq!(
        events[0]["choices"][0]["delta"],
        json!({ "role": "assistant", "content": "", "refusal": null })
    );
    let words: Vec<_> = events[1..5]
        .iter()
        .map(|e| e["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(words, ["Echo: ", "hello ", "big ", "world"]);
    assert_eq!(events[1]["choices"][0]["finish_reason"], Value::Null);
    assert_eq!(events[5]["choices"][0]["delta"], json!({}));
    assert_eq!(events[5]["choices"][0]["finish_reason"], "stop");
    assert_eq!(events[6]["choices"], json!([]));
    assert_eq!(
        events[6]["usage"],
        json!({ "prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8 })
    );
    assert_eq!(events[7], "[DONE]");
}

#[tokio::test]
async fn chat_stream_parallel_tool_calls_have_openai_chunk_shapes() {
    let fake = FakeUpstream::start().await;
    let body = json!({ "model": "fake-tool-call-parallel", "stream": true,
        "messages": [{ "role": "user", "content": "weather in Paris" }], "tools": weather_tools() });
    let (status, _, bytes) =
        call(&fake, request("POST", "/v1/chat/completions", Some(&body))).await;
    assert_eq!(status, 200);
    let events = sse_events(&bytes);
    let args = r#"{"input":"weather in Paris"}"#;
    let deltas: Vec<&Value> = events[..events.len() - 1]
        .iter()
        .map(|e| &e["choices"][0]["delta"])
        .collect();
    // role+call 0, 3 argument pieces, call 1, 3 pieces, finish, [DONE]
    assert_eq!(events.len(), 10);
    assert!(
        events.iter().all(|e| e.get("usage").is_none()),
        "no usage key without include_usage"
    );
    let call0 = &deltas[0]["tool_calls"][0];
    assert_eq!(deltas[0]["role"], "assistant");
    assert_eq!(deltas[0]["content"], Value::Null);
    assert_eq!(call0["index"], 0);
    assert_eq!(call0["type"], "function");
    assert_eq!(
        call0["function"],
        json!({ "name": "get_weather", "arguments": "" })
    );
    assert!(call0["id"].as_str().unwrap().starts_with("call_"));
    let call1 = &deltas[4]["tool_calls"][0];
    assert_eq!(
        deltas[4].as_object().unwrap().len(),
        1,
        "later calls carry only tool_calls"
    );
    assert_eq!(call1["index"], 1);
    assert_eq!(call1["function"]["name"], "get_time");
    assert_ne!(call1["id"], call0["id"]);
    for (first, index) in [(1, 0), (5, 1)] {
        let mut joined = String::new();
        for d in &deltas[first..first + 3] {
            let piece = &d["tool_calls"][0];
            assert_eq!(piece.as_object().unwrap().len(), 2, "{piece}");
            assert_eq!(piece["index"], index);
            joined.push_str(piece["function"]["arguments"].as_str().unwrap());
        }
        assert_eq!(joined, args);
    }
    assert_eq!(events[8]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(events[9], "[DONE]");

    // Then the tool results come back.
    let body = json!({ "model": "fake-tool-call", "messages": [
        { "role": "user", "content": "weather in Paris" },
        { "role": "assistant", "tool_calls": [] },
        { "role": "tool", "tool_call_id": "x", "content": "sunny" },
    ], "tools": weather_tools() });
    let (_, _, resp) = post_json(&fake, "/v1/chat/completions", body).await;
    assert_eq!(
        resp["choices"][0]["message"]["content"],
        "Tool results: sunny"
    );
}

#[tokio::test]
async fn code_interpreter_call_streams_its_arguments_in_small_pieces() {
    let fake = FakeUpstream::start().await;
    let code = "import math\nprint(\"r =\", math.sqrt(2))";
    let mut body = json!({ "model": "fake-code-interpreter", "stream": true, "tools": code_tools(),
        "messages": [{ "role": "user", "content": format!("```python\n{code}\n```") }] });
    let (status, _, bytes) =
        call(&fake, request("POST", "/v1/chat/completions", Some(&body))).await;
    assert_eq!(status, 200);
    let events = sse_events(&bytes);
    let args = json!({ "code": code }).to_string();
    let start = &events[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(
        start["function"],
        json!({ "name": "code_interpreter", "arguments": "" })
    );
    let pieces: Vec<&str> = events[1..events.len() - 2]
        .iter()
        .map(|e| {
            e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(pieces, code_pieces(&args));
    assert!(pieces.len() > 3, "{pieces:?}");
    assert_eq!(pieces.concat(), args);
    assert_eq!(
        events[events.len() - 2]["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // Not streamed: the whole call at once.
    body["stream"] = json!(false);
    let (_, _, resp) = post_json(&fake, "/v1/chat/completions", body).await;
    let message = &resp["choices"][0]["message"];
    assert_eq!(
        message["tool_calls"][0]["function"]["name"],
        "code_interpreter"
    );
    assert_eq!(message["tool_calls"][0]["function"]["arguments"], args);
    assert_eq!(resp["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn scripted_replies_are_fifo_and_errors_use_the_openai_envelope() {
    let fake = FakeUpstream::start().await;
    fake.push_chat_script(ScriptedReply::text("first"));
    fake.push_chat_script(ScriptedReply::rate_limited());
    let req = json!({ "model": "gpt-4o", "messages": [{ "role": "user", "content": "x" }] });
    let (_, _, a) = post_json(&fake, "/v1/chat/completions", req.clone()).await;
    assert_eq!(a["choices"][0]["message"]["content"], "first");
    let (status, headers, b) = post_json(&fake, "/v1/chat/completions", req.clone()).await;
    assert_eq!(status, 429);
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert_eq!(b["error"]["code"], "rate_limit_exceeded");
    let (_, _, c) = post_json(&fake, "/v1/chat/completions", req).await;
    assert_eq!(c["choices"][0]["message"]["content"], "Echo: x");

    let (status, _, e) = post_json(
        &fake,
        "/v1/chat/completions",
        json!({ "model": "x-error-500", "messages": [] }),
    )
    .await;
    assert_eq!(
        (status.as_u16(), e["error"]["type"].as_str()),
        (500, Some("server_error"))
    );
    let (status, headers, _) = post_json(
        &fake,
        "/v1/embeddings",
        json!({ "model": "error-429", "input": "a" }),
    )
    .await;
    assert_eq!(
        (status.as_u16(), &headers[header::RETRY_AFTER]),
        (429, &HeaderValue::from_static("1"))
    );

    let (status, _, e) = post_json(&fake, "/v1/nope", json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(
        e,
        json!({ "error": { "message": "Invalid URL (POST /v1/nope)", "type": "invalid_request_error", "param": null, "code": null } })
    );
    let (status, _, _) = call(&fake, request("GET", "/v1/chat/completions", None)).await;
    assert_eq!(status, 404);
    let (status, _, bad) = call(&fake, request("POST", "/v1/chat/completions", None)).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&bad).contains("invalid_request_error"));
}

#[tokio::test]
async fn drop_model_cuts_the_connection() {
    let fake = FakeUpstream::start().await;
    let body = json!({ "model": "gpt-drop", "stream": true, "messages": [{ "role": "user", "content": "a b c d e f" }] });
    let (mut sender, _task) = h1(fake.addr()).await;
    let resp = sender
        .send_request(request("POST", "/v1/chat/completions", Some(&body)))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut all = Vec::new();
    let mut failed = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => all.extend_from_slice(&f.into_data().unwrap_or_default()),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body must end in an error, not cleanly");
    let events = sse_events(&all);
    assert_eq!(events.len(), 4, "role chunk + 3 content chunks");
    assert_eq!(events[3]["choices"][0]["delta"]["content"], "b ");
    assert!(
        fake.wait_for_connection_closed(Duration::from_secs(5))
            .await
    );

    // Not streaming: the connection closes with no response at all.
    let body = json!({ "model": "gpt-drop", "messages": [{ "role": "user", "content": "hi" }] });
    let (mut sender, _task) = h1(fake.addr()).await;
    assert!(
        sender
            .send_request(request("POST", "/v1/chat/completions", Some(&body)))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn embeddings_over_http() {
    let fake = FakeUpstream::start().await;
    let (status, _, resp) = post_json(
        &fake,
        "/v1/embeddings",
        json!({ "model": "text-embedding-3-large", "input": ["cats like milk", ""] }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(resp["object"], "list");
    assert_eq!(resp["model"], "text-embedding-3-large");
    assert_eq!(
        resp["usage"],
        json!({ "prompt_tokens": 3, "total_tokens": 3 })
    );
    assert_eq!(resp["data"][1]["index"], 1);
    assert_eq!(resp["data"][0]["object"], "embedding");
    let v: Vec<f32> = serde_json::from_value(resp["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(v, fake_embedding("cats like milk", 3072));

    let (_, _, resp) = post_json(
        &fake,
        "/v1/embeddings",
        json!({ "model": "text-embedding-3-small", "input": [[1, 2], [3]], "dimensions": 64, "encoding_format": "base64" }),
    )
    .await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(resp["data"][1]["embedding"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes.len(), 64 * 4);
    assert_eq!(resp["usage"]["prompt_tokens"], 3);
    let (status, _, _) = post_json(
        &fake,
        "/v1/embeddings",
        json!({ "model": "m", "input": [] }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(fake.embedding_requests().len(), 3);
}

#[tokio::test]
async fn echo_reports_the_raw_request() {
    let fake = FakeUpstream::start().await;
    let raw = b"POST /echo/a%20b/%E2%82%AC?x=1&y=%2F HTTP/1.1\r\nHost: fake\r\nX-Dup: one\r\nX-Other: o\r\nX-Dup: two\r\n\
X-Bin: caf\xe9\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trail: t\r\n\r\n";
    let (head, body) = raw_http(fake.addr(), raw).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo/a%20b/%E2%82%AC");
    assert_eq!(echo["query"], "x=1&y=%2F");
    assert_eq!(echo["version"], "HTTP/1.1");
    let headers = echo["headers"].as_array().unwrap();
    let dups: Vec<_> = headers
        .iter()
        .filter(|h| h[0] == "x-dup")
        .map(|h| h[1].as_str().unwrap())
        .collect();
    assert_eq!(dups, ["one", "two"]);
    let bin = echo["headers_raw_hex"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "x-bin")
        .unwrap();
    assert_eq!(bin[1], "636166e9");
    assert_eq!(echo["body_len"], 11);
    assert_eq!(
        echo["body_sha256"],
        hex::encode(Sha256::digest(b"hello world"))
    );
    assert_eq!(echo["trailers"], json!([["x-trail", "t"]]));

    let recorded = fake.requests();
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.query.as_deref()),
        ("POST", "/echo/a%20b/%E2%82%AC", Some("x=1&y=%2F"))
    );
    assert_eq!(r.body.as_deref(), Some(&b"hello world"[..]));
    assert!(
        r.headers
            .contains(&("x-bin".to_owned(), b"caf\xe9".to_vec()))
    );
    assert_eq!(r.trailers, vec![("x-trail".to_owned(), b"t".to_vec())]);

    // Large bodies are hashed, not kept.
    let big = vec![b'x'; MAX_KEPT_BODY + 1];
    let req = hyper::Request::post("/echo/big")
        .header(header::HOST, "f")
        .body(Full::new(Bytes::from(big.clone())))
        .unwrap();
    let (_, _, body) = call(&fake, req).await;
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["body_sha256"], hex::encode(Sha256::digest(&big)));
    assert!(fake.requests()[1].body.is_none());
    assert_eq!(fake.requests()[1].body_len, big.len() as u64);

    fake.set_recording(false);
    call(&fake, request("GET", "/echo", None)).await;
    assert_eq!(fake.requests().len(), 2);
    assert_eq!(fake.request_count(), 3);
}

#[tokio::test]
async fn bytes_stream_matches_bytes_sha() {
    let fake = FakeUpstream::start().await;
    let n = 3 * 1024 * 1024 + 7;
    let (_, _, sha) = call(
        &fake,
        request("GET", &format!("/bytes-sha?n={n}&seed=42"), None),
    )
    .await;
    for query in ["", "&chunked=1", "&chunk=1000", "&chunked=1&chunk=65537"] {
        let (status, headers, body) = call(
            &fake,
            request("GET", &format!("/bytes?n={n}&seed=42{query}"), None),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body.len(), n);
        assert_eq!(
            hex::encode(Sha256::digest(&body)).as_bytes(),
            &sha[..],
            "{query}"
        );
        let chunked = headers.get(header::TRANSFER_ENCODING).is_some();
        assert_eq!(chunked, query.contains("chunked=1"), "{query}");
        assert_eq!(headers.get(header::CONTENT_LENGTH).is_some(), !chunked);
    }
    let (_, _, other) = call(
        &fake,
        request("GET", &format!("/bytes-sha?n={n}&seed=43"), None),
    )
    .await;
    assert_ne!(other, sha);
}

#[tokio::test]
async fn trailers_arrive_over_h1_with_te_and_over_h2() {
    let fake = FakeUpstream::start().await;
    let expected = hex::encode(Sha256::digest(TRAILERS_BODY.concat().as_bytes()));

    let mut req = request("GET", "/trailers", None);
    req.headers_mut()
        .insert(header::TE, HeaderValue::from_static("trailers"));
    let (mut sender, _task) = h1(fake.addr()).await;
    let collected = sender
        .send_request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    let trailers = collected.trailers().cloned().expect("h1 trailers");
    assert_eq!(trailers["x-checksum"], expected.as_str());
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), TRAILERS_BODY.concat());

    // Without `TE: trailers`, hyper's h1 server silently leaves them out.
    let (mut sender, _task) = h1(fake.addr()).await;
    let collected = sender
        .send_request(request("GET", "/trailers", None))
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert!(collected.trailers().is_none());

    // h2c with prior knowledge.
    let stream = TcpStream::connect(fake.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("{}/trailers", fake.url()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(
        collected.trailers().unwrap()["x-checksum"],
        expected.as_str()
    );
    assert_eq!(fake.requests()[2].version, "HTTP/2.0");
}

#[tokio::test]
async fn hop_headers_are_sent_over_h1() {
    let fake = FakeUpstream::start().await;
    let (head, body) = raw_http(fake.addr(), b"GET /hop HTTP/1.1\r\nHost: fake\r\n\r\n").await;
    assert_eq!(body, b"hop\n");
    let lower = head.to_ascii_lowercase();
    for line in [
        "connection: x-hop-custom, keep-alive",
        "x-hop-custom: 1",
        "keep-alive: timeout=5",
        "proxy-connection: keep-alive",
        "proxy-authenticate: basic",
        "upgrade: h2c",
        "x-end-to-end: yes\r\n",
        "x-end-to-end: yes-again",
        "set-cookie: a=1; path=/",
        "set-cookie: b=2; path=/",
    ] {
        assert!(lower.contains(line), "missing {line:?} in\n{head}");
    }
}

#[tokio::test]
async fn status_sse_and_slow_routes() {
    let fake = FakeUpstream::start().await;
    let (status, headers, body) = call(&fake, request("POST", "/status/503", None)).await;
    assert_eq!(status, 503);
    assert_eq!(headers["x-fake-status"], "503");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["message"], "fake error");
    let (status, _, body) = call(&fake, request("GET", "/status/204", None)).await;
    assert_eq!((status.as_u16(), body.len()), (204, 0));

    let (_, headers, body) = call(&fake, request("GET", "/sse?n=5&interval_ms=10", None)).await;
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
    let events = sse_events(&body);
    assert_eq!(events.len(), 6);
    assert_eq!(events[4]["i"], 4);
    let gap = events[4]["sent_us"].as_u64().unwrap() - events[0]["sent_us"].as_u64().unwrap();
    assert!(
        gap >= 40_000,
        "events are produced interval_ms apart, got {gap} us"
    );
    assert_eq!(events[5], "[DONE]");

    let started = std::time::Instant::now();
    let (mut sender, _task) = h1(fake.addr()).await;
    let resp = sender
        .send_request(request("GET", "/slow-body?ms=600", None))
        .await
        .unwrap();
    let head_after = started.elapsed();
    assert!(
        head_after < Duration::from_millis(400),
        "head came after {head_after:?}"
    );
    assert_eq!(resp.headers()[header::CONTENT_LENGTH], "16");
    resp.into_body().collect().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(600));

    let started = std::time::Instant::now();
    let (status, _, _) = call(&fake, request("GET", "/slow-head?ms=150", None)).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn hold_notices_the_client_going_away() {
    let fake = FakeUpstream::start().await;
    let (mut sender, task) = h1(fake.addr()).await;
    let resp = sender
        .send_request(request("GET", "/hold?ms=20000", None))
        .await
        .unwrap();
    let mut body = resp.into_body();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "."
    );
    assert_eq!(
        (fake.connections_accepted(), fake.connections_open()),
        (1, 1)
    );
    assert!(
        !fake
            .wait_for_connection_closed(Duration::from_millis(150))
            .await
    );
    task.abort();
    drop((body, sender));
    assert!(
        fake.wait_for_connection_closed(Duration::from_secs(5))
            .await
    );
    assert_eq!((fake.connections_open(), fake.connections_closed()), (0, 1));
    // That close was reported: the next wait needs a new one.
    assert!(
        !fake
            .wait_for_connection_closed(Duration::from_millis(50))
            .await
    );
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let fake = FakeUpstream::start().await;
    let (mut sender, _task) = h1(fake.addr()).await;
    for _ in 0..3 {
        let resp = sender
            .send_request(request("GET", "/echo/x", None))
            .await
            .unwrap();
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(fake.connections_accepted(), 1);
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn shutdown_cuts_long_requests() {
    let fake = FakeUpstream::start().await;
    let addr = fake.addr();
    let (mut sender, _task) = h1(addr).await;
    let resp = sender
        .send_request(request("GET", "/hold?ms=60000", None))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), fake.shutdown())
        .await
        .expect("shutdown hangs");
    assert!(resp.into_body().collect().await.is_err());
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let fake = FakeUpstream::start().await;
    let addr = fake.addr();
    drop(fake);
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("still accepting after the handle was dropped");
}

#[tokio::test]
async fn websocket_echo_on_ws_and_realtime() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let fake = FakeUpstream::start().await;
    for path in ["/ws", "/v1/realtime?model=gpt-realtime"] {
        let mut req = format!("ws://{}{path}", fake.addr())
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("realtime, other"),
        );
        let stream = TcpStream::connect(fake.addr()).await.unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async(req, stream).await.unwrap();
        assert_eq!(resp.headers()[header::SEC_WEBSOCKET_PROTOCOL], "realtime");
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
        ws.send(Message::binary(vec![0u8, 255, 7])).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![0u8, 255, 7])
        );
        ws.send(Message::text("close")).await.unwrap();
        assert!(matches!(ws.next().await, Some(Ok(Message::Close(_)))));
        assert!(ws.next().await.is_none());
    }
    assert!(
        fake.wait_for_connections_closed(2, Duration::from_secs(5))
            .await
    );
    let (status, _, _) = call(&fake, request("GET", "/ws", None)).await;
    assert_eq!(status, 426);
}

#[tokio::test]
async fn tls_serves_h2_and_http11() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let fake = FakeUpstream::start_tls(&cert.cert.pem(), &cert.signing_key.serialize_pem()).await;
    assert_eq!(
        fake.url(),
        format!("https://localhost:{}", fake.addr().port())
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = tls_provider();
    for alpn in ["h2", "http/1.1"] {
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(fake.addr()).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn.as_bytes()));
        let req = hyper::Request::get(format!("{}/echo/tls", fake.url()))
            .header(header::HOST, "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = if alpn == "h2" {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender.send_request(req).await.unwrap()
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            sender.send_request(req).await.unwrap()
        };
        let echo: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        let version = if alpn == "h2" { "HTTP/2.0" } else { "HTTP/1.1" };
        assert_eq!(echo["version"], version);
        assert_eq!(echo["path"], "/echo/tls");
    }
    fake.shutdown().await;
}
