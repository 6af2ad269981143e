//! Run-engine load generator for `scripts/bench-runs.sh`. Every mode is a closed loop: CONNS
//! clients, each on its own keep-alive connection, starting the next iteration as soon as the
//! previous one ended, for SECONDS. Every mode prints one line,
//! `per_s first_p50_us first_p99_us done_p50_us done_p99_us count errors polls_per_run`:
//!
//! - `poll URL ASSISTANT CONNS SECONDS POLL_US`: create-thread-and-run (`POST /v1/threads/runs`,
//!   `stream: false`), then `GET` the run every POLL_US µs until it is `completed`. first = the
//!   create answer, done = the poll that saw `completed` (so done is late by up to one poll).
//! - `stream URL ASSISTANT CONNS SECONDS`: creates a thread (untimed: it keeps every prompt the
//!   same size), then `POST /v1/threads/{id}/runs` with `stream: true`. first = the first SSE
//!   event, which must be `thread.run.created`; done = `thread.run.completed`.
//! - `chat URL CONNS SECONDS STREAM`: `POST /v1/chat/completions` straight to the (fake)
//!   upstream, streamed if STREAM is 1. first = the first body bytes, done = the end of the body.
//!   This is the upstream time a run spends, measured beside it.
//!
//! Latencies are from sending the timed request; a run that ends other than `completed`, or any
//! non-2xx answer, counts as an error and its latency is not kept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use serde_json::{Value, json};

mod common;
use common::{Conn as Sender, connect, gather};

fn request(
    base: &hyper::Uri,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", base.authority().unwrap().as_str())
        .header("authorization", "Bearer sk-bench")
        .header("openai-beta", "assistants=v2");
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let bytes = body.map(|v| Bytes::from(v.to_string())).unwrap_or_default();
    b.body(Full::new(bytes)).unwrap()
}

/// Sends one JSON request and parses the JSON answer; `None` on any failure or non-2xx.
async fn call(
    s: &mut Sender,
    base: &hyper::Uri,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Option<Value> {
    let resp = s
        .send_request(request(base, method, path, body))
        .await
        .ok()?;
    let ok = resp.status().is_success();
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    if !ok {
        return None;
    }
    serde_json::from_slice(&bytes).ok()
}

/// One timed iteration: (first_us, done_us, polls), or `None` for an error.
type Sample = Option<(u64, u64, u64)>;

fn user_thread() -> Value {
    json!({"messages": [{"role": "user", "content": "Say hello to the benchmark."}]})
}

async fn poll_once(s: &mut Sender, base: &hyper::Uri, assistant: &str, poll: Duration) -> Sample {
    let body = json!({"assistant_id": assistant, "thread": user_thread()});
    let sent = Instant::now();
    let run = call(s, base, Method::POST, "/v1/threads/runs", Some(&body)).await?;
    let first = sent.elapsed().as_micros() as u64;
    let path = format!(
        "/v1/threads/{}/runs/{}",
        run["thread_id"].as_str()?,
        run["id"].as_str()?
    );
    let mut status = run["status"].as_str()?.to_owned();
    let mut polls = 0;
    while matches!(status.as_str(), "queued" | "in_progress") {
        if !poll.is_zero() {
            tokio::time::sleep(poll).await;
        }
        polls += 1;
        let r = call(s, base, Method::GET, &path, None).await?;
        status = r["status"].as_str()?.to_owned();
    }
    (status == "completed").then(|| (first, sent.elapsed().as_micros() as u64, polls))
}

async fn stream_once(s: &mut Sender, base: &hyper::Uri, assistant: &str) -> Sample {
    let thread = call(s, base, Method::POST, "/v1/threads", Some(&user_thread())).await?;
    let path = format!("/v1/threads/{}/runs", thread["id"].as_str()?);
    let body = json!({"assistant_id": assistant, "stream": true});
    let sent = Instant::now();
    let resp = s
        .send_request(request(base, Method::POST, &path, Some(&body)))
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let mut body = resp.into_body();
    let mut seen = Vec::new();
    let (mut first, mut done) = (None, None);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.ok()?.into_data() else {
            continue;
        };
        seen.extend_from_slice(&data);
        if first.is_none() {
            // The first event must be the run's creation; anything else is a protocol error.
            if !seen.starts_with(b"event: thread.run.created\n") {
                return None;
            }
            first = Some(sent.elapsed().as_micros() as u64);
        }
        if done.is_none() && contains(&seen, b"event: thread.run.completed\n") {
            done = Some(sent.elapsed().as_micros() as u64);
        }
    }
    Some((first?, done?, 0))
}

