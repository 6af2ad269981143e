//! The store on a real three-node Cassandra 5 cluster (scripts/cassandra-cluster.sh), keyspace
//! at replication 3 and LOCAL_QUORUM, behind two proxy processes: node loss under load, and
//! proxy replicas contending for one thread.
//!
//! `#[ignore]`d: `scripts/test.sh` starts the cluster, sets `ASSISTANTS_PROXY_TEST_CLUSTER`
//! and runs these with `--include-ignored`; without that variable they fail, never skip.
//! Each test makes a keyspace of its own and leaves it (dropping one right after a node came
//! back can leave the nodes' schemas apart); scripts/test.sh starts a fresh cluster.
//! The tests kill and restart cluster nodes, so they take turns ([`exclusive`]); each is
//! named `*_on_the_cluster`, so test.sh's main run (single nodes only) can skip them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

// Uploads (multipart bodies); the rest of it serves the files tests.
#[allow(dead_code)]
#[path = "../it/fixtures.rs"]
mod fixtures;

mod contention;
mod node_loss;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::Consistency;
use scylla::statement::unprepared::Statement;

use support::{Api, TestClient, client};

const BIN: &str = env!("CARGO_BIN_EXE_assistants-proxy");

/// The cluster's contact points, `host:port,host:port,...`.
pub fn hosts() -> String {
    std::env::var("ASSISTANTS_PROXY_TEST_CLUSTER").unwrap_or_else(|_| {
        panic!(
            "ASSISTANTS_PROXY_TEST_CLUSTER is not set: start the cluster with \
             scripts/cassandra-cluster.sh start and set it to \
             127.0.0.1:9044,127.0.0.2:9044,127.0.0.3:9044 (scripts/test.sh does both)"
        )
    })
}

/// A fresh keyspace per test run (nothing from an earlier run can make a count right): its
/// name, and the store URL of it at replication 3 and LOCAL_QUORUM.
pub fn store_url(name: &str) -> (String, String) {
    let ks = format!("ap_cluster_{name}_{}", assistants_proxy::ids::new_id(""));
    let ks: String = ks
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(48)
        .collect();
    let url = format!(
        "cassandra://{}/{ks}?replication=3&consistency=local_quorum",
        hosts()
    );
    (ks, url)
}

/// One test at a time: a node killed by one would fail the other.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    CLUSTER.lock().await
}

/// `scripts/cassandra-cluster.sh ARGS`, which must succeed.
pub fn cluster(args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/cassandra-cluster.sh");
    let status = Command::new(&script)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    assert!(status.success(), "cassandra-cluster.sh {args:?}: {status}");
}

/// A driver session of the test's own, to see the cluster as the proxies' driver does.
pub async fn session() -> Session {
    SessionBuilder::new()
        .known_nodes(hosts().split(','))
        .build()
        .await
        .expect("cluster session")
}

/// Waits until every replica answers (a read at ALL succeeds) and every node has the same
/// schema: a restarted node is back in every coordinator's view, so the next phase starts
/// from a whole cluster.
pub async fn wait_whole(session: &Session, keyspace_probe: &str) {
    let mut statement = Statement::new(keyspace_probe);
    statement.set_consistency(Consistency::All);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // Schema agreement too: tables made while a node was down (a vector store's chunk
        // table) reach it only after it is back, and until then it fails statements on them.
        let agreed: Result<bool, String> = match session.query_unpaged(statement.clone(), ()).await
        {
            Ok(_) => session
                .check_schema_agreement()
                .await
                .map(|v| v.is_some())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if agreed == Ok(true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not become whole within 120 s: {agreed:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A proxy process over the cluster; killed on drop so a failing test leaves nothing behind.
pub struct Proc {
    child: Child,
    port: u16,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Two proxies ("a" and "b") over one store with the same configuration: the replicas
    /// every cluster test runs.
    pub async fn pair(upstream: &str, store: &str, toml: &str, dir: &std::path::Path) -> [Proc; 2] {
        [
            Proc::start(upstream, store, toml, dir, "a").await,
            Proc::start(upstream, store, toml, dir, "b").await,
        ]
    }

    /// Starts the binary with `toml` as its config file and waits until `/readyz` is 200
    /// (the store is reachable and its schema migrated).
    pub async fn start(
        upstream: &str,
        store: &str,
        toml: &str,
        dir: &std::path::Path,
        name: &str,
    ) -> Proc {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(BIN)
            .arg("serve")
            .env("ASSISTANTS_PROXY_LISTEN", format!("127.0.0.1:{port}"))
            .env("ASSISTANTS_PROXY_UPSTREAM", upstream)
            .env("ASSISTANTS_PROXY_STORE", store)
            .env("ASSISTANTS_PROXY_CONFIG", &config)
            .env("ASSISTANTS_PROXY_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let p = Proc { child, port, log };
        let c = client();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if status_of(&c, &p.url("/readyz")).await == 200 {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "proxy {name} not ready within 90 s; log: {}",
                std::fs::read_to_string(&p.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The warnings and errors the proxy logged, for failure messages.
    pub fn warnings(&self) -> String {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// An API client of tenant `key` on this proxy.
    pub fn api(&self, key: &str) -> Api {
        Api {
            base: format!("http://127.0.0.1:{}", self.port),
            key: key.to_owned(),
            client: client(),
            headers: vec![("openai-beta".into(), "assistants=v2".into())],
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }
}

/// The proxies' configuration: short run leases, no code interpreter (not under test here).
pub fn proxy_toml(lease_seconds: u64) -> String {
    format!(
        "[runs]\nlease_seconds = {lease_seconds}\nsweep_interval_seconds = 1\n\
         [code_interpreter]\nexecutor = \"off\"\n[server]\naccess_log = false\n"
    )
}

/// `GET url` status, bounded; 0 when nothing answers.
pub async fn status_of(c: &TestClient, url: &str) -> u16 {
    let req = http::Request::get(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(30), c.request(req)).await {
        Ok(Ok(resp)) => resp.status().as_u16(),
        _ => 0,
    }
}
