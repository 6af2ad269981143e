//! Vector search through the store at scale (`scripts/bench-vectors.sh` drives it): loads a
//! synthetic corpus of CHUNKS chunks × 1,536 dimensions into one vector store (once: a later
//! run finds it and skips the load), then times top-10 searches and checks each answer
//! against brute force over the same corpus in memory.
//!
//! usage: `vector_bench STORE_URL CHUNKS load|search [QUERIES]`
//!
//! `load` prints `loaded CHUNKS chunks in S s (R chunks/s)`; `search` prints, for the
//! unfiltered and a half-filtered query set, `filter p50_ms p90_ms recall@10 brute_p50_ms`
//! where the last is the same-run baseline: an exact top-10 by brute force in this process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use assistants_proxy::store::{Store, StoreUrl, Tenant};
use futures_util::{StreamExt, stream};

#[path = "../benches/support/corpus.rs"]
mod corpus;
use corpus::{CHUNKS_PER_FILE, chunks, cosine, file_id};

const DIMS: usize = 1536;
/// Files loaded at once (the store caps concurrent inserts per table itself).
const LOAD_CONCURRENCY: usize = 2;

fn vs_id(files: u64) -> String {
    format!("vs_bench_corpus_{DIMS}_{files}")
}

async fn load(s: &Store, t: &Tenant, files: u64) {
    let vs = vs_id(files);
    if s.chunks
        .file_chunks(t, &vs, &file_id(files - 1))
        .await
        .unwrap()
        .len()
        == CHUNKS_PER_FILE as usize
    {
        println!("corpus {vs} already loaded");
        return;
    }
    s.vector_stores
        .put_vector_store(t, &corpus::vector_store(&vs, DIMS))
        .await
        .unwrap();
    let started = Instant::now();
    let done = std::sync::atomic::AtomicU64::new(0);
    stream::iter(0..files)
        .for_each_concurrent(LOAD_CONCURRENCY, |f| {
            let (vs, done) = (&vs, &done);
            async move {
                let fid = file_id(f);
                let batch = chunks(vs, &fid, f, CHUNKS_PER_FILE, DIMS);
                // A loaded box times writes out now and then; a file's chunks are an
                // idempotent replace, so it is simply written again.
                let mut attempt = 0;
                while let Err(e) = s.chunks.put_chunks(t, vs, &fid, batch.clone()).await {
                    attempt += 1;
                    assert!(attempt < 20, "file {fid}: {e}");
                    eprintln!("  file {fid}: {e}; again");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if n % 100 == 0 {
                    eprintln!(
                        "  {n}/{files} files in {:.0}s",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        })
        .await;
    let took = started.elapsed().as_secs_f64();
    let n = files * u64::from(CHUNKS_PER_FILE);
    println!(
        "loaded {n} chunks in {took:.1} s ({:.0} chunks/s)",
        n as f64 / took
    );
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

async fn search(s: &Store, t: &Tenant, files: u64, queries: u64) {
    let vs = vs_id(files);
    // The corpus in memory, for brute force: (file, chunk, vector, even file).
    let corpus = corpus::in_memory(files, DIMS);
    let even = corpus::even_files();
    for filtered in [false, true] {
        let filter = filtered.then_some(&even);
        // Warm-up: the first queries load index segments into the page cache.
        for q in 0..5 {
            let query = corpus::query(1_000 + q, files, DIMS);
            s.chunks
                .search(t, std::slice::from_ref(&vs), &query, 10, filter)
                .await
                .unwrap();
        }
        let (mut took, mut brute) = (Vec::new(), Vec::new());
        let (mut hits, mut total) = (0usize, 0usize);
        for q in 0..queries {
            let query = corpus::query(q, files, DIMS);
            let started = Instant::now();
            let got = s
                .chunks
                .search(t, std::slice::from_ref(&vs), &query, 10, filter)
                .await
                .unwrap();
            took.push(started.elapsed());
            let started = Instant::now();
            let mut exact: Vec<(&str, u32, f32)> = corpus
                .iter()
                .filter(|c| !filtered || c.even)
                .map(|c| (c.file_id.as_str(), c.index, cosine(&c.vector, &query)))
                .collect();
            exact.select_nth_unstable_by(9, |a, b| b.2.total_cmp(&a.2));
            brute.push(started.elapsed());
            let want: HashSet<(&str, u32)> = exact[..10].iter().map(|e| (e.0, e.1)).collect();
            hits += got
                .iter()
                .filter(|g| want.contains(&(g.file_id.as_str(), g.index)))
                .count();
            total += 10;
        }
        took.sort();
        brute.sort();
        println!(
            "{} {:.1} {:.1} {:.3} {:.1}",
            if filtered { "parity=even" } else { "none" },
            pct(&took, 0.5),
            pct(&took, 0.9),
            hits as f64 / total as f64,
            pct(&brute, 0.5)
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (url, n, mode) = match &args[..] {
        [_, url, n, mode, ..] => (url, n.parse::<u64>().unwrap(), mode.as_str()),
        _ => {
            eprintln!("usage: vector_bench STORE_URL CHUNKS load|search [QUERIES]");
            std::process::exit(2);
        }
    };
    let queries: u64 = args.get(4).map_or(50, |q| q.parse().unwrap());
    let files = n.div_ceil(u64::from(CHUNKS_PER_FILE)).max(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = Store::open(&StoreUrl::parse(url).unwrap()).await.unwrap();
        let t = Tenant::new("bench");
        match mode {
            "load" => load(&s, &t, files).await,
            "search" => search(&s, &t, files, queries).await,
            other => panic!("unknown mode {other:?}"),
        }
    });
}
