//! Assistants, threads and messages through HTTP, on both backends: shapes, validation with
//! OpenAI's messages, pagination, tenancy, v1 shapes.

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{assert_error, setup};

const ASSISTANT_KEYS: &[&str] = &[
    "id",
    "object",
    "created_at",
    "name",
    "description",
    "model",
    "instructions",
    "tools",
    "tool_resources",
    "metadata",
    "temperature",
    "top_p",
    "response_format",
];

both_backends!(assistants_lifecycle, |backend| async move {
    let (up, proxy, api) = setup(backend, "").await;
    let a = api
        .ok(
            "/v1/assistants",
            json!({"model": "gpt-4o", "name": "Math tutor", "instructions": "Answer briefly.",
                   "tools": [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}],
                   "metadata": {"team": "blue"}, "temperature": 0.2}),
        )
        .await;
    for key in ASSISTANT_KEYS {
        assert!(a.get(*key).is_some(), "assistant lacks {key}: {a}");
    }
    assert_eq!(a["object"], "assistant");
    assert!(a["id"].as_str().unwrap().starts_with("asst_"));
    assert_eq!(a["id"].as_str().unwrap().len(), "asst_".len() + 24);
    assert_eq!(a["description"], Value::Null);
    assert_eq!(a["response_format"], "auto");
    assert_eq!(a["top_p"], 1.0);
    assert_eq!(a["tool_resources"], json!({}));
    let id = a["id"].as_str().unwrap();

    let (s, got) = api.get(&format!("/v1/assistants/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(got, a);

    let m = api
        .ok(
            &format!("/v1/assistants/{id}"),
            json!({"name": "Renamed", "description": null, "metadata": {"team": "red"}}),
        )
        .await;
    assert_eq!(m["name"], "Renamed");
    assert_eq!(
        m["instructions"], "Answer briefly.",
        "unspecified fields are kept"
    );
    assert_eq!(m["metadata"], json!({"team": "red"}));

    // Pagination over 5 assistants made in the same second.
    let mut ids = vec![id.to_owned()];
    for i in 0..4 {
        let a = api
            .ok(
                "/v1/assistants",
                json!({"model": "gpt-4o", "name": format!("a{i}")}),
            )
            .await;
        ids.push(a["id"].as_str().unwrap().to_owned());
    }
    let (_, page) = api.get("/v1/assistants?limit=2").await;
    assert_eq!(page["object"], "list");
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["first_id"], ids[4].as_str());
    assert_eq!(page["last_id"], ids[3].as_str());
    assert_eq!(page["has_more"], true);
    let (_, page2) = api
        .get(&format!("/v1/assistants?limit=2&after={}", ids[3]))
        .await;
    assert_eq!(page2["first_id"], ids[2].as_str());
    let (_, asc) = api.get("/v1/assistants?order=asc&limit=100").await;
    let got: Vec<&str> = asc["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let (_, empty) = api
        .get(&format!("/v1/assistants?after={}&order=asc", ids[4]))
        .await;
    assert_eq!(empty["data"], json!([]));
    assert_eq!(empty["first_id"], Value::Null);
    assert_eq!(empty["has_more"], false);

    let (s, d) = api.delete(&format!("/v1/assistants/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(
        d,
        json!({"id": id, "object": "assistant.deleted", "deleted": true})
    );
    let gone = api.get(&format!("/v1/assistants/{id}")).await;
    assert_error(&gone, 404, None, None);
    assert_eq!(
        gone.1["error"]["message"],
        format!("No assistant found with id '{id}'.")
    );
    assert!(
        up.requests()
            .iter()
            .all(|r| !r.path.starts_with("/v1/assistants")),
        "nothing went upstream"
    );
    proxy.shutdown().await;
});

both_backends!(assistant_validation, |backend| async move {
    let (_up, proxy, api) = setup(backend, "").await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({}), "missing_required_parameter", "model"),
        (
            json!({"model": "m", "name": "x".repeat(257)}),
            "string_above_max_length",
            "name",
        ),
        (
            json!({"model": "m", "description": "x".repeat(513)}),
            "string_above_max_length",
            "description",
        ),
        (
            json!({"model": "m", "instructions": "x".repeat(256_001)}),
            "string_above_max_length",
            "instructions",
        ),
        (
            json!({"model": "m", "bogus": 1}),
            "unknown_parameter",
            "bogus",
        ),
        (
            json!({"model": "m", "temperature": 3}),
            "decimal_above_max_value",
            "temperature",
        ),
        (
            json!({"model": "m", "top_p": -1}),
            "decimal_below_min_value",
            "top_p",
        ),
        (json!({"model": 5}), "invalid_type", "model"),
        (
            json!({"model": "m", "tools": vec![json!({"type": "code_interpreter"}); 129]}),
            "array_above_max_length",
            "tools",
        ),
        (
            json!({"model": "m", "tools": [{"type": "browser"}]}),
            "invalid_value",
            "tools[0].type",
        ),
        (
            json!({"model": "m", "metadata": {"k": 1}}),
            "invalid_type",
            "metadata.k",
        ),
        (
            json!({"model": "m", "tool_resources": {"file_search": {"vector_store_ids": ["vs_a", "vs_b"]}}}),
            "array_above_max_length",
            "tool_resources.file_search.vector_store_ids",
        ),
        (
            json!({"model": "m", "response_format": {"type": "json_schema"}}),
            "missing_required_parameter",
            "response_format.json_schema",
        ),
    ];
    for (body, code, param) in cases {
        let got = api.post("/v1/assistants", body.clone()).await;
        assert_error(&got, 400, Some(code), Some(param));
    }
    let many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let got = api
        .post("/v1/assistants", json!({"model": "m", "metadata": many}))
        .await;
    assert_error(
        &got,
        400,
        Some("object_above_max_properties"),
        Some("metadata"),
    );

    // Bad JSON, a non-object body, a missing key, a wrong id prefix, a missing store.
    let (s, _, body) = api
        .raw(
            Method::POST,
            "/v1/assistants",
            Some("application/json"),
            Bytes::from_static(b"{nope"),
        )
        .await;
    assert_eq!(s, 400);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("parse the JSON body")
    );
    let got = api.post("/v1/assistants", json!([1, 2])).await;
    assert_error(&got, 400, Some("invalid_type"), None);
    let mut anonymous = api.clone();
    anonymous.key = String::new();
    let (s, _, body) = anonymous
        .raw(Method::GET, "/v1/assistants", None, Bytes::new())
        .await;
    assert_eq!(s, 401);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let got = api.get("/v1/assistants/thread_abc").await;
    assert_error(&got, 400, None, Some("assistant_id"));
    let got = api.post("/v1/assistants", json!({"model": "m", "tool_resources": {"file_search": {"vector_store_ids": ["vs_missing"]}}})).await;
    assert_error(&got, 404, None, None);
    let got = api.get("/v1/assistants?limit=101").await;
    assert_error(&got, 400, Some("integer_above_max_value"), Some("limit"));
    let got = api.get("/v1/assistants?order=sideways").await;
    assert_error(&got, 400, Some("invalid_value"), Some("order"));
    let got = api
        .raw(Method::PUT, "/v1/assistants", None, Bytes::new())
        .await;
    assert_eq!(got.0, 404);
    proxy.shutdown().await;
});

