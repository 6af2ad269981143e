//! The file_search tool as the run engine executes it: embed the model's query, search the
//! assistant's and thread's vector stores, record the results in the step, and hand the
//! passages back to the model with citation markers.

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::error::Error;
use crate::model::Message;
use crate::retrieval::stores;
use crate::runs::Runs;
use crate::store::{Store, Tenant};
use crate::tenancy::Caller;
use crate::upstream::chat::post_json;

/// Default number of passages (the spec's default for gpt-4-class models).
const DEFAULT_MAX_RESULTS: usize = 20;
/// Largest image inlined into a prompt as a data URL.
const MAX_INLINE_IMAGE: u64 = 20 * 1024 * 1024;

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub file_id: String,
    pub file_name: String,
    pub score: f32,
    pub text: String,
}

impl Hit {
    /// Reads a result back from step details (which always keep the content).
    pub fn from_result(v: &Value) -> Hit {
        Hit {
            file_id: v["file_id"].as_str().unwrap_or_default().to_owned(),
            file_name: v["file_name"].as_str().unwrap_or_default().to_owned(),
            score: v["score"].as_f64().unwrap_or(0.0) as f32,
            text: v["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        }
    }
}

/// The query the model asked for; falls back to the latest user text when the model sent
/// something else (models differ in how well they follow a tool's schema).
pub fn query_of(arguments: &str, messages: &[Message]) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(arguments) {
        if let Some(q) = v["query"].as_str().filter(|q| !q.trim().is_empty()) {
            return q.to_owned();
        }
        if let Some(obj) = v.as_object()
            && let Some(q) = obj
                .values()
                .find_map(|x| x.as_str().filter(|q| !q.trim().is_empty()))
        {
            return q.to_owned();
        }
    }
    messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.content.texts(false).join(" "))
        .unwrap_or_default()
}

/// Searches `stores` for `query` under the tool's options (`max_num_results`,
/// `ranking_options.score_threshold`).
pub async fn search(
    state: &Runs,
    caller: &Caller,
    stores: &[String],
    query: &str,
    options: &Value,
) -> Result<Vec<Hit>, Error> {
    let max = options["max_num_results"]
        .as_u64()
        .map_or(DEFAULT_MAX_RESULTS, |n| n as usize)
        .clamp(1, 50);
    let threshold = options["ranking_options"]["score_threshold"]
        .as_f64()
        .unwrap_or(0.0) as f32;
    // Stores embedded with the same model and dimension share one query embedding.
    let mut groups: HashMap<(String, u32), Vec<String>> = HashMap::new();
    for id in stores {
        let Some(vs) = caller
            .store
            .vector_stores
            .get_vector_store(&caller.tenant, id)
            .await?
        else {
            continue;
        };
        touch(state, caller, &vs).await;
        if vs.dimensions > 0 {
            groups
                .entry((vs.embedding_model.clone(), vs.dimensions))
                .or_default()
                .push(vs.id);
        }
    }
    let mut scored = Vec::new();
    for ((model, dims), ids) in groups {
        let mut body = json!({"model": model, "input": query});
        if model.starts_with("text-embedding-3") {
            body["dimensions"] = json!(dims);
        }
        let resp = post_json(
            &state.upstream,
            "/v1/embeddings",
            &caller.upstream_headers,
            &body,
        )
        .await
        .map_err(|e| Error::UpstreamUnavailable {
            message: e.message,
            code: "upstream_error",
        })?;
        let vector: Vec<f32> = resp["data"][0]["embedding"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_f64().map(|f| f as f32))
                    .collect()
            })
            .unwrap_or_default();
        if vector.len() != dims as usize {
            continue;
        }
        scored.extend(
            caller
                .store
                .chunks
                .search(&caller.tenant, &ids, &vector, max, None)
                .await?,
        );
    }
    scored.sort_by(|a, b| b.score.total_cmp(&a.score));
    scored.retain(|c| c.score >= threshold);
    scored.truncate(max);
    let mut names: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(scored.len());
    for c in scored {
        if !names.contains_key(&c.file_id) {
            let name = caller
                .store
                .files
                .get_file(&caller.tenant, &c.file_id)
                .await?
                .map(|f| f.filename)
                .unwrap_or_else(|| c.file_id.clone());
            names.insert(c.file_id.clone(), name);
        }
        out.push(Hit {
            file_name: names.get(&c.file_id).cloned().unwrap_or_default(),
            file_id: c.file_id,
            score: c.score,
            text: c.text,
        });
    }
    Ok(out)
}

/// Records a run's use of a store (its `last_active_at`, which a thread store's expiry
/// follows). Bookkeeping only: a failed write is logged and the run goes on.
async fn touch(state: &Runs, caller: &Caller, vs: &crate::model::VectorStore) {
    let touched = stores::touch_loaded(&state.retrieval, &caller.store, &caller.tenant, vs).await;
    if let Err(e) = touched {
        tracing::warn!(vector_store_id = %vs.id, error = %e, "could not record the store's activity");
    }
}

