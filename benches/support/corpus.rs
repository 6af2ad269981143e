//! The synthetic embedding corpus the Cassandra vector-search benchmarks share
//! (`benches/store_cassandra.rs`, `examples/vector_bench.rs`): deterministic unit vectors,
//! `CHUNKS_PER_FILE` chunks per file, and queries near corpus vectors, so recall can be
//! checked against brute force without storing the corpus anywhere else.
#![allow(dead_code)]

use assistants_proxy::model::Chunk;
use serde_json::{Value, json};

pub const CHUNKS_PER_FILE: u32 = 100;

/// A deterministic unit vector (xorshift from `seed`).
pub fn unit_vector(seed: u64, dims: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= norm);
    v
}

pub fn file_id(f: u64) -> String {
    format!("file-bench{f:020}")
}

pub fn chunk_seed(f: u64, i: u32) -> u64 {
    f * 1000 + u64::from(i) + 1
}

/// File `f`'s chunks: `n` of them, text of a typical chunk's size, `parity` attribute.
pub fn chunks(vs_id: &str, file_id: &str, f: u64, n: u32, dims: usize) -> Vec<Chunk> {
    let attrs: Value = json!({"parity": if f.is_multiple_of(2) { "even" } else { "odd" }});
    (0..n)
        .map(|i| Chunk {
            vector_store_id: vs_id.to_owned(),
            file_id: file_id.to_owned(),
            index: i,
            text: format!("{file_id} chunk {i} ").repeat(20),
            embedding: unit_vector(chunk_seed(f, i), dims),
            attributes: attrs.as_object().cloned().unwrap_or_default(),
        })
        .collect()
}

/// Cosine of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Query `q` over a corpus of `files` files: near a corpus vector, as real queries are near
/// their answers.
pub fn query(q: u64, files: u64, dims: usize) -> Vec<f32> {
    let base = unit_vector(chunk_seed(q * 5 % files, (q * 7 % 100) as u32), dims);
    let noise = unit_vector(9_000_000 + q, dims);
    base.iter().zip(&noise).map(|(b, n)| b + 0.5 * n).collect()
}
