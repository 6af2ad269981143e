//! Criterion benches of the SQLite store's hot paths, on a tempdir database:
//! - `message_create/{1,64}`: `put_message` throughput with 1 and 64 concurrent writers
//!   (every acknowledged write is fsynced; concurrency is what group commit turns into rate);
//! - `list_20/{1,8}`: 20-message pages (`list_messages`, desc, cursor) per second;
//! - `search_top10/{10k,100k}x1536`: one query's latency over that many random unit vectors
//!   (the index is loaded before measuring; p50/p99 over 300 queries are printed too);
//! - `chunk_ingest/{cold,indexed}`: `put_chunks` of 100 × 1536-dim chunks, without and with
//!   the store's search index loaded (which then quantizes each new vector).
//!
//! Setup runs only for the benches a filter selects (`cargo bench --bench store -- list_20`),
//! so the 100k build (about 600 MB of SQLite) is paid only when asked for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use assistants_proxy::ids::new_id;
use assistants_proxy::model::*;
use assistants_proxy::store::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use tokio::runtime::Runtime;

const DIMS: usize = 1536;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A store in a fresh temporary directory (kept alive with it).
fn open() -> (Store, tempfile::TempDir) {
    // /tmp is on the same ext4 disk as the worktree here (not tmpfs): fsyncs are real.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = runtime()
        .block_on(Store::open(&StoreUrl::parse(&url).unwrap()))
        .unwrap();
    (store, dir)
}

/// xorshift64*: fast, reproducible, no RNG crate in the hot loop of a 150M-float build.
struct Rng(u64);

impl Rng {
    fn unit_vector(&mut self, dims: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dims)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
                (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }
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
        content: vec![json!({"type": "text", "text": {
            "value": "What does the second quarterly report say about churn in the EMEA region?",
            "annotations": []
        }})]
        .into(),
        assistant_id: None,
        run_id: None,
        attachments: vec![],
        metadata: Metadata::from([("source".to_owned(), "bench".to_owned())]),
    }
}

/// CPU time this process has used (user + system), from `/proc/self/stat`. The machine
/// these benches run on is shared, so wall-clock rates depend on the neighbours' load;
/// CPU per operation does much less, and `cores / cpu_per_op` is the rate an idle machine
/// would allow.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesized command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis(ticks * 10))
}

/// Accumulates CPU time and operations over a bench's iterations, then reports them.
#[derive(Default)]
struct CpuMeter {
    cpu: Duration,
    ops: u64,
}

impl CpuMeter {
    fn measure(&mut self, ops: u64, run: impl FnOnce() -> Duration) -> Duration {
        let before = cpu_time();
        let wall = run();
        if let (Some(a), Some(b)) = (before, cpu_time()) {
            self.cpu += b.saturating_sub(a);
            self.ops += ops;
        }
        wall
    }

    fn report(&self, name: &str) {
        if self.ops == 0 || self.cpu.is_zero() {
            return;
        }
        let per_op = self.cpu / u32::try_from(self.ops).unwrap_or(u32::MAX);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        eprintln!(
            "{name}: {per_op:?} CPU per operation over {} operations => {:.0}/s on {cores} idle cores",
            self.ops,
            cores as f64 / per_op.as_secs_f64()
        );
    }
}