both_backends!(threads_and_messages, |backend| async move {
    let (_up, proxy, api) = setup(backend, "").await;
    let t = api
        .ok("/v1/threads", json!({"messages": [
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": [{"type": "text", "text": "An answer"}]},
            {"role": "user", "content": [{"type": "text", "text": "Look"}, {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}], "metadata": {"n": "3"}}
        ], "metadata": {"topic": "x"}}))
        .await;
    assert_eq!(t["object"], "thread");
    assert_eq!(t["tool_resources"], json!({}));
    assert_eq!(t["metadata"], json!({"topic": "x"}));
    let tid = t["id"].as_str().unwrap().to_owned();

    let (s, list) = api.get(&format!("/v1/threads/{tid}/messages")).await;
    assert_eq!(s, 200);
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(
        data[0]["content"][1],
        json!({"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}})
    );
    assert_eq!(
        data[2]["content"][0],
        json!({"type": "text", "text": {"value": "First question", "annotations": []}})
    );
    for key in [
        "id",
        "object",
        "created_at",
        "thread_id",
        "status",
        "incomplete_details",
        "completed_at",
        "incomplete_at",
        "role",
        "content",
        "assistant_id",
        "run_id",
        "attachments",
        "metadata",
    ] {
        assert!(data[0].get(key).is_some(), "message lacks {key}");
    }
    assert_eq!(data[0]["object"], "thread.message");
    assert_eq!(data[0]["run_id"], Value::Null);
    assert_eq!(data[1]["role"], "assistant");

    let m = api
        .ok(
            &format!("/v1/threads/{tid}/messages"),
            json!({"role": "user", "content": "More"}),
        )
        .await;
    let mid = m["id"].as_str().unwrap().to_owned();
    let (_, asc) = api
        .get(&format!("/v1/threads/{tid}/messages?order=asc&limit=2"))
        .await;
    assert_eq!(
        asc["data"][0]["content"][0]["text"]["value"],
        "First question"
    );
    assert_eq!(asc["has_more"], true);
    let (_, got) = api.get(&format!("/v1/threads/{tid}/messages/{mid}")).await;
    assert_eq!(got, m);
    let edited = api
        .ok(
            &format!("/v1/threads/{tid}/messages/{mid}"),
            json!({"metadata": {"seen": "yes"}}),
        )
        .await;
    assert_eq!(edited["metadata"], json!({"seen": "yes"}));
    let got = api
        .post(
            &format!("/v1/threads/{tid}/messages/{mid}"),
            json!({"content": "rewrite"}),
        )
        .await;
    assert_error(&got, 400, Some("unknown_parameter"), Some("content"));
    let (s, d) = api
        .delete(&format!("/v1/threads/{tid}/messages/{mid}"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(d["object"], "thread.message.deleted");
    assert_error(
        &api.get(&format!("/v1/threads/{tid}/messages/{mid}")).await,
        404,
        None,
        None,
    );

    let bad = api
        .post(
            &format!("/v1/threads/{tid}/messages"),
            json!({"role": "system", "content": "x"}),
        )
        .await;
    assert_error(&bad, 400, Some("invalid_value"), Some("role"));
    let bad = api
        .post(
            &format!("/v1/threads/{tid}/messages"),
            json!({"role": "user", "content": []}),
        )
        .await;
    assert_error(&bad, 400, Some("empty_array"), Some("content"));
    let bad = api
        .post(
            &format!("/v1/threads/{tid}/messages"),
            json!({"role": "user"}),
        )
        .await;
    assert_error(
        &bad,
        400,
        Some("missing_required_parameter"),
        Some("content"),
    );
    let bad = api
        .post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": 7}]}),
        )
        .await;
    assert_error(&bad, 400, Some("invalid_type"), Some("messages[0].content"));

    let modified = api
        .ok(
            &format!("/v1/threads/{tid}"),
            json!({"metadata": {"topic": "y"}}),
        )
        .await;
    assert_eq!(modified["metadata"], json!({"topic": "y"}));
    let (s, d) = api.delete(&format!("/v1/threads/{tid}")).await;
    assert_eq!(s, 200);
    assert_eq!(
        d,
        json!({"id": tid, "object": "thread.deleted", "deleted": true})
    );
    let gone = api.get(&format!("/v1/threads/{tid}")).await;
    assert_error(&gone, 404, None, None);
    assert_eq!(
        gone.1["error"]["message"],
        format!("No thread found with id '{tid}'.")
    );
    assert_error(
        &api.get(&format!("/v1/threads/{tid}/messages")).await,
        404,
        None,
        None,
    );
    proxy.shutdown().await;
});

both_backends!(tenants_are_disjoint, |backend| async move {
    let (_up, proxy, api) = setup(backend, "").await;
    let other = api.other_tenant();
    let a = api.ok("/v1/assistants", json!({"model": "gpt-4o"})).await;
    let aid = a["id"].as_str().unwrap();
    let t = api
        .ok(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "secret"}]}),
        )
        .await;
    let tid = t["id"].as_str().unwrap();
    let (_, msgs) = api.get(&format!("/v1/threads/{tid}/messages")).await;
    let mid = msgs["data"][0]["id"].as_str().unwrap();

    assert_error(
        &other.get(&format!("/v1/assistants/{aid}")).await,
        404,
        None,
        None,
    );
    assert_error(
        &other
            .post(&format!("/v1/assistants/{aid}"), json!({"name": "x"}))
            .await,
        404,
        None,
        None,
    );
    assert_error(
        &other.delete(&format!("/v1/assistants/{aid}")).await,
        404,
        None,
        None,
    );
    let (_, list) = other.get("/v1/assistants").await;
    assert_eq!(list["data"], json!([]));
    assert_error(
        &other.get(&format!("/v1/threads/{tid}")).await,
        404,
        None,
        None,
    );
    assert_error(
        &other.get(&format!("/v1/threads/{tid}/messages")).await,
        404,
        None,
        None,
    );
    assert_error(
        &other
            .get(&format!("/v1/threads/{tid}/messages/{mid}"))
            .await,
        404,
        None,
        None,
    );
    assert_error(
        &other
            .post(
                &format!("/v1/threads/{tid}/messages"),
                json!({"role": "user", "content": "x"}),
            )
            .await,
        404,
        None,
        None,
    );
    assert_error(
        &other
            .post(
                &format!("/v1/threads/{tid}/runs"),
                json!({"assistant_id": aid}),
            )
            .await,
        404,
        None,
        None,
    );
    assert_error(
        &other.delete(&format!("/v1/threads/{tid}")).await,
        404,
        None,
        None,
    );
    // The owner is unaffected.
    let (s, _) = api.get(&format!("/v1/threads/{tid}/messages/{mid}")).await;
    assert_eq!(s, 200);
    proxy.shutdown().await;
});

