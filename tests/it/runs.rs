//! Runs through HTTP against the fake upstream, on both backends: completion, streaming event
//! order, function calls (single and parallel), file_search with citations, the thread lock,
//! cancel in each state, expiry, upstream faults, client disconnects, steps with include[].

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::fixtures::{tenant_of, upload, wait_store};
use crate::support::{Api, Backend, FakeUpstream, TestProxy, assert_error, setup};

async fn assistant(api: &Api, body: Value) -> String {
    api.ok("/v1/assistants", body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub async fn thread_with(api: &Api, text: &str) -> String {
    api.ok(
        "/v1/threads",
        json!({"messages": [{"role": "user", "content": text}]}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Polls a run until it leaves queued/in_progress/cancelling.
pub async fn wait_run(api: &Api, thread: &str, run: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, r) = api.get(&format!("/v1/threads/{thread}/runs/{run}")).await;
        assert_eq!(s, 200, "{r}");
        if !matches!(
            r["status"].as_str(),
            Some("queued" | "in_progress" | "cancelling")
        ) {
            return r;
        }
        assert!(Instant::now() < deadline, "run stuck in {}", r["status"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Parses an SSE body into (event, data) pairs.
pub fn sse_events(body: &[u8]) -> Vec<(String, Value)> {
    let text = String::from_utf8_lossy(body);
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = String::new();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_owned();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data = d.to_owned();
            }
        }
        let v = if data == "[DONE]" {
            json!("[DONE]")
        } else {
            serde_json::from_str(&data).unwrap()
        };
        out.push((name, v));
    }
    out
}

pub async fn stream(api: &Api, path: &str, body: Value) -> Vec<(String, Value)> {
    let (s, h, bytes) = api
        .raw(
            Method::POST,
            path,
            Some("application/json"),
            Bytes::from(body.to_string()),
        )
        .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&bytes));
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    sse_events(&bytes)
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

const RUN_KEYS: &[&str] = &[
    "id",
    "object",
    "created_at",
    "thread_id",
    "assistant_id",
    "status",
    "required_action",
    "last_error",
    "expires_at",
    "started_at",
    "cancelled_at",
    "failed_at",
    "completed_at",
    "incomplete_details",
    "model",
    "instructions",
    "tools",
    "metadata",
    "usage",
    "temperature",
    "top_p",
    "max_prompt_tokens",
    "max_completion_tokens",
    "truncation_strategy",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
];

both_backends!(a_run_completes_and_answers, |backend| async move {
    let (up, proxy, api) = setup(backend, "").await;
    let aid = assistant(&api, json!({"model": "gpt-4o", "instructions": "Be nice."})).await;
    let tid = thread_with(&api, "What is two plus two?").await;
    let run = api.ok(&format!("/v1/threads/{tid}/runs"), json!({"assistant_id": aid, "additional_instructions": "Answer in English.", "metadata": {"k": "v"}})).await;
    for key in RUN_KEYS {
        assert!(run.get(*key).is_some(), "run lacks {key}");
    }
    assert_eq!(run["status"], "queued");
    assert_eq!(run["expires_at"], run["created_at"].as_i64().unwrap() + 600);
    assert_eq!(run["usage"], Value::Null);
    assert_eq!(run["instructions"], "Be nice.\n\nAnswer in English.");
    let done = wait_run(&api, &tid, run["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["expires_at"], Value::Null);
    assert!(done["completed_at"].is_i64() && done["started_at"].is_i64());
    assert!(done["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let (_, msgs) = api.get(&format!("/v1/threads/{tid}/messages")).await;
    let answer = &msgs["data"][0];
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["status"], "completed");
    assert_eq!(answer["run_id"], run["id"]);
    assert_eq!(answer["assistant_id"], aid.as_str());
    assert_eq!(
        answer["content"][0]["text"]["value"],
        "Echo: What is two plus two?"
    );
    let (_, by_run) = api
        .get(&format!(
            "/v1/threads/{tid}/messages?run_id={}",
            run["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(by_run["data"].as_array().unwrap().len(), 1);
    let (_, steps) = api
        .get(&format!(
            "/v1/threads/{tid}/runs/{}/steps",
            run["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(steps["data"][0]["type"], "message_creation");
    assert_eq!(
        steps["data"][0]["step_details"]["message_creation"]["message_id"],
        answer["id"]
    );
    assert_eq!(steps["data"][0]["status"], "completed");
    // What went upstream: a streamed chat request with system instructions and the thread.
    let chat = up.chat_requests();
    assert_eq!(chat.len(), 1);
    assert_eq!(chat[0]["stream"], true);
    assert_eq!(
        chat[0]["messages"][0],
        json!({"role": "system", "content": "Be nice.\n\nAnswer in English."})
    );
    assert_eq!(
        chat[0]["messages"][1],
        json!({"role": "user", "content": "What is two plus two?"})
    );
    let auth = up
        .requests()
        .iter()
        .find(|r| r.path == "/v1/chat/completions")
        .unwrap()
        .header("authorization")
        .unwrap();
    assert_eq!(
        auth,
        format!("Bearer {}", api.key),
        "the caller's key pays for the call"
    );
    let (_, list) = api.get(&format!("/v1/threads/{tid}/runs")).await;
    assert_eq!(list["data"][0]["id"], run["id"]);
    proxy.shutdown().await;
});

both_backends!(streamed_run_event_order, |backend| async move {
    let (_up, proxy, api) = setup(backend, "").await;
    let aid = assistant(&api, json!({"model": "gpt-4o"})).await;
    let tid = thread_with(&api, "alpha beta gamma").await;
    let events = stream(
        &api,
        &format!("/v1/threads/{tid}/runs"),
        json!({"assistant_id": aid, "stream": true}),
    )
    .await;
    let n = names(&events);
    assert_eq!(
        &n[..7],
        &[
            "thread.run.created",
            "thread.run.queued",
            "thread.run.in_progress",
            "thread.run.step.created",
            "thread.run.step.in_progress",
            "thread.message.created",
            "thread.message.in_progress"
        ]
    );
    let tail = &n[n.len() - 4..];
    assert_eq!(
        tail,
        &[
            "thread.message.completed",
            "thread.run.step.completed",
            "thread.run.completed",
            "done"
        ]
    );
    assert_eq!(events.last().unwrap().1, json!("[DONE]"));
    // Deltas rebuild the final text exactly once.
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "thread.message.delta")
        .map(|(_, d)| {
            d["delta"]["content"][0]["text"]["value"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(text, "Echo: alpha beta gamma");
    let first_delta = events
        .iter()
        .find(|(n, _)| n == "thread.message.delta")
        .unwrap();
    assert_eq!(
        first_delta.1["delta"]["content"][0]["text"]["annotations"],
        json!([])
    );
    let completed = &events
        .iter()
        .find(|(n, _)| n == "thread.run.completed")
        .unwrap()
        .1;
    assert_eq!(completed["status"], "completed");
    assert!(completed["usage"].is_object());

    // create-and-run streams thread.created first.
    let events = stream(&api, "/v1/threads/runs", json!({"assistant_id": aid, "stream": true, "thread": {"messages": [{"role": "user", "content": "hi"}]}})).await;
    assert_eq!(names(&events)[0], "thread.created");
    assert_eq!(events[0].1["object"], "thread");
    assert_eq!(names(&events)[1], "thread.run.created");
    assert_eq!(*names(&events).last().unwrap(), "done");
    proxy.shutdown().await;
});

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"input": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    ])
}

both_backends!(
    function_calls_require_action_then_resume,
    |backend| async move {
        let (up, proxy, api) = setup(backend, "").await;
        let aid = assistant(
            &api,
            json!({"model": "fake-tool-call-parallel", "tools": weather_tools()}),
        )
        .await;
        let tid = thread_with(&api, "weather in Oslo").await;
        let events = stream(
            &api,
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": aid, "stream": true}),
        )
        .await;
        let n = names(&events);
        assert_eq!(&n[n.len() - 2..], &["thread.run.requires_action", "done"]);
        let ra = &events[events.len() - 2].1;
        let calls = ra["required_action"]["submit_tool_outputs"]["tool_calls"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(calls.len(), 2, "parallel calls");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert_eq!(
            calls[0]["function"]["arguments"],
            "{\"input\":\"weather in Oslo\"}"
        );
        let rid = ra["id"].as_str().unwrap().to_owned();
        // Step deltas announce each call once and stream its arguments.
        let step_created = events
            .iter()
            .find(|(n, d)| n == "thread.run.step.created" && d["type"] == "tool_calls")
            .unwrap();
        assert_eq!(step_created.1["step_details"]["tool_calls"], json!([]));

        // The thread is locked meanwhile.
        let locked = api
            .post(
                &format!("/v1/threads/{tid}/messages"),
                json!({"role": "user", "content": "x"}),
            )
            .await;
        assert_error(&locked, 400, None, None);
        assert_eq!(
            locked.1["error"]["message"],
            format!("Can't add messages to {tid} while a run {rid} is active.")
        );
        let second = api
            .post(
                &format!("/v1/threads/{tid}/runs"),
                json!({"assistant_id": aid}),
            )
            .await;
        assert_error(&second, 400, None, None);
        assert_eq!(
            second.1["error"]["message"],
            format!("Thread {tid} already has an active run {rid}.")
        );

        // Missing or unknown outputs are refused.
        let id0 = calls[0]["id"].as_str().unwrap();
        let id1 = calls[1]["id"].as_str().unwrap();
        let partial = api
            .post(
                &format!("/v1/threads/{tid}/runs/{rid}/submit_tool_outputs"),
                json!({"tool_outputs": [{"tool_call_id": id0, "output": "sunny"}]}),
            )
            .await;
        assert_error(&partial, 400, None, None);
        assert_eq!(
            partial.1["error"]["message"],
            format!("Expected tool outputs for call_ids ['{id0}', '{id1}'], got ['{id0}']")
        );
        let unknown = api.post(&format!("/v1/threads/{tid}/runs/{rid}/submit_tool_outputs"), json!({"tool_outputs": [{"tool_call_id": id0, "output": "a"}, {"tool_call_id": "call_nope", "output": "b"}]})).await;
        assert_error(&unknown, 400, None, None);

        // Submitting all outputs (streamed) resumes: the stream starts with the tool step.
        let events = stream(&api, &format!("/v1/threads/{tid}/runs/{rid}/submit_tool_outputs"), json!({"stream": true, "tool_outputs": [{"tool_call_id": id0, "output": "sunny"}, {"tool_call_id": id1, "output": "noon"}]})).await;
        let n = names(&events);
        assert_eq!(
            &n[..3],
            &[
                "thread.run.step.completed",
                "thread.run.queued",
                "thread.run.in_progress"
            ]
        );
        assert_eq!(
            events[0].1["step_details"]["tool_calls"][0]["function"]["output"],
            "sunny"
        );
        assert_eq!(*n.last().unwrap(), "done");
        let done = wait_run(&api, &tid, &rid).await;
        assert_eq!(done["status"], "completed");
        let (_, msgs) = api.get(&format!("/v1/threads/{tid}/messages")).await;
        assert_eq!(
            msgs["data"][0]["content"][0]["text"]["value"],
            "Tool results: sunny; noon"
        );
        // The upstream saw the calls and their outputs on the second turn.
        let chat = up.chat_requests();
        let last = chat.last().unwrap()["messages"].as_array().unwrap().clone();
        assert_eq!(
            last[last.len() - 2],
            json!({"role": "tool", "tool_call_id": id0, "content": "sunny"})
        );
        let again = api
            .post(
                &format!("/v1/threads/{tid}/runs/{rid}/submit_tool_outputs"),
                json!({"tool_outputs": []}),
            )
            .await;
        assert_error(&again, 400, None, None);
        assert_eq!(
            again.1["error"]["message"],
            "Runs in status \"completed\" do not accept tool outputs."
        );
        let (_, steps) = api
            .get(&format!("/v1/threads/{tid}/runs/{rid}/steps?order=asc"))
            .await;
        assert_eq!(steps["data"][0]["type"], "tool_calls");
        assert_eq!(
            steps["data"][0]["step_details"]["tool_calls"][1]["function"]["output"],
            "noon"
        );
        assert_eq!(steps["data"][1]["type"], "message_creation");
        proxy.shutdown().await;
    }
);

both_backends!(single_call_non_streamed, |backend| async move {
    let (_up, proxy, api) = setup(backend, "").await;
    let aid = assistant(
        &api,
        json!({"model": "fake-tool-call", "tools": weather_tools()}),
    )
    .await;
    let tid = thread_with(&api, "Paris").await;
    let run = api
        .ok(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": aid, "parallel_tool_calls": false}),
        )
        .await;
    let rid = run["id"].as_str().unwrap().to_owned();
    let waiting = wait_run(&api, &tid, &rid).await;
    assert_eq!(waiting["status"], "requires_action");
    let calls = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
        .as_array()
        .unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["type"], "function");
    let cid = calls[0]["id"].as_str().unwrap();
    let resumed = api
        .ok(
            &format!("/v1/threads/{tid}/runs/{rid}/submit_tool_outputs"),
            json!({"tool_outputs": [{"tool_call_id": cid, "output": "rain"}]}),
        )
        .await;
    assert_eq!(resumed["status"], "queued");
    let done = wait_run(&api, &tid, &rid).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["required_action"], Value::Null);
    proxy.shutdown().await;
});

both_backends!(cancel_in_each_state, |backend| async move {
    let (up, proxy, api) = setup(backend, "").await;
    // requires_action → cancelled.
    let tools_aid = assistant(
        &api,
        json!({"model": "fake-tool-call", "tools": weather_tools()}),
    )
    .await;
    let tid = thread_with(&api, "x").await;
    let run = api
        .ok(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": tools_aid}),
        )
        .await;
    let rid = run["id"].as_str().unwrap().to_owned();
    assert_eq!(
        wait_run(&api, &tid, &rid).await["status"],
        "requires_action"
    );
    let c = api
        .ok(&format!("/v1/threads/{tid}/runs/{rid}/cancel"), json!({}))
        .await;
    assert!(
        matches!(c["status"].as_str(), Some("cancelling" | "cancelled")),
        "{c}"
    );
    assert!(c["required_action"].is_null(), "{c}");
    let ended = wait_run(&api, &tid, &rid).await;
    assert_eq!(ended["status"], "cancelled");
    assert!(ended["cancelled_at"].is_i64());
    assert!(ended["required_action"].is_null(), "{ended}");
    let again = api
        .post(&format!("/v1/threads/{tid}/runs/{rid}/cancel"), json!({}))
        .await;
    assert_error(&again, 400, None, None);
    assert_eq!(
        again.1["error"]["message"],
        "Cannot cancel run with status 'cancelled'."
    );

    // in_progress (a slow stream) → cancelled; the partial message is kept, incomplete.
    up.set_chunk_delay(Duration::from_millis(200));
    let slow = assistant(&api, json!({"model": "gpt-4o"})).await;
    let tid = thread_with(&api, "one two three four five six seven eight nine ten").await;
    let run = api
        .ok(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": slow}),
        )
        .await;
    let rid = run["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let c = api
        .ok(&format!("/v1/threads/{tid}/runs/{rid}/cancel"), json!({}))
        .await;
    assert_eq!(c["status"], "cancelling");
    let ended = wait_run(&api, &tid, &rid).await;
    assert_eq!(ended["status"], "cancelled");
    let (_, msgs) = api.get(&format!("/v1/threads/{tid}/messages")).await;
    let partial = &msgs["data"][0];
    assert_eq!(partial["role"], "assistant");
    assert_eq!(partial["status"], "incomplete");
    assert_eq!(partial["incomplete_details"]["reason"], "run_cancelled");
    let kept = partial["content"][0]["text"]["value"].as_str().unwrap();
    assert!(
        !kept.is_empty()
            && kept.len() < "Echo: one two three four five six seven eight nine ten".len(),
        "{kept}"
    );
    // The upstream stream was dropped, not left running.
    assert!(up.wait_for_connection_closed(Duration::from_secs(5)).await);
    // A new run may start right away.
    up.set_chunk_delay(Duration::ZERO);
    let next = api
        .ok(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": slow}),
        )
        .await;
    assert_eq!(
        wait_run(&api, &tid, next["id"].as_str().unwrap()).await["status"],
        "completed"
    );
    proxy.shutdown().await;
});

both_backends!(requires_action_expires, |backend| async move {
    let (_up, proxy, api) = setup(backend, "").await;
    let aid = assistant(
        &api,
        json!({"model": "fake-tool-call", "tools": weather_tools()}),
    )
    .await;
    let tid = thread_with(&api, "x").await;
    let run = api
        .ok(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": aid}),
        )
        .await;
    let rid = run["id"].as_str().unwrap().to_owned();
    assert_eq!(
        wait_run(&api, &tid, &rid).await["status"],
        "requires_action"
    );
    proxy.state.clock.advance(601);
    let expired = wait_run(&api, &tid, &rid).await;
    assert_eq!(expired["status"], "expired");
    assert!(expired["expires_at"].is_i64());
    let (_, steps) = api
        .get(&format!("/v1/threads/{tid}/runs/{rid}/steps"))
        .await;
    assert_eq!(steps["data"][0]["status"], "expired");
    assert!(steps["data"][0]["expired_at"].is_i64());
    let late = api
        .post(
            &format!("/v1/threads/{tid}/runs/{rid}/submit_tool_outputs"),
            json!({"tool_outputs": []}),
        )
        .await;
    assert_eq!(
        late.1["error"]["message"],
        "Runs in status \"expired\" do not accept tool outputs."
    );
    // The thread is free again.
    let (s, _) = api
        .post(
            &format!("/v1/threads/{tid}/messages"),
            json!({"role": "user", "content": "again"}),
        )
        .await;
    assert_eq!(s, 200);
    proxy.shutdown().await;
});

both_backends!(upstream_faults_fail_the_run, |backend| async move {
    let (up, proxy, api) = setup(backend, "").await;
    for (model, code) in [
        ("fake-error-429", "rate_limit_exceeded"),
        ("fake-error-500", "server_error"),
    ] {
        let aid = assistant(&api, json!({"model": model})).await;
        let tid = thread_with(&api, "x").await;
        let run = api
            .ok(
                &format!("/v1/threads/{tid}/runs"),
                json!({"assistant_id": aid}),
            )
            .await;
        let failed = wait_run(&api, &tid, run["id"].as_str().unwrap()).await;
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["last_error"]["code"], code, "{failed}");
        assert!(failed["failed_at"].is_i64());
        let (_, msgs) = api.get(&format!("/v1/threads/{tid}/messages")).await;
        assert_eq!(
            msgs["data"].as_array().unwrap().len(),
            1,
            "no message lost or added"
        );
    }
    // A stream that breaks off keeps the partial answer, incomplete.
    let aid = assistant(&api, json!({"model": "fake-drop"})).await;
    let tid = thread_with(&api, "tell me a long story please").await;
    let events = stream(
        &api,
        &format!("/v1/threads/{tid}/runs"),
        json!({"assistant_id": aid, "stream": true}),
    )
    .await;
    let n = names(&events);
    assert!(n.contains(&"thread.message.incomplete"), "{n:?}");
    assert_eq!(&n[n.len() - 2..], &["thread.run.failed", "done"]);
    let (_, msgs) = api.get(&format!("/v1/threads/{tid}/messages")).await;
    assert_eq!(msgs["data"].as_array().unwrap().len(), 2);
    assert_eq!(msgs["data"][0]["status"], "incomplete");
    assert_eq!(
        msgs["data"][0]["incomplete_details"]["reason"],
        "run_failed"
    );
    assert!(
        !msgs["data"][0]["content"][0]["text"]["value"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let _ = up;
    proxy.shutdown().await;
});

both_backends!(runs_outlive_a_disconnected_stream, |backend| async move {
    let (up, proxy, api) = setup(backend, "").await;
    up.set_chunk_delay(Duration::from_millis(30));
    let aid = assistant(&api, json!({"model": "gpt-4o"})).await;
    let tid = thread_with(&api, "a b c d e f g h i j k l m n o p").await;
    // Read the first bytes of the stream, then hang up.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let body = json!({"assistant_id": aid, "stream": true}).to_string();
    let req = format!(
        "POST /v1/threads/{tid}/runs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        api.key,
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.contains("thread.run.created"), "{head}");
    let rid = head
        .split("\"id\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    drop(s);
    let done = wait_run(&api, &tid, &rid).await;
    assert_eq!(done["status"], "completed");
    let (_, msgs) = api.get(&format!("/v1/threads/{tid}/messages")).await;
    assert_eq!(
        msgs["data"][0]["content"][0]["text"]["value"],
        "Echo: a b c d e f g h i j k l m n o p"
    );
    proxy.shutdown().await;
});

both_backends!(limits_truncation_and_formats, |backend| async move {
    let (up, proxy, api) = setup(backend, "").await;
    let aid = assistant(&api, json!({"model": "gpt-4o"})).await;
    let long = (0..400)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let tid = thread_with(&api, &long).await;
    let run = api
        .ok(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": aid, "max_completion_tokens": 256}),
        )
        .await;
    let r = wait_run(&api, &tid, run["id"].as_str().unwrap()).await;
    assert_eq!(r["status"], "incomplete", "{r}");
    assert_eq!(
        r["incomplete_details"],
        json!({"reason": "max_completion_tokens"})
    );
    let (_, msgs) = api.get(&format!("/v1/threads/{tid}/messages")).await;
    assert_eq!(msgs["data"][0]["status"], "incomplete");

    let tid = api.ok("/v1/threads", json!({"messages": [
        {"role": "user", "content": "m1"}, {"role": "user", "content": "m2"}, {"role": "user", "content": "m3"}]})).await["id"].as_str().unwrap().to_owned();
    let run = api.ok(&format!("/v1/threads/{tid}/runs"), json!({"assistant_id": aid, "instructions": "sys",
        "truncation_strategy": {"type": "last_messages", "last_messages": 2}, "response_format": {"type": "json_object"},
        "temperature": 0.3, "tool_choice": "none"})).await;
    assert_eq!(
        wait_run(&api, &tid, run["id"].as_str().unwrap()).await["status"],
        "completed"
    );
    let chat = up.chat_requests();
    let last = chat.last().unwrap();
    let msgs = last["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "system + the 2 newest messages: {last}");
    assert_eq!(msgs[1]["content"], "m2");
    assert_eq!(last["response_format"], json!({"type": "json_object"}));
    assert_eq!(last["temperature"], 0.3);
    let bad = api
        .post(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": aid, "max_prompt_tokens": 10}),
        )
        .await;
    assert_error(
        &bad,
        400,
        Some("integer_below_min_value"),
        Some("max_prompt_tokens"),
    );
    let bad = api
        .post(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": aid, "tools": vec![json!({"type": "code_interpreter"}); 21]}),
        )
        .await;
    assert_error(&bad, 400, Some("array_above_max_length"), Some("tools"));
    let bad = api
        .post(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": "asst_missing"}),
        )
        .await;
    assert_error(&bad, 404, None, None);
    let modified = api
        .ok(
            &format!("/v1/threads/{tid}/runs/{}", run["id"].as_str().unwrap()),
            json!({"metadata": {"a": "b"}}),
        )
        .await;
    assert_eq!(modified["metadata"], json!({"a": "b"}));
    proxy.shutdown().await;
});

/// A vector store whose chunks are written straight to the store (ingestion is tested with
/// the vector-store routes), with embeddings as the fake upstream makes them.
async fn store_with_passages(proxy: &TestProxy, api: &Api, passages: &[(&str, &str)]) -> String {
    use assistants_proxy::model::{Chunk, FileCounts, FileObject, VectorStore};
    let tenant =
        assistants_proxy::store::Tenant::new(assistants_proxy::tenancy::key_tenant(&api.key));
    let vs_id = assistants_proxy::ids::new_id("vs_");
    let store = &proxy.state.store;
    let record = VectorStore {
        id: vs_id.clone(),
        object: "vector_store".into(),
        created_at: 0,
        name: Some("kb".into()),
        usage_bytes: 0,
        file_counts: FileCounts::default(),
        status: "completed".into(),
        expires_after: None,
        expires_at: None,
        last_active_at: None,
        metadata: Default::default(),
        embedding_model: "text-embedding-3-small".into(),
        dimensions: 1536,
    };
    store
        .vector_stores
        .put_vector_store(&tenant, &record)
        .await
        .unwrap();
    for (name, text) in passages {
        let file_id = assistants_proxy::ids::new_id("file-");
        store
            .files
            .put_file(
                &tenant,
                &FileObject {
                    id: file_id.clone(),
                    object: "file".into(),
                    bytes: text.len() as u64,
                    created_at: 0,
                    expires_at: None,
                    filename: (*name).to_owned(),
                    purpose: "assistants".into(),
                    status: "processed".into(),
                    status_details: None,
                },
            )
            .await
            .unwrap();
        let chunk = Chunk {
            vector_store_id: vs_id.clone(),
            file_id: file_id.clone(),
            index: 0,
            text: (*text).to_owned(),
            embedding: crate::support::fake_upstream::fake_embedding(text, 1536),
            attributes: Default::default(),
        };
        store
            .chunks
            .put_chunks(&tenant, &vs_id, &file_id, vec![chunk])
            .await
            .unwrap();
    }
    vs_id
}

both_backends!(file_search_with_citations, |backend| async move {
    let (up, proxy, api) = setup(backend, "").await;
    let vs_id = store_with_passages(
        &proxy,
        &api,
        &[
            ("cats.txt", "cats purr and chase mice around the barn"),
            (
                "stocks.txt",
                "the stock market closed higher on bank earnings",
            ),
        ],
    )
    .await;
    let aid = assistant(&api, json!({"model": "fake-tool-call-cite", "tools": [{"type": "file_search", "file_search": {"max_num_results": 2}}],
        "tool_resources": {"file_search": {"vector_store_ids": [vs_id]}}})).await;
    let tid = thread_with(&api, "what do cats chase").await;
    let events = stream(&api, &format!("/v1/threads/{tid}/runs?include[]=step_details.tool_calls[*].file_search.results[*].content"), json!({"assistant_id": aid, "stream": true})).await;
    let n = names(&events);
    assert_eq!(
        &n[n.len() - 2..],
        &["thread.run.completed", "done"],
        "{n:?}"
    );
    let fs_delta = events
        .iter()
        .find(|(n, d)| {
            n == "thread.run.step.delta"
                && d["delta"]["step_details"]["tool_calls"][0]["type"] == "file_search"
        })
        .unwrap();
    assert_eq!(
        fs_delta.1["delta"]["step_details"]["tool_calls"][0]["file_search"],
        json!({})
    );
    let tool_step = events
        .iter()
        .find(|(n, d)| n == "thread.run.step.completed" && d["type"] == "tool_calls")
        .unwrap();
    let results = tool_step.1["step_details"]["tool_calls"][0]["file_search"]["results"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        results[0]["file_name"], "cats.txt",
        "ranked as the fake embeddings predict"
    );
    assert_eq!(
        results[0]["content"][0]["text"],
        "cats purr and chase mice around the barn"
    );
    assert!(results[0]["score"].as_f64().unwrap() > results[1]["score"].as_f64().unwrap());

    let (_, msgs) = api.get(&format!("/v1/threads/{tid}/messages")).await;
    let answer = &msgs["data"][0]["content"][0]["text"];
    let value = answer["value"].as_str().unwrap();
    let ann = &answer["annotations"][0];
    assert_eq!(ann["type"], "file_citation");
    let start = ann["start_index"].as_u64().unwrap() as usize;
    let end = ann["end_index"].as_u64().unwrap() as usize;
    let cited: String = value.chars().skip(start).take(end - start).collect();
    assert_eq!(cited, ann["text"].as_str().unwrap());
    assert!(cited.starts_with('【') && cited.contains("cats.txt"));
    assert_eq!(ann["file_citation"]["file_id"], results[0]["file_id"]);
    // The annotation was streamed exactly once.
    let ann_deltas = events
        .iter()
        .filter(|(n, d)| {
            n == "thread.message.delta"
                && d["delta"]["content"][0]["text"]["annotations"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
        })
        .count();
    assert_eq!(ann_deltas, 1);

    // Steps: content only with include[].
    let run_id = events[0].1["id"].as_str().unwrap();
    let (_, plain) = api
        .get(&format!("/v1/threads/{tid}/runs/{run_id}/steps?order=asc"))
        .await;
    assert!(
        plain["data"][0]["step_details"]["tool_calls"][0]["file_search"]["results"][0]
            .get("content")
            .is_none()
    );
    let step_id = plain["data"][0]["id"].as_str().unwrap();
    let (_, full) = api.get(&format!("/v1/threads/{tid}/runs/{run_id}/steps/{step_id}?include[]=step_details.tool_calls[*].file_search.results[*].content")).await;
    assert!(
        full["step_details"]["tool_calls"][0]["file_search"]["results"][0]["content"].is_array()
    );
    let bad = api
        .get(&format!(
            "/v1/threads/{tid}/runs/{run_id}/steps?include[]=nope"
        ))
        .await;
    assert_error(&bad, 400, Some("invalid_value"), None);
    // The search went upstream as an embeddings call with the caller's key.
    assert!(!up.embedding_requests().is_empty());
    proxy.shutdown().await;
});

/// A thread whose two attachments went into its own vector store; returns (thread, store,
/// cats file).
async fn thread_with_attachments(api: &Api) -> (String, String, String) {
    let cats = upload(
        api,
        "cats.txt",
        "assistants",
        b"cats purr and chase mice around the barn",
    )
    .await;
    let stocks = upload(
        api,
        "stocks.txt",
        "assistants",
        b"the stock market closed higher",
    )
    .await;
    let attach = |f: &Value| json!({"file_id": f["id"], "tools": [{"type": "file_search"}]});
    let t = api
        .ok(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "what do cats chase",
                "attachments": [attach(&cats), attach(&stocks)]}]}),
        )
        .await;
    let vs = t["tool_resources"]["file_search"]["vector_store_ids"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let cats = cats["id"].as_str().unwrap().to_owned();
    (t["id"].as_str().unwrap().to_owned(), vs, cats)
}

both_backends!(runs_wait_for_the_thread_store, |backend| async move {
    // Spec §7.2: while the thread's vector store still indexes, a run waits instead of
    // searching an empty store.
    let (up, proxy, api) = setup(backend, "").await;
    up.hold_embeddings();
    let aid = assistant(
        &api,
        json!({"model": "fake-tool-call-cite", "tools": [{"type": "file_search"}]}),
    )
    .await;
    let (tid, vs, cats) = thread_with_attachments(&api).await;
    let runs = format!("/v1/threads/{tid}/runs");

    // A run cancelled while it waits ends cancelled, without asking the model anything.
    let first = api.ok(&runs, json!({"assistant_id": aid})).await;
    let first = first["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, waiting) = api.get(&format!("{runs}/{first}")).await;
    assert_eq!(waiting["status"], "in_progress", "{waiting}");
    api.ok(&format!("{runs}/{first}/cancel"), json!({})).await;
    assert_eq!(wait_run(&api, &tid, first).await["status"], "cancelled");
    assert!(up.chat_requests().is_empty());

    // The next run waits until the files are in, then finds and cites the right one.
    let second = api.ok(&runs, json!({"assistant_id": aid})).await;
    let second = second["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        up.chat_requests().is_empty(),
        "the model was asked before the store was ready"
    );
    assert_eq!(
        api.get(&format!("/v1/vector_stores/{vs}")).await.1["status"],
        "in_progress"
    );
    up.release_embeddings();
    let ended = wait_run(&api, &tid, second).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    let (_, msgs) = api.get(&format!("/v1/threads/{tid}/messages")).await;
    let ann = &msgs["data"][0]["content"][0]["text"]["annotations"][0];
    assert_eq!(ann["type"], "file_citation", "{msgs}");
    assert_eq!(ann["file_citation"]["file_id"], cats.as_str());
    proxy.shutdown().await;
});

both_backends!(
    an_expired_thread_store_fails_the_run,
    |backend| async move {
        let (up, proxy, api) = setup(backend, "").await;
        let aid = assistant(
            &api,
            json!({"model": "fake-tool-call-cite", "tools": [{"type": "file_search"}]}),
        )
        .await;
        let (tid, vs_id, _) = thread_with_attachments(&api).await;
        wait_store(&api, &vs_id).await;
        let t = tenant_of(&api);
        let stores = &proxy.state.store.vector_stores;
        let mut row = stores.get_vector_store(&t, &vs_id).await.unwrap().unwrap();
        row.expires_at = Some(assistants_proxy::ids::now_secs() - 10);
        stores.put_vector_store(&t, &row).await.unwrap();

        let run = api
            .ok(
                &format!("/v1/threads/{tid}/runs"),
                json!({"assistant_id": aid}),
            )
            .await;
        let ended = wait_run(&api, &tid, run["id"].as_str().unwrap()).await;
        assert_eq!(ended["status"], "failed", "{ended}");
        assert_eq!(ended["last_error"]["code"], "server_error");
        assert_eq!(
            ended["last_error"]["message"],
            format!("Vector store '{vs_id}' has expired.")
        );
        assert!(up.chat_requests().is_empty());
        proxy.shutdown().await;
    }
);

const FAST_LEASES: &str = "[runs]\nlease_seconds = 3\nsweep_interval_seconds = 1\n";

/// Several proxies share one database on Cassandra. On SQLite a second proxy is refused: the
/// binary's case is in `sqlite_lock`; here, the same in one process.
mod two_proxies_share_runs {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Cassandra: ASSISTANTS_PROXY_TEST_CASSANDRA=HOST:PORT cargo test -- --include-ignored (scripts/test.sh starts a node and does that)"]
    async fn cassandra() {
        share_runs(Backend::Cassandra).await;
    }

    #[tokio::test]
    async fn sqlite_refuses_the_second() {
        let up = FakeUpstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let config =
            || crate::support::config_for_backend(&up.url(), "", dir.path(), Backend::Sqlite);
        let a = TestProxy::start_config(config(), tempfile::tempdir().unwrap()).await;
        let e = match assistants_proxy::app::AppState::build(config()).await {
            Ok(_) => panic!("a second proxy opened the SQLite file"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("in use by another assistants-proxy"), "{e}");
        let (s, _) = Api::new(&a).get("/v1/assistants").await;
        assert_eq!(s, 200);
        a.shutdown().await;
    }
}

async fn share_runs(backend: Backend) {
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config =
        |_: ()| crate::support::config_for_backend(&up.url(), FAST_LEASES, dir.path(), backend);
    let a = TestProxy::start_config(config(()), tempfile::tempdir().unwrap()).await;
    let b = TestProxy::start_config(config(()), tempfile::tempdir().unwrap()).await;
    let api_a = Api::new(&a);
    let api_b = Api {
        base: format!("http://{}", b.addr),
        ..api_a.clone()
    };

    // Started on A, waiting for outputs; submitted on B, which finishes it.
    let aid = assistant(
        &api_a,
        json!({"model": "fake-tool-call", "tools": weather_tools()}),
    )
    .await;
    let tid = thread_with(&api_a, "Rome").await;
    let run = api_a
        .ok(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": aid}),
        )
        .await;
    let rid = run["id"].as_str().unwrap().to_owned();
    let waiting = wait_run(&api_b, &tid, &rid).await;
    assert_eq!(waiting["status"], "requires_action", "{waiting}");
    let cid = waiting["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"]
        .as_str()
        .unwrap();
    api_b
        .ok(
            &format!("/v1/threads/{tid}/runs/{rid}/submit_tool_outputs"),
            json!({"tool_outputs": [{"tool_call_id": cid, "output": "warm"}]}),
        )
        .await;
    assert_eq!(wait_run(&api_a, &tid, &rid).await["status"], "completed");

    // Executing on A, cancelled through B: A sees it at its next lease renewal.
    up.set_chunk_delay(Duration::from_millis(150));
    let slow = assistant(&api_a, json!({"model": "gpt-4o"})).await;
    let tid = thread_with(
        &api_a,
        &(0..60)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" "),
    )
    .await;
    let run = api_a
        .ok(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": slow}),
        )
        .await;
    let rid = run["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, seen) = api_b.get(&format!("/v1/threads/{tid}/runs/{rid}")).await;
    assert_eq!(seen["status"], "in_progress");
    let c = api_b
        .ok(&format!("/v1/threads/{tid}/runs/{rid}/cancel"), json!({}))
        .await;
    assert_eq!(c["status"], "cancelling");
    let started = Instant::now();
    let ended = wait_run(&api_b, &tid, &rid).await;
    assert_eq!(ended["status"], "cancelled");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancel took {:?}",
        started.elapsed()
    );
    a.shutdown().await;
    b.shutdown().await;
}
