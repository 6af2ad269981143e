//! The synthetic embedding corpus the Cassandra vector-search benchmarks share
//! (`benches/store_cassandra.rs`, `examples/vector_bench.rs`): deterministic unit vectors,
//! `CHUNKS_PER_FILE` chunks per file, and queries near corpus vectors, so recall can be
//! checked against brute force without storing the corpus anywhere else.
#![allow(dead_code)]

use assistants_proxy::model::{AttributeFilter, Chunk, FileCounts, Metadata, VectorStore};
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

/// One chunk of the corpus as brute force sees it.
pub struct Known {
    pub file_id: String,
    pub index: u32,
    pub vector: Vec<f32>,
    /// Its file's `parity` is `even` (what [`even_files`] keeps).
    pub even: bool,
}

/// The whole corpus of `files` files in memory, for brute force.
pub fn in_memory(files: u64, dims: usize) -> Vec<Known> {
    (0..files)
        .flat_map(|f| {
            (0..CHUNKS_PER_FILE).map(move |i| Known {
                file_id: file_id(f),
                index: i,
                vector: unit_vector(chunk_seed(f, i), dims),
                even: f.is_multiple_of(2),
            })
        })
        .collect()
}

/// The attribute filter keeping half the corpus (files of even number).
pub fn even_files() -> AttributeFilter {
    serde_json::from_value(json!({"type": "eq", "key": "parity", "value": "even"}))
        .expect("a valid filter")
}

/// The corpus's vector store record.
pub fn vector_store(id: &str, dims: usize) -> VectorStore {
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
        dimensions: dims as u32,
    }
}
