//! Per-request Astra databases (`astra-api-token` / `astra-db-id`) and `--store astra://…`,
//! end to end against the local Astra stand-in (the `fake-astra` crate: fake DevOps API,
//! generated bundles, mutual-TLS metadata service and SNI proxy in front of the password-mode
//! Cassandra 5 node at `ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH`; without it every test fails).
//!
//! Every log line of the process (the proxy's, the driver's, hyper's) is captured, and each
//! test ends by checking that none of the tokens it used appears in them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use support::astra::FakeAstra;
use support::{Api, FakeUpstream, TestProxy, assert_error};

// ---- log capture -------------------------------------------------------------------------

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged in this process so far (the subscriber is installed on first use).
fn logs() -> String {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let buf = BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buf.clone());
        // Debug everywhere (driver, TLS, HTTP), trace for the proxy itself: the widest net
        // that keeps the tests fast.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,assistants_proxy=trace",
            ))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buf
    });
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

fn assert_not_logged(secrets: &[&str]) {
    let text = logs();
    // The capture works: the proxy's own line about opening a session is there.
    assert!(text.contains("Astra session open"), "no log was captured");
    for s in secrets {
        // The random part alone too, in case a prefix was cut off or reformatted.
        let tail = s.rsplit(':').next().unwrap_or(s);
        assert!(!text.contains(s), "a token appears in the logs");
        assert!(
            !text.contains(tail),
            "a token's secret part appears in the logs"
        );
    }
}

// ---- setup -------------------------------------------------------------------------------

/// A proxy whose default store is a fresh SQLite file and whose per-request databases are
/// the stand-in's. Each database uses the keyspace its bundle names (unless `astra_extra` says
/// otherwise), so databases sharing the one test node are still apart. `astra_extra` lines go
/// into `[astra]`.
async fn proxy(fake: &FakeAstra, up: &FakeUpstream, astra_extra: &str) -> TestProxy {
    logs();
    let from_bundle = if astra_extra.contains("keyspace_from_bundle") {
        ""
    } else {
        "keyspace_from_bundle = true\n"
    };
    let toml = format!(
        "[astra]\ndevops_url = \"{}\"\n{from_bundle}retry_after_seconds = 2\n{astra_extra}\n",
        fake.devops_url()
    );
    TestProxy::start_with(&up.url(), &toml).await
}

/// `api` speaking for `token` (and `db`, if given).
fn as_astra(api: &Api, token: &str, db: Option<&str>) -> Api {
    let mut a = api.clone().with_header("astra-api-token", token);
    if let Some(db) = db {
        a = a.with_header("astra-db-id", db);
    }
    a
}

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {v}"))
        .to_owned()
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(id)
        .collect()
}

const BOUNDARY: &str = "----astraTestBoundary";

async fn upload(api: &Api, filename: &str, data: &[u8]) -> Value {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: text/plain\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let (status, _, out) = api
        .raw(
            http::Method::POST,
            "/v1/files",
            Some(&format!("multipart/form-data; boundary={BOUNDARY}")),
            Bytes::from(body),
        )
        .await;
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(status, 200, "upload: {v}");
    v
}

