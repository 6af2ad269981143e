//! The real binary as an operator runs it: flags, config checking, memory while relaying large
//! bodies, secrets kept out of logs, signals.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::both_backends;
use crate::support::{FakeUpstream, client, get, json};

const BIN: &str = env!("CARGO_BIN_EXE_assistants-proxy");

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A proxy process; killed on drop so a failing test leaves nothing behind.
pub(crate) struct Proc {
    pub(crate) child: Child,
    port: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub(crate) async fn start(
        upstream: &str,
        extra_env: &[(&str, &str)],
        dir: &std::path::Path,
    ) -> Proc {
        let store = format!("sqlite://{}", dir.join("bin.db").display());
        Proc::start_on(upstream, &store, free_port(), extra_env).await
    }

    pub(crate) async fn start_on(
        upstream: &str,
        store: &str,
        port: u16,
        extra_env: &[(&str, &str)],
    ) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .env("ASSISTANTS_PROXY_LISTEN", format!("127.0.0.1:{port}"))
            .env("ASSISTANTS_PROXY_UPSTREAM", upstream)
            .env("ASSISTANTS_PROXY_STORE", store)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let p = Proc { child, port };
        let c = client();
        for _ in 0..100 {
            if let Ok(resp) = c
                .request(
                    Request::get(format!("http://127.0.0.1:{port}/healthz"))
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                )
                .await
                && resp.status() == 200
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the proxy binary did not come up");
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub(crate) fn kill9(&mut self) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    pub(crate) fn terminate(&mut self) -> (std::process::ExitStatus, String) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().unwrap();
        let mut logs = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut logs);
        }
        (status, logs)
    }
}

#[test]
fn check_config_accepts_the_shipped_example_and_rejects_typos() {
    let ok = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/assistants-proxy.toml"
        ))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("configuration OK"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[upstream]\nconect_timeout_ms = 5\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("conect_timeout_ms"), "{err}");

    let out = Command::new(BIN)
        .args(["check-config"])
        .env("ASSISTANTS_PROXY_STORE", "postgres://x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sqlite://PATH"));
}

#[test]
fn unusable_sqlite_path_fails_start_up_naming_the_path() {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--store"])
        .arg("sqlite:///nonexistent-dir-for-test/sub/x.db")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent-dir-for-test/sub/x.db"), "{err}");
}

#[tokio::test]
async fn large_bodies_keep_memory_flat_and_secrets_stay_out_of_logs() {
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = Proc::start(&up.url(), &[("RUST_LOG", "debug")], dir.path()).await;
    let baseline_kb = proxy.status_kb("VmRSS:");

    // 100 MiB up (chunked) and 100 MiB down through the proxy.
    let chunk = Bytes::from(vec![0x5au8; 1024 * 1024]);
    let stream = futures_util::stream::iter(
        (0..100).map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone()))),
    );
    let uploader: Client<HttpConnector, StreamBody<_>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let resp = uploader
        .request(
            Request::post(proxy.url("/echo/big"))
                .header("authorization", "Bearer sk-never-log-this-4242")
                .header("astra-api-token", "AstraCS:never-log-this-either")
                .body(StreamBody::new(stream))
                .unwrap(),
        )
        .await
        .unwrap();
    let echo = json(&resp.into_body().collect().await.unwrap().to_bytes());
    assert_eq!(echo["body_len"], 100 * 1024 * 1024);

    let c = client();
    let resp = c
        .request(
            // A key in the query string (some OpenAI-compatible APIs take one) stays out of
            // the access log too.
            Request::get(proxy.url("/bytes?n=104857600&seed=3&key=sk-never-log-this-4242"))
                .header("authorization", "Bearer sk-never-log-this-4242")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut total = 0usize;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            total += d.len();
        }
    }
    assert_eq!(total, 104_857_600);

    let peak_kb = proxy.status_kb("VmHWM:");
    assert!(
        peak_kb < baseline_kb + 48 * 1024,
        "relaying 200 MiB raised peak RSS from {baseline_kb} kB to {peak_kb} kB"
    );

    let (_, _) = get(&c, &proxy.url("/healthz")).await;
    let (status, logs) = proxy.terminate();
    assert!(
        status.success(),
        "SIGTERM exits cleanly: {status:?}\n{logs}"
    );
    assert!(logs.contains("shutdown complete"), "{logs}");
    for secret in ["sk-never-log-this-4242", "never-log-this-either"] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    assert!(
        logs.contains("/echo/big"),
        "debug logs were captured: {logs}"
    );
}

