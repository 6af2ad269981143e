//! Request bodies of the vector-store routes, validated with OpenAI's messages, and the wire
//! form of the objects (which leaves out what the proxy keeps for itself: a store's embedding
//! model and dimension, a membership's batch and lease, a batch's cancel flag).

use serde_json::{Map, Value, json};

use super::service::{NewVectorStore, NewVsFile, StoreChanges};
use crate::api::common::ListParams;
use crate::api::fields::{
    Field, Fields, empty_array, invalid_type, invalid_value, missing, string_too_long,
};
use crate::api::validate::chunking_strategy;
use crate::error::Error;
use crate::model::{
    AttributeFilter, Attributes, ComparisonOp, CompoundOp, ExpiresAfter, FileBatch, VectorStore,
    VectorStoreFile,
};
use crate::retrieval::search::{RankingOptions, SearchHit};

pub const MAX_NAME: usize = 256;
pub const MAX_DESCRIPTION: usize = 512;
/// `file_ids` on store creation.
pub const MAX_CREATE_FILES: usize = 500;
/// `file_ids` / `files` of a batch.
pub const MAX_BATCH_FILES: usize = 2000;
pub const MAX_ATTRIBUTES: usize = 16;
pub const MAX_ATTRIBUTE_KEY: usize = 64;
pub const MAX_ATTRIBUTE_VALUE: usize = 512;
pub const MAX_SEARCH_RESULTS: i64 = 50;
pub const DEFAULT_SEARCH_RESULTS: i64 = 10;
pub const FILE_STATUSES: &[&str] = &["in_progress", "completed", "failed", "cancelled"];
pub const SEARCH_RANKERS: &[&str] = &["none", "auto", "default-2024-11-15"];

// ---- wire form ---------------------------------------------------------------------------

pub fn render_store(vs: &VectorStore) -> Value {
    json!({
        "id": vs.id,
        "object": "vector_store",
        "created_at": vs.created_at,
        "name": vs.name,
        "usage_bytes": vs.usage_bytes,
        "file_counts": vs.file_counts,
        "status": vs.status,
        "expires_after": vs.expires_after,
        "expires_at": vs.expires_at,
        "last_active_at": vs.last_active_at,
        "metadata": vs.metadata,
    })
}

pub fn render_file(f: &VectorStoreFile) -> Value {
    json!({
        "id": f.id,
        "object": "vector_store.file",
        "usage_bytes": f.usage_bytes,
        "created_at": f.created_at,
        "vector_store_id": f.vector_store_id,
        "status": f.status,
        "last_error": f.last_error,
        "chunking_strategy": f.chunking_strategy,
        "attributes": f.attributes.clone().unwrap_or_default(),
    })
}

pub fn render_batch(b: &FileBatch) -> Value {
    json!({
        "id": b.id,
        "object": "vector_store.files_batch",
        "created_at": b.created_at,
        "vector_store_id": b.vector_store_id,
        "status": b.status,
        "file_counts": b.file_counts,
    })
}

pub fn render_search(queries: &[String], hits: &[SearchHit]) -> Value {
    let data: Vec<Value> = hits
        .iter()
        .map(|h| {
            json!({
                "file_id": h.file_id,
                "filename": h.filename,
                "score": h.score,
                "attributes": h.attributes,
                "content": [{"type": "text", "text": h.text}],
            })
        })
        .collect();
    json!({
        "object": "vector_store.search_results.page",
        "search_query": queries,
        "data": data,
        "has_more": false,
        "next_page": null,
    })
}

// ---- shared pieces -----------------------------------------------------------------------

/// `expires_after`: `{anchor: "last_active_at", days: 1..=365}`.
pub fn expires_after(v: Value, param: &str) -> Result<ExpiresAfter, Error> {
    let mut f = Fields::nested(v, param)?;
    let anchor = match f.enumeration("anchor", &["last_active_at"])? {
        Field::Set(a) => a,
        _ => return Err(missing(&f.param("anchor"))),
    };
    let days = match f.integer("days", 1, 365)? {
        Field::Set(d) => d as u32,
        _ => return Err(missing(&f.param("days"))),
    };
    f.finish()?;
    Ok(ExpiresAfter { anchor, days })
}

