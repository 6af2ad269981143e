//! Request validation where the proxy used to differ from OpenAI: what it refused but OpenAI
//! accepts, what it accepted but OpenAI refuses, and the exact errors.

use serde_json::{Value, json};

use crate::both_backends;
use crate::fixtures::{multipart, post_multipart, upload};
use crate::runs::wait_run;
use crate::support::{assert_error, id, setup};

both_backends!(truncation_and_schema_names, |backend| async move {
    let (_up, proxy, api) = setup(backend, "").await;
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
    let (_up, proxy, api) = setup(backend, "").await;
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

both_backends!(empty_values_and_lengths, |backend| async move {
    let (_up, proxy, api) = setup(backend, "").await;
    let empty = |got: &(http::StatusCode, Value), param: &str| {
        assert_error(got, 400, Some("empty_string"), Some(param));
        assert_eq!(
            got.1["error"]["message"],
            format!(
                "Invalid '{param}': empty string. Expected a string with minimum length 1, but got an empty string instead."
            )
        );
    };
    // `model: ""` on assistants (create, modify) and runs (create, create-thread-and-run).
    empty(
        &api.post("/v1/assistants", json!({"model": ""})).await,
        "model",
    );
    let aid = id(&api.ok("/v1/assistants", json!({"model": "gpt-4o"})).await);
    empty(
        &api.post(&format!("/v1/assistants/{aid}"), json!({"model": ""}))
            .await,
        "model",
    );
    assert_eq!(
        api.get(&format!("/v1/assistants/{aid}")).await.1["model"],
        "gpt-4o"
    );
    let tid = id(&api.ok("/v1/threads", json!({})).await);
    empty(
        &api.post(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": aid, "model": ""}),
        )
        .await,
        "model",
    );
    empty(
        &api.post(
            "/v1/threads/runs",
            json!({"assistant_id": aid, "model": ""}),
        )
        .await,
        "model",
    );

    // Message content: "" and [] are refused as OpenAI does; 256,000 characters is the most.
    let messages = format!("/v1/threads/{tid}/messages");
    empty(
        &api.post(&messages, json!({"role": "user", "content": ""}))
            .await,
        "content",
    );
    empty(
        &api.post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": ""}]}),
        )
        .await,
        "messages[0].content",
    );
    let got = api
        .post(&messages, json!({"role": "user", "content": []}))
        .await;
    assert_error(&got, 400, Some("empty_array"), Some("content"));
    assert_eq!(
        got.1["error"]["message"],
        "Invalid 'content': empty array. Expected an array with minimum length 1, but got an empty array instead."
    );
    api.ok(
        &messages,
        json!({"role": "user", "content": "é".repeat(256_000)}),
    )
    .await;
    assert_error(
        &api.post(
            &messages,
            json!({"role": "user", "content": "x".repeat(256_001)}),
        )
        .await,
        400,
        Some("string_above_max_length"),
        Some("content"),
    );

    // A search query list may not be empty.
    let vs = id(&api.ok("/v1/vector_stores", json!({})).await);
    assert_error(
        &api.post(
            &format!("/v1/vector_stores/{vs}/search"),
            json!({"query": []}),
        )
        .await,
        400,
        Some("empty_array"),
        Some("query"),
    );

    // Filenames: 255 bytes are kept, longer is a clear 400 and nothing is stored.
    let name = |n: usize| format!("{}.txt", "n".repeat(n - 4));
    let f = upload(&api, &name(255), "assistants", b"ok").await;
    assert_eq!(f["filename"].as_str().map(str::len), Some(255));
    let body = multipart(&[
        ("purpose", None, b"assistants"),
        ("file", Some(&name(256)), b"too long"),
    ]);
    let got = post_multipart(&api, body).await;
    assert_error(&got, 400, Some("string_above_max_length"), Some("file"));
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 255 bytes, but got one of 256 bytes"),
        "{}",
        got.1
    );
    let (_, files) = api.get("/v1/files?purpose=assistants").await;
    assert_eq!(files["data"].as_array().unwrap().len(), 1, "{files}");
    proxy.shutdown().await;
});