/// Writes a configuration file into DIR; its path, for `ASSISTANTS_PROXY_CONFIG`.
pub(crate) fn write_config(dir: &std::path::Path, toml: &str) -> String {
    let path = dir.join("proxy.toml");
    std::fs::write(&path, toml).unwrap();
    path.to_str().unwrap().to_owned()
}

/// CPU time (user + system) the process has used so far, in ms.
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on every Linux the project targets.
    ticks * 10
}

#[tokio::test]
async fn busy_polling_forwards_and_sleeps_when_idle() {
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[server]\nworker_threads = 1\nbusy_poll_us = 2000\n",
    );
    let env = [("ASSISTANTS_PROXY_CONFIG", config.as_str())];
    let mut proxy = Proc::start(&up.url(), &env, dir.path()).await;
    let c = client();
    // Forwarded requests (the relay) and the proxy's own routes (hyper) both keep it polling,
    // and both are answered as without it.
    for i in 0..50 {
        let (resp, body) = get(&c, &proxy.url(&format!("/echo/busy?i={i}"))).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(json(&body)["query"], format!("i={i}"));
        let (resp, _) = get(&c, &proxy.url("/healthz")).await;
        assert_eq!(resp.status(), 200);
    }
    // Quiet for far longer than the 2 ms window: the event loop sleeps again, so an idle
    // proxy costs (nearly) no CPU. Polling, it would use the whole second.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = cpu_ms(proxy.child.id());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = cpu_ms(proxy.child.id()) - before;
    assert!(
        idle <= 150,
        "an idle busy-polling proxy used {idle} ms of CPU in 1 s"
    );
    // And it still answers at once after sleeping.
    let (resp, _) = get(&c, &proxy.url("/echo/after-idle")).await;
    assert_eq!(resp.status(), 200);
    let (status, logs) = proxy.terminate();
    assert!(
        status.success(),
        "SIGTERM exits cleanly: {status:?}\n{logs}"
    );
    assert!(logs.contains("shutdown complete"), "{logs}");
}

/// A relayed answer the upstream cuts off mid-body: the client's connection closes, the
/// request still has its access line, and the debug line saying why carries the same id.
#[tokio::test]
async fn a_cut_off_relayed_answer_is_logged_under_its_request_id() {
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RUST_LOG", "debug"),
        ("ASSISTANTS_PROXY_LOG_FORMAT", "json"),
    ];
    let mut proxy = Proc::start(&up.url(), &env, dir.path()).await;
    let body = r#"{"model":"drop","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let resp = client()
        .request(
            Request::post(proxy.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.into_body().collect().await.is_err(),
        "the client sees the answer end early"
    );
    let (_, logs) = proxy.terminate();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // The JSON format puts an event's fields beside its message.
    let field = |l: &serde_json::Value, k: &str| l[k].as_str().map(str::to_owned);
    let cut = lines
        .iter()
        .find(|l| field(l, "message").is_some_and(|m| m.contains("ended mid-body")))
        .unwrap_or_else(|| panic!("no debug line for the cut-off answer in\n{logs}"));
    let id = field(cut, "id").unwrap_or_else(|| panic!("the debug line has no id: {cut}"));
    let access = lines
        .iter()
        .find(|l| {
            field(l, "message").as_deref() == Some("request") && field(l, "id") == Some(id.clone())
        })
        .unwrap_or_else(|| panic!("no access line with id {id} in\n{logs}"));
    assert_eq!(
        field(access, "path").as_deref(),
        Some("/v1/chat/completions")
    );
    assert_eq!(access["status"], 200);
}

