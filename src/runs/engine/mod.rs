//! Executes one run: claims it (a lease in the run record), then turn by turn builds the
//! prompt, streams the upstream completion, translates it into events, persists messages and
//! steps, runs file_search itself, and ends the run — or stops at `requires_action` when the
//! model calls the client's functions. Everything is persisted on each transition, so a
//! client that disconnects, or a proxy that dies, loses nothing that was acknowledged.

mod closing;
mod code;
mod history;
mod lease;
mod record;
mod retry;
mod tools;
mod turn;

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use self::closing::{Ending, end_run, stop_run};
use self::lease::{Held, await_thread_store, renew, stop_for};
use self::record::with_state;
use self::turn::one_turn;
use super::events::Event;
use super::state::{self as machine, RunEvent};
use super::{Stop, StopSignal};
use crate::error::Error;
use crate::model::{RunRecord, RunStatus, StepStatus, Usage};
use crate::runs::Runs;
use crate::store::{Store, Tenant};
use crate::tenancy::Caller;
use crate::upstream::chat::CallError;

pub use self::closing::{Unfinished, close_open_items, end_unfinished, finalize_cancel};
pub use self::record::{Apply, Commit, finish_run, transition, transition_from, usage_of};

/// Where a run's events go: the SSE response of the request that (re)started the run, if
/// it asked to stream. Unbounded because a run's events are finite and the engine must never
/// wait on a slow client.
pub type Sink = mpsc::UnboundedSender<Event>;

/// Turns one run may take (each file_search round trip is a turn); a guard against a model
/// that searches forever.
const MAX_TURNS: usize = 16;

pub fn emit(sink: &Option<Sink>, event: Event) {
    if let Some(s) = sink {
        // A closed receiver means the client left; the run goes on regardless.
        let _ = s.send(event);
    }
}

/// Identifies the run being executed.
#[derive(Clone)]
pub struct RunRef {
    /// The database the run lives in (the caller's, which may be an Astra database).
    pub store: Store,
    pub tenant: Tenant,
    pub thread_id: String,
    pub run_id: String,
}

