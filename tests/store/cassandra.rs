//! Cassandra-only behaviour the shared contract cannot express: starting without a
//! reachable node and connecting once it appears (through a TCP forwarder the test opens
//! and closes), several proxies migrating one fresh keyspace at once, and the vector
//! details (cosine scores, zero embeddings). Needs `ASSISTANTS_PROXY_TEST_CASSANDRA`, like
//! the contract's Cassandra tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use assistants_proxy::ids::new_id;
use assistants_proxy::model::RunStatus;
use assistants_proxy::store::*;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::contract::{
    assistant, cassandra_url, chunk, run, tenant, thread, unit_vector, vector_store,
};

fn node() -> String {
    std::env::var("ASSISTANTS_PROXY_TEST_CASSANDRA")
        .expect("ASSISTANTS_PROXY_TEST_CASSANDRA must name the test node (host:port)")
}

async fn open(url: &str) -> StoreResult<Store> {
    Store::open(&StoreUrl::parse(url).unwrap()).await
}

async fn raw_session() -> Session {
    SessionBuilder::new()
        .known_node(node())
        .build()
        .await
        .unwrap()
}

/// A TCP forwarder to the real node on a fixed local port, which the test can take down
/// (closing every forwarded connection) and bring back.
struct Forwarder {
    tasks: JoinSet<()>,
}

