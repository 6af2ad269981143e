//! Query-time search over vector stores: embed the query with each store's embedding model,
//! ask the store for the nearest chunks (cosine, attribute filter applied), merge, threshold,
//! and attach file names.
//!
//! Used by `POST /v1/vector_stores/{id}/search` and by the run engine's `file_search` tool,
//! hence the plain signature of [`search`]. Each hit is one chunk: OpenAI's search results
//! and `file_search` results are both per chunk (several hits may share a file).

use std::collections::HashMap;

use super::Retrieval;
use crate::error::Error;
use crate::model::{AttributeFilter, Attributes, VectorStore};
use crate::tenancy::Caller;

use super::embed;

/// `ranking_options` of a search (vector-store search and `file_search` share the shape; the
/// ranker names differ and no ranker changes the order here, which is cosine similarity).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RankingOptions {
    pub ranker: Option<String>,
    /// Hits scoring below this (0..=1) are dropped.
    pub score_threshold: f64,
}

/// One matching chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub vector_store_id: String,
    pub file_id: String,
    /// The file's name ("" if the file was deleted meanwhile).
    pub filename: String,
    /// Cosine similarity clamped to 0..=1 (OpenAI's scores are in that range).
    pub score: f64,
    pub attributes: Attributes,
    /// Position of the chunk in its file.
    pub chunk_index: u32,
    pub text: String,
}

/// The best `max_results` chunks for `query` across `vs_ids`, best first.
pub async fn search(
    retrieval: &Retrieval,
    caller: &Caller,
    vs_ids: &[String],
    query: &str,
    max_results: usize,
    ranking: Option<&RankingOptions>,
    filter: Option<&AttributeFilter>,
) -> Result<Vec<SearchHit>, Error> {
    search_many(
        retrieval,
        caller,
        vs_ids,
        &[query.to_owned()],
        max_results,
        ranking,
        filter,
    )
    .await
}

/// Like [`search`] for several queries at once: each query is embedded and searched, and a
/// chunk found by more than one keeps its best score.
pub async fn search_many(
    retrieval: &Retrieval,
    caller: &Caller,
    vs_ids: &[String],
    queries: &[String],
    max_results: usize,
    ranking: Option<&RankingOptions>,
    filter: Option<&AttributeFilter>,
) -> Result<Vec<SearchHit>, Error> {
    let tenant = &caller.tenant;
    let queries: Vec<&str> = queries
        .iter()
        .map(String::as_str)
        .filter(|q| !q.trim().is_empty())
        .collect();
    if queries.is_empty() || max_results == 0 {
        return Ok(Vec::new());
    }
    // Stores grouped by embedding model: a query vector is only comparable with chunks
    // embedded by the same model. Stores with nothing embedded yet are skipped (and cost no
    // upstream call).
    let mut by_model: HashMap<String, Vec<String>> = HashMap::new();
    for id in vs_ids {
        let Some(vs) = caller
            .store
            .vector_stores
            .get_vector_store(tenant, id)
            .await?
        else {
            continue;
        };
        if vs.dimensions == 0 {
            continue;
        }
        by_model
            .entry(model_of(retrieval, &vs))
            .or_default()
            .push(vs.id.clone());
    }
    let threshold = ranking.map_or(0.0, |r| r.score_threshold);
    let mut best: HashMap<(String, String, u32), SearchHit> = HashMap::new();
    for (model, ids) in &by_model {
        let vectors = embed::embed_batch(retrieval, &caller.upstream_headers, model, &queries)
            .await
            .map_err(embed::EmbedError::into_error)?;
        for vector in &vectors {
            let found = caller
                .store
                .chunks
                .search(tenant, ids, vector, max_results, filter)
                .await?;
            for c in found {
                let score = f64::from(c.score).clamp(0.0, 1.0);
                if score < threshold {
                    continue;
                }
                let key = (c.vector_store_id.clone(), c.file_id.clone(), c.index);
                match best.get_mut(&key) {
                    Some(hit) if hit.score >= score => {}
                    Some(hit) => hit.score = score,
                    None => {
                        best.insert(
                            key,
                            SearchHit {
                                vector_store_id: c.vector_store_id,
                                file_id: c.file_id,
                                filename: String::new(),
                                score,
                                attributes: c.attributes,
                                chunk_index: c.index,
                                text: c.text,
                            },
                        );
                    }
                }
            }
        }
    }
    let mut hits: Vec<SearchHit> = best.into_values().collect();
    // Best first; ties in a stable, meaningful order (file, then position in it).
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.file_id.cmp(&b.file_id))
            .then_with(|| a.chunk_index.cmp(&b.chunk_index))
    });
    hits.truncate(max_results);
    let mut names: HashMap<String, String> = HashMap::new();
    for hit in &mut hits {
        if let Some(name) = names.get(&hit.file_id) {
            hit.filename = name.clone();
            continue;
        }
        let name = caller
            .store
            .files
            .get_file(tenant, &hit.file_id)
            .await?
            .map(|f| f.filename)
            .unwrap_or_default();
        names.insert(hit.file_id.clone(), name.clone());
        hit.filename = name;
    }
    Ok(hits)
}

fn model_of(retrieval: &Retrieval, vs: &VectorStore) -> String {
    if vs.embedding_model.is_empty() {
        retrieval.config.embedding_model.clone()
    } else {
        vs.embedding_model.clone()
    }
}