/// File `attributes`: ≤16 keys of ≤64 characters; values strings (≤512), numbers or booleans.
pub fn attributes(v: Value, param: &str) -> Result<Attributes, Error> {
    let map = match v {
        Value::Object(m) => m,
        other => return Err(invalid_type(param, "an object", &other)),
    };
    if map.len() > MAX_ATTRIBUTES {
        return Err(Error::invalid_code(
            format!(
                "Invalid '{param}': too many properties. Expected an object with at most {MAX_ATTRIBUTES} properties, but got an object with {} properties instead.",
                map.len()
            ),
            Some(param),
            "object_above_max_properties",
        ));
    }
    let mut out = Map::new();
    for (k, v) in map {
        let key_len = k.chars().count();
        if key_len > MAX_ATTRIBUTE_KEY {
            return Err(string_too_long(param, MAX_ATTRIBUTE_KEY, key_len).with_message(format!(
                "Invalid '{param}': attribute key too long. Expected keys with maximum length {MAX_ATTRIBUTE_KEY}, but got a key with length {key_len} instead."
            )));
        }
        let path = format!("{param}.{k}");
        match &v {
            Value::String(s) => {
                let len = s.chars().count();
                if len > MAX_ATTRIBUTE_VALUE {
                    return Err(string_too_long(&path, MAX_ATTRIBUTE_VALUE, len));
                }
            }
            Value::Number(_) | Value::Bool(_) => {}
            other => {
                return Err(invalid_type(&path, "a string, number, or boolean", other));
            }
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// Optional `attributes` (null is "none").
fn optional_attributes(f: &mut Fields) -> Result<Option<Attributes>, Error> {
    let param = f.param("attributes");
    match f.take("attributes") {
        Field::Set(v) => Ok(Some(attributes(v, &param)?)),
        Field::Null | Field::Absent => Ok(None),
    }
}

fn optional_chunking(f: &mut Fields) -> Result<Option<Value>, Error> {
    let param = f.param("chunking_strategy");
    match f.take("chunking_strategy") {
        Field::Set(v) => Ok(Some(chunking_strategy(v, &param)?)),
        Field::Null | Field::Absent => Ok(None),
    }
}

/// A search filter: a comparison `{type, key, value}` or a compound `{type: and|or,
/// filters}`, recursively.
pub fn filter(v: Value, param: &str) -> Result<AttributeFilter, Error> {
    let mut f = Fields::nested(v, param)?;
    let kinds = [
        "eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "and", "or",
    ];
    let kind = match f.enumeration("type", &kinds)? {
        Field::Set(k) => k,
        _ => return Err(missing(&f.param("type"))),
    };
    let out = match kind.as_str() {
        "and" | "or" => {
            let items = match f.array("filters", 1024)? {
                Field::Set(items) => items,
                _ => return Err(missing(&f.param("filters"))),
            };
            let filters = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| filter(item, &format!("{}[{i}]", f.param("filters"))))
                .collect::<Result<Vec<_>, _>>()?;
            let op = if kind == "and" {
                CompoundOp::And
            } else {
                CompoundOp::Or
            };
            AttributeFilter::Compound { op, filters }
        }
        _ => {
            let key = f.required_string("key", MAX_ATTRIBUTE_KEY)?;
            let value_param = f.param("value");
            let value = match f.take("value") {
                Field::Set(v) => v,
                _ => return Err(missing(&value_param)),
            };
            let scalar =
                |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
            let ok = match &value {
                Value::Array(items) => items.iter().all(scalar),
                v => scalar(v),
            };
            if !ok {
                return Err(invalid_type(
                    &value_param,
                    "a string, number, boolean, or array",
                    &value,
                ));
            }
            let op = match kind.as_str() {
                "eq" => ComparisonOp::Eq,
                "ne" => ComparisonOp::Ne,
                "gt" => ComparisonOp::Gt,
                "gte" => ComparisonOp::Gte,
                "lt" => ComparisonOp::Lt,
                "lte" => ComparisonOp::Lte,
                "in" => ComparisonOp::In,
                _ => ComparisonOp::Nin,
            };
            AttributeFilter::Comparison { op, key, value }
        }
    };
    f.finish()?;
    Ok(out)
}

/// The `filter` query parameter of file lists.
pub fn status_filter(p: &ListParams) -> Result<Option<String>, Error> {
    match p.get("filter").filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(s) if FILE_STATUSES.contains(&s) => Ok(Some(s.to_owned())),
        Some(s) => Err(invalid_value("filter", s, FILE_STATUSES)),
    }
}

// ---- bodies ------------------------------------------------------------------------------

pub fn parse_create(mut f: Fields) -> Result<NewVectorStore, Error> {
    let file_ids = f
        .string_array("file_ids", MAX_CREATE_FILES)?
        .into_option()
        .unwrap_or_default();
    let name = f.string("name", MAX_NAME)?.into_option();
    // Accepted, but not part of the VectorStore object.
    f.string("description", MAX_DESCRIPTION)?;
    let expires_after = match f.take("expires_after") {
        Field::Set(v) => Some(expires_after(v, "expires_after")?),
        Field::Null | Field::Absent => None,
    };
    let chunking_strategy = optional_chunking(&mut f)?;
    let metadata = f.metadata()?.into_option().unwrap_or_default();
    f.finish()?;
    Ok(NewVectorStore {
        name,
        file_ids,
        chunking_strategy,
        expires_after,
        metadata,
    })
}

pub fn parse_modify(mut f: Fields) -> Result<StoreChanges, Error> {
    let name = match f.string("name", MAX_NAME)? {
        Field::Set(n) => Some(Some(n)),
        Field::Null => Some(None),
        Field::Absent => None,
    };
    let expires_after = match f.take("expires_after") {
        Field::Set(v) => Some(Some(expires_after(v, "expires_after")?)),
        Field::Null => Some(None),
        Field::Absent => None,
    };
    let metadata = match f.metadata()? {
        Field::Set(m) => Some(m),
        Field::Null => Some(Default::default()),
        Field::Absent => None,
    };
    f.finish()?;
    Ok(StoreChanges {
        name,
        expires_after,
        metadata,
    })
}

/// A search request.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    pub queries: Vec<String>,
    /// Rewrite each query with the upstream's chat model before searching.
    pub rewrite_query: bool,
    pub max_num_results: usize,
    pub filters: Option<AttributeFilter>,
    pub ranking: Option<RankingOptions>,
}

