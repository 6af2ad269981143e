//! SQLite-specific search properties the shared contract does not reach: the in-memory index
//! stays exact through every kind of chunk write made after it was loaded, and a store sees
//! the writes of another writer on its file. A second proxy is refused by the file's lock, but
//! writers that do not take it (the `sqlite3` shell, a proxy from before the lock) can still
//! exist: the second store here opens without the lock to stand in for one.

use std::collections::BTreeMap;

use assistants_proxy::ids::new_id;
use assistants_proxy::model::*;
use assistants_proxy::store::*;
use serde_json::{Value, json};

use crate::contract::{chunk, tenant, unit_vector, vector_store, vs_file};

async fn open(path: &std::path::Path) -> Store {
    let url = format!("sqlite://{}", path.display());
    Store::open(&StoreUrl::parse(&url).unwrap()).await.unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let c = dot / (na * nb);
    if c.is_finite() { c as f32 } else { 0.0 }
}

/// What the store should hold: file id → its chunks.
type Model = BTreeMap<String, Vec<Chunk>>;

async fn assert_search_exact(
    s: &Store,
    t: &Tenant,
    vs: &str,
    model: &Model,
    query: &[f32],
    k: usize,
    filter: Option<&AttributeFilter>,
) {
    let mut expected: Vec<f32> = model
        .values()
        .flatten()
        .filter(|c| filter.is_none_or(|f| f.matches(&c.attributes)))
        .map(|c| cosine(&c.embedding, query))
        .collect();
    expected.sort_by(|a, b| b.total_cmp(a));
    expected.truncate(k);
    let got = s
        .chunks
        .search(t, &[vs.to_owned()], query, k, filter)
        .await
        .unwrap();
    let scores: Vec<f32> = got.iter().map(|g| g.score).collect();
    // The best k scores, in order (which of several equal-scored chunks fills the last
    // place is not specified, so identities are checked one by one below).
    assert_eq!(
        scores.len(),
        expected.len(),
        "got {scores:?}\nwant {expected:?}"
    );
    for (g, w) in scores.iter().zip(&expected) {
        assert!((g - w).abs() < 1e-5, "got {scores:?}\nwant {expected:?}");
    }
    for g in &got {
        let c = model[&g.file_id]
            .iter()
            .find(|c| c.index == g.index)
            .unwrap();
        assert!((cosine(&c.embedding, query) - g.score).abs() < 1e-5);
        assert!(filter.is_none_or(|f| f.matches(&c.attributes)));
        assert_eq!((&g.text, &g.attributes), (&c.text, &c.attributes));
    }
}

fn attrs(v: Value) -> Attributes {
    v.as_object().cloned().unwrap()
}

