//! A small load generator for `scripts/bench-forward.sh` and `scripts/bench-api.sh`, for the
//! measurements wrk cannot make:
//!
//! - `closed METHOD URL CONNS SECONDS [BODY]`: closed loop, CONNS keep-alive connections each
//!   sending the next request as soon as the previous answer is read (BODY as JSON, if given).
//!   URL may be a comma-separated list: connection i uses URL i mod n (e.g. one thread each,
//!   so connections do not contend on one row the way a single conversation never would).
//!   Prints `rps p50_us p99_us requests errors` (a non-2xx answer counts as an error).
//! - `rate URL RPS SECONDS CONNS`: open-loop load at a fixed rate; latency is measured from
//!   each request's *scheduled* time (so a stall is not hidden by coordinated omission).
//!   Prints `p50_us p99_us sent errors cpu_us` (the last is the generator's own CPU time).
//! - `idle URL CONNS SECONDS`: opens CONNS keep-alive connections, sends one request on each,
//!   prints `ready`, then holds them open for SECONDS.
//! - `sse URL STREAMS SECONDS`: opens STREAMS server-sent-event streams, prints `ready` once
//!   all have their first event, keeps reading for SECONDS, then prints
//!   `ttfb_p50_us ttfb_p99_us gap_p50_us gap_p99_us gap_max_us events`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;

#[path = "../common/mod.rs"]
mod common;
mod open_loop;
use common::{Conn, connect, gather};

fn request(url: &hyper::Uri) -> Request<Full<Bytes>> {
    request_with(&hyper::Method::GET, url, None)
}

/// The Assistants API refuses requests without `OpenAI-Beta: assistants=v2`; forwarded routes
/// ignore it, so every mode sends it and the forwarding figures stay comparable.
fn request_with(
    method: &hyper::Method,
    url: &hyper::Uri,
    body: Option<&Bytes>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method.clone())
        .uri(url.path_and_query().map_or("/", |p| p.as_str()))
        .header("host", url.authority().unwrap().as_str())
        .header("authorization", "Bearer sk-bench")
        .header("openai-beta", "assistants=v2");
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    b.body(Full::new(body.cloned().unwrap_or_default()))
        .unwrap()
}

/// Sends one request and reads its whole answer; returns whether it succeeded (a 2xx). A
/// failed connection is replaced, so the worker goes on.
async fn exchange(sender: &mut Conn, url: &hyper::Uri, req: Request<Full<Bytes>>) -> bool {
    match sender.send_request(req).await {
        Ok(resp) => {
            let ok = resp.status().is_success();
            let _ = resp.into_body().collect().await;
            ok
        }
        Err(_) => {
            *sender = connect(url).await;
            false
        }
    }
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn closed(
    method: hyper::Method,
    urls: Vec<hyper::Uri>,
    conns: usize,
    seconds: u64,
    body: Option<Bytes>,
) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for i in 0..conns {
        let (method, url, body) = (method.clone(), urls[i % urls.len()].clone(), body.clone());
        workers.push(tokio::spawn(async move {
            let mut sender = connect(&url).await;
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let req = request_with(&method, &url, body.as_ref());
                if !exchange(&mut sender, &url, req).await {
                    errors += 1;
                }
                lat.push(sent.elapsed().as_micros() as u64);
            }
            (lat, errors)
        }));
    }
    let (mut all, errors) = gather(workers).await;
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    println!(
        "{:.0} {} {} {} {}",
        all.len() as f64 / elapsed,
        pct(&all, 0.5),
        pct(&all, 0.99),
        all.len(),
        errors
    );
}

async fn idle(url: hyper::Uri, conns: usize, seconds: u64) {
    let mut held = Vec::with_capacity(conns);
    for chunk in (0..conns).collect::<Vec<_>>().chunks(100) {
        let mut batch = Vec::new();
        for _ in chunk {
            let url = url.clone();
            batch.push(tokio::spawn(async move {
                let mut s = connect(&url).await;
                let resp = s.send_request(request(&url)).await.unwrap();
                let _ = resp.into_body().collect().await;
                s
            }));
        }
        for b in batch {
            held.push(b.await.unwrap());
        }
    }
    println!("ready");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    drop(held);
}

async fn sse(url: hyper::Uri, streams: usize, seconds: u64) {
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(streams);
    let mut tasks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    for i in 0..streams {
        let url = url.clone();
        let ready = ready_tx.clone();
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tasks.push(tokio::spawn(async move {
            let mut s = connect(&url).await;
            let sent = Instant::now();
            let resp = s.send_request(request(&url)).await.unwrap();
            let mut body = resp.into_body();
            let mut last: Option<Instant> = None;
            let mut ttfb = 0u64;
            let mut gaps = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let frame = match tokio::time::timeout(left, body.frame()).await {
                    Ok(Some(Ok(f))) => f,
                    _ => break,
                };
                if frame.data_ref().is_none() {
                    continue;
                }
                let now = Instant::now();
                match last {
                    None => {
                        ttfb = (now - sent).as_micros() as u64;
                        let _ = ready.send(()).await;
                    }
                    Some(prev) => gaps.push((now - prev).as_micros() as u64),
                }
                last = Some(now);
            }
            (ttfb, gaps)
        }));
    }
    drop(ready_tx);
    for _ in 0..streams {
        if ready_rx.recv().await.is_none() {
            break;
        }
    }
    println!("ready");
    let mut ttfbs = Vec::new();
    let mut gaps = Vec::new();
    for t in tasks {
        let (ttfb, g) = t.await.unwrap();
        ttfbs.push(ttfb);
        gaps.extend(g);
    }
    ttfbs.sort_unstable();
    gaps.sort_unstable();
    println!(
        "{} {} {} {} {} {}",
        pct(&ttfbs, 0.5),
        pct(&ttfbs, 0.99),
        pct(&gaps, 0.5),
        pct(&gaps, 0.99),
        gaps.last().copied().unwrap_or(0),
        gaps.len()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: loadgen rate URL RPS SECONDS CONNS | closed METHOD URL CONNS SECONDS [BODY] \
                 | idle URL CONNS SECONDS | sse URL STREAMS SECONDS";
    if args.len() < 3 {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let n = |i: usize| -> u64 { args.get(i).and_then(|v| v.parse().ok()).expect(usage) };
    if args[1] == "closed" {
        // closed METHOD URL CONNS SECONDS [BODY]: the method comes first, so parse separately.
        let method: hyper::Method = args[2].parse().expect(usage);
        let urls = args.get(3).expect(usage).split(',');
        let urls: Vec<hyper::Uri> = urls.map(|u| u.parse().expect("URL")).collect();
        let body = args.get(6).map(|b| Bytes::from(b.clone()));
        closed(method, urls, n(4) as usize, n(5), body).await;
        return;
    }
    let url: hyper::Uri = args[2].parse().expect("URL");
    match args[1].as_str() {
        "rate" => {
            let addr = format!(
                "{}:{}",
                url.host().expect("URL host"),
                url.port_u16().unwrap_or(80)
            );
            let host = url.authority().expect("URL authority").as_str();
            let target = url.path_and_query().map_or("/", |p| p.as_str());
            let out = open_loop::run(&addr, host, target, n(3), n(4), n(5) as usize);
            let lat = &out.latencies;
            println!(
                "{} {} {} {} {}",
                pct(lat, 0.5),
                pct(lat, 0.99),
                lat.len(),
                out.errors,
                out.cpu_us
            );
        }
        "idle" => idle(url, n(3) as usize, n(4)).await,
        "sse" => sse(url, n(3) as usize, n(4)).await,
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
