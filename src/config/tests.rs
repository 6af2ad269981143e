//! Parsing and validation of the configuration: defaults, the example file, refusals.

use std::path::Path;

use super::*;

#[test]
fn defaults_validate() {
    let c = Config::resolve(&ServeArgs::default(), FileConfig::default()).unwrap();
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(c.upstream.url.to_string(), "https://api.openai.com/");
    assert_eq!(c.store_url, DEFAULT_STORE);
    assert_eq!(c.tenancy.mode, TenancyMode::Key);
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

#[test]
fn shipped_example_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/assistants-proxy.toml");
    let file = FileConfig::read(&path).unwrap();
    let c = Config::resolve(&ServeArgs::default(), file).unwrap();
    assert_eq!(c.upstream.pool_max_idle_per_host, 64);
}

#[test]
fn astra_settings() {
    let c = Config::resolve(&ServeArgs::default(), FileConfig::default()).unwrap();
    assert_eq!(
        c.astra.devops_url.to_string(),
        "https://api.astra.datastax.com/"
    );
    assert!(c.astra.per_request_headers);
    assert_eq!(c.astra.keyspace, "assistant_api");
    assert_eq!(c.astra.database_name, "assistant_api_db");
    let file = FileConfig::parse(
        "[astra]\ndevops_url = \"http://127.0.0.1:9\"\nmax_sessions = 2\nidle_timeout_seconds = 5\nper_request_headers = false\n",
    )
    .unwrap();
    let c = Config::resolve(&ServeArgs::default(), file).unwrap();
    assert_eq!(c.astra.max_sessions, 2);
    assert!(!c.astra.per_request_headers);
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    for bad in [
        "[astra]\nmax_sessions = 0\n",
        "[astra]\ndevops_url = \"ftp://x\"\n",
        "[astra]\nkeyspace = \"bad-name\"\n",
    ] {
        let file = FileConfig::parse(bad).unwrap();
        assert!(
            Config::resolve(&ServeArgs::default(), file).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn busy_polling_needs_the_single_threaded_runtime() {
    let resolve =
        |toml: &str| Config::resolve(&ServeArgs::default(), FileConfig::parse(toml).unwrap());
    assert_eq!(resolve("").unwrap().busy_poll, None);
    assert_eq!(
        resolve("[server]\nbusy_poll_us = 0\n").unwrap().busy_poll,
        None
    );
    let on = resolve("[server]\nworker_threads = 1\nbusy_poll_us = 250\n").unwrap();
    assert_eq!(on.busy_poll, Some(Duration::from_micros(250)));
    for other in ["", "worker_threads = 2\n"] {
        let e = resolve(&format!("[server]\n{other}busy_poll_us = 250\n")).unwrap_err();
        assert!(e.0.contains("worker_threads = 1"), "{}", e.0);
    }
}

#[test]
fn body_read_timeout() {
    let resolve =
        |toml: &str| Config::resolve(&ServeArgs::default(), FileConfig::parse(toml).unwrap());
    assert_eq!(
        resolve("").unwrap().body_read_timeout,
        Duration::from_secs(30)
    );
    let c = resolve("[server]\nbody_read_timeout_seconds = 7\n").unwrap();
    assert_eq!(c.body_read_timeout, Duration::from_secs(7));
    let e = resolve("[server]\nbody_read_timeout_seconds = 0\n").unwrap_err();
    assert!(e.0.contains("body_read_timeout_seconds"), "{}", e.0);
}

#[test]
fn rewrite_model_is_configurable() {
    let resolve =
        |toml: &str| Config::resolve(&ServeArgs::default(), FileConfig::parse(toml).unwrap());
    assert_eq!(
        resolve("").unwrap().retrieval.rewrite_model,
        DEFAULT_REWRITE_MODEL
    );
    let c = resolve("[retrieval]\nrewrite_model = \"llama3.1:8b\"\n").unwrap();
    assert_eq!(c.retrieval.rewrite_model, "llama3.1:8b");
    let e = resolve("[retrieval]\nrewrite_model = \" \"\n").unwrap_err();
    assert!(e.0.contains("rewrite_model"), "{}", e.0);
}

#[test]
fn unknown_keys_are_rejected() {
    let e = FileConfig::parse("[upstream]\nurll = \"http://x\"\n").unwrap_err();
    assert!(e.0.contains("unknown field"), "{}", e.0);
    let e = FileConfig::parse("[nonsense]\n").unwrap_err();
    assert!(e.0.contains("unknown field"), "{}", e.0);
}

#[test]
fn flags_override_file() {
    let file = FileConfig::parse(
        "[server]\nlisten = \"127.0.0.1:9000\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    let args = ServeArgs {
        listen: Some("127.0.0.1:9001".into()),
        ..ServeArgs::default()
    };
    let c = Config::resolve(&args, file).unwrap();
    assert_eq!(c.listen.port(), 9001);
    assert_eq!(c.upstream.url.host(), Some("127.0.0.1"));
}

#[test]
fn bad_values_are_explained() {
    let bad = |args: ServeArgs| Config::resolve(&args, FileConfig::default()).unwrap_err().0;
    assert!(
        bad(ServeArgs {
            listen: Some("nope".into()),
            ..Default::default()
        })
        .contains("listen")
    );
    assert!(
        bad(ServeArgs {
            upstream: Some("ftp://x".into()),
            ..Default::default()
        })
        .contains("http")
    );
    assert!(
        bad(ServeArgs {
            store: Some("mysql://x".into()),
            ..Default::default()
        })
        .contains("sqlite://")
    );
    let e = Config::resolve(
        &ServeArgs::default(),
        FileConfig::parse("[upstream]\napi_key_env = \"sk-123=4\"\n").unwrap(),
    )
    .unwrap_err();
    assert!(e.0.contains("NAME"));
}

#[test]
fn risky_settings_warn() {
    let args = ServeArgs {
        upstream: Some("http://example.com/v1".into()),
        listen: Some("0.0.0.0:8080".into()),
        ..Default::default()
    };
    let c = Config::resolve(&args, FileConfig::default()).unwrap();
    assert_eq!(c.warnings().len(), 3, "{:?}", c.warnings());
}
