//! Test fixtures of the run engine's unit tests: a run record as the store returns it.

use serde_json::{Value, json};

use crate::model::RunRecord;

/// A queued run `run_a` of `thread_a` with every field of OpenAI's Run, and `state` as the
/// engine's own memory (`RunRecord.state`).
pub(crate) fn record(state: Value) -> RunRecord {
    let rec = json!({
        "run": {
            "id": "run_a", "object": "thread.run", "created_at": 1, "thread_id": "thread_a",
            "assistant_id": "asst_a", "status": "queued", "required_action": null,
            "last_error": null, "expires_at": null, "started_at": null,
            "cancelled_at": null, "failed_at": null, "completed_at": null,
            "incomplete_details": null, "model": "m", "instructions": "", "tools": [],
            "metadata": {}, "usage": null, "temperature": null, "top_p": null,
            "max_prompt_tokens": null, "max_completion_tokens": null,
            "truncation_strategy": null, "tool_choice": null,
            "parallel_tool_calls": true, "response_format": null,
        },
        "version": 1, "lease_owner": null, "lease_until": null, "state": state,
    });
    match serde_json::from_value(rec) {
        Ok(r) => r,
        Err(e) => panic!("the fixture is a valid run record: {e}"),
    }
}