async fn chat_once(s: &mut Sender, base: &hyper::Uri, stream: bool) -> Sample {
    let body = json!({
        "model": "gpt-4o-bench",
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        "stream": stream,
    });
    let sent = Instant::now();
    let resp = s
        .send_request(request(
            base,
            Method::POST,
            "/v1/chat/completions",
            Some(&body),
        ))
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let mut body = resp.into_body();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        if frame.ok()?.data_ref().is_some_and(|d| !d.is_empty()) && first.is_none() {
            first = Some(sent.elapsed().as_micros() as u64);
        }
    }
    Some((first?, sent.elapsed().as_micros() as u64, 0))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[derive(Clone)]
enum Mode {
    Poll(String, Duration),
    Stream(String),
    Chat(bool),
}

async fn drive(base: hyper::Uri, mode: Mode, conns: usize, seconds: u64) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for _ in 0..conns {
        let (base, mode) = (base.clone(), mode.clone());
        workers.push(tokio::spawn(async move {
            let mut s = connect(&base).await;
            let mut samples = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let sample = match &mode {
                    Mode::Poll(a, poll) => poll_once(&mut s, &base, a, *poll).await,
                    Mode::Stream(a) => stream_once(&mut s, &base, a).await,
                    Mode::Chat(stream) => chat_once(&mut s, &base, *stream).await,
                };
                match sample {
                    Some(x) => samples.push(x),
                    None => {
                        errors += 1;
                        // The connection may be mid-body; start clean, and do not spin on a
                        // server that refuses everything.
                        s = connect(&base).await;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (samples, errors)
        }));
    }
    let (samples, errors) = gather(workers).await;
    let elapsed = start.elapsed().as_secs_f64();
    let n = samples.len();
    let mut first: Vec<u64> = samples.iter().map(|s| s.0).collect();
    let mut done: Vec<u64> = samples.iter().map(|s| s.1).collect();
    let polls: u64 = samples.iter().map(|s| s.2).sum();
    first.sort_unstable();
    done.sort_unstable();
    println!(
        "{:.1} {} {} {} {} {} {} {:.1}",
        n as f64 / elapsed,
        pct(&first, 0.5),
        pct(&first, 0.99),
        pct(&done, 0.5),
        pct(&done, 0.99),
        n,
        errors,
        polls as f64 / n.max(1) as f64
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: runbench poll URL ASSISTANT CONNS SECONDS POLL_US \
                 | stream URL ASSISTANT CONNS SECONDS | chat URL CONNS SECONDS STREAM(0|1)";
    let arg = |i: usize| -> &str { args.get(i).map(String::as_str).expect(usage) };
    let n = |i: usize| -> u64 { arg(i).parse().expect(usage) };
    let base: hyper::Uri = arg(2).parse().expect("URL");
    match arg(1) {
        "poll" => {
            let mode = Mode::Poll(arg(3).to_owned(), Duration::from_micros(n(6)));
            drive(base, mode, n(4) as usize, n(5)).await;
        }
        "stream" => drive(base, Mode::Stream(arg(3).to_owned()), n(4) as usize, n(5)).await,
        "chat" => drive(base, Mode::Chat(n(5) == 1), n(3) as usize, n(4)).await,
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
