//! Node loss under load: two proxies over the cluster serve message creates, streamed runs and
//! vector-store ingestion and search while nodes are killed (kill -9) and brought back; then
//! two nodes at once, where the intercepted routes must answer 503 and recover by themselves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::support::{Api, FakeUpstream, id, new_key};
use crate::{Proc, cluster, exclusive, proxy_toml, session, status_of, store_url, wait_whole};

/// How long after a node dies requests may still fail: those in flight on its connections
/// when it died, and non-idempotent ones (LWTs) the driver must not resend. Past it, nothing
/// may fail.
const RETRY_WINDOW: Duration = Duration::from_secs(3);
/// How long each single-node outage lasts under load.
const OUTAGE: Duration = Duration::from_secs(8);

/// Starts, pauses (while a node restarts: on two cores a JVM starting beside the load takes
/// minutes) and stops the load.
#[derive(Default)]
struct Gate {
    paused: AtomicBool,
    stopped: AtomicBool,
}

impl Gate {
    /// Whether to go on; waits while paused.
    async fn go(&self) -> bool {
        while self.paused.load(Ordering::Relaxed) && !self.stopped.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        !self.stopped.load(Ordering::Relaxed)
    }
}

/// What the load saw: acknowledged writes (to read back later) and failures, with when.
#[derive(Default)]
struct Tally {
    messages: Mutex<Vec<(String, String)>>,
    runs: Mutex<Vec<(String, String)>>,
    stores: Mutex<Vec<String>>,
    searches: AtomicU64,
    errors: Mutex<Vec<(Instant, String)>>,
}

impl Tally {
    fn error(&self, what: String) {
        self.errors.lock().unwrap().push((Instant::now(), what));
    }

    fn acknowledged(&self) -> (usize, usize, usize, u64) {
        (
            self.messages.lock().unwrap().len(),
            self.runs.lock().unwrap().len(),
            self.stores.lock().unwrap().len(),
            self.searches.load(Ordering::Relaxed),
        )
    }

    fn errors_between(&self, from: Instant, to: Instant) -> Vec<(Duration, String)> {
        self.errors
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(at, e)| (*at - from, e.clone()))
            .collect()
    }
}

fn short(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

/// The end of a body: where a stream says how it ended.
fn tail(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[body.len().saturating_sub(700)..]).into_owned()
}