async fn wait_until(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The API scenario one caller runs in its own database: an assistant, a thread with a
/// message, a run answered by the fake upstream, a file in a vector store, a search.
/// Returns the ids it made.
async fn scenario(api: &Api, word: &str) -> Vec<String> {
    let a = api
        .ok(
            "/v1/assistants",
            json!({"model": "gpt-4o", "name": format!("assistant {word}")}),
        )
        .await;
    let t = api
        .ok(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": format!("Tell me about {word}.")}]}),
        )
        .await;
    let (aid, tid) = (id(&a), id(&t));
    let run = api
        .ok(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": aid}),
        )
        .await;
    let rid = id(&run);
    let mut last = Value::Null;
    wait_until("the run", Duration::from_secs(60), async || {
        let (s, r) = api.get(&format!("/v1/threads/{tid}/runs/{rid}")).await;
        assert_eq!(s, 200, "{r}");
        last = r;
        !matches!(last["status"].as_str(), Some("queued" | "in_progress"))
    })
    .await;
    assert_eq!(last["status"], "completed", "{last}");
    let (s, msgs) = api.get(&format!("/v1/threads/{tid}/messages")).await;
    assert_eq!(s, 200, "{msgs}");
    assert_eq!(ids(&msgs).len(), 2, "{msgs}");

    let f = upload(
        api,
        &format!("{word}.txt"),
        format!("All about {word}. {word} is the word of this database.").as_bytes(),
    )
    .await;
    let fid = id(&f);
    let vs = api
        .ok(
            "/v1/vector_stores",
            json!({"name": word, "file_ids": [fid]}),
        )
        .await;
    let vsid = id(&vs);
    let mut file = Value::Null;
    wait_until("ingestion", Duration::from_secs(60), async || {
        let (s, v) = api
            .get(&format!("/v1/vector_stores/{vsid}/files/{fid}"))
            .await;
        assert_eq!(s, 200, "{v}");
        file = v;
        file["status"] != "in_progress"
    })
    .await;
    assert_eq!(file["status"], "completed", "{file}");
    let hits = api
        .ok(
            &format!("/v1/vector_stores/{vsid}/search"),
            json!({"query": word}),
        )
        .await;
    let text = hits.to_string();
    assert!(text.contains(word), "search found nothing: {hits}");
    vec![aid, tid, rid, fid, vsid]
}

// ---- tests -------------------------------------------------------------------------------

/// Two callers with the same API key but different tokens and databases each see only
/// their own data; the configured store sees neither; Astra headers never reach upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the password-mode Cassandra node: ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH=HOST:PORT cargo test -- --include-ignored (scripts/test.sh starts one)"]
async fn two_tokens_two_databases_see_disjoint_data() {
    let fake = FakeAstra::start().await;
    let up = FakeUpstream::start().await;
    let proxy = proxy(&fake, &up, "").await;
    let (tok_a, tok_b) = (fake.new_token(), fake.new_token());
    let db_a = fake
        .database_with_keyspace(&tok_a, "db a", "ap_astra_disjoint_a")
        .await;
    let db_b = fake
        .database_with_keyspace(&tok_b, "db b", "ap_astra_disjoint_b")
        .await;
    let plain = Api::new(&proxy);
    let a = as_astra(&plain, &tok_a, Some(&db_a));
    let b = as_astra(&plain, &tok_b, Some(&db_b));

    let (made_a, made_b) = tokio::join!(scenario(&a, "apples"), scenario(&b, "bananas"));

    let (_, list_a) = a.get("/v1/assistants").await;
    let (_, list_b) = b.get("/v1/assistants").await;
    assert_eq!(ids(&list_a), vec![made_a[0].clone()]);
    assert_eq!(ids(&list_b), vec![made_b[0].clone()]);
    let (_, vs_a) = a.get("/v1/vector_stores").await;
    assert_eq!(ids(&vs_a), vec![made_a[4].clone()]);
    let (_, files_b) = b.get("/v1/files").await;
    assert_eq!(ids(&files_b), vec![made_b[3].clone()]);
    // Each other's objects do not exist, nor in the configured store.
    for (who, other) in [
        (&a, &made_b),
        (&b, &made_a),
        (&plain, &made_a),
        (&plain, &made_b),
    ] {
        assert_error(
            &who.get(&format!("/v1/assistants/{}", other[0])).await,
            404,
            None,
            None,
        );
        assert_error(
            &who.get(&format!("/v1/threads/{}", other[1])).await,
            404,
            None,
            None,
        );
        assert_error(
            &who.get(&format!("/v1/vector_stores/{}", other[4])).await,
            404,
            None,
            None,
        );
    }
    let (_, none) = plain.get("/v1/assistants").await;
    assert!(ids(&none).is_empty(), "{none}");

    // The same token naming the other token's database is refused.
    let cross = as_astra(&plain, &tok_a, Some(&db_b));
    assert_error(&cross.get("/v1/assistants").await, 404, None, None);

    // Two sessions, one per database; nothing of Astra was forwarded upstream.
    assert_eq!(proxy.state.astra.as_ref().unwrap().len(), 2);
    for r in up.requests() {
        assert!(r.header("astra-api-token").is_none(), "token forwarded");
        assert!(r.header("astra-db-id").is_none(), "database id forwarded");
    }
    assert!(fake.counters().sni_connections.load(Ordering::Relaxed) >= 2);
    proxy.shutdown().await;
    assert_not_logged(&[&tok_a, &tok_b]);
}

/// Without `astra-db-id` the token's `assistant_api_db` is created: 503 with Retry-After
/// while it is pending, then the caller is served from it. Concurrent first requests ask
/// for one database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the password-mode Cassandra node: ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH=HOST:PORT cargo test -- --include-ignored (scripts/test.sh starts one)"]
async fn missing_database_is_created_503_then_success() {
    let fake = FakeAstra::start().await;
    let up = FakeUpstream::start().await;
    let proxy = proxy(&fake, &up, "keyspace = \"ap_astra_default\"").await;
    let token = fake.new_token();
    let api = as_astra(&Api::new(&proxy), &token, None);

    // Several first requests at once: all 503, one database asked for. (The stand-in's
    // database stays PENDING for PENDING_POLLS list calls after the one that created it, and
    // these requests list one after another.)
    let first = futures_util::future::join_all(
        (0..=support::astra::PENDING_POLLS)
            .map(|_| api.raw(http::Method::GET, "/v1/assistants", None, Bytes::new())),
    )
    .await;
    for (status, headers, body) in &first {
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_error(&(*status, v), 503, None, None);
        assert_eq!(headers["retry-after"], "2");
    }
    assert_eq!(fake.counters().creates.load(Ordering::Relaxed), 1);
    let dbs = fake.databases_of(&token);
    assert_eq!(dbs.len(), 1);
    assert_eq!(dbs[0].1, "assistant_api_db");

    let mut unavailable = first.len();
    let served = loop {
        let got = api.get("/v1/assistants").await;
        if got.0 == 200 {
            break got.1;
        }
        assert_error(&got, 503, None, None);
        unavailable += 1;
        assert!(unavailable < 20, "the database never became usable");
    };
    assert!(ids(&served).is_empty());
    assert_eq!(fake.counters().creates.load(Ordering::Relaxed), 1);
    assert_eq!(fake.databases_of(&token)[0].2, "ACTIVE");
    let a = api
        .ok("/v1/assistants", json!({"model": "gpt-4o", "name": "mine"}))
        .await;
    // The same database by its id, explicitly.
    let explicit = as_astra(&api, &token, Some(&dbs[0].0));
    let (s, got) = explicit.get(&format!("/v1/assistants/{}", id(&a))).await;
    assert_eq!(s, 200, "{got}");
    // The keyspace came with the database: the proxy did not have to ask for one.
    assert_eq!(fake.counters().keyspace_creates.load(Ordering::Relaxed), 0);
    proxy.shutdown().await;
    assert_not_logged(&[&token]);
}

/// Wrong, revoked (DevOps) and CQL-revoked tokens get 401 in OpenAI's envelope, and the
/// failure is not cached: the token works as soon as it is valid again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the password-mode Cassandra node: ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH=HOST:PORT cargo test -- --include-ignored (scripts/test.sh starts one)"]
async fn bad_token_is_401_and_not_cached() {
    let fake = FakeAstra::start().await;
    let up = FakeUpstream::start().await;
    let proxy = proxy(&fake, &up, "").await;
    let sessions = proxy.state.astra.clone().unwrap();
    let plain = Api::new(&proxy);

    let wrong = "AstraCS:never-issued:0123456789abcdef";
    let db_owner = fake.new_token();
    let db = fake
        .database_with_keyspace(&db_owner, "shared", "ap_astra_shared")
        .await;
    let got = as_astra(&plain, wrong, Some(&db))
        .get("/v1/assistants")
        .await;
    assert_error(&got, 401, None, None);
    assert!(!got.1.to_string().contains(wrong));
    let got = as_astra(&plain, wrong, None).get("/v1/assistants").await;
    assert_error(&got, 401, None, None);
    assert_eq!(sessions.len(), 0);

    // Revoked at the DevOps API.
    let token = fake.new_token();
    let db = fake
        .database_with_keyspace(&token, "mine", "ap_astra_shared")
        .await;
    let api = as_astra(&plain, &token, Some(&db));
    fake.revoke(&token);
    assert_error(&api.get("/v1/assistants").await, 401, None, None);
    assert_eq!(sessions.len(), 0);
    fake.restore(&token);
    let (s, v) = api.get("/v1/assistants").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(sessions.len(), 1);

    // Refused at the CQL login only (the DevOps API still accepts it).
    let token2 = fake.new_token();
    let db2 = fake
        .database_with_keyspace(&token2, "mine too", "ap_astra_shared")
        .await;
    let api2 = as_astra(&plain, &token2, Some(&db2));
    fake.revoke_cql(&token2);
    let got = api2.get("/v1/assistants").await;
    assert_error(&got, 401, None, None);
    assert_eq!(sessions.len(), 1);
    fake.restore(&token2);
    let (s, v) = api2.get("/v1/assistants").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(sessions.len(), 2);

    // An unknown database of a valid token: 404, not cached either.
    let unknown = as_astra(&plain, &token, Some("00000000-0000-4000-8000-000000000000"));
    assert_error(&unknown.get("/v1/assistants").await, 404, None, None);
    assert_eq!(sessions.len(), 2);
    // An astra-db-id without a token is a 400.
    assert_error(
        &plain
            .clone()
            .with_header("astra-db-id", &db)
            .get("/v1/assistants")
            .await,
        400,
        None,
        None,
    );
    proxy.shutdown().await;
    assert_not_logged(&[wrong, &db_owner, &token, &token2]);
}

/// At most `max_sessions` sessions stay open (the least recently used goes), and sessions
/// unused for `idle_timeout` close; a closed one reopens on the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the password-mode Cassandra node: ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH=HOST:PORT cargo test -- --include-ignored (scripts/test.sh starts one)"]
async fn session_cache_is_bounded_and_idle_sessions_close() {
    let fake = FakeAstra::start().await;
    let up = FakeUpstream::start().await;
    let mut tokens = Vec::new();
    let mut targets = Vec::new();
    for n in 0..3 {
        let token = fake.new_token();
        let db = fake
            .database_with_keyspace(&token, &format!("db {n}"), "ap_astra_shared")
            .await;
        targets.push((token.clone(), db));
        tokens.push(token);
    }
    let opens = || fake.counters().bundle_urls.load(Ordering::Relaxed);

    // Bound: two sessions at most (idle close out of the way).
    let proxy1 = proxy(&fake, &up, "max_sessions = 2").await;
    let sessions = proxy1.state.astra.clone().unwrap();
    let plain = Api::new(&proxy1);
    let callers: Vec<Api> = targets
        .iter()
        .map(|(t, db)| as_astra(&plain, t, Some(db)))
        .collect();
    for (n, api) in callers.iter().enumerate() {
        let (s, v) = api.get("/v1/assistants").await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(sessions.len(), (n + 1).min(2));
    }
    assert_eq!(opens(), 3);
    // The newest two are cached: no new connect for them…
    for api in &callers[1..] {
        assert_eq!(api.get("/v1/assistants").await.0, 200);
    }
    assert_eq!(opens(), 3);
    // …while the first was evicted and connects again (evicting the least recent).
    assert_eq!(callers[0].get("/v1/assistants").await.0, 200);
    assert_eq!(opens(), 4);
    assert_eq!(sessions.len(), 2);
    proxy1.shutdown().await;

    // Idle close: sessions unused for the idle timeout go; the next request reopens.
    let proxy2 = proxy(&fake, &up, "idle_timeout_seconds = 1").await;
    let sessions = proxy2.state.astra.clone().unwrap();
    let plain = Api::new(&proxy2);
    let callers: Vec<Api> = targets
        .iter()
        .map(|(t, db)| as_astra(&plain, t, Some(db)))
        .collect();
    for api in &callers[..2] {
        assert_eq!(api.get("/v1/assistants").await.0, 200);
    }
    assert_eq!(opens(), 6);
    wait_until(
        "idle sessions to close",
        Duration::from_secs(10),
        async || sessions.is_empty(),
    )
    .await;
    assert_eq!(callers[1].get("/v1/assistants").await.0, 200);
    assert_eq!(opens(), 7);
    assert_eq!(sessions.len(), 1);
    proxy2.shutdown().await;
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    assert_not_logged(&refs);
}

/// Concurrent first requests for one database share a single connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the password-mode Cassandra node: ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH=HOST:PORT cargo test -- --include-ignored (scripts/test.sh starts one)"]
async fn concurrent_first_requests_share_one_connect() {
    let fake = FakeAstra::start().await;
    let up = FakeUpstream::start().await;
    let proxy = proxy(&fake, &up, "").await;
    let token = fake.new_token();
    let db = fake
        .database_with_keyspace(&token, "busy", "ap_astra_shared")
        .await;
    let api = as_astra(&Api::new(&proxy), &token, Some(&db));
    let results = futures_util::future::join_all((0..8).map(|n| {
        let api = api.clone();
        async move {
            api.post(
                "/v1/assistants",
                json!({"model": "gpt-4o", "name": format!("a{n}")}),
            )
            .await
        }
    }))
    .await;
    for (s, v) in &results {
        assert_eq!(*s, 200, "{v}");
    }
    let c = fake.counters();
    assert_eq!(c.bundle_urls.load(Ordering::Relaxed), 1);
    assert_eq!(c.downloads.load(Ordering::Relaxed), 1);
    assert_eq!(proxy.state.astra.as_ref().unwrap().len(), 1);
    let (_, list) = api.get("/v1/assistants?limit=100").await;
    assert_eq!(ids(&list).len(), 8);
    proxy.shutdown().await;
    assert_not_logged(&[&token]);
}

/// `--store astra://DB?keyspace=…&token_env=VAR`: the real binary, pinned to one database,
/// serves requests without Astra headers from it; the token stays out of its output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the password-mode Cassandra node: ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH=HOST:PORT cargo test -- --include-ignored (scripts/test.sh starts one)"]
async fn pinned_store_url_serves_from_the_database() {
    let fake = FakeAstra::start().await;
    let up = FakeUpstream::start().await;
    let token = fake.new_token();
    let db = fake
        .database_with_keyspace(&token, "pinned", "ap_astra_shared")
        .await;
    // A keyspace the database does not have yet: the proxy must ask the DevOps API for it.
    // (Mixed case on purpose: CQL folds unquoted names, so the proxy must too.)
    let keyspace = format!("ap_astra_Pin_{}", &assistants_proxy::ids::new_id("")[..10]);
    let keyspace = keyspace.as_str();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!("[astra]\ndevops_url = \"{}\"\n", fake.devops_url()),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("stderr.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_assistants-proxy"))
        .arg("serve")
        .arg("--store")
        .arg(format!(
            "astra://{db}?keyspace={keyspace}&token_env=AP_TEST_PINNED_ASTRA_TOKEN"
        ))
        .arg("--config")
        .arg(&config)
        .env("ASSISTANTS_PROXY_LISTEN", format!("127.0.0.1:{port}"))
        .env("ASSISTANTS_PROXY_UPSTREAM", up.url())
        .env("AP_TEST_PINNED_ASTRA_TOKEN", &token)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child_guard = Kill(child);
    let client = support::client();
    let base = format!("http://127.0.0.1:{port}");
    wait_until("the pinned proxy", Duration::from_secs(90), async || {
        if let Ok(Some(status)) = child_guard.0.try_wait() {
            panic!(
                "the proxy exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let req = http::Request::get(format!("{base}/healthz"))
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        matches!(client.request(req).await, Ok(r) if r.status() == 200)
    })
    .await;
    let pinned = Api {
        base: base.clone(),
        key: support::new_key(),
        client: client.clone(),
        headers: vec![("openai-beta".into(), "assistants=v2".into())],
    };
    let made = pinned
        .ok(
            "/v1/assistants",
            json!({"model": "gpt-4o", "name": "pinned"}),
        )
        .await;
    assert_eq!(fake.counters().bundle_urls.load(Ordering::Relaxed), 1);
    assert_eq!(fake.counters().keyspace_creates.load(Ordering::Relaxed), 1);

    // The same database through the per-request headers of another proxy sees it.
    let other = proxy(
        &fake,
        &up,
        &format!("keyspace_from_bundle = false\nkeyspace = \"{keyspace}\""),
    )
    .await;
    let direct = Api {
        key: pinned.key.clone(),
        ..as_astra(&Api::new(&other), &token, Some(&db))
    };
    let (s, got) = direct.get(&format!("/v1/assistants/{}", id(&made))).await;
    assert_eq!(s, 200, "{got}");
    other.shutdown().await;

    // Stopped (killed and reaped) before its log is read whole.
    drop(child_guard);
    fake.drop_keyspace(keyspace).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("Astra"),
        "the pinned proxy logged nothing about Astra: {text}"
    );
    assert!(
        !text.contains(&token),
        "the token appears in the proxy's log"
    );
    assert_not_logged(&[&token]);
}

/// With `per_request_headers = false` the headers are refused (400), never silently ignored
/// (the caller would otherwise write to the shared store believing it used its own); a
/// malformed `astra-db-id` is a 400 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the password-mode Cassandra node: ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH=HOST:PORT cargo test -- --include-ignored (scripts/test.sh starts one)"]
async fn astra_headers_refused_when_disabled_or_malformed() {
    let up = FakeUpstream::start().await;
    let off = TestProxy::start_with(&up.url(), "[astra]\nper_request_headers = false\n").await;
    let api = Api::new(&off);
    let token = "AstraCS:off:0123456789abcdef";
    let got = as_astra(&api, token, None).get("/v1/assistants").await;
    assert_error(&got, 400, None, None);
    assert!(!got.1.to_string().contains(token));
    off.shutdown().await;

    let on = TestProxy::start(&up.url()).await;
    let api = Api::new(&on);
    assert_error(
        &as_astra(&api, token, Some("not-a-uuid"))
            .get("/v1/assistants")
            .await,
        400,
        None,
        None,
    );
    // Nothing was opened for either.
    assert!(on.state.astra.as_ref().unwrap().is_empty());
    on.shutdown().await;
}
