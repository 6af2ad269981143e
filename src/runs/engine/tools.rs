//! The tool calls of a turn: file_search and code_interpreter run here, in the proxy;
//! client functions become the run's `required_action`.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::code::run_code;
use super::lease::Held;
use super::record::{Commit, transition_from, with_state};
use super::turn::{Env, Prepared};
use super::{TurnEnd, emit};
use crate::error::Error;
use crate::model::{StepStatus, Usage};
use crate::runs::Stop;
use crate::runs::code_args::CodeArgs;
use crate::runs::engine_state::EngineState;
use crate::runs::events::Event;
use crate::runs::file_search;
use crate::runs::translate::{ToolCall, ToolKind, Turn};
use crate::upstream::chat::CallError;

/// The model called tools: runs file_search and code_interpreter now; client functions
/// wait for outputs.
pub(super) async fn tool_calls(
    env: &Env<'_>,
    held: &mut Held,
    prep: &Prepared,
    turn: &Turn,
    calls: &[ToolCall],
    usage: Usage,
    now: i64,
) -> Result<TurnEnd, Error> {
    let mut results = match run_searches(env, held, prep, calls).await? {
        Ok(results) => results,
        Err(end) => return Ok(end),
    };
    if let Err(end) = run_codes(env, held, prep, turn, calls, &mut results).await? {
        return Ok(end);
    }
    let Some(mut step) =
        turn.tool_step_with_calls(&|c| results.get(&c.id).cloned().unwrap_or(json!({})))
    else {
        return Ok(TurnEnd::Answered);
    };
    let (r, runs) = (env.r, &env.r.store.runs);
    let functions = function_calls(calls);
    if functions.is_empty() {
        step.status = StepStatus::Completed;
        step.completed_at = Some(now);
        step.usage = Some(usage);
        runs.put_step(&r.tenant, &step).await?;
        emit(env.sink, Event::step_now(step));
        Ok(TurnEnd::Searched)
    } else {
        // The step waits for the client's outputs, `in_progress`: its usage is shown once it
        // completes (OpenAI's steps carry none before), so the run keeps it until then.
        runs.put_step(&r.tenant, &step).await?;
        Ok(TurnEnd::NeedsOutputs(functions))
    }
}

/// The client functions among the turn's tool calls, as `required_action` lists them.
fn function_calls(calls: &[ToolCall]) -> Vec<Value> {
    calls
        .iter()
        .filter(|c| c.kind == ToolKind::Function)
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
        .collect()
}

/// Runs the turn's file_search calls; their step details by call id, or how the turn ends
/// instead (stopped, or a search failed). The calls' arguments are recorded in the run's
/// engine state, for the prompts of later turns.
async fn run_searches(
    env: &Env<'_>,
    held: &mut Held,
    prep: &Prepared,
    calls: &[ToolCall],
) -> Result<Result<HashMap<String, Value>, TurnEnd>, Error> {
    let (offer_stores, ranking) = match &prep.fs {
        Some((_, stores, opts)) => (stores.clone(), opts.clone()),
        None => (Vec::new(), Value::Null),
    };
    let mut results = HashMap::new();
    let mut args_state = serde_json::Map::new();
    for c in calls.iter().filter(|c| c.kind == ToolKind::FileSearch) {
        let query = file_search::query_of(&c.arguments, &prep.messages);
        let hits = tokio::select! {
            hits = file_search::search(env.state, env.caller, &offer_stores, &query, &ranking) => hits,
            () = env.signal.stopped() => {
                let stop = env.signal.reason().unwrap_or(Stop::Cancel);
                return Ok(Err(TurnEnd::Stopped(stop)));
            }
        };
        let hits = match hits {
            Ok(h) => h,
            Err(e) => {
                let e = CallError::server(format!("file_search failed: {e}"));
                return Ok(Err(TurnEnd::Failed(e)));
            }
        };
        results.insert(c.id.clone(), file_search::step_details(&ranking, &hits));
        args_state.insert(c.id.clone(), json!(c.arguments));
    }
    if !args_state.is_empty() {
        let name = prep
            .fs
            .as_ref()
            .map(|(o, _, _)| o.name.clone())
            .unwrap_or_default();
        record_state(env, held, |st| {
            st.file_search_name = Some(name.clone());
            st.file_search_args.extend(args_state.clone());
        })
        .await?;
    }
    Ok(Ok(results))
}