/// How a turn ended.
pub(super) enum TurnEnd {
    /// The model answered; the run is complete.
    Answered,
    /// The model called file_search only; search results were recorded; take another turn.
    Searched,
    /// The model called client functions: wait for tool outputs.
    NeedsOutputs(Vec<Value>),
    /// A token limit stopped the answer.
    Incomplete(&'static str),
    Failed(CallError),
    /// The engine must stop driving the run (cancel, expiry, shutdown, or it is no longer
    /// this engine's).
    Stopped(Stop),
}

/// Runs the engine for one run, until it completes, fails, is cancelled, or needs outputs.
/// `start` is the record as the caller just wrote it (queued), which saves the claim a read.
pub async fn execute(
    state: Arc<Runs>,
    caller: Caller,
    r: RunRef,
    start: Option<RunRecord>,
    sink: Option<Sink>,
) {
    let (signal, _guard) = state.registry.enter(&r.run_id, &state.shutdown);
    if let Err(e) = drive(&state, &caller, &r, start, &sink, &signal).await {
        tracing::error!(run_id = %r.run_id, error = %e, "run failed inside the proxy");
        let now = state.clock.now();
        let last_error = json!({"code": "server_error", "message": format!("The proxy failed while executing the run: {e}")});
        let _ = close_open_items(
            &r,
            StepStatus::Failed,
            "run_failed",
            Some(&last_error),
            now,
            &sink,
        )
        .await;
        if let Ok(Some((rec, true))) = transition(&r, |rec| {
            // A cancel asked for ends `cancelled` (the sweeper finishes it once this engine's
            // lease runs out); a run waiting for outputs, or ended, has nothing to fail.
            if let Err(e) = machine::next(rec.run.status, RunEvent::Fail) {
                tracing::warn!(run_id = %r.run_id, error = %e, "run left as it is");
                return Apply::Skip;
            }
            rec.run.last_error = Some(last_error.clone());
            finish_run(rec, RunEvent::Fail, now)
        })
        .await
        {
            emit(&sink, Event::run_now(rec.run));
        }
    }
    emit(&sink, Event::Done);
}

async fn drive(
    state: &Arc<Runs>,
    caller: &Caller,
    r: &RunRef,
    start: Option<RunRecord>,
    sink: &Option<Sink>,
    signal: &StopSignal,
) -> Result<(), Error> {
    let Some(mut held) = claim(state, r, start, sink).await? else {
        // Claimed (or resolved) elsewhere first: say how it ends there.
        closing::follow_elsewhere(state, r, sink).await;
        return Ok(());
    };

    // A run that may search its thread's store first waits for that store (spec §7.2); an
    // expired store or a cancel ends the run through the same arms as a turn would.
    let mut before = await_thread_store(state, caller, r, &mut held, signal).await?;
    for _ in 0..MAX_TURNS {
        let (end, usage, closing) = match before.take() {
            Some(end) => (end, Usage::default(), Vec::new()),
            None => one_turn(state, caller, r, &mut held, sink, signal).await?,
        };
        let now = state.clock.now();
        let known = held.rec.clone();
        match end {
            TurnEnd::Searched => {
                // Record the turn's usage, renew the lease, and pick up concurrent changes (a
                // cancel) between turns, in one write.
                if let Some(stop) = renew(state, r, &mut held, Some(usage)).await? {
                    return stop_run(state, r, sink, stop).await;
                }
            }
            TurnEnd::Answered => {
                let mut end = Ending::new(RunEvent::Complete, usage);
                end.closing = closing;
                return end_run(state, r, known, sink, end).await;
            }
            TurnEnd::Incomplete(reason) => {
                let mut end = Ending::new(RunEvent::Incomplete, usage);
                end.incomplete = Some(json!({"reason": reason}));
                end.closing = closing;
                return end_run(state, r, known, sink, end).await;
            }
            TurnEnd::Failed(e) => {
                let last_error = json!({"code": e.code, "message": e.message});
                close_open_items(
                    r,
                    StepStatus::Failed,
                    "run_failed",
                    Some(&last_error),
                    now,
                    sink,
                )
                .await?;
                let mut end = Ending::new(RunEvent::Fail, usage);
                end.last_error = Some(last_error);
                return end_run(state, r, known, sink, end).await;
            }
            TurnEnd::Stopped(stop) => return stop_run(state, r, sink, stop).await,
            TurnEnd::NeedsOutputs(calls) => {
                return await_outputs(state, r, known, sink, usage, calls).await;
            }
        }
    }
    let mut end = Ending::new(RunEvent::Fail, Usage::default());
    end.last_error = Some(
        json!({"code": "server_error", "message": format!("The run stopped after {MAX_TURNS} tool rounds without an answer.")}),
    );
    end_run(state, r, held.rec, sink, end).await
}

/// Claims the run: queued → in_progress, with this proxy's lease. None if someone else has
/// taken it up or ended it (a cancel that came first is finished here).
async fn claim(
    state: &Runs,
    r: &RunRef,
    start: Option<RunRecord>,
    sink: &Option<Sink>,
) -> Result<Option<Held>, Error> {
    let lease_ms = state.config.lease.as_millis() as i64;
    let now = state.clock.now();
    let claimed = transition_from(r, start, Commit::Progress, |rec| {
        // Refused: someone else has taken the run up or ended it.
        if machine::advance(&mut rec.run, RunEvent::Claim).is_err() {
            return Apply::Skip;
        }
        rec.run.started_at.get_or_insert(now);
        rec.lease_owner = Some(state.instance_id.clone());
        rec.lease_until = Some(state.clock.now_millis() + lease_ms);
        Apply::Write
    })
    .await?;
    let Some((rec, true)) = claimed else {
        if let Some((rec, _)) = claimed
            && rec.run.status == RunStatus::Cancelling
        {
            finalize_cancel(state, r, sink).await?;
        }
        return Ok(None);
    };
    emit(sink, Event::run_now(rec.run.clone()));
    tracing::debug!(run_id = %r.run_id, "run claimed");
    Ok(Some(Held::new(rec)))
}

/// requires_action: the run waits for the client's outputs of `calls`, holding no lease.
async fn await_outputs(
    state: &Runs,
    r: &RunRef,
    known: RunRecord,
    sink: &Option<Sink>,
    usage: Usage,
    calls: Vec<Value>,
) -> Result<(), Error> {
    let written = transition_from(r, Some(known), Commit::Durable, |rec| {
        // Refused: a cancel, or someone else resolved the run (stop_for).
        if machine::advance(&mut rec.run, RunEvent::NeedOutputs).is_err() {
            return Apply::Skip;
        }
        if let Apply::Skip = with_state(rec, |st| {
            st.add_usage(usage);
            st.tool_step_usage = Some(usage);
        }) {
            return Apply::Skip;
        }
        rec.run.required_action = Some(json!({
            "type": "submit_tool_outputs",
            "submit_tool_outputs": {"tool_calls": calls},
        }));
        rec.run.usage = Some(usage_of(rec));
        rec.lease_owner = None;
        rec.lease_until = None;
        Apply::Write
    })
    .await?;
    match written {
        Some((rec, true)) => emit(sink, Event::run_now(rec.run)),
        Some((rec, false)) => return stop_run(state, r, sink, stop_for(state, &rec)).await,
        None => {}
    }
    Ok(())
}

/// A run record in `status` with an empty engine state, for the unit tests of the engine's
/// pure steps.
#[cfg(test)]
fn test_record(status: &str) -> RunRecord {
    let run = json!({
        "id": "run_a", "object": "thread.run", "created_at": 1, "thread_id": "thread_a",
        "assistant_id": "asst_a", "status": status, "required_action": null,
        "last_error": null, "expires_at": 50, "started_at": 2, "cancelled_at": null,
        "failed_at": null, "completed_at": null, "incomplete_details": null, "model": "m",
        "instructions": "", "tools": [], "metadata": {}, "usage": null, "temperature": null,
        "top_p": null, "max_prompt_tokens": null, "max_completion_tokens": null,
        "truncation_strategy": null, "tool_choice": null, "parallel_tool_calls": true,
        "response_format": null,
    });
    let rec = json!({"run": run, "version": 3, "lease_owner": "me", "lease_until": 9, "state": {}});
    serde_json::from_value(rec).unwrap()
}

/// A tool call the model made, for the unit tests of the engine's pure steps.
#[cfg(test)]
fn test_call(
    id: &str,
    name: &str,
    arguments: &str,
    file_search: bool,
) -> crate::runs::translate::ToolCall {
    crate::runs::translate::ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: arguments.into(),
        kind: if file_search {
            crate::runs::translate::ToolKind::FileSearch
        } else {
            crate::runs::translate::ToolKind::Function
        },
        index: 0,
    }
}
