//! What runs do when things go wrong (issue 17), on both backends: an upstream that stalls,
//! transient failures retried before any output, a run past its `expires_at`, shutdown past
//! the grace period, an upstream that echoes the caller's key; and the API details runs must
//! get right (step shapes, step usage, `reasoning_effort`, `content_filter`, truncation).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::both_backends;
use crate::fixtures::tenant_of;
use crate::runs::{sse_events, stream, wait_run};
use crate::support::fake_upstream::ScriptedReply;
use crate::support::fake_upstream::error_body;
use crate::support::{Api, Backend, setup};

async fn assistant(api: &Api, body: Value) -> String {
    api.ok("/v1/assistants", body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A thread with one user message and a run on it; returns (thread, run).
async fn run_on_new_thread(api: &Api, assistant_id: &str, extra: Value) -> (String, String) {
    let tid = api
        .ok(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "tell me a long story please"}]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut body = json!({"assistant_id": assistant_id});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let run = api.ok(&format!("/v1/threads/{tid}/runs"), body).await;
    (tid, run["id"].as_str().unwrap().to_owned())
}

/// Polls until the run's status is `status` (within `within`).
async fn wait_status(api: &Api, tid: &str, rid: &str, status: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (_, r) = api.get(&format!("/v1/threads/{tid}/runs/{rid}")).await;
        if r["status"] == status {
            return r;
        }
        assert!(Instant::now() < deadline, "run never became {status}: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rewrites a run's record as another proxy would have left it (`edit` changes a copy), by
/// compare-and-set on the version it has now.
async fn rewrite_run(
    store: &assistants_proxy::store::Store,
    tenant: &assistants_proxy::store::Tenant,
    tid: &str,
    rid: &str,
    edit: impl FnOnce(&mut assistants_proxy::model::RunRecord),
) {
    let rec = store.runs.get_run(tenant, tid, rid).await.unwrap().unwrap();
    let mut changed = rec.clone();
    changed.version = rec.version + 1;
    edit(&mut changed);
    assert!(
        store
            .runs
            .update_run(tenant, &changed, rec.version)
            .await
            .unwrap()
    );
}

async fn messages(api: &Api, tid: &str) -> Vec<Value> {
    let (s, list) = api.get(&format!("/v1/threads/{tid}/messages")).await;
    assert_eq!(s, 200, "{list}");
    list["data"].as_array().unwrap().clone()
}

/// Retries fast, so the tests do not wait out production back-offs.
const FAST_RETRY: &str = "[runs]\nmodel_retry_base_ms = 10\n";

both_backends!(a_stalled_upstream_fails_the_run, |backend| async move {
    let toml = format!("{FAST_RETRY}[upstream]\nidle_timeout_seconds = 1\n");
    let (up, proxy, api) = setup(backend, &toml).await;
    let aid = assistant(&api, json!({"model": "gpt-4o"})).await;
    // One chunk of output, then silence with the connection open.
    up.push_chat_script(ScriptedReply::StallAfter {
        text: "Once upon a time".into(),
        chunks: 1,
    });
    let (tid, rid) = run_on_new_thread(&api, &aid, json!({})).await;
    let failed = wait_status(&api, &tid, &rid, "failed", Duration::from_secs(20)).await;
    assert_eq!(failed["last_error"]["code"], "server_error", "{failed}");
    let message = failed["last_error"]["message"].as_str().unwrap();
    assert!(message.contains("stopped sending"), "{message}");
    // Output had started: no second attempt, and the partial answer is kept, incomplete.
    assert_eq!(up.chat_requests().len(), 1);
    let msgs = messages(&api, &tid).await;
    assert_eq!(msgs[0]["status"], "incomplete", "{:?}", msgs[0]);
    assert_eq!(msgs[0]["incomplete_details"]["reason"], "run_failed");
    assert_eq!(msgs[0]["content"][0]["text"]["value"], "Once ");
    // The thread is free for the next run.
    let again = api
        .ok(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": aid}),
        )
        .await;
    let done = wait_run(&api, &tid, again["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    proxy.shutdown().await;
});

both_backends!(
    transient_failures_before_output_are_retried,
    |backend| async move {
        let toml = format!("{FAST_RETRY}[upstream]\nidle_timeout_seconds = 1\n");
        let (up, proxy, api) = setup(backend, &toml).await;
        let aid = assistant(&api, json!({"model": "gpt-4o"})).await;
        // A 429 (retry-after: 1), a 500, a connection reset before any output and a stall
        // before any output: four failed attempts, then an answer on the last one allowed.
        for reply in [
            ScriptedReply::rate_limited(),
            ScriptedReply::server_error(),
            ScriptedReply::DropAfter {
                text: "x".into(),
                chunks: 0,
            },
        ] {
            up.push_chat_script(reply);
        }
        up.push_chat_script(ScriptedReply::text("Recovered answer."));
        let started = Instant::now();
        let (tid, rid) = run_on_new_thread(&api, &aid, json!({})).await;
        let done = wait_run(&api, &tid, &rid).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(up.chat_requests().len(), 4);
        // The 429's retry-after was honoured.
        assert!(started.elapsed() >= Duration::from_secs(1));
        let msgs = messages(&api, &tid).await;
        assert_eq!(msgs.len(), 2, "no partial message from the failed attempts");
        assert_eq!(msgs[0]["content"][0]["text"]["value"], "Recovered answer.");
        let (_, steps) = api
            .get(&format!("/v1/threads/{tid}/runs/{rid}/steps"))
            .await;
        assert_eq!(steps["data"].as_array().unwrap().len(), 1, "{steps}");

        // A stall before any output is retried too.
        up.clear_requests();
        up.push_chat_script(ScriptedReply::StallAfter {
            text: "x".into(),
            chunks: 0,
        });
        let (tid, rid) = run_on_new_thread(&api, &aid, json!({})).await;
        assert_eq!(wait_run(&api, &tid, &rid).await["status"], "completed");
        assert_eq!(up.chat_requests().len(), 2);
        proxy.shutdown().await;
    }
);

both_backends!(retries_are_bounded_and_cancellable, |backend| async move {
    let (up, proxy, api) = setup(
        backend,
        "[runs]\nmodel_attempts = 2\nmodel_retry_base_ms = 10\n",
    )
    .await;
    let aid = assistant(&api, json!({"model": "gpt-4o"})).await;
    up.push_chat_script(ScriptedReply::server_error());
    up.push_chat_script(ScriptedReply::server_error());
    let (tid, rid) = run_on_new_thread(&api, &aid, json!({})).await;
    let failed = wait_run(&api, &tid, &rid).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["last_error"]["code"], "server_error");
    let message = failed["last_error"]["message"].as_str().unwrap();
    assert!(message.contains("gave up after 2 attempts"), "{message}");
    assert_eq!(up.chat_requests().len(), 2);
    // A refused request (not transient) is not retried.
    up.clear_requests();
    up.push_chat_script(ScriptedReply::Error {
        status: 400,
        body: error_body("Unknown model.", "invalid_request_error", None),
    });
    let (tid, rid) = run_on_new_thread(&api, &aid, json!({})).await;
    assert_eq!(wait_run(&api, &tid, &rid).await["status"], "failed");
    assert_eq!(up.chat_requests().len(), 1);
    proxy.shutdown().await;

    // A run waiting to retry is cancelled at once.
    let (up, proxy, api) = setup(
        backend,
        "[runs]\nmodel_attempts = 5\nmodel_retry_base_ms = 20000\n",
    )
    .await;
    let aid = assistant(&api, json!({"model": "gpt-4o"})).await;
    up.push_chat_script(ScriptedReply::server_error());
    let (tid, rid) = run_on_new_thread(&api, &aid, json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.chat_requests().is_empty() {
        assert!(Instant::now() < deadline, "the model was never called");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.ok(&format!("/v1/threads/{tid}/runs/{rid}/cancel"), json!({}))
        .await;
    let ended = wait_status(&api, &tid, &rid, "cancelled", Duration::from_secs(5)).await;
    assert!(ended["cancelled_at"].is_i64());
    assert_eq!(up.chat_requests().len(), 1);
    proxy.shutdown().await;
});

both_backends!(
    an_executing_run_expires_at_expires_at,
    |backend| async move {
        // The upstream stalls far longer than the run may live: the run ends `expired` at its
        // `expires_at`, not when the upstream gives up.
        let toml =
            "[runs]\nexpires_after_seconds = 2\nlease_seconds = 2\nsweep_interval_seconds = 1\n";
        let (up, proxy, api) = setup(backend, toml).await;
        let aid = assistant(&api, json!({"model": "gpt-4o"})).await;
        up.push_chat_script(ScriptedReply::StallAfter {
            text: "Once upon a time".into(),
            chunks: 2,
        });
        let (tid, rid) = run_on_new_thread(&api, &aid, json!({})).await;
        let expired = wait_status(&api, &tid, &rid, "expired", Duration::from_secs(15)).await;
        assert!(expired["expires_at"].is_i64(), "{expired}");
        let msgs = messages(&api, &tid).await;
        assert_eq!(msgs[0]["status"], "incomplete");
        assert_eq!(msgs[0]["incomplete_details"]["reason"], "run_expired");
        let (_, steps) = api
            .get(&format!("/v1/threads/{tid}/runs/{rid}/steps"))
            .await;
        assert_eq!(steps["data"][0]["status"], "expired", "{steps}");
        proxy.shutdown().await;
    }
);

both_backends!(
    a_run_held_past_expiry_by_a_live_lease_is_expired,
    |backend| async move {
        // Another proxy's engine is stuck yet keeps renewing its lease: once a whole lease has
        // passed beyond `expires_at`, the sweeper expires the run anyway. (The run is made
        // active through the API, waiting for tool outputs, and then rewritten as such a
        // proxy would have left it.)
        let (_up, proxy, api) = setup(backend, "[runs]\nlease_seconds = 30\n").await;
        let tools = json!([{"type": "function", "function": {"name": "weather"}}]);
        let aid = assistant(&api, json!({"model": "fake-tool-call", "tools": tools})).await;
        let store = &proxy.state.store;
        let tenant = tenant_of(&api);
        // Past `expires_at` by less than a lease (30 s), then by more.
        for (past, expected) in [(0, "in_progress"), (31, "expired")] {
            let (tid, rid) = run_on_new_thread(&api, &aid, json!({})).await;
            let expires_at = proxy.state.clock.now() - past;
            let now_ms = proxy.state.clock.now_millis();
            assert_eq!(
                wait_run(&api, &tid, &rid).await["status"],
                "requires_action"
            );
            rewrite_run(store, &tenant, &tid, &rid, |stuck| {
                stuck.run.status = assistants_proxy::model::RunStatus::InProgress;
                stuck.run.required_action = None;
                stuck.run.expires_at = Some(expires_at);
                stuck.lease_owner = Some("proxy_elsewhere".into());
                stuck.lease_until = Some(now_ms + 3_600_000);
            })
            .await;
            assistants_proxy::runs::sweeper::sweep_once(&proxy.state.runs)
                .await
                .unwrap();
            let (_, r) = api.get(&format!("/v1/threads/{tid}/runs/{rid}")).await;
            // Past expiry by less than a lease, the owner may still end it itself.
            assert_eq!(r["status"], expected, "{r}");
        }
        proxy.shutdown().await;
    }
);

both_backends!(
    a_queued_run_is_left_a_lease_to_be_claimed,
    |backend| async move {
        // A run another proxy has just made is queued and holds no lease until that proxy
        // claims it: a sweep before then must leave it alone (on a slow store the claim may
        // land seconds later), and fail it only once a lease has gone since its creation
        // (its creator died before claiming it).
        let (_up, proxy, api) = setup(backend, "[runs]\nlease_seconds = 30\n").await;
        let tools = json!([{"type": "function", "function": {"name": "weather"}}]);
        let aid = assistant(&api, json!({"model": "fake-tool-call", "tools": tools})).await;
        let store = &proxy.state.store;
        let tenant = tenant_of(&api);
        for (age, expected) in [(0, "queued"), (31, "failed")] {
            let (tid, rid) = run_on_new_thread(&api, &aid, json!({})).await;
            assert_eq!(
                wait_run(&api, &tid, &rid).await["status"],
                "requires_action"
            );
            let created_at = proxy.state.clock.now() - age;
            rewrite_run(store, &tenant, &tid, &rid, |queued| {
                queued.run.status = assistants_proxy::model::RunStatus::Queued;
                queued.run.required_action = None;
                queued.run.created_at = created_at;
                queued.lease_owner = None;
                queued.lease_until = None;
            })
            .await;
            assistants_proxy::runs::sweeper::sweep_once(&proxy.state.runs)
                .await
                .unwrap();
            let (_, r) = api.get(&format!("/v1/threads/{tid}/runs/{rid}")).await;
            assert_eq!(r["status"], expected, "{r}");
            if expected == "failed" {
                assert_eq!(r["last_error"]["code"], "server_error", "{r}");
            }
        }
        proxy.shutdown().await;
    }
);

both_backends!(
    a_stream_whose_run_is_taken_over_says_how_it_ended,
    |backend| async move {
        // The engine streaming a run loses it to another proxy (which, as a sweep would,
        // fails it): the stream follows the run and ends with its `thread.run.failed`, not
        // with a bare `done`.
        let (up, proxy, api) = setup(backend, "[runs]\nlease_seconds = 3\n").await;
        let aid = assistant(&api, json!({"model": "gpt-4o"})).await;
        up.push_chat_script(ScriptedReply::StallAfter {
            text: "Once upon a time".into(),
            chunks: 1,
        });
        let tid = crate::runs::thread_with(&api, "Tell me a story").await;
        let streaming = {
            let (api, path) = (api.clone(), format!("/v1/threads/{tid}/runs"));
            let body = json!({"assistant_id": aid, "stream": true});
            tokio::spawn(async move { stream(&api, &path, body).await })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let rid = loop {
            let (_, runs) = api.get(&format!("/v1/threads/{tid}/runs")).await;
            if runs["data"][0]["status"] == "in_progress" {
                break runs["data"][0]["id"].as_str().unwrap().to_owned();
            }
            assert!(Instant::now() < deadline, "the run never started: {runs}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let tenant = tenant_of(&api);
        rewrite_run(&proxy.state.store, &tenant, &tid, &rid, |rec| {
            rec.run.status = assistants_proxy::model::RunStatus::Failed;
            rec.run.last_error = Some(json!({"code": "server_error", "message": "taken over"}));
            rec.lease_owner = Some("proxy_elsewhere".into());
            rec.lease_until = None;
        })
        .await;
        let events = tokio::time::timeout(Duration::from_secs(20), streaming)
            .await
            .expect("the stream must end")
            .unwrap();
        let last_run = events
            .iter()
            .rev()
            .find(|(n, _)| n.starts_with("thread.run.") && !n.starts_with("thread.run.step"))
            .unwrap();
        assert_eq!(last_run.0, "thread.run.failed", "{events:?}");
        assert_eq!(last_run.1["last_error"]["message"], "taken over");
        proxy.shutdown().await;
    }
);

both_backends!(
    shutdown_past_grace_fails_runs_and_returns,
    |backend| async move {
        let toml = "[server]\nshutdown_grace_seconds = 1\nshutdown_cleanup_seconds = 5\n";
        let (up, mut proxy, api) = setup(backend, toml).await;
        let aid = assistant(&api, json!({"model": "gpt-4o"})).await;
        up.push_chat_script(ScriptedReply::StallAfter {
            text: "Once upon a time".into(),
            chunks: 2,
        });
        let (tid, rid) = run_on_new_thread(&api, &aid, json!({})).await;
        // Wait until the partial answer is visible.
        let deadline = Instant::now() + Duration::from_secs(10);
        while messages(&api, &tid).await.len() < 2 {
            assert!(Instant::now() < deadline, "no partial answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let state = proxy.state.clone();
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(15), proxy.begin_shutdown())
            .await
            .expect("shutdown must end within grace + cleanup")
            .unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(1),
            "the grace period was not given: {took:?}"
        );
        let tenant = tenant_of(&api);
        let rec = state
            .store
            .runs
            .get_run(&tenant, &tid, &rid)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rec.run.status.as_str(), "failed", "{:?}", rec.run);
        let err = rec.run.last_error.unwrap();
        assert_eq!(err["code"], "server_error");
        assert!(
            err["message"].as_str().unwrap().contains("shut down"),
            "{err}"
        );
        assert!(rec.lease_owner.is_none());
        let page = state
            .store
            .messages
            .list_messages(&tenant, &tid, None, &Default::default())
            .await
            .unwrap();
        let answer = page.items.iter().find(|m| m.role == "assistant").unwrap();
        assert_eq!(answer.status, "incomplete");
        assert!(!answer.content.texts(false).join("").is_empty());
    }
);

both_backends!(the_callers_key_is_never_stored, |backend| async move {
    let (up, proxy, api) = setup(backend, "").await;
    let aid = assistant(&api, json!({"model": "gpt-4o"})).await;
    // An upstream that quotes the caller's whole key in its error, as some do.
    up.push_chat_script(ScriptedReply::Error {
        status: 401,
        body: error_body(
            &format!(
                "Incorrect API key provided: {}. You can find your API key at https://example.invalid.",
                api.key
            ),
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
    });
    let (tid, rid) = run_on_new_thread(&api, &aid, json!({})).await;
    let failed = wait_run(&api, &tid, &rid).await;
    assert_eq!(failed["status"], "failed");
    let message = failed["last_error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Incorrect API key provided: [redacted]"),
        "{message}"
    );
    assert!(!failed.to_string().contains(&api.key));
    // Nor in what the store holds: the run as stored, and on SQLite every byte of the files.
    let tenant = tenant_of(&api);
    let rec = proxy
        .state
        .store
        .runs
        .get_run(&tenant, &tid, &rid)
        .await
        .unwrap()
        .unwrap();
    assert!(!serde_json::to_string(&rec).unwrap().contains(&api.key));
    let db = match backend {
        Backend::Sqlite => Some(
            proxy
                .state
                .config
                .store_url
                .trim_start_matches("sqlite://")
                .to_owned(),
        ),
        Backend::Cassandra => None,
    };
    let mut proxy = proxy;
    proxy.begin_shutdown().await.unwrap();
    if let Some(db) = db {
        // The database and its WAL, after shutdown (the proxy's temporary dir still exists).
        let parent = std::path::Path::new(&db).parent().unwrap().to_owned();
        let mut checked = 0;
        for entry in std::fs::read_dir(&parent).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes
                    .windows(api.key.len())
                    .any(|w| w == api.key.as_bytes()),
                "{} holds the key",
                path.display()
            );
            checked += 1;
        }
        assert!(checked >= 1);
    }
    drop(proxy);
});

both_backends!(steps_carry_only_their_own_keys, |backend| async move {
    let (_up, proxy, api) = setup(backend, "").await;
    let aid = assistant(
        &api,
        json!({"model": "fake-tool-call", "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {"input": {"type": "string"}}}}}]}),
    )
    .await;
    let tid = api
        .ok(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "Rome"}]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = stream(
        &api,
        &format!("/v1/threads/{tid}/runs"),
        json!({"assistant_id": aid, "stream": true}),
    )
    .await;
    let rid = events
        .iter()
        .find(|(n, _)| n == "thread.run.created")
        .map(|(_, v)| v["id"].as_str().unwrap().to_owned())
        .unwrap();
    // The tool step waits for outputs: in progress, no usage yet (OpenAI shows none).
    let (_, steps) = api
        .get(&format!("/v1/threads/{tid}/runs/{rid}/steps"))
        .await;
    let tool_step = &steps["data"][0];
    assert_eq!(tool_step["status"], "in_progress", "{steps}");
    assert!(tool_step["usage"].is_null(), "{tool_step}");
    let call = &tool_step["step_details"]["tool_calls"][0];
    let keys: Vec<&str> = call
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["function", "id", "type"], "{call}");
    for (name, v) in events
        .iter()
        .filter(|(n, _)| n.starts_with("thread.run.step."))
    {
        if let Some(calls) = v["step_details"]["tool_calls"].as_array() {
            for c in calls {
                assert!(c.get("file_search").is_none(), "{name}: {c}");
            }
        }
    }
    let cid = call["id"].as_str().unwrap();
    let body = api
        .raw(
            http::Method::POST,
            &format!("/v1/threads/{tid}/runs/{rid}/submit_tool_outputs"),
            Some("application/json"),
            bytes::Bytes::from(
                json!({"tool_outputs": [{"tool_call_id": cid, "output": "warm"}], "stream": true})
                    .to_string(),
            ),
        )
        .await
        .2;
    let events = sse_events(&body);
    assert!(events.iter().any(|(n, _)| n == "thread.run.completed"));
    let (_, steps) = api
        .get(&format!("/v1/threads/{tid}/runs/{rid}/steps"))
        .await;
    let data = steps["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    // Completed, the tool step shows its usage.
    let tool_step = data.iter().find(|s| s["type"] == "tool_calls").unwrap();
    assert_eq!(tool_step["status"], "completed");
    assert!(
        tool_step["usage"]["total_tokens"].as_u64().unwrap() > 0,
        "{tool_step}"
    );
    let message_step = data
        .iter()
        .find(|s| s["type"] == "message_creation")
        .unwrap();
    let details: Vec<&str> = message_step["step_details"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(details, ["message_creation", "type"], "{message_step}");
    let sid = message_step["id"].as_str().unwrap();
    let (_, one) = api
        .get(&format!("/v1/threads/{tid}/runs/{rid}/steps/{sid}"))
        .await;
    assert!(one["step_details"].get("tool_calls").is_none(), "{one}");
    for (name, v) in events
        .iter()
        .filter(|(n, _)| n.starts_with("thread.run.step."))
    {
        if v["type"] == "message_creation" {
            assert!(v["step_details"].get("tool_calls").is_none(), "{name}: {v}");
        }
    }
    proxy.shutdown().await;
});

both_backends!(
    reasoning_effort_reaches_the_upstream,
    |backend| async move {
        let (up, proxy, api) = setup(backend, "").await;
        let aid = assistant(&api, json!({"model": "o4-mini", "reasoning_effort": "low"})).await;
        let (_, shown) = api.get(&format!("/v1/assistants/{aid}")).await;
        assert!(
            shown.get("reasoning_effort").is_none(),
            "not an Assistant field: {shown}"
        );
        let (tid, rid) = run_on_new_thread(&api, &aid, json!({})).await;
        assert_eq!(wait_run(&api, &tid, &rid).await["status"], "completed");
        assert_eq!(up.chat_requests()[0]["reasoning_effort"], "low");
        // The run's own value wins; modify changes the assistant's; null clears it.
        up.clear_requests();
        let (tid, rid) = run_on_new_thread(&api, &aid, json!({"reasoning_effort": "high"})).await;
        assert_eq!(wait_run(&api, &tid, &rid).await["status"], "completed");
        assert_eq!(up.chat_requests()[0]["reasoning_effort"], "high");
        api.ok(
            &format!("/v1/assistants/{aid}"),
            json!({"reasoning_effort": null}),
        )
        .await;
        up.clear_requests();
        let (tid, rid) = run_on_new_thread(&api, &aid, json!({})).await;
        assert_eq!(wait_run(&api, &tid, &rid).await["status"], "completed");
        assert!(up.chat_requests()[0].get("reasoning_effort").is_none());
        proxy.shutdown().await;
    }
);

both_backends!(a_filtered_answer_is_incomplete, |backend| async move {
    let (up, proxy, api) = setup(backend, "").await;
    let aid = assistant(&api, json!({"model": "gpt-4o"})).await;
    up.push_chat_script(ScriptedReply::Filtered("Part of an answer".into()));
    let (tid, rid) = run_on_new_thread(&api, &aid, json!({})).await;
    let run = wait_run(&api, &tid, &rid).await;
    assert_eq!(run["status"], "completed", "{run}");
    let msgs = messages(&api, &tid).await;
    assert_eq!(msgs[0]["status"], "incomplete", "{:?}", msgs[0]);
    assert_eq!(msgs[0]["incomplete_details"]["reason"], "content_filter");
    assert!(msgs[0]["incomplete_at"].is_i64());
    assert_eq!(msgs[0]["content"][0]["text"]["value"], "Part of an answer");
    proxy.shutdown().await;
});

both_backends!(
    long_threads_keep_their_opening_and_drop_the_middle,
    |backend| async move {
        // A context of ~6,000 tokens after the completion reserve, a thread of 1,100 messages
        // (past the 1,000 newest a prompt reads) of ~60 tokens each.
        let toml = "[runs]\ndefault_context_tokens = 10096\n";
        let (up, proxy, api) = setup(backend, toml).await;
        let aid = assistant(&api, json!({"model": "house-model"})).await;
        let opening = "TASK: you are reviewing a contract; answer about its clauses.";
        let filler = |i: usize| format!("note {i}: {}", "clause text ".repeat(25));
        let first: Vec<Value> = std::iter::once(json!({"role": "user", "content": opening}))
            .chain((1..32).map(|i| json!({"role": "user", "content": filler(i)})))
            .collect();
        let tid = api.ok("/v1/threads", json!({"messages": first})).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        for i in 32..1100 {
            api.ok(
                &format!("/v1/threads/{tid}/messages"),
                json!({"role": "user", "content": filler(i)}),
            )
            .await;
        }
        let run = api
            .ok(
                &format!("/v1/threads/{tid}/runs"),
                json!({"assistant_id": aid}),
            )
            .await;
        assert_eq!(
            wait_run(&api, &tid, run["id"].as_str().unwrap()).await["status"],
            "completed"
        );
        let sent = &up.chat_requests()[0]["messages"];
        let texts: Vec<&str> = sent
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        assert_eq!(texts[0], opening, "the opening is kept");
        assert!(
            texts.last().unwrap().starts_with("note 1099:"),
            "the newest is kept"
        );
        let n = texts.len();
        assert!(n > 20 && n < 200, "{n} messages sent");
        // The rest is the newest run of messages, without a gap: the middle was dropped.
        assert!(
            texts[1].starts_with(&format!("note {}:", 1100 - (n - 1))),
            "{}",
            texts[1]
        );
        proxy.shutdown().await;
    }
);

both_backends!(
    a_stalled_embeddings_answer_fails_the_file,
    |backend| async move {
        // Embeddings are the proxy's own upstream calls too: the same idle timeout applies.
        let toml = "[upstream]\nidle_timeout_seconds = 1\n[retrieval]\nembedding_model = \"fake-stall-embed\"\nembed_max_attempts = 1\n";
        let (_up, proxy, api) = setup(backend, toml).await;
        let file =
            crate::fixtures::upload(&api, "notes.txt", "assistants", b"Some notes to index.").await;
        let fid = file["id"].as_str().unwrap();
        let vs = api
            .ok("/v1/vector_stores", json!({"name": "s", "file_ids": [fid]}))
            .await;
        let vs_id = vs["id"].as_str().unwrap();
        let started = Instant::now();
        let f = crate::fixtures::wait_file(&api, vs_id, fid).await;
        assert_eq!(f["status"], "failed", "{f}");
        let message = f["last_error"]["message"].as_str().unwrap();
        assert!(message.contains("stopped sending"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(20));
        proxy.shutdown().await;
    }
);