both_backends!(
    a_killed_proxy_s_runs_are_resolved_after_restart,
    |backend| async move {
        use serde_json::json;
        let up = FakeUpstream::start().await;
        up.set_chunk_delay(Duration::from_millis(100));
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(
            dir.path(),
            "[runs]\nlease_seconds = 3\nsweep_interval_seconds = 1\n",
        );
        let store = crate::support::store_url(backend, dir.path());
        let env = [("ASSISTANTS_PROXY_CONFIG", config.as_str())];
        let port = free_port();
        let mut first = Proc::start_on(&up.url(), &store, port, &env).await;
        let api = crate::support::Api {
            base: format!("http://127.0.0.1:{port}"),
            key: crate::support::new_key(),
            client: client(),
            headers: vec![],
        };
        let aid = api.ok("/v1/assistants", json!({"model": "gpt-4o"})).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let words: Vec<String> = (0..80).map(|i| format!("w{i}")).collect();
        let tid = api
            .ok(
                "/v1/threads",
                json!({"messages": [{"role": "user", "content": words.join(" ")}]}),
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let rid = api
            .ok(
                &format!("/v1/threads/{tid}/runs"),
                json!({"assistant_id": aid}),
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        // Wait until part of the answer has been saved, then kill -9 mid-stream.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, msgs) = api.get(&format!("/v1/threads/{tid}/messages")).await;
            if msgs["data"][0]["role"] == "assistant"
                && msgs["data"][0]["content"][0]["text"]["value"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty())
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no partial answer was saved"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        first.kill9();
        let killed_at = std::time::Instant::now();

        let _second = Proc::start_on(&up.url(), &store, port, &env).await;
        let run = loop {
            let (s, run) = api.get(&format!("/v1/threads/{tid}/runs/{rid}")).await;
            assert_eq!(s, 200, "{run}");
            if run["status"] != "in_progress" && run["status"] != "queued" {
                break run;
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(20),
                "the run stayed in_progress after the crash"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(run["status"], "failed", "{run}");
        assert_eq!(run["last_error"]["code"], "server_error");
        let (_, msgs) = api.get(&format!("/v1/threads/{tid}/messages")).await;
        assert_eq!(
            msgs["data"].as_array().unwrap().len(),
            2,
            "nothing lost, nothing duplicated"
        );
        assert_eq!(msgs["data"][0]["status"], "incomplete");
        assert!(
            !msgs["data"][0]["content"][0]["text"]["value"]
                .as_str()
                .unwrap()
                .is_empty()
        );
        // The thread is usable again.
        let (s, _) = api
            .post(
                &format!("/v1/threads/{tid}/messages"),
                json!({"role": "user", "content": "again"}),
            )
            .await;
        assert_eq!(s, 200);
    }
);

/// SIGTERM while a run is stuck on an upstream that stopped sending: the process still exits
/// within the grace period plus the cleanup period, and the run is left failed, not active.
#[tokio::test]
async fn sigterm_ends_within_grace_and_cleanup_with_a_stalled_run() {
    use crate::support::fake_upstream::ScriptedReply;
    use crate::support::{Api, id, new_key};
    use serde_json::json;

    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[server]\nshutdown_grace_seconds = 2\nshutdown_cleanup_seconds = 3\n",
    );
    let mut proxy = Proc::start(
        &up.url(),
        &[("ASSISTANTS_PROXY_CONFIG", &config)],
        dir.path(),
    )
    .await;
    let api = Api {
        base: proxy.url(""),
        key: new_key(),
        client: client(),
        headers: vec![("openai-beta".into(), "assistants=v2".into())],
    };
    up.push_chat_script(ScriptedReply::StallAfter {
        text: "Once upon a time".into(),
        chunks: 2,
    });
    let aid = id(&api.ok("/v1/assistants", json!({"model": "gpt-4o"})).await);
    let story = json!({"messages": [{"role": "user", "content": "story"}]});
    let tid = id(&api.ok("/v1/threads", story).await);
    let run = json!({"assistant_id": aid});
    let rid = id(&api.ok(&format!("/v1/threads/{tid}/runs"), run).await);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, msgs) = api.get(&format!("/v1/threads/{tid}/messages")).await;
        if msgs["data"].as_array().unwrap().len() == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no partial answer: {msgs}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = std::time::Instant::now();
    let (status, logs) = proxy.terminate();
    let took = started.elapsed();
    assert!(status.success(), "{status:?}\n{logs}");
    assert!(
        took < Duration::from_secs(2 + 3 + 2),
        "SIGTERM took {took:?} with grace 2 s and cleanup 3 s\n{logs}"
    );
    assert!(logs.contains("grace period over"), "{logs}");
    assert!(logs.contains("shutdown complete"), "{logs}");

    // A new process on the same database finds the run ended.
    let store = format!("sqlite://{}", dir.path().join("bin.db").display());
    let again = Proc::start_on(&up.url(), &store, free_port(), &[]).await;
    let api = Api {
        base: again.url(""),
        ..api
    };
    let (_, run) = api.get(&format!("/v1/threads/{tid}/runs/{rid}")).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("shut down"),
        "{run}"
    );
    let (_, msgs) = api.get(&format!("/v1/threads/{tid}/messages")).await;
    assert_eq!(msgs["data"][0]["status"], "incomplete", "{msgs}");
}
