//! The Astra stand-in (the `fake-astra` crate) as a standalone process, for the Python SDK
//! suite: `cargo run --example fake_astra`. Needs `ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH` (the
//! password-mode Cassandra 5 node the stand-in fronts) and fails without it.
//!
//! Prints exactly one line, `devops http://HOST:PORT` (the DevOps API base URL, also serving
//! the stand-in's control routes), once ready, then serves until SIGTERM or SIGINT.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

#[tokio::main]
async fn main() {
    let fake = fake_astra::FakeAstra::start().await;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "devops {}", fake.devops_url()).expect("stdout");
    stdout.flush().expect("stdout");
    drop(stdout);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
