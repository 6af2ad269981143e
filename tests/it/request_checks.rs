//! Request validation where the proxy used to differ from OpenAI: what it refused but OpenAI
//! accepts, what it accepted but OpenAI refuses, and the exact errors.

use serde_json::{Value, json};

use crate::both_backends;
use crate::fixtures::upload;
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

both_backends!(image_files_must_exist, |backend| async move {
    let (_up, proxy, api) = start(backend).await;
    let mine = id(&upload(&api, "cat.png", "vision", b"\x89PNG cat").await);
    let other = api.other_tenant();
    let theirs = id(&upload(&other, "dog.png", "vision", b"\x89PNG dog").await);
    let missing = "file-doesnotexist0000000000";
    let aid = id(&api.ok("/v1/assistants", json!({"model": "gpt-4o"})).await);
    let tid = id(&api.ok("/v1/threads", json!({})).await);
    let image = |file: &str| json!({"type": "image_file", "image_file": {"file_id": file}});
    let not_found = |got: &(http::StatusCode, Value), file: &str, param: &str| {
        assert_error(got, 404, None, Some(param));
        assert_eq!(
            got.1["error"]["message"],
            format!("No such File object: {file}")
        );
    };

    // Message create: a missing file and another tenant's are both 404; one's own is fine.
    let messages = format!("/v1/threads/{tid}/messages");
    for file in [missing, theirs.as_str()] {
        let got = api
            .post(
                &messages,
                json!({"role": "user", "content": [{"type": "text", "text": "look"}, image(file)]}),
            )
            .await;
        not_found(&got, file, "content[1].image_file.file_id");
    }
    api.ok(
        &messages,
        json!({"role": "user", "content": [image(&mine)]}),
    )
    .await;

    // Thread create with messages, a run's additional_messages, create-thread-and-run.
    not_found(
        &api.post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "hi"},
                                {"role": "user", "content": [image(missing)]}]}),
        )
        .await,
        missing,
        "messages[1].content[0].image_file.file_id",
    );
    not_found(
        &api.post(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": aid,
                   "additional_messages": [{"role": "user", "content": [image(&theirs)]}]}),
        )
        .await,
        &theirs,
        "additional_messages[0].content[0].image_file.file_id",
    );
    not_found(
        &api.post(
            "/v1/threads/runs",
            json!({"assistant_id": aid,
                   "thread": {"messages": [{"role": "user", "content": [image(missing)]}]}}),
        )
        .await,
        missing,
        "thread.messages[0].content[0].image_file.file_id",
    );
    // Nothing was written by the refused requests.
    let (_, listed) = api.get(&messages).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    let (_, runs) = api.get(&format!("/v1/threads/{tid}/runs")).await;
    assert!(runs["data"].as_array().unwrap().is_empty(), "{runs}");
    proxy.shutdown().await;
});
