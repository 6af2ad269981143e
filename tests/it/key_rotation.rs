//! Keys that rotate, as an operator does it: the real binary, its key hashes printed by
//! `assistants-proxy tenant-id`, restarted on the same store with an edited configuration.
//! `[[tenancy.keys]]` puts several keys in one named tenant; `[tenancy.tenant_ids]` names a
//! key's existing tenant without moving its rows, and a key taken off the list is refused.
//! Keys never reach the logs.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::json;

use crate::binary::{Proc, free_port, write_config};
use crate::both_backends;
use crate::support::{Api, Backend, FakeUpstream, assert_error, client, id, new_key, store_url};

const BIN: &str = env!("CARGO_BIN_EXE_assistants-proxy");

/// Runs `tenant-id` with `args`, the key on stdin (or none), and `env`.
fn tenant_id_run(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("tenant-id")
        .args(args)
        .env_remove("OPENAI_API_KEY")
        .env_remove("ASSISTANTS_PROXY_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            // A command refused on its flags exits without reading stdin: the write then
            // meets a closed pipe, which is that refusal, not a failure of the test.
            if let Err(e) = input.write_all(text.as_bytes()) {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
            }
        }
    }
    child.wait_with_output().unwrap()
}

/// What `tenant-id --stdin` prints for `key` (with `config`, if any): `key_hash`,
/// `tenant_id`, and `tenant` when the configuration names one. Asserts success, and that the
/// key is printed nowhere.
fn tenant_id(key: &str, config: Option<&str>) -> HashMap<String, String> {
    let mut args = vec!["--stdin"];
    if let Some(path) = config {
        args.extend(["--config", path]);
    }
    let out = tenant_id_run(&args, Some(&format!("{key}\n")), &[]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "tenant-id failed: {stderr}");
    assert!(
        !stdout.contains(key) && !stderr.contains(key),
        "tenant-id printed the key"
    );
    parse_report(&stdout)
}

fn parse_report(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once(" = ")
                .unwrap_or_else(|| panic!("not a TOML line: {l}"));
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

/// The proxy binary on `store`, with `toml` as its configuration file.
async fn start(up: &FakeUpstream, store: &str, dir: &std::path::Path, toml: &str) -> (Proc, u16) {
    let config = write_config(dir, toml);
    let port = free_port();
    let env = [("ASSISTANTS_PROXY_CONFIG", config.as_str())];
    (Proc::start_on(&up.url(), store, port, &env).await, port)
}

fn api(port: u16, key: &str) -> Api {
    Api {
        base: format!("http://127.0.0.1:{port}"),
        key: key.to_owned(),
        client: client(),
        headers: vec![("openai-beta".into(), "assistants=v2".into())],
    }
}

/// Stops the proxy (SIGTERM) and checks that none of `keys` is in what it logged.
fn stop(mut proxy: Proc, keys: &[&str]) {
    let (status, logs) = proxy.terminate();
    assert!(status.success(), "the proxy failed: {logs}");
    assert!(logs.contains("request"), "no access log to check: {logs}");
    for key in keys {
        assert!(!logs.contains(key), "a key reached the logs");
    }
}

/// A tenant name no other run of the suite uses (the Cassandra keyspace is shared).
fn fresh_name() -> String {
    format!("acme-{}", assistants_proxy::ids::new_id(""))
}

fn keys_toml(tenant: &str, hashes: &[&str]) -> String {
    hashes
        .iter()
        .map(|h| format!("[[tenancy.keys]]\nkey_hash = \"{h}\"\ntenant = \"{tenant}\"\n"))
        .collect()
}

/// What a tenant made: an assistant, a thread with one message.
async fn make_objects(api: &Api) -> (String, String) {
    let asst = id(&api
        .ok(
            "/v1/assistants",
            json!({"model": "gpt-4o", "name": "before"}),
        )
        .await);
    let thread = id(&api
        .ok(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "made with the old key"}]}),
        )
        .await);
    (asst, thread)
}

/// Asserts `api` sees the assistant (by id and in its list) and the thread's first message.
async fn assert_sees(api: &Api, asst: &str, thread: &str) {
    let (s, a) = api.get(&format!("/v1/assistants/{asst}")).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["name"], "before");
    let (s, list) = api.get("/v1/assistants?limit=100").await;
    assert_eq!(s, 200, "{list}");
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == asst),
        "{list}"
    );
    let (s, msgs) = api
        .get(&format!("/v1/threads/{thread}/messages?order=asc"))
        .await;
    assert_eq!(s, 200, "{msgs}");
    assert_eq!(
        msgs["data"][0]["content"][0]["text"]["value"],
        "made with the old key"
    );
}