pub fn parse_search(mut f: Fields) -> Result<SearchRequest, Error> {
    let queries = match f.take("query") {
        Field::Set(Value::String(s)) => vec![s],
        Field::Set(Value::Array(items)) => {
            if items.is_empty() {
                return Err(empty_array("query"));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    other => Err(invalid_type(&format!("query[{i}]"), "a string", &other)),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        Field::Set(other) => {
            return Err(invalid_type(
                "query",
                "a string or an array of strings",
                &other,
            ));
        }
        Field::Null | Field::Absent => return Err(missing("query")),
    };
    let rewrite_query = f.boolean("rewrite_query")?.into_option().unwrap_or(false);
    let max_num_results = f
        .integer("max_num_results", 1, MAX_SEARCH_RESULTS)?
        .into_option()
        .unwrap_or(DEFAULT_SEARCH_RESULTS) as usize;
    let filters = match f.take("filters") {
        Field::Set(v) => Some(filter(v, "filters")?),
        Field::Null | Field::Absent => None,
    };
    let ranking = match f.object("ranking_options")? {
        Field::Set(mut r) => {
            let ranker = r.enumeration("ranker", SEARCH_RANKERS)?.into_option();
            let score_threshold = r
                .number("score_threshold", 0.0, 1.0)?
                .into_option()
                .unwrap_or(0.0);
            r.finish()?;
            Some(RankingOptions {
                ranker,
                score_threshold,
            })
        }
        Field::Null | Field::Absent => None,
    };
    f.finish()?;
    Ok(SearchRequest {
        queries,
        rewrite_query,
        max_num_results,
        filters,
        ranking,
    })
}

/// `POST …/files`: `{file_id, chunking_strategy?, attributes?}`.
pub fn parse_add_file(mut f: Fields) -> Result<NewVsFile, Error> {
    let file_id = f.required_string("file_id", 128)?;
    let chunking_strategy = optional_chunking(&mut f)?;
    let attributes = optional_attributes(&mut f)?;
    f.finish()?;
    Ok(NewVsFile {
        file_id,
        chunking_strategy,
        attributes,
    })
}

/// `POST …/files/{file_id}`: `{attributes}` (required; null clears).
pub fn parse_update_file(mut f: Fields) -> Result<Option<Attributes>, Error> {
    if !f.contains("attributes") {
        return Err(missing("attributes"));
    }
    let attributes = optional_attributes(&mut f)?;
    f.finish()?;
    Ok(attributes)
}

/// `POST …/file_batches`: `file_ids` (with top-level options) xor `files` (each with its own).
pub fn parse_batch(mut f: Fields) -> Result<Vec<NewVsFile>, Error> {
    let file_ids = f.string_array("file_ids", MAX_BATCH_FILES)?.into_option();
    let files = f.array("files", MAX_BATCH_FILES)?.into_option();
    let chunking_strategy = optional_chunking(&mut f)?;
    let attributes = optional_attributes(&mut f)?;
    f.finish()?;
    match (file_ids, files) {
        (Some(_), Some(_)) => Err(Error::invalid(
            "Only one of 'file_ids' or 'files' may be provided.",
            Some("files"),
        )),
        (None, None) => Err(missing("file_ids")),
        (Some(ids), None) => {
            if ids.is_empty() {
                return Err(empty_array("file_ids"));
            }
            Ok(ids
                .into_iter()
                .map(|file_id| NewVsFile {
                    file_id,
                    chunking_strategy: chunking_strategy.clone(),
                    attributes: attributes.clone(),
                })
                .collect())
        }
        (None, Some(items)) => {
            if items.is_empty() {
                return Err(empty_array("files"));
            }
            // Top-level options apply to `file_ids` only.
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| parse_add_file(Fields::nested(item, &format!("files[{i}]"))?))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: Value) -> Fields {
        match v {
            Value::Object(m) => Fields::new(m),
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn attribute_rules() {
        let ok = attributes(json!({"a": "x", "n": 1.5, "b": true}), "attributes").unwrap();
        assert_eq!(ok.len(), 3);
        let many: Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!(1))).collect();
        assert_eq!(
            attributes(Value::Object(many), "attributes")
                .unwrap_err()
                .code(),
            Some("object_above_max_properties")
        );
        let e = attributes(json!({"k": "v".repeat(513)}), "attributes").unwrap_err();
        assert_eq!(e.code(), Some("string_above_max_length"));
        assert_eq!(e.param(), Some("attributes.k"));
        assert!(attributes(json!({"k".repeat(65): 1}), "attributes").is_err());
        let e = attributes(json!({"k": [1]}), "attributes").unwrap_err();
        assert_eq!(e.code(), Some("invalid_type"));
    }

    #[test]
    fn filters_parse_recursively() {
        let f = filter(
            json!({"type": "and", "filters": [
                {"type": "eq", "key": "lang", "value": "en"},
                {"type": "or", "filters": [{"type": "gte", "key": "year", "value": 2020}, {"type": "in", "key": "tag", "value": ["a", "b"]}]}
            ]}),
            "filters",
        )
        .unwrap();
        let attrs = json!({"lang": "en", "tag": "b"})
            .as_object()
            .unwrap()
            .clone();
        assert!(f.matches(&attrs));
        let e = filter(json!({"type": "like", "key": "a", "value": 1}), "filters").unwrap_err();
        assert_eq!(e.param(), Some("filters.type"));
        let e = filter(
            json!({"type": "and", "filters": [{"type": "eq", "key": "a"}]}),
            "filters",
        )
        .unwrap_err();
        assert_eq!(e.param(), Some("filters.filters[0].value"));
    }

    #[test]
    fn search_bodies() {
        let s = parse_search(fields(json!({"query": "hello"}))).unwrap();
        assert_eq!(s.queries, vec!["hello"]);
        assert_eq!(s.max_num_results, 10);
        assert!(!s.rewrite_query);
        let s = parse_search(fields(
            json!({"query": ["a", "b"], "max_num_results": 3, "rewrite_query": true,
            "ranking_options": {"ranker": "default-2024-11-15", "score_threshold": 0.5}}),
        ))
        .unwrap();
        assert_eq!(s.queries.len(), 2);
        assert!(s.rewrite_query);
        assert_eq!(s.ranking.unwrap().score_threshold, 0.5);
        let e = parse_search(fields(json!({"query": "x", "max_num_results": 51}))).unwrap_err();
        assert_eq!(e.code(), Some("integer_above_max_value"));
        let e = parse_search(fields(
            json!({"query": "x", "ranking_options": {"ranker": "default_2024_08_21"}}),
        ))
        .unwrap_err();
        assert_eq!(e.code(), Some("invalid_value"));
        assert_eq!(
            parse_search(fields(json!({}))).unwrap_err().code(),
            Some("missing_required_parameter")
        );
    }

    #[test]
    fn batch_bodies() {
        let b = parse_batch(fields(
            json!({"file_ids": ["file-a", "file-b"], "attributes": {"x": 1}}),
        ))
        .unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].attributes.as_ref().unwrap()["x"], 1);
        let b = parse_batch(fields(
            json!({"files": [{"file_id": "file-a", "attributes": {"y": "z"}}]}),
        ))
        .unwrap();
        assert_eq!(b[0].attributes.as_ref().unwrap()["y"], "z");
        assert!(
            parse_batch(fields(
                json!({"file_ids": ["a"], "files": [{"file_id": "a"}]})
            ))
            .is_err()
        );
        assert_eq!(
            parse_batch(fields(json!({}))).unwrap_err().code(),
            Some("missing_required_parameter")
        );
        assert_eq!(
            parse_batch(fields(json!({"file_ids": []})))
                .unwrap_err()
                .code(),
            Some("empty_array")
        );
        let many: Vec<String> = (0..2001).map(|i| format!("file-{i}")).collect();
        assert_eq!(
            parse_batch(fields(json!({ "file_ids": many })))
                .unwrap_err()
                .code(),
            Some("array_above_max_length")
        );
    }

    #[test]
    fn store_bodies() {
        let c = parse_create(fields(json!({"name": "n", "description": "d", "file_ids": ["file-1"],
            "expires_after": {"anchor": "last_active_at", "days": 7},
            "chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50}}})))
        .unwrap();
        assert_eq!(c.expires_after.unwrap().days, 7);
        let e = parse_create(fields(
            json!({"expires_after": {"anchor": "last_active_at", "days": 366}}),
        ))
        .unwrap_err();
        assert_eq!(e.param(), Some("expires_after.days"));
        let e = parse_create(fields(json!({"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 5000, "chunk_overlap_tokens": 0}}})))
            .unwrap_err();
        assert_eq!(e.code(), Some("integer_above_max_value"));
        let m = parse_modify(fields(json!({"name": null, "expires_after": null}))).unwrap();
        assert_eq!(m.name, Some(None));
        assert!(matches!(m.expires_after, Some(None)));
        assert!(parse_modify(fields(json!({"file_ids": []}))).is_err());
    }
}
