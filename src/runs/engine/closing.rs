//! Ending a run: finishing it (answered, incomplete, failed), or ending one that will not be
//! finished (cancelled, expired, failed by the proxy), closing its open steps and message.

use std::time::Duration;

use serde_json::{Value, json};

use super::record::{Apply, Commit, finish_run, transition, transition_from, with_state};
use super::turn::persist;
use super::{RunRef, Sink, emit};
use crate::error::Error;
use crate::model::{RunRecord, RunStatus, StepStatus, Usage};
use crate::runs::Runs;
use crate::runs::Stop;
use crate::runs::events::{Event, MessageNews};
use crate::runs::state::RunEvent;

/// Ends the run's open message and steps after a failure, cancel or expiry, keeping what was
/// produced (the message becomes `incomplete`).
pub async fn close_open_items(
    r: &RunRef,
    step_status: StepStatus,
    message_reason: &str,
    last_error: Option<&Value>,
    now: i64,
    sink: &Option<Sink>,
) -> Result<(), Error> {
    let steps = super::history::run_steps(r).await?;
    for mut s in steps
        .into_iter()
        .filter(|s| s.status == StepStatus::InProgress)
    {
        if s.kind == "message_creation"
            && let Some(mid) = s.step_details["message_creation"]["message_id"].as_str()
            && let Some(mut m) = r
                .store
                .messages
                .get_message(&r.tenant, &r.thread_id, mid)
                .await?
            && m.status == "in_progress"
        {
            m.status = "incomplete".into();
            m.incomplete_at = Some(now);
            m.incomplete_details = Some(json!({"reason": message_reason}));
            r.store.messages.put_message(&r.tenant, &m).await?;
            emit(sink, Event::Message(MessageNews::Incomplete, Box::new(m)));
        }
        s.status = step_status;
        match step_status {
            StepStatus::Failed => {
                s.failed_at = Some(now);
                s.last_error = last_error.cloned();
            }
            StepStatus::Cancelled => s.cancelled_at = Some(now),
            StepStatus::Expired => s.expired_at = Some(now),
            StepStatus::InProgress | StepStatus::Completed => {}
        }
        r.store.runs.put_step(&r.tenant, &s).await?;
        emit(sink, Event::step_now(s));
    }
    Ok(())
}

/// How a run ends: the event that ends it, what the last turn used, why, and the completion
/// events of the final answer (message and step), written beside the run's end.
pub(super) struct Ending {
    pub(super) event: RunEvent,
    pub(super) usage: Usage,
    pub(super) last_error: Option<Value>,
    pub(super) incomplete: Option<Value>,
    pub(super) closing: Vec<Event>,
}

impl Ending {
    pub(super) fn new(event: RunEvent, usage: Usage) -> Ending {
        Ending {
            event,
            usage,
            last_error: None,
            incomplete: None,
            closing: Vec::new(),
        }
    }
}

/// Ends the run with a terminal status (unless a cancel won the race), adding the last turn's
/// usage in the same write.
pub(super) async fn end_run(
    state: &Runs,
    r: &RunRef,
    known: RunRecord,
    sink: &Option<Sink>,
    mut end: Ending,
) -> Result<(), Error> {
    let now = state.clock.now();
    let mut cancelled = false;
    let closing = std::mem::take(&mut end.closing);
    // The answer's message and step, and the run's end, go out together (one commit on
    // SQLite). Should a cancel win the race, the answer was still given in full: the message
    // stays completed and the run becomes cancelled.
    let ending = transition_from(r, Some(known), Commit::Durable, |rec| {
        cancelled = false;
        match rec.run.status {
            RunStatus::InProgress => {}
            RunStatus::Cancelling => {
                cancelled = true;
                return Apply::Skip;
            }
            _ => return Apply::Skip,
        }
        if let Apply::Skip = with_state(rec, |st| st.add_usage(end.usage)) {
            return Apply::Skip;
        }
        rec.run.last_error = end.last_error.clone();
        rec.run.incomplete_details = end.incomplete.clone();
        finish_run(rec, end.event, now)
    });
    let (persisted, written) = tokio::join!(persist(r, &closing), ending);
    persisted?;
    let written = written?;
    for ev in closing {
        emit(sink, ev);
    }
    if cancelled {
        return finalize_cancel(state, r, sink).await;
    }
    if let Some((rec, true)) = written {
        emit(sink, Event::run_now(rec.run));
    }
    Ok(())
}

/// How a run that will not be finished ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unfinished {
    Cancelled,
    Expired,
    /// Failed by the proxy (shut down, or its executor is gone).
    Failed,
}

impl Unfinished {
    pub fn event(self) -> RunEvent {
        match self {
            Unfinished::Cancelled => RunEvent::Cancelled,
            Unfinished::Expired => RunEvent::Expire,
            Unfinished::Failed => RunEvent::Fail,
        }
    }

    /// What the run's open steps become, and the `incomplete_details.reason` of its open
    /// message.
    pub fn labels(self) -> (StepStatus, &'static str) {
        match self {
            Unfinished::Cancelled => (StepStatus::Cancelled, "run_cancelled"),
            Unfinished::Expired => (StepStatus::Expired, "run_expired"),
            Unfinished::Failed => (StepStatus::Failed, "run_failed"),
        }
    }
}