async fn assert_not_found(api: &Api, asst: &str, thread: &str) {
    let (s, _) = api.get(&format!("/v1/assistants/{asst}")).await;
    assert_eq!(s, 404);
    let (s, _) = api.get(&format!("/v1/threads/{thread}")).await;
    assert_eq!(s, 404);
}

both_backends!(
    two_keys_share_a_named_tenant,
    |backend: Backend| async move {
        let up = FakeUpstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let store = store_url(backend, dir.path());
        let (old, new, stranger) = (new_key(), new_key(), new_key());
        let (old_hash, new_hash) = (
            tenant_id(&old, None)["key_hash"].clone(),
            tenant_id(&new, None)["key_hash"].clone(),
        );
        let name = fresh_name();

        // Both keys listed: what one makes, the other sees and extends.
        let toml = keys_toml(&name, &[&old_hash, &new_hash]);
        let (proxy, port) = start(&up, &store, dir.path(), &toml).await;
        let (asst, thread) = make_objects(&api(port, &old)).await;
        assert_sees(&api(port, &new), &asst, &thread).await;
        api(port, &new)
            .ok(
                &format!("/v1/threads/{thread}/messages"),
                json!({"role": "user", "content": "made with the new key"}),
            )
            .await;
        let (_, msgs) = api(port, &old)
            .get(&format!("/v1/threads/{thread}/messages?order=asc"))
            .await;
        assert_eq!(
            msgs["data"][1]["content"][0]["text"]["value"],
            "made with the new key"
        );
        assert_not_found(&api(port, &stranger), &asst, &thread).await;
        let config = dir.path().join("proxy.toml");
        let report = tenant_id(&new, config.to_str());
        assert_eq!(report["tenant"], name);
        assert_eq!(report["tenant_id"], format!("n:{name}"));
        stop(proxy, &[&old, &new, &stranger]);

        // The old key retired: the tenant's rows stay with the new one; the old key is a
        // stranger again.
        let (proxy, port) = start(&up, &store, dir.path(), &keys_toml(&name, &[&new_hash])).await;
        assert_sees(&api(port, &new), &asst, &thread).await;
        assert_not_found(&api(port, &old), &asst, &thread).await;
        stop(proxy, &[&old, &new]);
    }
);

both_backends!(
    an_existing_key_tenant_is_named_in_place,
    |backend: Backend| async move {
        let up = FakeUpstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let store = store_url(backend, dir.path());
        let (old, new) = (new_key(), new_key());
        let old_report = tenant_id(&old, None);
        let (old_hash, old_tenant) = (&old_report["key_hash"], &old_report["tenant_id"]);
        let new_hash = tenant_id(&new, None)["key_hash"].clone();
        let name = fresh_name();

        // Before any mapping: the old key's rows, under its own tenant id.
        let (proxy, port) = start(&up, &store, dir.path(), "").await;
        let (asst, thread) = make_objects(&api(port, &old)).await;
        let store_id = id(&api(port, &old)
            .ok("/v1/vector_stores", json!({"name": "docs"}))
            .await);
        assert_not_found(&api(port, &new), &asst, &thread).await;
        stop(proxy, &[&old, &new]);

        // The name takes over the old key's tenant id: nothing moves, both keys see it all.
        let named = format!("[tenancy.tenant_ids]\n\"{name}\" = \"{old_tenant}\"\n");
        let toml = named.clone() + &keys_toml(&name, &[old_hash, &new_hash]);
        let (proxy, port) = start(&up, &store, dir.path(), &toml).await;
        for key in [&old, &new] {
            assert_sees(&api(port, key), &asst, &thread).await;
            let (s, vs) = api(port, key)
                .get(&format!("/v1/vector_stores/{store_id}"))
                .await;
            assert_eq!((s.as_u16(), &vs["name"]), (200, &json!("docs")), "{vs}");
        }
        let made_new = id(&api(port, &new)
            .ok("/v1/assistants", json!({"model": "gpt-4o"}))
            .await);
        let (s, _) = api(port, &old)
            .get(&format!("/v1/assistants/{made_new}"))
            .await;
        assert_eq!(s, 200);
        let config = dir.path().join("proxy.toml");
        let report = tenant_id(&new, config.to_str());
        assert_eq!(report["tenant"], name);
        assert_eq!(&report["tenant_id"], old_tenant);
        stop(proxy, &[&old, &new]);

        // The old key taken off the list (revoked after a leak, say): its own tenant id is the
        // name's now, so it is refused on the stored routes instead of reaching the rows through
        // its hash; forwarded routes are the upstream's business and still pass.
        let toml = named + &keys_toml(&name, &[&new_hash]);
        let (proxy, port) = start(&up, &store, dir.path(), &toml).await;
        assert_sees(&api(port, &new), &asst, &thread).await;
        for path in [
            format!("/v1/assistants/{asst}"),
            format!("/v1/threads/{thread}/messages"),
            "/v1/assistants".to_owned(),
        ] {
            let got = api(port, &old).get(&path).await;
            assert_error(&got, 401, None, None);
            assert_eq!(
                got.1["error"]["message"],
                assistants_proxy::tenancy::RETIRED_KEY
            );
        }
        let (s, _) = api(port, &old).get("/echo").await;
        assert_eq!(s, 200, "a forwarded route refused the retired key");
        let config = dir.path().join("proxy.toml");
        let report = tenant_id_run(
            &["--stdin", "--config", config.to_str().unwrap()],
            Some(&old),
            &[],
        );
        let stdout = String::from_utf8(report.stdout).unwrap();
        assert!(stdout.contains("# retired"), "{stdout}");
        assert!(!stdout.contains("tenant_id ="), "{stdout}");
        stop(proxy, &[&old, &new]);
    }
);

