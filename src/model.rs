//! The objects of the Assistants API, as the service layer builds them and the store keeps
//! them. Field names and shapes are the wire format (spec/assistants-api.md); every key the
//! schema requires is always serialized, `null` or empty when unset. Nested shapes that the
//! proxy passes through without interpreting (tool definitions, JSON schemas) stay `Value`.
//!
//! One file on purpose: the wire objects are read side by side against the spec (about 590
//! lines of types; the rest is their serialization tests).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// String→string metadata (≤16 pairs, keys ≤64, values ≤512; checked by the API layer).
pub type Metadata = BTreeMap<String, String>;

/// Vector-store-file attributes: string, number or boolean values.
pub type Attributes = Map<String, Value>;

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_interpreter: Option<CodeInterpreterResources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_search: Option<FileSearchResources>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CodeInterpreterResources {
    #[serde(default)]
    pub file_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileSearchResources {
    #[serde(default)]
    pub vector_store_ids: Vec<String>,
}

impl ToolResources {
    pub fn vector_store_ids(&self) -> &[String] {
        self.file_search
            .as_ref()
            .map_or(&[], |f| f.vector_store_ids.as_slice())
    }

    pub fn code_interpreter_file_ids(&self) -> &[String] {
        self.code_interpreter
            .as_ref()
            .map_or(&[], |c| c.file_ids.as_slice())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assistant {
    pub id: String,
    pub object: String,
    pub created_at: i64,
    pub name: Option<String>,
    pub description: Option<String>,
    pub model: String,
    pub instructions: Option<String>,
    pub tools: Vec<Value>,
    pub tool_resources: ToolResources,
    pub metadata: Metadata,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub response_format: Value,
    /// Files attached through the v1 assistant-files routes (kept to answer those routes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub v1_file_ids: Vec<String>,
    /// Sent to the upstream with the assistant's runs (a run's own value wins); not part of
    /// OpenAI's Assistant object, so stored but never rendered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thread {
    pub id: String,
    pub object: String,
    pub created_at: i64,
    pub tool_resources: ToolResources,
    pub metadata: Metadata,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub file_id: String,
    pub tools: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    #[serde(deserialize_with = "common_str")]
    pub object: Cow<'static, str>,
    pub created_at: i64,
    pub thread_id: String,
    #[serde(deserialize_with = "common_str")]
    pub status: Cow<'static, str>,
    pub incomplete_details: Option<Value>,
    pub completed_at: Option<i64>,
    pub incomplete_at: Option<i64>,
    #[serde(deserialize_with = "common_str")]
    pub role: Cow<'static, str>,
    /// Content parts in response shape (`text`, `image_file`, `image_url`, `refusal`).
    pub content: Content,
    pub assistant_id: Option<String>,
    pub run_id: Option<String>,
    pub attachments: Vec<Attachment>,
    pub metadata: Metadata,
}

/// A string field whose values are nearly always one of a few words (a message's `object`,
/// `status` and `role`): those decode to a static copy instead of an allocation each, which
/// is a third of what decoding a stored message allocated. Anything else is kept as it is.
fn common_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Cow<'static, str>, D::Error> {
    const COMMON: &[&str] = &[
        "thread.message",
        "completed",
        "in_progress",
        "incomplete",
        "user",
        "assistant",
    ];
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Cow<'static, str>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(COMMON
                .iter()
                .find(|c| **c == s)
                .map_or_else(|| Cow::Owned(s.to_owned()), |c| Cow::Borrowed(*c)))
        }
        fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Self::Value, E> {
            Ok(match COMMON.iter().find(|c| **c == s) {
                Some(c) => Cow::Borrowed(*c),
                None => Cow::Owned(s),
            })
        }
    }
    d.deserialize_str(Visitor)
}

/// A message's content parts, kept as the JSON array they are stored and served as.
///
/// Listing messages is the hottest read the proxy serves, and decoding every part into
/// `Value` maps cost about ten allocations per message for content that is only copied back
/// out. Only the run engine looks inside (building a prompt, finding citations), and it asks
/// for [`Content::parts`] once per run.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Content(Box<serde_json::value::RawValue>);

impl Content {
    /// The parts, decoded.
    pub fn parts(&self) -> Vec<Value> {
        // A RawValue is valid JSON by construction; an array is all `from_parts` and the
        // stored documents (written from it) ever hold, so anything else reads as no parts.
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }

    /// Content made of `parts`.
    pub fn from_parts(parts: &[Value]) -> Content {
        // Serializing `Value`s cannot fail (their map keys are strings), and what it writes
        // is valid JSON; the fallbacks keep this free of a panic path.
        serde_json::to_string(parts)
            .ok()
            .and_then(|json| serde_json::value::RawValue::from_string(json).ok())
            .map_or_else(Content::default, Content)
    }

