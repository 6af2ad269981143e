//! Cassandra store benchmarks against a real node (`ASSISTANTS_PROXY_TEST_CASSANDRA`, as
//! for the tests; without it the benchmarks are skipped): message create and list-20, vector
//! search top-10 over 10k chunks of 1536 dimensions, and chunk ingest.
//!
//! The 10k-chunk corpus lives in keyspace `ap_bench` under a fixed tenant and is loaded
//! once (the first run prints how long the load took, and the recall@10 of ANN search
//! against brute force on it). Expect the first flush of that table to be slow: Cassandra
//! computes PQ compression for a vector index segment of ≥ 1024 vectors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use assistants_proxy::ids::new_id;
use assistants_proxy::model::*;
use assistants_proxy::store::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use tokio::runtime::Runtime;

#[path = "support/corpus.rs"]
mod corpus;
use corpus::{CHUNKS_PER_FILE, chunks, cosine, file_id, unit_vector};

const DIMS: usize = 1536;
/// `cargo test --all-targets` runs this binary without `--bench`, as a smoke test: every
/// benchmark runs once, over a corpus small enough to load in seconds.
fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn files() -> u64 {
    if full_run() { 100 } else { 2 }
}

fn corpus_vs() -> String {
    format!("vs_bench_corpus_{DIMS}_{}", files())
}
fn message(thread_id: &str) -> Message {
    Message {
        id: new_id("msg_"),
        object: "thread.message".into(),
        created_at: 1_700_000_000,
        thread_id: thread_id.to_owned(),
        status: "completed".into(),
        incomplete_details: None,
        completed_at: None,
        incomplete_at: None,
        role: "user".into(),
        content: vec![
            json!({"type": "text", "text": {"value": "How do I rotate my keys? ".repeat(8), "annotations": []}}),
        ]
        .into(),
        assistant_id: None,
        run_id: None,
        attachments: vec![],
        metadata: Metadata::new(),
    }
}