both_backends!(v1_shapes_for_v1_clients, |backend| async move {
    let (_up, proxy, api) = setup(backend, "").await;
    let v1 = api.clone().with_header("openai-beta", "assistants=v1");
    let a = v1
        .ok(
            "/v1/assistants",
            json!({"model": "gpt-4", "tools": [{"type": "retrieval"}]}),
        )
        .await;
    assert_eq!(a["tools"], json!([{"type": "retrieval"}]));
    assert_eq!(a["file_ids"], json!([]));
    assert!(a.get("tool_resources").is_none());
    // The same assistant seen by a v2 client uses file_search.
    let (_, v2) = api
        .get(&format!("/v1/assistants/{}", a["id"].as_str().unwrap()))
        .await;
    assert_eq!(v2["tools"], json!([{"type": "file_search"}]));
    let t = v1.ok("/v1/threads", json!({})).await;
    assert!(t.get("tool_resources").is_none());
    let m = v1
        .ok(
            &format!("/v1/threads/{}/messages", t["id"].as_str().unwrap()),
            json!({"role": "user", "content": "hi"}),
        )
        .await;
    assert_eq!(m["file_ids"], json!([]));
    assert!(m.get("attachments").is_none());
    let bad = v1
        .post(
            &format!("/v1/threads/{}/messages", t["id"].as_str().unwrap()),
            json!({"role": "user", "content": [{"type": "text", "text": "x"}]}),
        )
        .await;
    assert_error(&bad, 400, Some("invalid_type"), Some("content"));
    let (_, files) = v1
        .get(&format!(
            "/v1/assistants/{}/files",
            a["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(files["data"], json!([]));
    proxy.shutdown().await;
});
