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

const HASH_A: &str = "k:0123456789abcdef0123456789abcdef";
const HASH_B: &str = "k:fedcba9876543210fedcba9876543210";

fn tenancy(toml: &str) -> Result<Config, ConfigError> {
    Config::resolve(&ServeArgs::default(), FileConfig::parse(toml)?)
}

#[test]
fn keys_map_to_named_tenants() {
    let c = tenancy(&format!(
        "[[tenancy.keys]]\nkey_hash = \"{HASH_A}\"\ntenant = \"acme\"\n\
         [[tenancy.keys]]\nkey_hash = \"{HASH_B}\"\ntenant = \"acme\"\n"
    ))
    .unwrap();
    assert_eq!(c.tenancy.tenant_for_key(HASH_A.into()).unwrap(), "n:acme");
    assert_eq!(c.tenancy.tenant_for_key(HASH_B.into()).unwrap(), "n:acme");
    let other = "k:00000000000000000000000000000000";
    assert_eq!(c.tenancy.tenant_for_key(other.into()).unwrap(), other);
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

#[test]
fn a_name_takes_over_an_existing_tenant_id() {
    let c = tenancy(&format!(
        "[tenancy.tenant_ids]\nacme = \"{HASH_A}\"\n\
         [[tenancy.keys]]\nkey_hash = \"{HASH_A}\"\ntenant = \"acme\"\n\
         [[tenancy.keys]]\nkey_hash = \"{HASH_B}\"\ntenant = \"acme\"\n"
    ))
    .unwrap();
    assert_eq!(c.tenancy.tenant_for_key(HASH_A.into()).unwrap(), HASH_A);
    assert_eq!(c.tenancy.tenant_for_key(HASH_B.into()).unwrap(), HASH_A);
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    // The old key taken off the list (leaked, say): its own id is acme's now, so it is
    // refused rather than reaching acme's rows through its hash.
    let c = tenancy(&format!(
        "[tenancy.tenant_ids]\nacme = \"{HASH_A}\"\n\
         [[tenancy.keys]]\nkey_hash = \"{HASH_B}\"\ntenant = \"acme\"\n"
    ))
    .unwrap();
    assert_eq!(c.tenancy.tenant_for_key(HASH_A.into()), None);
    assert_eq!(c.tenancy.tenant_for_key(HASH_B.into()).unwrap(), HASH_A);
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    // Other unnamed ids a deployment may have stored rows under.
    for id in ["single", "h:team-7"] {
        let c = tenancy(&format!(
            "[tenancy.tenant_ids]\nteam = \"{id}\"\n\
             [[tenancy.keys]]\nkey_hash = \"{HASH_B}\"\ntenant = \"team\"\n"
        ))
        .unwrap();
        assert_eq!(c.tenancy.tenant_for_key(HASH_B.into()).unwrap(), id);
    }
}

#[test]
fn bad_tenancy_mappings_are_refused() {
    let entry = |hash: &str, tenant: &str| {
        format!("[[tenancy.keys]]\nkey_hash = \"{hash}\"\ntenant = \"{tenant}\"\n")
    };
    let cases = [
        // Not as `tenant-id` prints it: no prefix, upper case, short, a key itself.
        (entry(&HASH_A[2..], "acme"), "is not a key hash"),
        (entry(&HASH_A.to_uppercase(), "acme"), "is not a key hash"),
        (entry(&HASH_A[..20], "acme"), "is not a key hash"),
        (entry("sk-live-abc", "acme"), "is not a key hash"),
        (entry(HASH_A, ""), "is not a tenant name"),
        (entry(HASH_A, "a b"), "is not a tenant name"),
        (entry(HASH_A, "n:acme"), "is not a tenant name"),
        (entry(HASH_A, &"x".repeat(65)), "is not a tenant name"),
        (
            entry(HASH_A, "acme") + &entry(HASH_A, "beta"),
            "tenancy.keys[1].key_hash k:0123456789abcdef0123456789abcdef is listed twice (first for tenant \"acme\")",
        ),
        (
            "[tenancy.tenant_ids]\nacme = \"n:acme\"\n".into(),
            "is not an existing tenant id",
        ),
        (
            "[tenancy.tenant_ids]\nacme = \"0123\"\n".into(),
            "is not an existing tenant id",
        ),
        (
            "[tenancy.tenant_ids]\nacme = \"h:\"\n".into(),
            "is not an existing tenant id",
        ),
        (
            format!("[tenancy.tenant_ids]\nacme = \"{HASH_A}\"\nbeta = \"{HASH_A}\"\n"),
            "to two tenants",
        ),
        (
            "[tenancy.tenant_ids]\n\"a/b\" = \"single\"\n".into(),
            "is not a tenant name",
        ),
        (
            format!("[[tenancy.keys]]\nkey_hash = \"{HASH_A}\"\n"),
            "missing field `tenant`",
        ),
    ];
    for (toml, want) in cases {
        let e = tenancy(&toml).unwrap_err();
        assert!(e.0.contains(want), "{toml}: {}", e.0);
        assert!(
            !e.0.contains("sk-"),
            "a key pasted in the file is repeated: {}",
            e.0
        );
    }
    // A key where its hash belongs, or under a key toml does not know: the message says
    // where, and does not repeat the line.
    for toml in [
        "[[tenancy.keys]]\nkey_hash = \"sk-live-secret\"\ntenant = \"a\"\n",
        "[[tenancy.keys]]\nkey = \"sk-live-secret\"\ntenant = \"a\"\n",
        "[tenancy.tenant_ids]\nacme = \"sk-live-secret\"\n",
    ] {
        let e = tenancy(toml).unwrap_err();
        assert!(!e.0.contains("sk-live-secret"), "{}", e.0);
    }
    let e = tenancy("[[tenancy.keys]]\nkey = \"sk-live-secret\"\n").unwrap_err();
    assert_eq!(
        e.0,
        "line 2, column 1: unknown field `key`, expected `key_hash` or `tenant`"
    );
    assert!(tenancy(&entry(HASH_A, "Acme-EU_2.prod")).is_ok());
    assert!(tenancy(&entry(HASH_A, &"x".repeat(64))).is_ok());
}

#[test]
fn inert_tenancy_mappings_warn() {
    let keys = format!("[[tenancy.keys]]\nkey_hash = \"{HASH_A}\"\ntenant = \"acme\"\n");
    let c = tenancy(&format!("[tenancy]\nmode = \"single\"\n{keys}")).unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("do nothing"), "{w:?}");

    let c = tenancy(&format!(
        "[tenancy.tenant_ids]\nbeta = \"{HASH_B}\"\n{keys}"
    ))
    .unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("\"beta\", which no [[tenancy.keys]]"),
        "{w:?}"
    );

    // Key A's rows given to "beta", while key A itself now acts for "acme".
    let c = tenancy(&format!(
        "[tenancy.tenant_ids]\nbeta = \"{HASH_A}\"\n{keys}\
         [[tenancy.keys]]\nkey_hash = \"{HASH_B}\"\ntenant = \"beta\"\n"
    ))
    .unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("no longer reaches them"), "{w:?}");
}