#[tokio::test]
async fn index_stays_exact_through_every_kind_of_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("index.db")).await;
    let t = tenant();
    let vs = vector_store(&new_id("vs_"));
    s.vector_stores.put_vector_store(&t, &vs).await.unwrap();
    // 37 dimensions: not a multiple of the kernel's lanes.
    let dims = 37;
    let files: Vec<String> = (0..6).map(|_| new_id("file-")).collect();
    let mut model = Model::new();
    let filter: AttributeFilter =
        serde_json::from_value(json!({"type": "lte", "key": "rank", "value": 2})).unwrap();
    let mut seed = 1u64;
    for step in 0..120u64 {
        let f = &files[(step * 7 % 6) as usize];
        match step % 6 {
            0 | 1 | 3 => {
                let n = 1 + (step % 9) as u32;
                let a = json!({"rank": step % 5, "step": step});
                let chunks: Vec<Chunk> = (0..n)
                    .map(|i| {
                        seed += 1;
                        // Now and then a zero vector: it must score 0, never NaN.
                        let v = if seed.is_multiple_of(11) {
                            vec![0.0; dims]
                        } else {
                            unit_vector(seed, dims)
                        };
                        chunk(&vs.id, f, i, v, &a)
                    })
                    .collect();
                s.chunks
                    .put_chunks(&t, &vs.id, f, chunks.clone())
                    .await
                    .unwrap();
                model.insert(f.clone(), chunks);
            }
            2 => {
                s.chunks.delete_chunks(&t, &vs.id, f).await.unwrap();
                model.remove(f);
            }
            4 => {
                let a = attrs(json!({"rank": step % 4}));
                s.chunks
                    .set_chunk_attributes(&t, &vs.id, f, &a)
                    .await
                    .unwrap();
                for c in model.get_mut(f).into_iter().flatten() {
                    c.attributes = a.clone();
                }
            }
            _ => {
                s.vector_stores
                    .put_vs_file(&t, &vs_file(&vs.id, f, "completed", None))
                    .await
                    .unwrap();
                s.vector_stores.delete_vs_file(&t, &vs.id, f).await.unwrap();
                model.remove(f);
            }
        }
        let query = unit_vector(900_000 + step, dims);
        assert_search_exact(&s, &t, &vs.id, &model, &query, 7, None).await;
        assert_search_exact(&s, &t, &vs.id, &model, &query, 5, Some(&filter)).await;
    }
    // A file deleted outright leaves no chunk behind in the index either.
    let (f, _) = model
        .iter()
        .next()
        .map(|(f, c)| (f.clone(), c.clone()))
        .unwrap();
    s.files.delete_file(&t, &f).await.unwrap();
    model.remove(&f);
    assert_search_exact(&s, &t, &vs.id, &model, &unit_vector(5, dims), 50, None).await;
    // Deleting the store empties its search.
    s.vector_stores
        .delete_vector_store(&t, &vs.id)
        .await
        .unwrap();
    assert!(
        s.chunks
            .search(
                &t,
                std::slice::from_ref(&vs.id),
                &unit_vector(5, dims),
                5,
                None
            )
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_second_opener_of_the_file_sees_the_others_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = open(&path).await;
    let b = sqlite::open_without_lock(&path).await.unwrap();
    let t = tenant();
    let vs = vector_store(&new_id("vs_"));
    a.vector_stores.put_vector_store(&t, &vs).await.unwrap();
    let dims = 16;
    let query = unit_vector(1, dims);
    let (f1, f2) = (new_id("file-"), new_id("file-"));
    let far = chunk(&vs.id, &f1, 0, unit_vector(2, dims), &json!({}));
    a.chunks
        .put_chunks(&t, &vs.id, &f1, vec![far])
        .await
        .unwrap();
    // `a` loads its index now.
    assert_eq!(
        a.chunks
            .search(&t, std::slice::from_ref(&vs.id), &query, 5, None)
            .await
            .unwrap()
            .len(),
        1
    );

    let near = chunk(&vs.id, &f2, 0, query.clone(), &json!({}));
    b.chunks
        .put_chunks(&t, &vs.id, &f2, vec![near])
        .await
        .unwrap();
    let hits = a
        .chunks
        .search(&t, std::slice::from_ref(&vs.id), &query, 5, None)
        .await
        .unwrap();
    assert_eq!(hits.len(), 2, "a must see b's chunk");
    assert_eq!(hits[0].file_id, f2);

    b.chunks.delete_chunks(&t, &vs.id, &f1).await.unwrap();
    // `a` writes too: its own change must not paper over b's.
    a.chunks
        .set_chunk_attributes(&t, &vs.id, &f2, &attrs(json!({"x": 1})))
        .await
        .unwrap();
    let hits = a
        .chunks
        .search(&t, std::slice::from_ref(&vs.id), &query, 5, None)
        .await
        .unwrap();
    assert_eq!(
        hits.iter().map(|h| h.file_id.as_str()).collect::<Vec<_>>(),
        vec![f2.as_str()]
    );
    assert_eq!(hits[0].attributes, attrs(json!({"x": 1})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_is_exact_over_thousands_of_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("many.db")).await;
    let t = tenant();
    let vs = vector_store(&new_id("vs_"));
    s.vector_stores.put_vector_store(&t, &vs).await.unwrap();
    let dims = 129;
    let center = unit_vector(4242, dims);
    let mut model = Model::new();
    for f in 0..40u64 {
        let file = new_id("file-");
        let chunks: Vec<Chunk> = (0..100u32)
            .map(|i| {
                let seed = f * 1000 + u64::from(i) + 1;
                // A quarter of the files are a tight cluster around `center`: their
                // scores differ by less than the quantization bound, so pruning must
                // rescore many of them to stay exact.
                let v = if f % 4 == 0 {
                    let noise = unit_vector(seed, dims);
                    center
                        .iter()
                        .zip(&noise)
                        .map(|(c, n)| c + 0.02 * n)
                        .collect()
                } else {
                    unit_vector(seed, dims)
                };
                chunk(&vs.id, &file, i, v, &json!({"rank": f % 7}))
            })
            .collect();
        s.chunks
            .put_chunks(&t, &vs.id, &file, chunks.clone())
            .await
            .unwrap();
        model.insert(file, chunks);
    }
    let filter: AttributeFilter =
        serde_json::from_value(json!({"type": "in", "key": "rank", "value": [0, 3, 5]})).unwrap();
    for q in 0..20u64 {
        let query = if q % 2 == 0 {
            unit_vector(77_000 + q, dims)
        } else {
            let noise = unit_vector(88_000 + q, dims);
            center
                .iter()
                .zip(&noise)
                .map(|(c, n)| c + 0.01 * n)
                .collect()
        };
        assert_search_exact(&s, &t, &vs.id, &model, &query, 10, None).await;
        assert_search_exact(&s, &t, &vs.id, &model, &query, 25, Some(&filter)).await;
    }
}