/// Loads the 10k-chunk corpus unless a previous run did; prints the load rate.
async fn ensure_corpus(s: &Store, t: &Tenant) {
    let last = file_id(files() - 1);
    if s.chunks
        .file_chunks(t, &corpus_vs(), &last)
        .await
        .unwrap()
        .len()
        == CHUNKS_PER_FILE as usize
    {
        return;
    }
    let vs = corpus::vector_store(&corpus_vs(), DIMS);
    s.vector_stores.put_vector_store(t, &vs).await.unwrap();
    let started = Instant::now();
    for f in 0..files() {
        let fid = file_id(f);
        s.chunks
            .put_chunks(
                t,
                &corpus_vs(),
                &fid,
                chunks(&corpus_vs(), &fid, f, CHUNKS_PER_FILE, DIMS),
            )
            .await
            .unwrap();
    }
    let took = started.elapsed();
    let n = files() * u64::from(CHUNKS_PER_FILE);
    println!(
        "corpus load: {n} chunks x {DIMS} dims in {:.1}s = {:.0} chunks/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

/// recall@10 of the store's search against brute force over the corpus.
async fn print_recall(s: &Store, t: &Tenant) {
    let corpus = corpus::in_memory(files(), DIMS);
    let filter = corpus::even_files();
    for filtered in [false, true] {
        let (mut hits, mut total) = (0usize, 0usize);
        let started = Instant::now();
        for q in 0..20u64 {
            let query = corpus::query(q, files(), DIMS);
            let mut expected: Vec<(&str, u32, f32)> = corpus
                .iter()
                .filter(|c| !filtered || c.even)
                .map(|c| (c.file_id.as_str(), c.index, cosine(&c.vector, &query)))
                .collect();
            expected.sort_by(|a, b| b.2.total_cmp(&a.2));
            let want: HashSet<(String, u32)> = expected[..10]
                .iter()
                .map(|e| (e.0.to_owned(), e.1))
                .collect();
            let got = s
                .chunks
                .search(t, &[corpus_vs()], &query, 10, filtered.then_some(&filter))
                .await
                .unwrap();
            hits += got
                .iter()
                .filter(|g| want.contains(&(g.file_id.clone(), g.index)))
                .count();
            total += 10;
        }
        println!(
            "recall@10 over 10k x {DIMS} ({}): {:.3} ({} queries in {:.2}s)",
            if filtered {
                "filter parity=even"
            } else {
                "no filter"
            },
            hits as f64 / total as f64,
            20,
            started.elapsed().as_secs_f64()
        );
    }
}

fn benches(c: &mut Criterion) {
    let hosts = std::env::var("ASSISTANTS_PROXY_TEST_CASSANDRA").expect(
        "ASSISTANTS_PROXY_TEST_CASSANDRA must name a Cassandra 5 node (scripts/cassandra.sh start)",
    );
    let rt = Runtime::new().unwrap();
    let url = StoreUrl::parse(&format!("cassandra://{hosts}/ap_bench")).unwrap();
    let s = rt.block_on(Store::open(&url)).unwrap();
    let t = Tenant::new("bench");

    let mut g = c.benchmark_group("messages");
    g.throughput(Throughput::Elements(1));
    let create_thread = new_id("thread_");
    g.bench_function("create", |b| {
        b.to_async(&rt).iter(|| async {
            s.messages
                .put_message(&t, &message(&create_thread))
                .await
                .unwrap()
        })
    });
    let list_thread = new_id("thread_");
    rt.block_on(async {
        for _ in 0..200 {
            s.messages
                .put_message(&t, &message(&list_thread))
                .await
                .unwrap();
        }
    });
    g.bench_function("list_20", |b| {
        b.to_async(&rt).iter(|| async {
            let page = s
                .messages
                .list_messages(&t, &list_thread, None, &ListQuery::default())
                .await
                .unwrap();
            assert_eq!(page.items.len(), 20);
        })
    });
    g.finish();

    rt.block_on(ensure_corpus(&s, &t));
    rt.block_on(print_recall(&s, &t));
    let mut g = c.benchmark_group("vector_search");
    g.sample_size(30);
    let mut q = 0u64;
    g.bench_function("top10_of_10k_x1536", |b| {
        b.to_async(&rt).iter(|| {
            q += 1;
            let query = unit_vector(5_000_000 + q, DIMS);
            let (s, t) = (&s, &t);
            async move {
                let hits = s
                    .chunks
                    .search(t, &[corpus_vs()], &query, 10, None)
                    .await
                    .unwrap();
                assert_eq!(hits.len(), 10);
            }
        })
    });
    let filter: AttributeFilter =
        serde_json::from_value(json!({"type": "eq", "key": "parity", "value": "even"})).unwrap();
    g.bench_function("top10_of_10k_x1536_filtered_half", |b| {
        b.to_async(&rt).iter(|| {
            q += 1;
            let query = unit_vector(5_000_000 + q, DIMS);
            let (s, t, filter) = (&s, &t, &filter);
            async move {
                let hits = s
                    .chunks
                    .search(t, &[corpus_vs()], &query, 10, Some(filter))
                    .await
                    .unwrap();
                assert_eq!(hits.len(), 10);
            }
        })
    });
    g.finish();

    // Ingest into a store of its own, 100 chunks (one file) per iteration.
    let mut g = c.benchmark_group("chunk_ingest");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(u64::from(CHUNKS_PER_FILE)));
    let ingest_vs = new_id("vs_");
    let mut f = 1_000u64;
    g.bench_function("put_chunks_100_x1536", |b| {
        b.to_async(&rt).iter(|| {
            f += 1;
            let fid = new_id("file-");
            let batch = chunks(&ingest_vs, &fid, f, CHUNKS_PER_FILE, DIMS);
            let (s, t, vs) = (&s, &t, ingest_vs.as_str());
            async move { s.chunks.put_chunks(t, vs, &fid, batch).await.unwrap() }
        })
    });
    g.finish();
    // The ingest store is throwaway; its rows stay in the bench keyspace until it is dropped.
    rt.block_on(s.vector_stores.delete_vector_store(&t, &ingest_vs))
        .unwrap();
}

criterion_group!(store_cassandra, benches);
criterion_main!(store_cassandra);