    /// The text of every `text` part (and `refusal`s when `refusals`), in order.
    pub fn texts(&self, refusals: bool) -> Vec<String> {
        self.parts()
            .iter()
            .filter_map(|p| {
                p["text"]["value"]
                    .as_str()
                    .or(if refusals {
                        p["refusal"].as_str()
                    } else {
                        None
                    })
                    .map(str::to_owned)
            })
            .collect()
    }
}

impl Default for Content {
    fn default() -> Content {
        // "[]" is valid JSON, so the fallback (which `parts` would read as no parts too)
        // is never taken; it keeps this free of a panic path.
        Content(
            serde_json::value::RawValue::from_string("[]".to_owned())
                .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned()),
        )
    }
}

impl From<Vec<Value>> for Content {
    fn from(parts: Vec<Value>) -> Content {
        Content::from_parts(&parts)
    }
}

/// Equal when the parts are: two serializations of the same parts may differ in spacing.
impl PartialEq for Content {
    fn eq(&self, other: &Content) -> bool {
        self.0.get() == other.0.get() || self.parts() == other.parts()
    }
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.get())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, prompt: u64, completion: u64) {
        self.prompt_tokens += prompt;
        self.completion_tokens += completion;
        self.total_tokens = self.prompt_tokens + self.completion_tokens;
    }
}

/// Run statuses, exactly the enum of the spec (never invent one: Node pollers spin on them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    InProgress,
    RequiresAction,
    Cancelling,
    Cancelled,
    Failed,
    Completed,
    Incomplete,
    Expired,
}

impl RunStatus {
    /// Non-terminal runs lock their thread.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunStatus::Queued
                | RunStatus::InProgress
                | RunStatus::RequiresAction
                | RunStatus::Cancelling
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::InProgress => "in_progress",
            RunStatus::RequiresAction => "requires_action",
            RunStatus::Cancelling => "cancelling",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Failed => "failed",
            RunStatus::Completed => "completed",
            RunStatus::Incomplete => "incomplete",
            RunStatus::Expired => "expired",
        }
    }
}

/// Run step statuses, the spec's enum. A stored step with any other status fails to load
/// (serde) rather than being read as one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    InProgress,
    Cancelled,
    Failed,
    Completed,
    Expired,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::InProgress => "in_progress",
            StepStatus::Cancelled => "cancelled",
            StepStatus::Failed => "failed",
            StepStatus::Completed => "completed",
            StepStatus::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub object: String,
    pub created_at: i64,
    pub thread_id: String,
    pub assistant_id: String,
    pub status: RunStatus,
    pub required_action: Option<Value>,
    pub last_error: Option<Value>,
    pub expires_at: Option<i64>,
    pub started_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub incomplete_details: Option<Value>,
    pub model: String,
    pub instructions: String,
    pub tools: Vec<Value>,
    pub metadata: Metadata,
    pub usage: Option<Usage>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_prompt_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub truncation_strategy: Value,
    pub tool_choice: Value,
    pub parallel_tool_calls: bool,
    pub response_format: Value,
}

