//! `rewrite_query` of a vector-store search: the upstream's chat model turns a natural
//! language question into a concise search query, which is what gets embedded and what the
//! answer reports in `search_query`.
//!
//! One short, non-streamed chat completion per query, with the model of `[retrieval]
//! rewrite_model` and the caller's key. When the upstream cannot rewrite, the search fails
//! with that error instead of quietly searching the raw query: the caller asked for a rewrite
//! and would otherwise be told (`search_query`) it got one it did not, and a client that can
//! do without one can retry with `rewrite_query: false`.

use serde_json::{Value, json};

use super::Retrieval;
use crate::error::Error;
use crate::tenancy::Caller;
use crate::upstream::chat::{CallError, post_json};

/// What the model is told; the query follows as the user message.
const INSTRUCTIONS: &str = "You rewrite questions into queries for a semantic search over \
    documents. Reply with one concise search query: the key terms and phrases of the question, \
    with synonyms only where they help, without explanation, quotes or a trailing period.";

/// Longest rewrite kept (characters): the first line of the answer, cut here.
const MAX_REWRITE: usize = 1000;

/// The chat request that rewrites `query`.
pub fn request(model: &str, query: &str) -> Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": query},
        ],
        "temperature": 0,
        "stream": false,
    })
}

/// The rewritten query in a chat completion: its first non-empty line, unquoted.
pub fn rewritten(completion: &Value) -> Option<String> {
    let text = completion["choices"][0]["message"]["content"].as_str()?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let line = line
        .trim_matches(|c| c == '"' || c == '\'' || c == '`')
        .trim();
    (!line.is_empty()).then(|| line.chars().take(MAX_REWRITE).collect())
}

/// Rewrites each query (concurrently); fails as a whole if any rewrite fails.
pub async fn rewrite_all(
    retrieval: &Retrieval,
    caller: &Caller,
    queries: &[String],
) -> Result<Vec<String>, Error> {
    let rewrites = queries.iter().map(|q| rewrite(retrieval, caller, q));
    futures_util::future::try_join_all(rewrites).await
}

async fn rewrite(retrieval: &Retrieval, caller: &Caller, query: &str) -> Result<String, Error> {
    if query.trim().is_empty() {
        return Ok(query.to_owned());
    }
    let model = &retrieval.config.rewrite_model;
    let answer = post_json(
        &retrieval.upstream,
        "/v1/chat/completions",
        &caller.upstream_headers,
        &request(model, query),
    )
    .await
    .map_err(|e| failed(model, e))?;
    rewritten(&answer).ok_or_else(|| Error::UpstreamUnavailable {
        message: format!(
            "rewrite_query: the upstream model '{model}' returned no rewritten query."
        ),
        code: "rewrite_failed",
    })
}

/// The caller's own key problems come back as such; a model the upstream refuses (unknown,
/// bad request) is a 400 naming the setting to change; anything else is the upstream's
/// failure (502).
fn failed(model: &str, e: CallError) -> Error {
    let message =
        format!("rewrite_query: the upstream model '{model}' could not rewrite the query: {e}");
    match e.status {
        Some(401) => Error::Unauthorized { message },
        Some(s) if (400..500).contains(&s) && s != 429 => Error::invalid(
            format!(
                "{message} (the model is set by [retrieval] rewrite_model; without rewrite_query the search works as is)"
            ),
            Some("rewrite_query"),
        ),
        _ => Error::UpstreamUnavailable {
            message,
            code: "rewrite_failed",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_is_the_query() {
        let answer = |text: &str| json!({"choices": [{"message": {"content": text}}]});
        assert_eq!(
            rewritten(&answer("\n  \"solar system planets\"\nbecause…")).as_deref(),
            Some("solar system planets")
        );
        assert_eq!(rewritten(&answer("  \n ")), None);
        assert_eq!(rewritten(&json!({"choices": []})), None);
        let long = "x".repeat(MAX_REWRITE + 10);
        assert_eq!(rewritten(&answer(&long)).unwrap().len(), MAX_REWRITE);
        let req = request("m", "q?");
        assert_eq!(req["messages"][1]["content"], "q?");
        assert_eq!(req["stream"], false);
    }
}
