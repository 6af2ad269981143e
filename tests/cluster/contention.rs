//! Proxy replicas contending over the cluster: many concurrent run creates on one thread
//! through two proxies leave exactly one active run, and the runs of a proxy killed mid-run
//! are resolved by the other once their lease has run out.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Api, FakeUpstream, id, new_key};
use crate::{Proc, exclusive, proxy_toml, store_url};

/// The proxies' run lease: short, so the killed proxy's run is resolved soon, but not so
/// short that a live run under this contention misses it (3 s did, on a 2-core machine
/// running the three nodes: Paxos rounds queued behind the losers' took that long).
const LEASE_SECONDS: u64 = 10;

async fn run_status(api: &Api, thread: &str, run: &str) -> Value {
    let (status, v) = api.get(&format!("/v1/threads/{thread}/runs/{run}")).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Polls the run until its status is not one of `from`, within `limit`.
async fn wait_leaves(api: &Api, thread: &str, run: &str, from: &[&str], limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let v = run_status(api, thread, run).await;
        if !from.contains(&v["status"].as_str().unwrap_or_default()) {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "run still {} after {limit:?}: {v}",
            v["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the three-node cluster: scripts/cassandra-cluster.sh start, ASSISTANTS_PROXY_TEST_CLUSTER (scripts/test.sh does both)"]
async fn replicas_contend_for_one_thread_on_the_cluster() {
    let _turn = exclusive().await;
    let up = FakeUpstream::start().await;
    up.set_chunk_delay(Duration::from_millis(40));
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = store_url("contend");
    let [mut a, b] = Proc::pair(&up.url(), &store, &proxy_toml(LEASE_SECONDS), dir.path()).await;
    let key = new_key();
    let apis = [a.api(&key), b.api(&key)];
    let assistant = id(&apis[0]
        .ok("/v1/assistants", json!({"model": "gpt-4o"}))
        .await);

    // 16 creates at once on one thread, half through each proxy: one wins.
    let thread = id(&apis[1]
        .ok(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "hello there"}]}),
        )
        .await);
    let attempts = (0..16).map(|i| {
        let api = apis[i % 2].clone();
        let path = format!("/v1/threads/{thread}/runs");
        let body = json!({"assistant_id": assistant});
        async move { api.post(&path, body).await }
    });
    let results = futures_util::future::join_all(attempts).await;
    let won: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
    for (status, v) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 400, "{v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("already has an active run"), "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    }
    let run = id(won[0]);
    let done = wait_leaves(
        &apis[0],
        &thread,
        &run,
        &["queued", "in_progress"],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        done["status"],
        "completed",
        "{done}\nproxy a:\n{}\nproxy b:\n{}",
        a.warnings(),
        b.warnings()
    );
    println!(
        "cluster contention: 16 concurrent run creates over two proxies: 1 accepted, {} refused",
        results.len() - 1
    );

    // A proxy killed mid-run: the other resolves the run once the lease has run out, and
    // the thread takes new runs again.
    let words: Vec<String> = (0..300).map(|w| format!("w{w}")).collect();
    let long = id(&apis[1]
        .ok(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": words.join(" ")}]}),
        )
        .await);
    let orphan = id(&apis[0]
        .ok(
            &format!("/v1/threads/{long}/runs"),
            json!({"assistant_id": assistant}),
        )
        .await);
    wait_leaves(
        &apis[1],
        &long,
        &orphan,
        &["queued"],
        Duration::from_secs(30),
    )
    .await;
    let v = run_status(&apis[1], &long, &orphan).await;
    assert_eq!(
        v["status"], "in_progress",
        "the run ended before its proxy was killed: {v}"
    );
    a.kill9();
    let killed = Instant::now();
    let limit = Duration::from_secs(LEASE_SECONDS + 30);
    let resolved = wait_leaves(&apis[1], &long, &orphan, &["queued", "in_progress"], limit).await;
    let took = killed.elapsed();
    assert!(
        ["failed", "expired"].contains(&resolved["status"].as_str().unwrap_or_default()),
        "{resolved}"
    );
    let next = id(&apis[1]
        .ok(
            &format!("/v1/threads/{long}/runs"),
            json!({"assistant_id": assistant}),
        )
        .await);
    assert!(!next.is_empty());
    println!(
        "cluster contention: run of a killed proxy {} by the other after {took:.1?} \
         (lease {LEASE_SECONDS} s); the thread took a new run",
        resolved["status"]
    );
}