/// Records a change to the run's engine state (a progress write) and keeps `held` up to
/// date with the record written.
async fn record_state(
    env: &Env<'_>,
    held: &mut Held,
    change: impl Fn(&mut EngineState),
) -> Result<(), Error> {
    let written = transition_from(env.r, Some(held.rec.clone()), Commit::Progress, |rec| {
        with_state(rec, &change)
    })
    .await?;
    if let Some((rec, true)) = written {
        held.rec = rec;
    }
    Ok(())
}

/// Runs the turn's code_interpreter calls one after another (a session runs one cell at a
/// time; parallel calls share the thread's state, in the order the model gave them), adding
/// each call's step details to `results` by call id. What the model was told and the files
/// written are recorded in the run's engine state, for later turns' prompts and the
/// answer's `file_path` annotations.
async fn run_codes(
    env: &Env<'_>,
    held: &mut Held,
    prep: &Prepared,
    turn: &Turn,
    calls: &[ToolCall],
    results: &mut HashMap<String, Value>,
) -> Result<Result<(), TurnEnd>, Error> {
    let code_calls: Vec<&ToolCall> = calls
        .iter()
        .filter(|c| c.kind == ToolKind::CodeInterpreter)
        .collect();
    let (Some(offer), Some(step)) = (&prep.code, turn.tool_step()) else {
        return Ok(Ok(()));
    };
    if code_calls.is_empty() {
        return Ok(Ok(()));
    }
    let engine = EngineState::of(&held.rec)?;
    let mut had_state = !engine.code_outputs.is_empty();
    let max = env.state.interpreter.config().max_run_output_bytes;
    let mut used = engine.code_output_bytes;
    let mut told = serde_json::Map::new();
    let mut files = serde_json::Map::new();
    let mut outcome = Ok(());
    // The step shows its calls while they run (and keeps them if the run is stopped
    // meanwhile): each code call with its input, outputs filled in as calls finish.
    let show = |results: &HashMap<String, Value>| {
        turn.tool_step_with_calls(&|c| {
            results.get(&c.id).cloned().unwrap_or_else(|| match c.kind {
                ToolKind::CodeInterpreter => {
                    json!({"input": CodeArgs::finish(&c.arguments), "outputs": []})
                }
                _ => json!({}),
            })
        })
    };
    let (r, runs) = (env.r, &env.r.store.runs);
    if let Some(s) = show(results) {
        runs.put_step_progress(&r.tenant, &s).await?;
    }
    for c in code_calls {
        match run_code(env, &step.id, offer, c, had_state, max.saturating_sub(used)).await? {
            Ok(done) => {
                results.insert(c.id.clone(), done.details);
                if let Some(s) = show(results) {
                    runs.put_step_progress(&r.tenant, &s).await?;
                }
                told.insert(c.id.clone(), json!(done.told));
                for (path, id) in done.files {
                    files.insert(path, json!(id));
                }
                used += done.bytes;
                had_state = true;
            }
            Err(end) => {
                outcome = Err(end);
                break;
            }
        }
    }
    if !told.is_empty() {
        record_state(env, held, |st| {
            st.code_outputs.extend(told.clone());
            st.code_files.extend(files.clone());
            st.code_output_bytes = used;
        })
        .await?;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::engine::test_call as call;

    #[test]
    fn only_client_functions_are_required_actions() {
        let calls = [
            call("c1", "file_search", r#"{"query":"q"}"#, true),
            call("c2", "get_weather", r#"{"city":"Oslo"}"#, false),
        ];
        assert_eq!(
            function_calls(&calls),
            vec![json!({
                "id": "c2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": r#"{"city":"Oslo"}"#},
            })]
        );
        assert!(function_calls(&calls[..1]).is_empty());
    }
}
