//! Two proxies on one SQLite file are not supported: the second refuses to start, naming the
//! file and the process holding its lock, while the first keeps serving. The lock goes with
//! its holder, after a clean stop as after `kill -9`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::binary::{Proc, free_port};
use crate::support::{Api, FakeUpstream, client, new_key};

/// Starts the binary on `store` and waits for it to exit: its status and stderr. Fails if it
/// is still running after 20 s (it started serving).
fn refused_start(upstream: &str, store: &str) -> (std::process::ExitStatus, String) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_assistants-proxy"))
        .arg("serve")
        .env(
            "ASSISTANTS_PROXY_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("ASSISTANTS_PROXY_UPSTREAM", upstream)
        .env("ASSISTANTS_PROXY_STORE", store)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "a second proxy started on {store}:\n{}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(log.path()).unwrap())
}

#[tokio::test]
async fn a_second_proxy_on_the_same_sqlite_file_refuses_to_start() {
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let store = format!("sqlite://{}", db.display());
    let port = free_port();
    let mut first = Proc::start_on(&up.url(), &store, port, &[]).await;
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        key: new_key(),
        client: client(),
        headers: vec![],
    };
    let a = api.ok("/v1/assistants", json!({"model": "gpt-4o"})).await;
    let aid = a["id"].as_str().unwrap().to_owned();

    let (status, err) = refused_start(&up.url(), &store);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&db.display().to_string()),
        "names the file: {err}"
    );
    assert!(
        err.contains(&format!("{}.lock", db.display())),
        "names the lock: {err}"
    );
    assert!(
        err.contains(&format!("process {}", first.child.id())),
        "names the holder: {err}"
    );
    assert!(err.contains("not supported"), "{err}");

    // The first one never noticed.
    let (s, got) = api.get(&format!("/v1/assistants/{aid}")).await;
    assert_eq!(s, 200, "{got}");
    api.ok("/v1/threads", json!({})).await;

    // Stopped cleanly, the lock goes with it: a new proxy starts and has the data.
    let (status, logs) = first.terminate();
    assert!(status.success(), "{logs}");
    let mut second = Proc::start_on(&up.url(), &store, port, &[]).await;
    let (s, got) = api.get(&format!("/v1/assistants/{aid}")).await;
    assert_eq!(s, 200, "{got}");
    // Refused while it runs, too.
    let (status, err) = refused_start(&up.url(), &store);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!("process {}", second.child.id())),
        "{err}"
    );

    // kill -9 leaves no stale lock either.
    second.kill9();
    let _third = Proc::start_on(&up.url(), &store, port, &[]).await;
    let (s, got) = api.get(&format!("/v1/assistants/{aid}")).await;
    assert_eq!(s, 200, "{got}");
}