/// Message creates on one thread, alternating between the proxies.
async fn writer(apis: [Api; 2], thread: String, gate: Arc<Gate>, tally: Arc<Tally>) {
    let mut i = 0usize;
    while gate.go().await {
        let api = &apis[i % 2];
        let (status, v) = api
            .post(
                &format!("/v1/threads/{thread}/messages"),
                json!({"role": "user", "content": format!("message {i}")}),
            )
            .await;
        if status == 200 {
            tally
                .messages
                .lock()
                .unwrap()
                .push((thread.clone(), id(&v)));
        } else {
            tally.error(format!("message create: {status} {v}"));
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Streamed runs, each on a new thread, alternating between the proxies; a run counts when
/// its stream ends with `thread.run.completed` and `[DONE]`.
async fn streamer(apis: [Api; 2], assistant: String, gate: Arc<Gate>, tally: Arc<Tally>) {
    let words: Vec<String> = (0..30).map(|w| format!("word{w}")).collect();
    let text = words.join(" ");
    let mut i = 0usize;
    while gate.go().await {
        let api = &apis[i % 2];
        let body = json!({"assistant_id": assistant, "stream": true,
            "thread": {"messages": [{"role": "user", "content": text}]}});
        let (status, _, out) = api
            .raw(
                http::Method::POST,
                "/v1/threads/runs",
                Some("application/json"),
                Bytes::from(body.to_string()),
            )
            .await;
        let text_out = String::from_utf8_lossy(&out);
        let completed = text_out.contains("event: thread.run.completed")
            && text_out.trim_end().ends_with("data: [DONE]");
        let run = text_out
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find(|v| v["object"] == "thread.run");
        match (status.as_u16(), completed, run) {
            (200, true, Some(run)) => tally.runs.lock().unwrap().push((
                run["thread_id"].as_str().unwrap_or_default().to_owned(),
                id(&run),
            )),
            _ => tally.error(format!("streamed run: {status} …{}", tail(&out))),
        }
        i += 1;
    }
}

/// Upload, ingest into a new vector store, search: over and over, alternating proxies.
async fn ingester(apis: [Api; 2], gate: Arc<Gate>, tally: Arc<Tally>) {
    let doc = "Apples and pears grow in orchards. Rockets carry satellites to orbit. \
               Violins and cellos play in orchestras. "
        .repeat(20);
    let mut i = 0usize;
    while gate.go().await {
        let api = &apis[i % 2];
        i += 1;
        let body = crate::fixtures::multipart(&[
            ("purpose", None, b"assistants"),
            ("file", Some("kb.txt"), doc.as_bytes()),
        ]);
        let (status, file) = crate::fixtures::post_multipart(api, body).await;
        if status != 200 {
            tally.error(format!("upload: {status} {file}"));
            continue;
        }
        let (status, vs) = api
            .post(
                "/v1/vector_stores",
                json!({"name": "kb", "file_ids": [id(&file)]}),
            )
            .await;
        if status != 200 {
            tally.error(format!("vector store create: {status} {vs}"));
            continue;
        }
        let vs_id = id(&vs);
        let deadline = Instant::now() + Duration::from_secs(60);
        let done = loop {
            let (status, v) = apis[i % 2].get(&format!("/v1/vector_stores/{vs_id}")).await;
            if status != 200 {
                tally.error(format!("vector store get: {status} {v}"));
            } else if v["status"] != "in_progress" {
                break Some(v);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        match done {
            Some(v) if v["status"] == "completed" && v["file_counts"]["completed"] == 1 => {
                tally.stores.lock().unwrap().push(vs_id.clone());
            }
            other => {
                tally.error(format!("ingestion: {other:?}"));
                continue;
            }
        }
        let (status, res) = api
            .post(
                &format!("/v1/vector_stores/{vs_id}/search"),
                json!({"query": "which fruit grows in orchards?"}),
            )
            .await;
        if status == 200 && res["data"].as_array().is_some_and(|d| !d.is_empty()) {
            tally.searches.fetch_add(1, Ordering::Relaxed);
        } else {
            tally.error(format!("search: {status} {res}"));
        }
    }
}

/// Every message of `thread`, page by page.
async fn all_messages(api: &Api, thread: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let q = if after.is_empty() {
            String::new()
        } else {
            format!("&after={after}")
        };
        let (status, page) = api
            .get(&format!(
                "/v1/threads/{thread}/messages?limit=100&order=asc{q}"
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().unwrap();
        out.extend(data.iter().map(id));
        if page["has_more"] != true || data.is_empty() {
            return out;
        }
        after = out.last().unwrap().clone();
    }
}

/// Polls until `ok` holds for a fresh answer, returning how long it took.
async fn until<F, Fut>(what: &str, limit: Duration, mut ok: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if ok().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The proxies' run lease here: the default. A lost node can hold a store write for a few
/// seconds (a coordinator waiting out a replica the failure detector has not yet convicted),
/// and a short lease would let the other proxy take a live run over, ending its stream.
const NODE_LOSS_LEASE_SECONDS: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the three-node cluster: scripts/cassandra-cluster.sh start, ASSISTANTS_PROXY_TEST_CLUSTER (scripts/test.sh does both)"]
async fn node_loss_under_load_on_the_cluster() {
    let _turn = exclusive().await;
    let up = FakeUpstream::start().await;
    // Runs long enough (30 words at 25 ms) to be in flight when a node dies.
    up.set_chunk_delay(Duration::from_millis(25));
    let dir = tempfile::tempdir().unwrap();
    let (ks, store) = store_url("loss");
    let toml = proxy_toml(NODE_LOSS_LEASE_SECONDS);
    let [a, b] = Proc::pair(&up.url(), &store, &toml, dir.path()).await;
    let key = new_key();
    let apis = [a.api(&key), b.api(&key)];
    let probe = format!("SELECT version FROM {ks}.schema_migrations WHERE version = 1");
    let driver = session().await;
    wait_whole(&driver, &probe).await;

    let assistant = id(&apis[0]
        .ok(
            "/v1/assistants",
            json!({"model": "gpt-4o", "instructions": "Be brief."}),
        )
        .await);
    let mut threads = Vec::new();
    for _ in 0..3 {
        threads.push(id(&apis[1].ok("/v1/threads", json!({})).await));
    }

    let gate = Arc::new(Gate::default());
    let tally = Arc::new(Tally::default());
    let mut load = Vec::new();
    for t in &threads {
        load.push(tokio::spawn(writer(
            apis.clone(),
            t.clone(),
            gate.clone(),
            tally.clone(),
        )));
    }
    load.push(tokio::spawn(streamer(
        apis.clone(),
        assistant.clone(),
        gate.clone(),
        tally.clone(),
    )));
    load.push(tokio::spawn(ingester(
        apis.clone(),
        gate.clone(),
        tally.clone(),
    )));

    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut report = vec![format!(
        "baseline 3 s: acknowledged {:?}",
        tally.acknowledged()
    )];
    let mut late_errors = Vec::new();
    for node in ["3", "2"] {
        let before = tally.acknowledged();
        let killed = Instant::now();
        cluster(&["kill", node]);
        tokio::time::sleep(OUTAGE).await;
        let during = tally.acknowledged();
        let errors = tally.errors_between(killed, Instant::now());
        late_errors.extend(errors.iter().filter(|(at, _)| *at > RETRY_WINDOW).cloned());
        report.push(format!(
            "node {node} killed for {OUTAGE:?}: acknowledged (messages, runs, stores, searches) \
             {before:?} before, {during:?} at the end of the outage; {} errors during the \
             outage: {errors:?}",
            errors.len(),
        ));
        if node == "2" {
            // Node 2 stays down: losing node 3 as well is the two-node case below.
            break;
        }
        gate.paused.store(true, Ordering::Relaxed);
        let restart = Instant::now();
        cluster(&["start-node", node]);
        wait_whole(&driver, &probe).await;
        report.push(format!(
            "node {node} back, every replica answering, after {:.1?} (load paused)",
            restart.elapsed()
        ));
        gate.paused.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    gate.stopped.store(true, Ordering::Relaxed);
    for task in load {
        tokio::time::timeout(Duration::from_secs(90), task)
            .await
            .expect("load task did not stop")
            .unwrap();
    }
    let all_errors = tally.errors_between(started, Instant::now());
    report.push(format!(
        "load over {:.0?}: acknowledged {:?}, {} errors in all: {all_errors:?}",
        started.elapsed(),
        tally.acknowledged(),
        all_errors.len()
    ));

    // Two nodes down (2, still, and 3): no quorum. The intercepted routes say so in OpenAI's shape.
    let lost = Instant::now();
    cluster(&["kill", "3"]);
    let thread = &threads[0];
    let to_503 = until(
        "intercepted routes answer 503",
        Duration::from_secs(60),
        || async {
            apis[0]
                .post(
                    &format!("/v1/threads/{thread}/messages"),
                    json!({"role": "user", "content": "x"}),
                )
                .await
                .0
                == 503
        },
    )
    .await;
    for api in &apis {
        let (status, headers, body) = api
            .raw(
                http::Method::POST,
                &format!("/v1/threads/{thread}/messages"),
                Some("application/json"),
                Bytes::from(json!({"role": "user", "content": "y"}).to_string()),
            )
            .await;
        assert_eq!(status, 503, "{}", short(&body));
        assert!(headers.contains_key("retry-after"), "{headers:?}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "store_unavailable", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        assert!(v["error"]["type"].is_string(), "{v}");
        let (status, v) = api.get(&format!("/v1/threads/{thread}/messages")).await;
        assert_eq!(status, 503, "{v}");
        let (status, v) = api.get(&format!("/v1/assistants/{assistant}")).await;
        assert_eq!(status, 503, "{v}");
        // Forwarded routes do not touch the store: the fake upstream answers them.
        let (status, v) = api
            .post(
                "/v1/chat/completions",
                json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["object"], "chat.completion", "{v}");
    }
    let c = crate::support::client();
    for p in [&a, &b] {
        assert_eq!(status_of(&c, &p.url("/readyz")).await, 503);
        assert_eq!(status_of(&c, &p.url("/healthz")).await, 200);
    }

    // One node back: a quorum again, and both proxies recover by themselves.
    let since_restart = Instant::now();
    cluster(&["start-node", "2"]);
    until(
        "intercepted routes recover",
        Duration::from_secs(120),
        || async {
            let mut ok = true;
            for api in &apis {
                ok &=
                    api.post(
                        &format!("/v1/threads/{thread}/messages"),
                        json!({"role": "user", "content": "back"}),
                    )
                    .await
                    .0 == 200;
            }
            for p in [&a, &b] {
                ok &= status_of(&c, &p.url("/readyz")).await == 200;
            }
            ok
        },
    )
    .await;
    report.push(format!(
        "two nodes down: 503 after {to_503:.1?}; with node 2 restarted, both proxies serve \
         again {:.1?} after its restart began ({:.1?} after the loss)",
        since_restart.elapsed(),
        lost.elapsed()
    ));
    // Node 3 comes back while everything is read back (two replicas make the quorum).
    let node3 = tokio::task::spawn_blocking(|| cluster(&["start-node", "3"]));

    // Nothing acknowledged is lost: every write read back through the other proxy.
    let acked = tally.messages.lock().unwrap().clone();
    let mut found = 0;
    for t in &threads {
        let stored: std::collections::HashSet<String> =
            all_messages(&apis[1], t).await.into_iter().collect();
        for (_, m) in acked.iter().filter(|(th, _)| th == t) {
            assert!(
                stored.contains(m),
                "acknowledged message {m} on {t} is lost"
            );
            found += 1;
        }
    }
    let runs = tally.runs.lock().unwrap().clone();
    for (t, r) in &runs {
        let (status, run) = apis[0].get(&format!("/v1/threads/{t}/runs/{r}")).await;
        assert_eq!(
            (status.as_u16(), run["status"].as_str()),
            (200, Some("completed")),
            "{run}"
        );
        let (_, msgs) = apis[0]
            .get(&format!("/v1/threads/{t}/messages?order=desc&limit=1"))
            .await;
        assert_eq!(msgs["data"][0]["role"], "assistant", "{msgs}");
    }
    let stores = tally.stores.lock().unwrap().clone();
    for vs in &stores {
        let (status, v) = apis[1].get(&format!("/v1/vector_stores/{vs}")).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["file_counts"]["completed"], 1, "{v}");
    }
    report.push(format!(
        "read back after recovery: {found} of {} acknowledged messages, {} of {} runs \
         completed, {} of {} vector stores",
        acked.len(),
        runs.len(),
        runs.len(),
        stores.len(),
        stores.len()
    ));
    for line in &report {
        println!("cluster node loss: {line}");
    }
    for (name, p) in [("a", &a), ("b", &b)] {
        let warnings = p.warnings();
        let lines: Vec<&str> = warnings
            .lines()
            .filter(|l| !l.contains("readiness"))
            .collect();
        println!(
            "cluster node loss: proxy {name} logged {} warnings/errors (readiness aside); the first:\n{}",
            lines.len(),
            lines
                .iter()
                .take(15)
                .copied()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    node3.await.unwrap();
    wait_whole(&driver, &probe).await;
    assert!(
        late_errors.is_empty(),
        "requests failed later than {RETRY_WINDOW:?} after a node was killed: {late_errors:?}"
    );
    let (m, r, s, q) = tally.acknowledged();
    assert!(
        m > 0 && r > 0 && s > 0 && q > 0,
        "the load did not exercise everything: {:?}",
        (m, r, s, q)
    );
}
