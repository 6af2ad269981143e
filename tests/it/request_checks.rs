//! Request validation where the proxy used to differ from OpenAI: what it refused but OpenAI
//! accepts, what it accepted but OpenAI refuses, and the exact errors.

use serde_json::{Value, json};

use crate::both_backends;
use crate::runs::wait_run;
use crate::support::{Api, Backend, FakeUpstream, TestProxy, assert_error};

async fn start(backend: Backend) -> (FakeUpstream, TestProxy, Api) {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start_backend(&up.url(), backend).await;
    let api = Api::new(&proxy);
    (up, proxy, api)
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

both_backends!(truncation_and_schema_names, |backend| async move {
    let (_up, proxy, api) = start(backend).await;
    let aid = id(&api.ok("/v1/assistants", json!({"model": "gpt-4o"})).await);
    let tid = id(&api
        .ok(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .await);
    // `last_messages` without its count is valid: as many of the newest as fit.
    let sized = json!({"type": "last_messages", "last_messages": null});
    let run = api
        .ok(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": aid, "truncation_strategy": {"type": "last_messages"}}),
        )
        .await;
    assert_eq!(run["truncation_strategy"], sized);
    let ended = wait_run(&api, &tid, &id(&run)).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    let run = api
        .ok(
            "/v1/threads/runs",
            json!({"assistant_id": aid, "truncation_strategy": {"type": "last_messages"},
                   "thread": {"messages": [{"role": "user", "content": "hello"}]}}),
        )
        .await;
    assert_eq!(run["truncation_strategy"], sized);
    let ended = wait_run(&api, run["thread_id"].as_str().unwrap(), &id(&run)).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    // A count of 0 is still out of range.
    assert_error(
        &api.post(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": aid,
                   "truncation_strategy": {"type": "last_messages", "last_messages": 0}}),
        )
        .await,
        400,
        Some("integer_below_min_value"),
        Some("truncation_strategy.last_messages"),
    );

    // A json_schema name outside OpenAI's pattern gets OpenAI's message.
    let schema = |name: &str| {
        json!({"model": "gpt-4o", "response_format":
            {"type": "json_schema", "json_schema": {"name": name, "schema": {"type": "object"}}}})
    };
    let e = api.post("/v1/assistants", schema("my schema!")).await;
    assert_error(
        &e,
        400,
        Some("invalid_value"),
        Some("response_format.json_schema.name"),
    );
    assert_eq!(
        e.1["error"]["message"],
        "Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'."
    );
    assert_error(
        &api.post("/v1/assistants", schema(&"n".repeat(65))).await,
        400,
        Some("string_above_max_length"),
        Some("response_format.json_schema.name"),
    );
    assert_eq!(
        api.ok("/v1/assistants", schema(&"n".repeat(64))).await["response_format"]
            ["json_schema"]["name"]
            .as_str()
            .map(str::len),
        Some(64)
    );
    proxy.shutdown().await;
});
