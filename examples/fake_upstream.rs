//! The fake OpenAI upstream (the `fake-upstream` crate) as a standalone process, for shell
//! scripts, the Python SDK tests and load benchmarks:
//! `cargo run --example fake_upstream -- [--listen 127.0.0.1:0]`.
//!
//! Prints exactly one line, `listening on http://HOST:PORT`, once bound, then serves until
//! SIGTERM or SIGINT. The request log is off: nothing outside this process could read it, and
//! a benchmark would only fill memory with it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::SocketAddr;

use fake_upstream::FakeUpstream;

#[tokio::main]
async fn main() {
    let listen = parse_listen().unwrap_or_else(|msg| {
        eprintln!("fake_upstream: {msg}\nusage: fake_upstream [--listen ADDR]");
        std::process::exit(2);
    });
    let fake = FakeUpstream::start_on(listen).await;
    fake.set_recording(false);
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", fake.url()).expect("stdout");
    stdout.flush().expect("stdout");
    drop(stdout);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    fake.shutdown().await;
}

fn parse_listen() -> Result<SocketAddr, String> {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--listen=") {
            Some(v) => v.to_owned(),
            None if arg == "--listen" => args.next().ok_or("--listen needs an address")?,
            None => return Err(format!("unknown argument {arg:?}")),
        };
        listen = value
            .parse()
            .map_err(|e| format!("bad --listen address {value:?}: {e}"))?;
    }
    Ok(listen)
}
