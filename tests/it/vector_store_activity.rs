//! Vector-store bookkeeping an app sees between calls: `last_active_at` (and the expiry
//! anchored on it) follows runs and attached files.
//! Time moves with the proxy's test clock (`Clock::advance`), as the run-expiry tests do.

use serde_json::{Value, json};

use crate::both_backends;
use crate::fixtures::{upload, wait_batch, wait_store};
use crate::runs::wait_run;
use crate::support::{Api, Backend, FakeUpstream, TestProxy};

const DAY: i64 = 86_400;

async fn start(backend: Backend) -> (FakeUpstream, TestProxy, Api) {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start_backend(&up.url(), backend).await;
    let api = Api::new(&proxy);
    (up, proxy, api)
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

async fn store(api: &Api, vs_id: &str) -> Value {
    let (status, vs) = api.get(&format!("/v1/vector_stores/{vs_id}")).await;
    assert_eq!(status, 200, "{vs}");
    vs
}

fn active_at(vs: &Value) -> i64 {
    vs["last_active_at"].as_i64().unwrap()
}

async fn run_to_end(api: &Api, thread: &str, assistant: &str) -> Value {
    let run = api
        .ok(
            &format!("/v1/threads/{thread}/runs"),
            json!({"assistant_id": assistant}),
        )
        .await;
    wait_run(api, thread, run["id"].as_str().unwrap()).await
}

both_backends!(a_run_that_searches_a_store_moves_it, |backend| async move {
    let (up, proxy, api) = start(backend).await;
    let f = upload(&api, "cats.txt", "assistants", b"cats purr and chase mice").await;
    let vs = api
        .ok(
            "/v1/vector_stores",
            json!({"file_ids": [id(&f)], "expires_after": {"anchor": "last_active_at", "days": 2}}),
        )
        .await;
    let vs_id = id(&vs);
    let before = active_at(&wait_store(&api, &vs_id).await);
    // The assistant's store (not the thread's): only the search itself can touch it.
    let aid = id(&api
        .ok(
            "/v1/assistants",
            json!({"model": "fake-tool-call-cite", "tools": [{"type": "file_search"}],
                   "tool_resources": {"file_search": {"vector_store_ids": [vs_id]}}}),
        )
        .await);
    let tid = id(&api
        .ok(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "what do cats chase"}]}),
        )
        .await);
    proxy.state.clock.advance(DAY);
    let ended = run_to_end(&api, &tid, &aid).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    assert!(!up.embedding_requests().is_empty(), "the run searched");

    let after = store(&api, &vs_id).await;
    assert!(active_at(&after) >= before + DAY, "{after}");
    assert_eq!(
        after["expires_at"].as_i64(),
        Some(active_at(&after) + 2 * DAY),
        "expiry follows the refreshed activity: {after}"
    );
    assert_eq!(after["status"], "completed");
    proxy.shutdown().await;
});

both_backends!(attaching_files_moves_the_store, |backend| async move {
    let (_up, proxy, api) = start(backend).await;
    let a = upload(&api, "a.txt", "assistants", b"alpha").await;
    let b = upload(&api, "b.txt", "assistants", b"beta").await;
    let c = upload(&api, "c.txt", "assistants", b"gamma").await;
    let vs = api
        .ok(
            "/v1/vector_stores",
            json!({"expires_after": {"anchor": "last_active_at", "days": 1}}),
        )
        .await;
    let vs_id = id(&vs);
    let created = active_at(&vs);

    // Half a day later a file is attached: the day of expiry starts over.
    proxy.state.clock.advance(DAY / 2);
    api.ok(
        &format!("/v1/vector_stores/{vs_id}/files"),
        json!({"file_id": id(&a)}),
    )
    .await;
    let after_file = store(&api, &vs_id).await;
    assert!(active_at(&after_file) >= created + DAY / 2, "{after_file}");
    assert_eq!(
        after_file["expires_at"].as_i64(),
        Some(active_at(&after_file) + DAY)
    );

    // Another 20 hours (past the first expiry) and a batch: the store is still alive.
    proxy.state.clock.advance(20 * 3600);
    let batch = api
        .ok(
            &format!("/v1/vector_stores/{vs_id}/file_batches"),
            json!({"file_ids": [id(&b), id(&c)]}),
        )
        .await;
    wait_batch(&api, &vs_id, &id(&batch)).await;
    let after_batch = store(&api, &vs_id).await;
    assert!(
        active_at(&after_batch) >= active_at(&after_file) + 20 * 3600,
        "{after_batch}"
    );
    assert_eq!(after_batch["status"], "completed", "{after_batch}");

    // Left alone for longer than a day, it expires.
    proxy.state.clock.advance(DAY + 60);
    assert_eq!(store(&api, &vs_id).await["status"], "expired");
    proxy.shutdown().await;
});

both_backends!(
    a_thread_store_in_use_does_not_expire,
    |backend| async move {
        let (_up, proxy, api) = start(backend).await;
        let cats = upload(&api, "cats.txt", "assistants", b"cats purr and chase mice").await;
        // A model that answers without searching: running on the thread is use enough.
        let aid = id(&api
            .ok(
                "/v1/assistants",
                json!({"model": "gpt-4o", "tools": [{"type": "file_search"}]}),
            )
            .await);
        let attach = json!({"file_id": id(&cats), "tools": [{"type": "file_search"}]});
        let thread = |text: &str| json!({"messages": [{"role": "user", "content": text, "attachments": [attach.clone()]}]});
        let busy = api.ok("/v1/threads", thread("busy thread")).await;
        let idle = api.ok("/v1/threads", thread("idle thread")).await;
        let store_of = |t: &Value| {
            t["tool_resources"]["file_search"]["vector_store_ids"][0]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let (busy_vs, idle_vs) = (store_of(&busy), store_of(&idle));
        let created = active_at(&wait_store(&api, &busy_vs).await);
        wait_store(&api, &idle_vs).await;

        // A run every five days: each moves the 7-day expiry along.
        for round in 1..=3 {
            proxy.state.clock.advance(5 * DAY);
            let ended = run_to_end(&api, &id(&busy), &aid).await;
            assert_eq!(ended["status"], "completed", "round {round}: {ended}");
            let vs = store(&api, &busy_vs).await;
            assert!(
                active_at(&vs) >= created + round * 5 * DAY,
                "round {round}: {vs}"
            );
            assert_eq!(vs["status"], "completed", "round {round}: {vs}");
        }
        // Fifteen days on, the idle thread's store has expired, and so do its runs.
        assert_eq!(store(&api, &idle_vs).await["status"], "expired");
        let ended = run_to_end(&api, &id(&idle), &aid).await;
        assert_eq!(ended["status"], "failed", "{ended}");
        assert_eq!(
            ended["last_error"]["message"],
            format!("Vector store '{idle_vs}' has expired.")
        );
        proxy.shutdown().await;
    }
);