#[test]
fn tenant_id_reads_the_key_from_the_environment_or_stdin() {
    let key = new_key();
    let expected = assistants_proxy::tenancy::key_tenant(&key);
    let outputs = [
        tenant_id_run(&["--stdin"], Some(&format!("{key}\n")), &[]),
        tenant_id_run(&["--stdin"], Some(&format!("{key}\r\n")), &[]),
        tenant_id_run(&[], None, &[("OPENAI_API_KEY", &key)]),
        tenant_id_run(&["--key-env", "MY_KEY"], None, &[("MY_KEY", &key)]),
    ];
    for out in outputs {
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!stdout.contains(&key), "tenant-id printed the key");
        let report = parse_report(&stdout);
        assert_eq!(report["key_hash"], expected);
        assert_eq!(report["tenant_id"], expected);
    }

    let refused = [
        (tenant_id_run(&["--stdin"], Some(""), &[]), "holds no key"),
        (tenant_id_run(&["--stdin"], Some("\n"), &[]), "holds no key"),
        (
            tenant_id_run(&["--stdin"], Some(&format!("{key}\n{key}\n")), &[]),
            "more than one line",
        ),
        (tenant_id_run(&[], None, &[]), "OPENAI_API_KEY is not set"),
        (
            tenant_id_run(&[], None, &[("OPENAI_API_KEY", "")]),
            "holds no key",
        ),
        // No flag takes the key itself.
        (
            tenant_id_run(&["--key", "sk-on-the-command-line"], None, &[]),
            "unexpected argument",
        ),
        (
            tenant_id_run(&["--stdin", "--key-env", "X"], Some("k"), &[]),
            "cannot be used with",
        ),
    ];
    for (out, want) in refused {
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(want), "{want}: {stderr}");
        assert!(out.stdout.is_empty());
        assert!(!stderr.contains(&key), "the key is in the error");
    }
}

#[test]
fn check_config_refuses_bad_mappings_and_warns_on_inert_ones() {
    let dir = tempfile::tempdir().unwrap();
    let hash = assistants_proxy::tenancy::key_tenant(&new_key());
    let check = |toml: &str| {
        let path = write_config(dir.path(), toml);
        let out = Command::new(BIN)
            .args(["check-config", "--config", &path])
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stderr).unwrap())
    };
    let entry = format!("[[tenancy.keys]]\nkey_hash = \"{hash}\"\ntenant = \"acme\"\n");
    let (code, stderr) = check(&entry);
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    let (code, stderr) = check(&format!("{entry}{entry}"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("is listed twice"), "{stderr}");
    // A key pasted where its hash belongs is refused without being repeated.
    for (pasted, want) in [
        (
            "[[tenancy.keys]]\nkey_hash = \"sk-pasted-by-mistake\"\ntenant = \"acme\"\n",
            "tenancy.keys[0].key_hash is not a key hash",
        ),
        (
            "[[tenancy.keys]]\nkey = \"sk-pasted-by-mistake\"\ntenant = \"acme\"\n",
            "line 2, column 1: unknown field `key`",
        ),
    ] {
        let (code, stderr) = check(pasted);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
        assert!(!stderr.contains("sk-pasted"), "{stderr}");
    }
    let (code, stderr) = check(&format!("[tenancy]\nmode = \"single\"\n{entry}"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning:") && stderr.contains("do nothing"),
        "{stderr}"
    );
}