/// Ends a run that will not be finished (cancelled, expired, or failed by the proxy): closes
/// its open message (`incomplete`) and steps, then ends the run `how` if it is still in one
/// of `from` (the statuses the caller may end it from: whoever else holds it ends it itself).
pub async fn end_unfinished(
    state: &Runs,
    r: &RunRef,
    sink: &Option<Sink>,
    from: &[RunStatus],
    how: Unfinished,
    last_error: Option<Value>,
) -> Result<(), Error> {
    let now = state.clock.now();
    let (step_status, reason) = how.labels();
    close_open_items(r, step_status, reason, last_error.as_ref(), now, sink).await?;
    let written = transition(r, |rec| {
        if !from.contains(&rec.run.status) {
            return Apply::Skip;
        }
        if last_error.is_some() {
            rec.run.last_error = last_error.clone();
        }
        finish_run(rec, how.event(), now)
    })
    .await?;
    if let Some((rec, true)) = written {
        emit(sink, Event::run_now(rec.run));
    }
    Ok(())
}

/// cancelling → cancelled, closing the run's open message and steps.
pub async fn finalize_cancel(state: &Runs, r: &RunRef, sink: &Option<Sink>) -> Result<(), Error> {
    let from = [
        RunStatus::Cancelling,
        RunStatus::InProgress,
        RunStatus::Queued,
    ];
    end_unfinished(state, r, sink, &from, Unfinished::Cancelled, None).await
}

/// Ends a run the engine was told to stop. A run that is no longer this engine's is left to
/// whoever has it.
pub(super) async fn stop_run(
    state: &Runs,
    r: &RunRef,
    sink: &Option<Sink>,
    stop: Stop,
) -> Result<(), Error> {
    let active = [RunStatus::InProgress, RunStatus::Queued];
    match stop {
        Stop::Cancel => finalize_cancel(state, r, sink).await,
        Stop::Expire => {
            tracing::info!(run_id = %r.run_id, "run reached its expires_at while executing");
            end_unfinished(state, r, sink, &active, Unfinished::Expired, None).await
        }
        Stop::Shutdown => {
            tracing::warn!(run_id = %r.run_id, "shutdown grace period over; failing the run");
            let last_error = json!({
                "code": "server_error",
                "message": "The proxy shut down before the run finished.",
            });
            end_unfinished(
                state,
                r,
                sink,
                &active,
                Unfinished::Failed,
                Some(last_error),
            )
            .await
        }
        Stop::Lost => {
            tracing::info!(run_id = %r.run_id, "run resolved elsewhere; this engine stops");
            follow_elsewhere(state, r, sink).await;
            Ok(())
        }
    }
}

/// How often a stream whose run is driven elsewhere looks at the run.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// A stream whose run another proxy took over (this engine lost its lease, or never got to
/// claim it) would otherwise end without saying how the run ended: it waits, reading the run
/// from the store, until the run ends or stops for tool outputs, and sends that state, as the
/// stream of the proxy driving it would have. Bounded by the run's lifetime (its
/// `expires_at`, or `expires_after` from now) plus a lease, and by the client leaving.
pub(super) async fn follow_elsewhere(state: &Runs, r: &RunRef, sink: &Option<Sink>) {
    let Some(s) = sink else { return };
    let started = tokio::time::Instant::now();
    let mut limit = state.config.expires_after + state.config.lease;
    while started.elapsed() < limit && !s.is_closed() {
        match r
            .store
            .runs
            .get_run(&r.tenant, &r.thread_id, &r.run_id)
            .await
        {
            Ok(Some(rec)) => {
                let status = rec.run.status;
                if !status.is_active() || status == RunStatus::RequiresAction {
                    emit(sink, Event::run_now(rec.run));
                    return;
                }
                if let Some(at) = rec.run.expires_at {
                    let left = u64::try_from(at - state.clock.now()).unwrap_or(0);
                    limit = limit
                        .min(started.elapsed() + Duration::from_secs(left) + state.config.lease);
                }
            }
            // Deleted (with its thread): there is nothing more to say.
            Ok(None) => return,
            // The store may be briefly unavailable (the likely reason the lease was lost).
            Err(e) => tracing::debug!(run_id = %r.run_id, error = %e, "following a run"),
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_runs_open_items_are_labelled_after_how_it_ends() {
        let cases = [
            (
                Unfinished::Cancelled,
                RunEvent::Cancelled,
                StepStatus::Cancelled,
                "run_cancelled",
            ),
            (
                Unfinished::Expired,
                RunEvent::Expire,
                StepStatus::Expired,
                "run_expired",
            ),
            (
                Unfinished::Failed,
                RunEvent::Fail,
                StepStatus::Failed,
                "run_failed",
            ),
        ];
        for (how, event, step, reason) in cases {
            assert_eq!(how.event(), event, "{how:?}");
            assert_eq!(how.labels(), (step, reason), "{how:?}");
        }
    }
}
