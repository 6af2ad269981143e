//! What the engine keeps about a run beside OpenAI's Run object (`RunRecord.state`), typed.
//! Stored as the same JSON object it always was (SQLite and Cassandra keep it as a document),
//! so records written before this type read back unchanged; keys this type does not know are
//! kept as they are.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::model::{RunRecord, Usage};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    /// The run's `include[]` asked for file_search result content.
    #[serde(default)]
    pub include_content: bool,
    /// Vector stores the run's own `tool_resources` add to its assistant's and thread's.
    #[serde(default)]
    pub vector_store_ids: Vec<String>,
    /// The `reasoning_effort` the run's chat requests carry (the run's own, or its
    /// assistant's; not a field of OpenAI's Run object).
    #[serde(default)]
    pub reasoning_effort: Option<String>,
    /// Usage accumulated over the run's upstream calls, until the run shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Spent>,
    /// The usage of the tool_calls step waiting for outputs, shown on the step when the
    /// outputs complete it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_step_usage: Option<Usage>,
    /// The name file_search was offered to the model under (`file_search`, or
    /// `proxy_file_search` when a client function has that name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_search_name: Option<String>,
    /// The arguments of each file_search call, by call id (the step shows results only).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub file_search_args: Map<String, Value>,
    /// What the model was told each code_interpreter call gave, by call id (the step
    /// shows logs and images; the model also saw the files' links).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub code_outputs: Map<String, Value>,
    /// The files this run's code wrote, by sandbox path (`/mnt/data/out.csv`) → file id:
    /// `sandbox:` links in the answer become `file_path` annotations.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub code_files: Map<String, Value>,
    /// Bytes of files this run's code has turned into Files so far (capped by
    /// `code_interpreter.max_run_output_mb`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub code_output_bytes: u64,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Tokens used so far (stored without a total).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spent {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl EngineState {
    /// The state `rec` carries (none yet: the defaults).
    pub fn of(rec: &RunRecord) -> Result<EngineState, Error> {
        if rec.state.is_null() {
            return Ok(EngineState::default());
        }
        serde_json::from_value(rec.state.clone()).map_err(|e| {
            Error::internal(format!(
                "run {} has unreadable engine state: {e}",
                rec.run.id
            ))
        })
    }

    /// Writes this state into `rec`.
    pub fn put(&self, rec: &mut RunRecord) -> Result<(), Error> {
        rec.state = serde_json::to_value(self)
            .map_err(|e| Error::internal(format!("engine state: {e}")))?;
        Ok(())
    }

    /// Usage accumulated over the run's upstream calls.
    pub fn usage(&self) -> Usage {
        let spent = self.usage.unwrap_or_default();
        let mut u = Usage::default();
        u.add(spent.prompt_tokens, spent.completion_tokens);
        u
    }

    pub fn add_usage(&mut self, turn: Usage) {
        let mut spent = self.usage.unwrap_or_default();
        spent.prompt_tokens += turn.prompt_tokens;
        spent.completion_tokens += turn.completion_tokens;
        self.usage = Some(spent);
    }
}

/// Reads, changes and writes back the engine state of `rec`.
pub fn update<T>(rec: &mut RunRecord, f: impl FnOnce(&mut EngineState) -> T) -> Result<T, Error> {
    let mut st = EngineState::of(rec)?;
    let out = f(&mut st);
    st.put(rec)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(state: Value) -> RunRecord {
        let mut rec = crate::runs::fixtures::record(state);
        rec.run.status = crate::model::RunStatus::InProgress;
        rec
    }

    /// A state as the engine wrote it before it had a type: every key it used.
    fn stored() -> Value {
        json!({
            "include_content": true,
            "vector_store_ids": ["vs_a"],
            "reasoning_effort": null,
            "usage": {"prompt_tokens": 12, "completion_tokens": 5},
            "tool_step_usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
            "file_search_name": "proxy_file_search",
            "file_search_args": {"call_1": "{\"query\":\"x\"}"},
        })
    }

    #[test]
    fn a_stored_state_round_trips_unchanged() {
        for state in [
            stored(),
            // As a run is created.
            json!({"include_content": false, "vector_store_ids": [], "reasoning_effort": "low"}),
        ] {
            let mut rec = record(state.clone());
            let st = EngineState::of(&rec).unwrap();
            st.put(&mut rec).unwrap();
            assert_eq!(rec.state, state);
        }
        let st = EngineState::of(&record(stored())).unwrap();
        assert_eq!(st.usage().total_tokens, 17);
        assert_eq!(st.tool_step_usage.unwrap().total_tokens, 9);
        assert_eq!(st.file_search_args["call_1"], "{\"query\":\"x\"}");
    }

    #[test]
    fn unknown_keys_are_kept_and_a_missing_state_is_the_default() {
        let mut rec =
            record(json!({"usage": {"prompt_tokens": 1, "completion_tokens": 1}, "later": [1]}));
        update(&mut rec, |st| {
            st.add_usage(Usage {
                prompt_tokens: 2,
                completion_tokens: 3,
                total_tokens: 5,
            })
        })
        .unwrap();
        assert_eq!(rec.state["later"], json!([1]));
        assert_eq!(
            rec.state["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 4})
        );

        let rec = record(Value::Null);
        assert_eq!(EngineState::of(&rec).unwrap(), EngineState::default());
        assert!(EngineState::of(&record(json!({"usage": "lots"}))).is_err());
    }
}