impl Forwarder {
    async fn start(port: u16) -> Forwarder {
        let target: SocketAddr = node().parse().unwrap();
        // The port was free a moment ago; retry briefly in case it lingers.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding {port}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot bind {port}: {e}"),
            }
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    break;
                };
                conns.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Forwarder { tasks }
    }

    /// Stops listening and cuts every forwarded connection (dropping the accept task drops
    /// its connection set, which aborts them).
    async fn stop(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Cassandra: ASSISTANTS_PROXY_TEST_CASSANDRA=HOST:PORT cargo test -- --include-ignored (scripts/test.sh starts a node and does that)"]
async fn starts_unreachable_then_connects_and_survives_an_outage() {
    let port = free_port();
    let url = format!("cassandra://127.0.0.1:{port}/ap_contract");

    // Nothing listens: opening still succeeds, and every call answers Unavailable.
    let started = Instant::now();
    let store = open(&url)
        .await
        .expect("open must not fail on an unreachable cluster");
    assert!(started.elapsed() < Duration::from_secs(10));
    let t = tenant();
    let a = assistant(&new_id("asst_"));
    assert!(matches!(
        store.health.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.assistants.put_assistant(&t, &a).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.runs.list_active_runs().await,
        Err(StoreError::Unavailable(_))
    ));

    // The node appears: the store connects (and migrates) by itself on demand.
    let forwarder = Forwarder::start(port).await;
    eventually("connecting", Duration::from_secs(60), || async {
        store.health.ping().await.is_ok()
    })
    .await;
    store.assistants.put_assistant(&t, &a).await.unwrap();

    // An outage after connecting: calls fail as Unavailable, not as other errors.
    forwarder.stop().await;
    eventually("noticing the outage", Duration::from_secs(60), || async {
        match store.assistants.get_assistant(&t, &a.id).await {
            Err(StoreError::Unavailable(_)) => true,
            Err(e) => panic!("an outage must read as Unavailable: {e:?}"),
            Ok(_) => false,
        }
    })
    .await;
    assert!(store.health.ping().await.is_err());

    // And back: the driver's pools reconnect, the data is there.
    let forwarder = Forwarder::start(port).await;
    eventually("reconnecting", Duration::from_secs(60), || async {
        store.health.ping().await.is_ok()
    })
    .await;
    assert_eq!(
        store.assistants.get_assistant(&t, &a.id).await.unwrap(),
        Some(a)
    );
    forwarder.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Cassandra: ASSISTANTS_PROXY_TEST_CASSANDRA=HOST:PORT cargo test -- --include-ignored (scripts/test.sh starts a node and does that)"]
async fn proxies_migrating_a_fresh_keyspace_at_once_all_succeed() {
    let keyspace = format!("ap_mig_{}", new_id("").to_ascii_lowercase());
    let url = cassandra_url(&keyspace);
    let opens = (0..4).map(|_| open(&url));
    let stores: Vec<Store> = futures_util::future::join_all(opens)
        .await
        .into_iter()
        .map(|s| s.unwrap())
        .collect();
    let t = tenant();
    for (i, s) in stores.iter().enumerate() {
        s.health.ping().await.unwrap();
        let a = assistant(&format!("asst_{i}"));
        s.assistants.put_assistant(&t, &a).await.unwrap();
        assert_eq!(
            stores[0].assistants.get_assistant(&t, &a.id).await.unwrap(),
            Some(a)
        );
    }

    let raw = raw_session().await;
    let rows = raw
        .query_unpaged(
            format!("SELECT version, applied_by FROM {keyspace}.schema_migrations"),
            (),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let mut versions: Vec<(i32, String)> = rows.rows().unwrap().map(|r| r.unwrap()).collect();
    versions.sort();
    let numbers: Vec<i32> = versions.iter().map(|(v, _)| *v).collect();
    assert_eq!(numbers, [1, 2], "each version recorded once: {versions:?}");
    drop(stores);
    raw.query_unpaged(format!("DROP KEYSPACE {keyspace}"), ())
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs Cassandra: ASSISTANTS_PROXY_TEST_CASSANDRA=HOST:PORT cargo test -- --include-ignored (scripts/test.sh starts a node and does that)"]
async fn scores_are_cosine_and_zero_embeddings_are_kept_unsearchable() {
    let s = open(&cassandra_url("ap_contract")).await.unwrap();
    let t = tenant();
    let vs = vector_store(&new_id("vs_"));
    s.vector_stores.put_vector_store(&t, &vs).await.unwrap();
    let fid = new_id("file-");
    let v = unit_vector(42, 8);
    let opposite: Vec<f32> = v.iter().map(|x| -x).collect();
    let chunks = vec![
        chunk(&vs.id, &fid, 0, v.clone(), &json!({})),
        chunk(&vs.id, &fid, 1, opposite, &json!({})),
        chunk(&vs.id, &fid, 2, vec![0.0; 8], &json!({})),
        chunk(&vs.id, &fid, 3, vec![f32::NAN; 8], &json!({})),
    ];
    s.chunks.put_chunks(&t, &vs.id, &fid, chunks).await.unwrap();
    assert_eq!(
        s.chunks.file_chunks(&t, &vs.id, &fid).await.unwrap().len(),
        4
    );

    let hits = s
        .chunks
        .search(&t, std::slice::from_ref(&vs.id), &v, 10, None)
        .await
        .unwrap();
    let found: Vec<(u32, f32)> = hits.iter().map(|h| (h.index, h.score)).collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        (found[0].1 - 1.0).abs() < 1e-4 && found[0].0 == 0,
        "{found:?}"
    );
    assert!(
        (found[1].1 + 1.0).abs() < 1e-4 && found[1].0 == 1,
        "{found:?}"
    );

    // A zero query has no cosine neighbours; it is an empty answer, not an error.
    assert!(
        s.chunks
            .search(&t, std::slice::from_ref(&vs.id), &[0.0; 8], 10, None)
            .await
            .unwrap()
            .is_empty()
    );
    // A dimension the store has no chunks in: nothing, not an error.
    assert!(
        s.chunks
            .search(
                &t,
                std::slice::from_ref(&vs.id),
                &unit_vector(1, 5),
                10,
                None
            )
            .await
            .unwrap()
            .is_empty()
    );
}

/// The active-run index entry and the conditional create go out together. When the index
/// write fails and the create applied, the create is taken back: no run, a free lock, and an
/// error. (The index table is dropped in a keyspace of this test's own to make it fail.)
#[tokio::test]
#[ignore = "needs Cassandra: ASSISTANTS_PROXY_TEST_CASSANDRA=HOST:PORT cargo test -- --include-ignored (scripts/test.sh starts a node and does that)"]
async fn a_run_whose_index_entry_fails_is_not_left_behind() {
    let keyspace = format!("ap_undo_{}", std::process::id());
    let s = open(&cassandra_url(&keyspace)).await.unwrap();
    let t = tenant();
    let th = thread(&new_id("thread_"));
    s.threads.put_thread(&t, &th).await.unwrap();
    let raw = raw_session().await;
    raw.query_unpaged(format!("DROP TABLE {keyspace}.active_runs"), ())
        .await
        .unwrap();

    let r = run(&th.id, &new_id("run_"), RunStatus::Queued);
    assert!(s.runs.create_run(&t, &r).await.is_err());
    assert!(
        s.runs
            .get_run(&t, &th.id, &r.run.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.runs.active_run(&t, &th.id).await.unwrap(), None);

    drop(s);
    raw.query_unpaged(format!("DROP KEYSPACE {keyspace}"), ())
        .await
        .unwrap();
}

/// Password login in the form Astra uses: role `token` (a reserved word in CQL, so quoted
/// when the role is made), password an `AstraCS:` token read from the variable the URL
/// names. Runs against a node started with `CASSANDRA_AUTH=password` (superuser
/// cassandra/cassandra) named by `ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH`, with the token in
/// `AP_TEST_ASTRA_TOKEN`.
#[tokio::test]
#[ignore = "needs the password-mode Cassandra node: ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH=HOST:PORT cargo test -- --include-ignored (scripts/test.sh starts one)"]
async fn password_login_as_the_token_role() {
    // The README's test command starts that node; a run without it fails rather than skips.
    let node = std::env::var("ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH").expect(
        "ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH must name a password-mode node \
         (CASSANDRA_AUTH=password scripts/cassandra.sh start)",
    );
    let token =
        std::env::var("AP_TEST_ASTRA_TOKEN").expect("AP_TEST_ASTRA_TOKEN must hold the password");
    let admin = SessionBuilder::new()
        .known_node(&node)
        .user("cassandra", "cassandra")
        .build()
        .await
        .unwrap();
    for cql in [
        // Dropped and made anew: Cassandra 5 throttles password changes of one role.
        "DROP ROLE IF EXISTS \"token\"".to_owned(),
        format!("CREATE ROLE \"token\" WITH PASSWORD = '{token}' AND LOGIN = true"),
        "GRANT ALL PERMISSIONS ON ALL KEYSPACES TO \"token\"".to_owned(),
    ] {
        admin.query_unpaged(cql, ()).await.unwrap();
    }

    let url = format!("cassandra://{node}/ap_auth?user=token&password_env=AP_TEST_ASTRA_TOKEN");
    let s = open(&url).await.unwrap();
    s.health.ping().await.unwrap();
    let t = tenant();
    let a = assistant(&new_id("asst_"));
    s.assistants.put_assistant(&t, &a).await.unwrap();
    assert_eq!(
        s.assistants.get_assistant(&t, &a.id).await.unwrap(),
        Some(a)
    );

    // A wrong password: the store still opens (the proxy keeps serving), calls fail.
    let wrong = format!("cassandra://{node}/ap_auth?user=token&password_env=PATH");
    let s = open(&wrong).await.unwrap();
    assert!(s.health.ping().await.is_err());
}
