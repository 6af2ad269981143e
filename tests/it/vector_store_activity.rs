//! Vector-store bookkeeping an app sees between calls: `last_active_at` (and the expiry
//! anchored on it) follows runs and attached files, and a store's files list in attach order.
//! Time moves with the proxy's test clock (`Clock::advance`), as the run-expiry tests do.

use serde_json::{Value, json};

use crate::both_backends;
use crate::fixtures::{upload, wait_batch, wait_store};
use crate::runs::wait_run;
use crate::support::{Api, assert_error, id, setup};

const DAY: i64 = 86_400;

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
    let (up, proxy, api) = setup(backend, "").await;
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
    let (_up, proxy, api) = setup(backend, "").await;
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
        let (_up, proxy, api) = setup(backend, "").await;
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

both_backends!(store_files_list_in_attach_order, |backend| async move {
    let (_up, proxy, api) = setup(backend, "").await;
    // Uploaded a, b (so a's id sorts first), attached b, then a five seconds later.
    let a = id(&upload(&api, "a.txt", "assistants", b"alpha").await);
    let b = id(&upload(&api, "b.txt", "assistants", b"beta").await);
    let vs_id = id(&api.ok("/v1/vector_stores", json!({})).await);
    let files = format!("/v1/vector_stores/{vs_id}/files");
    api.ok(&files, json!({"file_id": b})).await;
    proxy.state.clock.advance(5);
    api.ok(&files, json!({"file_id": a})).await;
    // A batch of two more, later still (one attach second: ties go by id).
    let c = id(&upload(&api, "c.txt", "assistants", b"gamma").await);
    let d = id(&upload(&api, "d.txt", "assistants", b"delta").await);
    proxy.state.clock.advance(5);
    let batch = id(&api
        .ok(
            &format!("/v1/vector_stores/{vs_id}/file_batches"),
            json!({"file_ids": [d, c]}),
        )
        .await);
    wait_batch(&api, &vs_id, &batch).await;

    let list = async |path: &str| {
        let (status, v) = api.get(path).await;
        assert_eq!(status, 200, "{path}: {v}");
        let ids: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(v["first_id"].as_str(), ids.first().map(String::as_str));
        assert_eq!(v["last_id"].as_str(), ids.last().map(String::as_str));
        (ids, v["has_more"].as_bool().unwrap())
    };
    let s = |v: &[&String]| v.iter().map(|x| (*x).clone()).collect::<Vec<_>>();
    assert_eq!(
        list(&format!("{files}?order=asc")).await,
        (s(&[&b, &a, &c, &d]), false)
    );
    // Default order: newest attach first.
    assert_eq!(list(&files).await, (s(&[&d, &c, &a, &b]), false));
    assert_eq!(
        list(&format!("{files}?limit=2")).await,
        (s(&[&d, &c]), true)
    );
    assert_eq!(
        list(&format!("{files}?limit=2&after={c}")).await,
        (s(&[&a, &b]), false)
    );
    assert_eq!(
        list(&format!("{files}?order=asc&after={b}&limit=1")).await,
        (s(&[&a]), true)
    );
    assert_eq!(
        list(&format!("{files}?order=asc&before={c}")).await,
        (s(&[&b, &a]), false)
    );
    assert_eq!(
        list(&format!("{files}?before={b}&limit=2")).await,
        (s(&[&c, &a]), true)
    );
    // The batch's own list: its files only, same order and cursors.
    let batch_files = format!("/v1/vector_stores/{vs_id}/file_batches/{batch}/files");
    assert_eq!(
        list(&format!("{batch_files}?order=asc")).await,
        (s(&[&c, &d]), false)
    );
    assert_eq!(
        list(&format!("{batch_files}?after={d}")).await,
        (s(&[&c]), false)
    );
    // A cursor that is not a file of the store cannot be placed: a clear 400.
    let other = id(&upload(&api, "e.txt", "assistants", b"epsilon").await);
    assert_error(
        &api.get(&format!("{files}?after={other}")).await,
        400,
        None,
        Some("after"),
    );
    proxy.shutdown().await;
});
