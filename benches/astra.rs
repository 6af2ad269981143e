//! Astra per-request databases against a directly configured Cassandra, measured in one run
//! on one node: the proxy's `--store` is `cassandra://` on the password-mode test node
//! (`ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH`, logging in as the `token` role with
//! `AP_TEST_ASTRA_TOKEN`), and the Astra stand-in (the `fake-astra` crate) fronts the same node
//! and the same keyspace. Both must be set; the benchmark fails otherwise.
//!
//! Measured through HTTP (`GET /v1/assistants/{id}`, one client, sequential):
//! - **first request for a new database**: a new token and database each time, so the
//!   request pays the DevOps calls, the bundle download, the metadata service, the
//!   connection through the SNI proxy and the schema check (the keyspace already has the
//!   tables, as a returning caller's does); plus one sample where the database's keyspace
//!   is brand new and the proxy creates the whole schema;
//! - **steady state through a cached session** (`astra-api-token` + `astra-db-id`);
//! - **the same request without Astra headers**, served by the configured Cassandra.
//!
//! Steady-state samples alternate between the two paths so drift hits both alike. Figures
//! are printed as medians and ratios. `cargo bench --bench astra` runs the full sizes;
//! without `--bench` (as `cargo test --all-targets` runs it) every step runs once or a few
//! times, as a smoke test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;

use support::astra::FakeAstra;
use support::{Api, FakeUpstream, TestProxy};

/// The keyspace both paths use (it survives runs: its schema is made once).
const KEYSPACE: &str = "ap_astra_bench";

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p90(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 9 / 10).min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn timed_get(api: &Api, path: &str) -> Duration {
    let started = Instant::now();
    let (status, body) = api.get(path).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "GET {path}: {body}");
    took
}

fn main() {
    let node = std::env::var("ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH").expect(
        "ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH must name the password-mode Cassandra 5 node",
    );
    std::env::var("AP_TEST_ASTRA_TOKEN")
        .expect("AP_TEST_ASTRA_TOKEN must hold the password of the node's `token` role");
    let (firsts, steady) = if full_run() { (8, 300) } else { (1, 5) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(&node, firsts, steady));
}

async fn run(node: &str, firsts: usize, steady: usize) {
    let fake = FakeAstra::start().await;
    let up = FakeUpstream::start().await;
    // The stand-in makes the keyspace and lets the `token` role use it, so the direct
    // store (logged in as `token` too, without the right to create keyspaces) finds it.
    fake.ensure_keyspace(KEYSPACE).await;
    let owner = fake.new_token();
    let db = fake.database_with_keyspace(&owner, "bench", KEYSPACE).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[astra]\ndevops_url = \"{}\"\nkeyspace_from_bundle = true\nmax_sessions = 1000\n",
        fake.devops_url()
    );
    let mut config = support::config_for(&up.url(), &toml, dir.path());
    config.store_url =
        format!("cassandra://{node}/{KEYSPACE}?user=token&password_env=AP_TEST_ASTRA_TOKEN");
    let proxy = TestProxy::start_config(config, dir).await;

    let direct = Api::new(&proxy);
    let astra = direct
        .clone()
        .with_header("astra-api-token", &owner)
        .with_header("astra-db-id", &db);
    // Astra first: on the node's first run this makes the keyspace's schema.
    let astra_asst = astra
        .ok(
            "/v1/assistants",
            json!({"model": "gpt-4o", "name": "astra"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let direct_asst = direct
        .ok(
            "/v1/assistants",
            json!({"model": "gpt-4o", "name": "direct"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // First request for a new database (existing keyspace with its tables).
    let mut first = Vec::new();
    for n in 0..firsts {
        let token = fake.new_token();
        let db = fake
            .database_with_keyspace(&token, &format!("bench {n}"), KEYSPACE)
            .await;
        let api = direct
            .clone()
            .with_header("astra-api-token", &token)
            .with_header("astra-db-id", &db);
        first.push(timed_get(&api, "/v1/assistants?limit=1").await);
    }
    // And one whose keyspace is new: the proxy asks for it and makes every table.
    let cold = if full_run() {
        let token = fake.new_token();
        let db = fake.new_database(&token, "bench cold", None);
        let keyspace = fake.keyspace_of(&db);
        let api = direct
            .clone()
            .with_header("astra-api-token", &token)
            .with_header("astra-db-id", &db);
        let took = timed_get(&api, "/v1/assistants?limit=1").await;
        fake.drop_keyspace(&keyspace).await;
        Some(took)
    } else {
        None
    };

    // Steady state, alternating; a short warm-up first.
    let astra_path = format!("/v1/assistants/{astra_asst}");
    let direct_path = format!("/v1/assistants/{direct_asst}");
    for _ in 0..steady.min(20) {
        timed_get(&astra, &astra_path).await;
        timed_get(&direct, &direct_path).await;
    }
    let (mut via_astra, mut via_direct) = (Vec::new(), Vec::new());
    for _ in 0..steady {
        via_astra.push(timed_get(&astra, &astra_path).await);
        via_direct.push(timed_get(&direct, &direct_path).await);
    }
    proxy.shutdown().await;

    let first_m = median(first);
    let astra_m = median(via_astra.clone());
    let direct_m = median(via_direct.clone());
    println!("astra bench ({firsts} new databases, {steady} steady requests per path):");
    println!(
        "  first request, new database (existing keyspace): median {}",
        ms(first_m)
    );
    if let Some(c) = cold {
        println!(
            "  first request, new database and new keyspace:   {}",
            ms(c)
        );
    }
    println!(
        "  steady, cached Astra session:  median {}  p90 {}",
        ms(astra_m),
        ms(p90(via_astra))
    );
    println!(
        "  steady, configured Cassandra:  median {}  p90 {}",
        ms(direct_m),
        ms(p90(via_direct))
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "  ratios: cached Astra / direct = {:.2}; first (existing keyspace) / direct = {:.0}",
        ratio(astra_m, direct_m),
        ratio(first_m, direct_m)
    );
    if let Some(c) = cold {
        println!(
            "          first (new keyspace) / direct = {:.0}",
            ratio(c, direct_m)
        );
    }
}