/// Where a thread's vector store stands for a run about to search it (spec §7.2).
#[derive(Debug, PartialEq)]
pub enum ThreadStore {
    /// No store, or every file settled: search now.
    Ready,
    /// Files still `in_progress`: the run waits (bounded) for them.
    Indexing,
    /// The store expired: runs on the thread fail.
    Expired(String),
}

/// Looks at the thread's vector store (threads hold at most one), recording the run's use of
/// it. Counts come from `retrieval::stores`, which also settles files whose ingestion
/// died with its proxy, so a run never waits on a file no one is indexing.
pub async fn thread_store(
    state: &Runs,
    caller: &Caller,
    thread_id: &str,
) -> Result<ThreadStore, Error> {
    let (store, tenant) = (&caller.store, &caller.tenant);
    let Some(thread) = store.threads.get_thread(tenant, thread_id).await? else {
        return Ok(ThreadStore::Ready);
    };
    for id in thread.tool_resources.vector_store_ids() {
        let Some(vs) = store.vector_stores.get_vector_store(tenant, id).await? else {
            continue;
        };
        if stores::is_expired(&vs, state.clock.now()) {
            return Ok(ThreadStore::Expired(vs.id));
        }
        // A run on the thread uses its store whether or not the model searches it: OpenAI
        // counts a store as active when it was last part of a run.
        touch(state, caller, &vs).await;
        let vs = stores::derive(&state.retrieval, store, tenant, vs).await?;
        if vs.file_counts.in_progress > 0 {
            return Ok(ThreadStore::Indexing);
        }
    }
    Ok(ThreadStore::Ready)
}

/// The step's `file_search` details; the content is always stored and only shown when the
/// caller asks with `include[]`.
pub fn step_details(options: &Value, hits: &[Hit]) -> Value {
    let ranker = options["ranking_options"]["ranker"]
        .as_str()
        .unwrap_or("default_2024_08_21");
    let threshold = options["ranking_options"]["score_threshold"]
        .as_f64()
        .unwrap_or(0.0);
    json!({
        "ranking_options": {"ranker": ranker, "score_threshold": threshold},
        "results": hits.iter().map(|h| json!({
            "file_id": h.file_id,
            "file_name": h.file_name,
            "score": h.score,
            "content": [{"type": "text", "text": h.text}],
        })).collect::<Vec<_>>(),
    })
}

/// The tool result the model reads: numbered passages with their citation markers.
pub fn render_for_model(turn: usize, hits: &[Hit]) -> String {
    if hits.is_empty() {
        return "No relevant passages were found in the attached files.".to_owned();
    }
    let mut out = String::new();
    for (i, h) in hits.iter().enumerate() {
        out.push_str(&format!(
            "【{turn}:{i}†{}】 (relevance {:.2})\n{}\n\n",
            h.file_name, h.score, h.text
        ));
    }
    out.push_str("Cite each passage you use with its marker exactly as shown, e.g. ");
    out.push_str(&format!("【{turn}:0†{}】.", hits[0].file_name));
    out
}

/// An image file as a `data:` URL for vision models, if it is small enough.
pub async fn data_url(store: &Store, tenant: &Tenant, file_id: &str) -> Option<String> {
    let f = store.files.get_file(tenant, file_id).await.ok()??;
    if f.bytes > MAX_INLINE_IMAGE {
        return None;
    }
    let lower = f.filename.to_ascii_lowercase();
    let mime = match lower.rsplit('.').next()? {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        _ => return None,
    };
    let mut bytes = Vec::with_capacity(f.bytes as usize);
    let mut i = 0;
    while let Ok(Some(part)) = store.files.get_file_part(tenant, file_id, i).await {
        bytes.extend_from_slice(&part);
        i += 1;
    }
    Some(format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_sees_numbered_markers() {
        let hits = vec![Hit {
            file_id: "file-1".into(),
            file_name: "a.txt".into(),
            score: 0.9,
            text: "alpha".into(),
        }];
        let text = render_for_model(2, &hits);
        assert!(text.starts_with("【2:0†a.txt】"));
        let details = step_details(&Value::Null, &hits);
        assert_eq!(details["results"][0]["content"][0]["text"], "alpha");
        assert_eq!(Hit::from_result(&details["results"][0]), hits[0]);
    }

    #[test]
    fn query_falls_back_sensibly() {
        assert_eq!(query_of(r#"{"query":"cats"}"#, &[]), "cats");
        assert_eq!(query_of(r#"{"input":"dogs"}"#, &[]), "dogs");
        assert_eq!(query_of("not json", &[]), "");
    }
}