/// A run plus what the engine needs and clients never see: the optimistic-concurrency
/// version every transition checks, the executing proxy's lease, and engine state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run: Run,
    /// Incremented by every write; a write names the version it read (compare-and-set).
    pub version: u64,
    /// Which proxy instance executes the run now.
    pub lease_owner: Option<String>,
    /// Unix milliseconds after which another instance may take the run over.
    pub lease_until: Option<i64>,
    /// Engine-private state (e.g. the include[] options, the vector stores searched).
    #[serde(default)]
    pub state: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStep {
    pub id: String,
    pub object: String,
    pub created_at: i64,
    pub assistant_id: String,
    pub thread_id: String,
    pub run_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: StepStatus,
    pub step_details: Value,
    pub last_error: Option<Value>,
    pub expired_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub metadata: Metadata,
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileObject {
    pub id: String,
    pub object: String,
    pub bytes: u64,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    pub filename: String,
    pub purpose: String,
    pub status: String,
    #[serde(default)]
    pub status_details: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCounts {
    pub in_progress: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub total: u64,
}

impl FileCounts {
    pub fn count(&mut self, status: &str) {
        match status {
            "in_progress" => self.in_progress += 1,
            "completed" => self.completed += 1,
            "failed" => self.failed += 1,
            "cancelled" => self.cancelled += 1,
            _ => {}
        }
        self.total += 1;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpiresAfter {
    pub anchor: String,
    pub days: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorStore {
    pub id: String,
    pub object: String,
    pub created_at: i64,
    pub name: Option<String>,
    /// Derived from the store's files when read.
    pub usage_bytes: u64,
    /// Derived from the store's files when read.
    pub file_counts: FileCounts,
    pub status: String,
    pub expires_after: Option<ExpiresAfter>,
    pub expires_at: Option<i64>,
    pub last_active_at: Option<i64>,
    pub metadata: Metadata,
    /// Embedding model used for this store's chunks (stored; stripped from the wire object).
    #[serde(default)]
    pub embedding_model: String,
    /// Embedding dimension, known once the first chunk is embedded (0 before; stored;
    /// stripped from the wire object).
    #[serde(default)]
    pub dimensions: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorStoreFile {
    pub id: String,
    pub object: String,
    pub usage_bytes: u64,
    pub created_at: i64,
    pub vector_store_id: String,
    pub status: String,
    pub last_error: Option<Value>,
    pub chunking_strategy: Value,
    pub attributes: Option<Attributes>,
    /// The batch that added the file, if any (stored; stripped from the wire object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// While `in_progress`: Unix seconds until which the ingesting proxy holds the file. A
    /// reader that finds it past this time knows the ingestion died (e.g. a restart) and marks
    /// the file failed, so nothing stays `in_progress` forever (stored; stripped from the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_lease_until: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileBatch {
    pub id: String,
    pub object: String,
    pub created_at: i64,
    pub vector_store_id: String,
    pub status: String,
    /// Derived from the batch's files when read.
    pub file_counts: FileCounts,
    /// Set when the caller cancelled the batch (stored; stripped from the wire object).
    #[serde(default, skip_serializing_if = "is_false")]
    pub cancel_requested: bool,
}

/// One embedded piece of a file inside a vector store.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub vector_store_id: String,
    pub file_id: String,
    /// Position of the chunk in its file, from 0.
    pub index: u32,
    pub text: String,
    pub embedding: Vec<f32>,
    /// The file's attributes, copied so search can filter without a join.
    pub attributes: Attributes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScoredChunk {
    pub vector_store_id: String,
    pub file_id: String,
    pub index: u32,
    pub text: String,
    pub attributes: Attributes,
    /// Cosine similarity in [-1, 1].
    pub score: f32,
}

/// Attribute filters of vector-store search (comparison and compound, recursively).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttributeFilter {
    Compound {
        #[serde(rename = "type")]
        op: CompoundOp,
        filters: Vec<AttributeFilter>,
    },
    Comparison {
        #[serde(rename = "type")]
        op: ComparisonOp,
        key: String,
        value: Value,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompoundOp {
    And,
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComparisonOp {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    Nin,
}

impl AttributeFilter {
    /// Whether a file's attributes satisfy the filter. A missing key fails every comparison
    /// except `ne` and `nin`.
    pub fn matches(&self, attrs: &Attributes) -> bool {
        match self {
            AttributeFilter::Compound { op, filters } => match op {
                CompoundOp::And => filters.iter().all(|f| f.matches(attrs)),
                CompoundOp::Or => filters.iter().any(|f| f.matches(attrs)),
            },
            AttributeFilter::Comparison { op, key, value } => {
                let actual = attrs.get(key);
                match op {
                    ComparisonOp::Eq => actual.is_some_and(|a| values_equal(a, value)),
                    ComparisonOp::Ne => !actual.is_some_and(|a| values_equal(a, value)),
                    ComparisonOp::Gt => compare(actual, value).is_some_and(|o| o.is_gt()),
                    ComparisonOp::Gte => compare(actual, value).is_some_and(|o| o.is_ge()),
                    ComparisonOp::Lt => compare(actual, value).is_some_and(|o| o.is_lt()),
                    ComparisonOp::Lte => compare(actual, value).is_some_and(|o| o.is_le()),
                    ComparisonOp::In => actual.is_some_and(|a| in_list(a, value)),
                    ComparisonOp::Nin => !actual.is_some_and(|a| in_list(a, value)),
                }
            }
        }
    }
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn in_list(a: &Value, list: &Value) -> bool {
    match list {
        Value::Array(items) => items.iter().any(|v| values_equal(a, v)),
        other => values_equal(a, other),
    }
}

fn compare(actual: Option<&Value>, wanted: &Value) -> Option<std::cmp::Ordering> {
    let actual = actual?;
    match (actual, wanted) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn step_statuses_read_back_as_written_and_unknown_ones_are_refused() {
        for st in [
            StepStatus::InProgress,
            StepStatus::Cancelled,
            StepStatus::Failed,
            StepStatus::Completed,
            StepStatus::Expired,
        ] {
            let v = serde_json::to_value(st).unwrap();
            assert_eq!(v, json!(st.as_str()));
            assert_eq!(serde_json::from_value::<StepStatus>(v).unwrap(), st);
        }
        // Before the enum, a typo here was closed as `expired`.
        assert!(serde_json::from_value::<StepStatus>(json!("expird")).is_err());
    }

    fn stored_message(role: &str, content: Value) -> String {
        json!({
            "id": "msg_1", "object": "thread.message", "created_at": 1, "thread_id": "thread_1",
            "status": "completed", "incomplete_details": null, "completed_at": 1,
            "incomplete_at": null, "role": role, "content": content, "assistant_id": null,
            "run_id": null, "attachments": [], "metadata": {},
        })
        .to_string()
    }

    #[test]
    fn content_round_trips_byte_for_byte_and_decodes_on_demand() {
        let parts = json!([
            {"type": "text", "text": {"value": "a \"quoted\" é", "annotations": []}},
            {"type": "refusal", "refusal": "no"},
            {"type": "image_file", "image_file": {"file_id": "file-1"}},
        ]);
        let m: Message = serde_json::from_str(&stored_message("user", parts.clone())).unwrap();
        assert_eq!(m.content.parts(), parts.as_array().unwrap().clone());
        assert_eq!(m.content.texts(false), ["a \"quoted\" é"]);
        assert_eq!(m.content.texts(true), ["a \"quoted\" é", "no"]);
        // Written back out, the content is the stored text itself.
        assert_eq!(
            serde_json::to_string(&m.content).unwrap(),
            parts.to_string()
        );
        let again = serde_json::to_value(&m).unwrap();
        assert_eq!(again["content"], parts);
        assert_eq!(m.content, Content::from(parts.as_array().unwrap().clone()));
        assert_eq!(Content::default().parts(), Vec::<Value>::new());
        assert_eq!(serde_json::to_string(&Content::default()).unwrap(), "[]");
    }

    #[test]
    fn common_words_decode_to_static_copies_and_others_are_kept() {
        let m: Message = serde_json::from_str(&stored_message("assistant", json!([]))).unwrap();
        assert!(matches!(m.role, Cow::Borrowed("assistant")));
        assert!(matches!(m.status, Cow::Borrowed("completed")));
        assert!(matches!(m.object, Cow::Borrowed("thread.message")));
        let m: Message = serde_json::from_str(&stored_message("tool", json!([]))).unwrap();
        assert_eq!(m.role, "tool");
        // An escaped spelling still decodes to the same word.
        let escaped = stored_message("user", json!([])).replace("\"user\"", "\"us\\u0065r\"");
        let m: Message = serde_json::from_str(&escaped).unwrap();
        assert_eq!(m.role, "user");
    }

    #[test]
    fn filters_follow_openai_semantics() {
        let attrs: Attributes = json!({"author": "ann", "year": 2024, "draft": false})
            .as_object()
            .unwrap()
            .clone();
        let f = |v: Value| serde_json::from_value::<AttributeFilter>(v).unwrap();
        assert!(f(json!({"type":"eq","key":"author","value":"ann"})).matches(&attrs));
        assert!(f(json!({"type":"ne","key":"author","value":"bob"})).matches(&attrs));
        assert!(f(json!({"type":"gte","key":"year","value":2024})).matches(&attrs));
        assert!(!f(json!({"type":"gt","key":"year","value":2024.5})).matches(&attrs));
        assert!(f(json!({"type":"in","key":"author","value":["bob","ann"]})).matches(&attrs));
        assert!(f(json!({"type":"nin","key":"missing","value":["x"]})).matches(&attrs));
        assert!(!f(json!({"type":"eq","key":"missing","value":"x"})).matches(&attrs));
        assert!(f(json!({"type":"eq","key":"draft","value":false})).matches(&attrs));
        let compound = f(json!({"type":"and","filters":[
            {"type":"eq","key":"author","value":"ann"},
            {"type":"or","filters":[{"type":"lt","key":"year","value":2000},{"type":"eq","key":"draft","value":false}]}
        ]}));
        assert!(compound.matches(&attrs));
    }

    #[test]
    fn run_status_serializes_as_the_spec_enum() {
        assert_eq!(
            serde_json::to_value(RunStatus::RequiresAction).unwrap(),
            "requires_action"
        );
        assert!(RunStatus::Cancelling.is_active());
        assert!(!RunStatus::Incomplete.is_active());
    }
}