/// Runs `total` calls of `op` from `concurrency` tasks; the wall time they took.
async fn drive<F, Fut>(total: u64, concurrency: u64, op: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|w| {
            let op = op.clone();
            let n = total / concurrency + u64::from(w < total % concurrency);
            tokio::spawn(async move {
                for i in 0..n {
                    op(w * 1_000_000 + i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

fn message_create(c: &mut Criterion) {
    let mut g = c.benchmark_group("message_create");
    g.throughput(Throughput::Elements(1));
    let setup = OnceLock::new();
    for concurrency in [1u64, 64] {
        let mut meter = CpuMeter::default();
        g.bench_function(BenchmarkId::from_parameter(concurrency), |b| {
            let (s, _, t, th) = setup.get_or_init(|| {
                let (s, dir) = open();
                (s, dir, Tenant::new("bench"), new_id("thread_"))
            });
            b.iter_custom(|iters| {
                let (s, t, th) = (s.clone(), t.clone(), th.clone());
                meter.measure(iters, || {
                    runtime().block_on(drive(iters, concurrency, move |_| {
                        let (s, t, m) = (s.clone(), t.clone(), message(&th));
                        async move { s.messages.put_message(&t, &m).await.unwrap() }
                    }))
                })
            });
        });
        meter.report(&format!("message_create/{concurrency}"));
    }
    g.finish();
}

fn list_pages(c: &mut Criterion) {
    let mut g = c.benchmark_group("list_20");
    g.throughput(Throughput::Elements(1));
    let setup = OnceLock::new();
    for concurrency in [1u64, 8] {
        let mut meter = CpuMeter::default();
        g.bench_function(BenchmarkId::from_parameter(concurrency), |b| {
            let (s, _, t, th, ids) = setup.get_or_init(|| {
                let (s, dir) = open();
                let (t, th) = (Tenant::new("bench"), new_id("thread_"));
                let ids: Vec<String> = runtime().block_on(async {
                    let mut ids = Vec::new();
                    for _ in 0..2_000 {
                        let m = message(&th);
                        ids.push(m.id.clone());
                        s.messages.put_message(&t, &m).await.unwrap();
                    }
                    ids
                });
                (s, dir, t, th, Arc::new(ids))
            });
            b.iter_custom(|iters| {
                let (s, t, th, ids) = (s.clone(), t.clone(), th.clone(), ids.clone());
                meter.measure(iters, || {
                    runtime().block_on(drive(iters, concurrency, move |i| {
                        let (s, t, th) = (s.clone(), t.clone(), th.clone());
                        // Pages start at varying cursors, as a client paging through would.
                        let after = ids[20 + (i as usize * 37) % (ids.len() - 20)].clone();
                        async move {
                            let q = ListQuery {
                                limit: 20,
                                after: Some(after),
                                ..ListQuery::default()
                            };
                            let page = s.messages.list_messages(&t, &th, None, &q).await.unwrap();
                            black_box(page);
                        }
                    }))
                })
            });
        });
        meter.report(&format!("list_20/{concurrency}"));
    }
    g.finish();
}

/// Fills a vector store with `n` random unit chunks (files of 100); returns the ingest rate.
fn build_store(s: &Store, t: &Tenant, vs: &str, n: usize, rng: &mut Rng) -> f64 {
    let start = Instant::now();
    runtime().block_on(async {
        s.vector_stores
            .put_vector_store(t, &vector_store(vs))
            .await
            .unwrap();
        // A few writers, so group commit can batch as it would under real ingestion.
        let mut files = Vec::new();
        for f in 0..n.div_ceil(100) {
            let file_id = new_id("file-");
            let chunks: Vec<Chunk> = (0..100.min(n - f * 100))
                .map(|i| chunk(vs, &file_id, i as u32, rng.unit_vector(DIMS), f))
                .collect();
            files.push((file_id, chunks));
        }
        let files = Arc::new(std::sync::Mutex::new(files));
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (s, t, vs, files) = (s.clone(), t.clone(), vs.to_owned(), files.clone());
                tokio::spawn(async move {
                    loop {
                        let next = files.lock().unwrap().pop();
                        let Some((file_id, chunks)) = next else { break };
                        s.chunks
                            .put_chunks(&t, &vs, &file_id, chunks)
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
    });
    n as f64 / start.elapsed().as_secs_f64()
}

fn vector_store(id: &str) -> VectorStore {
    VectorStore {
        id: id.to_owned(),
        object: "vector_store".into(),
        created_at: 1_700_000_000,
        name: Some("bench".into()),
        usage_bytes: 0,
        file_counts: FileCounts::default(),
        status: "completed".into(),
        expires_after: None,
        expires_at: None,
        last_active_at: None,
        metadata: Metadata::new(),
        embedding_model: "text-embedding-3-small".into(),
        dimensions: DIMS as u32,
    }
}

fn chunk(vs: &str, file_id: &str, index: u32, embedding: Vec<f32>, file_no: usize) -> Chunk {
    Chunk {
        vector_store_id: vs.to_owned(),
        file_id: file_id.to_owned(),
        index,
        text: format!(
            "chunk {index} of {file_id}: {}",
            "lorem ipsum dolor sit amet ".repeat(20)
        ),
        embedding,
        attributes: json!({"team": if file_no.is_multiple_of(2) { "a" } else { "b" }})
            .as_object()
            .cloned()
            .unwrap(),
    }
}

fn search(c: &mut Criterion) {
    let mut g = c.benchmark_group("search_top10");
    g.sample_size(50);
    g.measurement_time(Duration::from_secs(8));
    // Without `--bench` (`cargo test --all-targets`) this is a smoke run: one small store.
    let sizes: &[usize] = if std::env::args().any(|a| a == "--bench") {
        &[10_000, 100_000]
    } else {
        &[1_000]
    };
    for &n in sizes {
        let setup = OnceLock::new();
        let id = format!("{}kx{DIMS}", n / 1000);
        let mut meter = CpuMeter::default();
        g.bench_function(BenchmarkId::from_parameter(&id), |b| {
            let (s, _, t, vs, queries) = setup.get_or_init(|| {
                let (s, dir) = open();
                let (t, vs) = (Tenant::new("bench"), new_id("vs_"));
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ n as u64);
                let rate = build_store(&s, &t, &vs, n, &mut rng);
                eprintln!("search_top10/{id}: built {n} chunks at {rate:.0} chunks/s");
                let queries: Vec<Vec<f32>> = (0..300).map(|_| rng.unit_vector(DIMS)).collect();
                let vs_ids = vec![vs.clone()];
                let load = Instant::now();
                runtime()
                    .block_on(s.chunks.search(&t, &vs_ids, &queries[0], 10, None))
                    .unwrap();
                eprintln!("search_top10/{id}: index loaded in {:?}", load.elapsed());
                // Latency distribution of single queries, one at a time.
                let mut times: Vec<Duration> = queries
                    .iter()
                    .map(|q| {
                        let start = Instant::now();
                        let hits = runtime()
                            .block_on(s.chunks.search(&t, &vs_ids, q, 10, None))
                            .unwrap();
                        assert_eq!(hits.len(), 10);
                        start.elapsed()
                    })
                    .collect();
                times.sort();
                eprintln!(
                    "search_top10/{id}: p50 {:?} p99 {:?} max {:?} over {} queries",
                    times[times.len() / 2],
                    times[times.len() * 99 / 100],
                    times[times.len() - 1],
                    times.len()
                );
                (s, dir, t, vs_ids, Arc::new(queries))
            });
            let next = AtomicUsize::new(0);
            b.iter_custom(|iters| {
                meter.measure(iters, || {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let q = &queries[next.fetch_add(1, Ordering::Relaxed) % queries.len()];
                        let hits = runtime()
                            .block_on(s.chunks.search(t, vs, q, 10, None))
                            .unwrap();
                        black_box(hits);
                    }
                    start.elapsed()
                })
            });
        });
        meter.report(&format!("search_top10/{id}"));
    }
    g.finish();
}

fn chunk_ingest(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunk_ingest");
    g.throughput(Throughput::Elements(100));
    g.sample_size(20);
    for indexed in [false, true] {
        let setup = OnceLock::new();
        let name = if indexed { "indexed" } else { "cold" };
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            let (s, _, t, vs) = setup.get_or_init(|| {
                let (s, dir) = open();
                let (t, vs) = (Tenant::new("bench"), new_id("vs_"));
                let mut rng = Rng(7);
                build_store(&s, &t, &vs, 1_000, &mut rng);
                if indexed {
                    let q = rng.unit_vector(DIMS);
                    runtime()
                        .block_on(s.chunks.search(&t, std::slice::from_ref(&vs), &q, 10, None))
                        .unwrap();
                }
                (s, dir, t, vs)
            });
            let mut rng = Rng(11);
            b.iter_batched(
                || {
                    let file_id = new_id("file-");
                    let chunks: Vec<Chunk> = (0..100)
                        .map(|i| chunk(vs, &file_id, i, rng.unit_vector(DIMS), 0))
                        .collect();
                    (file_id, chunks)
                },
                |(file_id, chunks)| {
                    runtime()
                        .block_on(s.chunks.put_chunks(t, vs, &file_id, chunks))
                        .unwrap()
                },
                criterion::BatchSize::LargeInput,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, message_create, list_pages, search, chunk_ingest);
criterion_main!(benches);
