//! Ingestion throughput: how fast the proxy turns documents into chunks, with and without the
//! embedding round trips.
//!
//! `cargo bench --bench ingest` prints, for a 10 MB text file and a ~5 MB PDF:
//! - extract: file bytes → text (`retrieval::extract`), MB of input per second;
//! - chunk: text → 800/400-token windows (`retrieval::chunk`, tiktoken `cl100k_base`);
//! - pipeline: the whole ingestion through the API (upload, add to a vector store, poll until
//!   `completed`) against the in-process fake upstream, whose embeddings cost no network
//!   time; this adds embedding JSON, vector storage (SQLite) and the task machinery.
//!
//! The first two exclude the upstream entirely; they are the proxy's own CPU cost.
//! A plain `main` (harness = false): each stage is timed over a few runs, best run reported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// (tests/support/mod.rs allows dead_code itself; repeating it here is a clippy error.)
#[path = "../tests/support/mod.rs"]
mod support;

#[allow(dead_code)]
#[path = "../tests/it/fixtures.rs"]
mod fixtures;

use std::time::{Duration, Instant};

use assistants_proxy::retrieval::chunk::{self, ChunkSpec};
use assistants_proxy::retrieval::extract;
use serde_json::json;

const TEXT_BYTES: usize = 10 * 1024 * 1024;
const PDF_TARGET_BYTES: usize = 5 * 1024 * 1024;
const RUNS: usize = 3;

/// Deterministic English-like text: words from a fixed vocabulary, sentences and paragraphs.
fn text(bytes: usize) -> String {
    const WORDS: &[&str] = &[
        "the",
        "proxy",
        "stores",
        "vector",
        "embedding",
        "search",
        "assistant",
        "thread",
        "message",
        "run",
        "file",
        "chunk",
        "token",
        "model",
        "upstream",
        "request",
        "response",
        "stream",
        "cassandra",
        "sqlite",
        "tenant",
        "lease",
        "ingestion",
        "document",
        "page",
        "paragraph",
        "retrieval",
        "cosine",
        "similarity",
        "index",
        "batch",
        "attribute",
        "filter",
        "ranking",
        "score",
        "threshold",
        "metadata",
        "expiry",
        "policy",
        "network",
        "latency",
        "throughput",
        "memory",
        "benchmark",
        "measurement",
        "release",
        "binary",
        "configuration",
        "validation",
        "error",
        "envelope",
        "client",
        "server",
        "shutdown",
    ];
    let mut out = String::with_capacity(bytes + 64);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut in_sentence = 0;
    while out.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let w = WORDS[(x % WORDS.len() as u64) as usize];
        out.push_str(w);
        in_sentence += 1;
        if in_sentence > 8 + (x >> 60) as usize {
            out.push_str(if x & 0x100 == 0 { ".\n" } else { ". " });
            in_sentence = 0;
        } else {
            out.push(' ');
        }
    }
    out
}

/// A PDF of about `bytes` bytes (plain page streams, so its size is mostly its text).
fn pdf(bytes: usize) -> Vec<u8> {
    let page_text = text(3_000);
    let pages = bytes / (page_text.len() + 300);
    let pages: Vec<&str> = (0..pages).map(|_| page_text.as_str()).collect();
    fixtures::pdf_with(&pages, false)
}

fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        out = Some(v);
    }
    (best, out.unwrap())
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

fn stages(label: &str, filename: &str, bytes: &[u8]) -> (f64, f64) {
    let (t_extract, text) = best(RUNS, || extract::extract(bytes, filename).unwrap());
    let (t_chunk, chunks) = best(RUNS, || {
        chunk::chunk(&text, ChunkSpec::default(), None).unwrap()
    });
    let tokens: usize = chunks.iter().map(|c| c.tokens).sum::<usize>();
    let input_mb = bytes.len() as f64 / (1024.0 * 1024.0);
    println!(
        "{label}: {input_mb:.1} MB in, {:.1} MB text, {} chunks ({} tokens incl. overlap)",
        text.len() as f64 / (1024.0 * 1024.0),
        chunks.len(),
        tokens
    );
    println!(
        "  extract  {:>8.1} ms  {:>7.1} MB/s",
        t_extract.as_secs_f64() * 1e3,
        mb_per_s(bytes.len(), t_extract)
    );
    println!(
        "  chunk    {:>8.1} ms  {:>7.1} MB/s (of text)",
        t_chunk.as_secs_f64() * 1e3,
        mb_per_s(text.len(), t_chunk)
    );
    let both = t_extract + t_chunk;
    println!(
        "  extract+chunk {:>8.1} ms  {:>7.1} MB/s (of input)",
        both.as_secs_f64() * 1e3,
        mb_per_s(bytes.len(), both)
    );
    (mb_per_s(bytes.len(), both), input_mb)
}

async fn pipeline(label: &str, filename: &str, bytes: &[u8]) {
    let up = support::FakeUpstream::start().await;
    up.set_recording(false);
    let proxy = support::TestProxy::start(&up.url()).await;
    let api = support::Api::new(&proxy);
    let file = fixtures::upload(&api, filename, "assistants", bytes).await;
    let t = Instant::now();
    let vs = api
        .ok("/v1/vector_stores", json!({"file_ids": [file["id"]]}))
        .await;
    let done = fixtures::wait_store(&api, vs["id"].as_str().unwrap()).await;
    let elapsed = t.elapsed();
    assert_eq!(done["file_counts"]["completed"], 1, "{done}");
    println!(
        "  pipeline {:>8.1} ms  {:>7.1} MB/s (extract, chunk, embed via the local fake, store; usage_bytes {})",
        elapsed.as_secs_f64() * 1e3,
        mb_per_s(bytes.len(), elapsed),
        done["usage_bytes"]
    );
    let _ = label;
    proxy.shutdown().await;
}

fn main() {
    // `cargo test --all-targets` runs this binary too, without `--bench`: there it is a smoke
    // run on small inputs (every stage still executes), not a minute-long measurement.
    let scale = if std::env::args().any(|a| a == "--bench") {
        1
    } else {
        100
    };
    let text_file = text(TEXT_BYTES / scale).into_bytes();
    let pdf_file = pdf(PDF_TARGET_BYTES / scale);
    stages("text 10 MB", "corpus.txt", &text_file);
    stages("pdf", "corpus.pdf", &pdf_file);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("full pipeline (API, SQLite, fake upstream):");
    rt.block_on(pipeline("text", "corpus.txt", &text_file));
    rt.block_on(pipeline("pdf", "corpus.pdf", &pdf_file));
}
