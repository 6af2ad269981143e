//! The run state machine: which status a run moves to on which event, as one pure function
//! that every transition site asks (the engine, the run service, the sweeper). A transition
//! that does not apply is an error the caller turns into "leave the record as it is".
//!
//! ```text
//! queued ──claim──▶ in_progress ──needs outputs──▶ requires_action ──outputs──▶ queued
//!    │                  │  ├──complete──▶ completed
//!    │                  │  ├──incomplete─▶ incomplete
//!    │                  │  └──fail───────▶ failed
//!    └──cancel, from any active status──▶ cancelling ──cancelled──▶ cancelled
//!       expire, from queued, in_progress or requires_action ──▶ expired
//! ```

use crate::model::{Run, RunStatus};

/// What happened to a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEvent {
    /// An engine takes the run up.
    Claim,
    /// The model called the client's functions.
    NeedOutputs,
    /// The client submitted the outputs; the run waits for an engine again.
    OutputsSubmitted,
    /// The model answered.
    Complete,
    /// A token limit stopped the run.
    Incomplete,
    /// The upstream, the store or the proxy failed the run (or the proxy shut down, or its
    /// executor died).
    Fail,
    /// A client asked to cancel.
    CancelRequested,
    /// The cancel took effect: the engine stopped (or there was none).
    Cancelled,
    /// The run reached its `expires_at`.
    Expire,
}

/// A transition the state machine does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a run in status '{}' cannot take event {event:?}", from.as_str())]
pub struct Illegal {
    pub from: RunStatus,
    pub event: RunEvent,
}

/// The status `from` moves to on `event`.
pub fn next(from: RunStatus, event: RunEvent) -> Result<RunStatus, Illegal> {
    use RunEvent as E;
    use RunStatus as S;
    let to = match (from, event) {
        (S::Queued, E::Claim) => S::InProgress,
        (S::InProgress, E::NeedOutputs) => S::RequiresAction,
        (S::RequiresAction, E::OutputsSubmitted) => S::Queued,
        (S::InProgress, E::Complete) => S::Completed,
        (S::InProgress, E::Incomplete) => S::Incomplete,
        // Not from `cancelling`: a cancel asked for ends `cancelled`, whatever else happens
        // (left to the sweeper if its engine cannot finish it).
        (S::Queued | S::InProgress, E::Fail) => S::Failed,
        (S::Queued | S::InProgress | S::RequiresAction, E::CancelRequested) => S::Cancelling,
        // A cancel is final for a run that is not waiting on anyone: with no engine left to
        // see `cancelling`, it completes at once.
        (S::Cancelling | S::Queued | S::InProgress, E::Cancelled) => S::Cancelled,
        (S::Queued | S::InProgress | S::RequiresAction, E::Expire) => S::Expired,
        _ => return Err(Illegal { from, event }),
    };
    Ok(to)
}

/// Moves `run` on `event`: the only way a run's status changes once it exists. Refused, the
/// run is left as it was.
pub fn advance(run: &mut Run, event: RunEvent) -> Result<RunStatus, Illegal> {
    let to = next(run.status, event)?;
    run.status = to;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_STATUSES: [RunStatus; 9] = [
        RunStatus::Queued,
        RunStatus::InProgress,
        RunStatus::RequiresAction,
        RunStatus::Cancelling,
        RunStatus::Cancelled,
        RunStatus::Failed,
        RunStatus::Completed,
        RunStatus::Incomplete,
        RunStatus::Expired,
    ];
    const ALL_EVENTS: [RunEvent; 9] = [
        RunEvent::Claim,
        RunEvent::NeedOutputs,
        RunEvent::OutputsSubmitted,
        RunEvent::Complete,
        RunEvent::Incomplete,
        RunEvent::Fail,
        RunEvent::CancelRequested,
        RunEvent::Cancelled,
        RunEvent::Expire,
    ];

    /// Every legal transition, written out: the table the tests hold the function to.
    fn legal() -> Vec<(RunStatus, RunEvent, RunStatus)> {
        use RunEvent as E;
        use RunStatus as S;
        vec![
            (S::Queued, E::Claim, S::InProgress),
            (S::InProgress, E::NeedOutputs, S::RequiresAction),
            (S::RequiresAction, E::OutputsSubmitted, S::Queued),
            (S::InProgress, E::Complete, S::Completed),
            (S::InProgress, E::Incomplete, S::Incomplete),
            (S::Queued, E::Fail, S::Failed),
            (S::InProgress, E::Fail, S::Failed),
            (S::Queued, E::CancelRequested, S::Cancelling),
            (S::InProgress, E::CancelRequested, S::Cancelling),
            (S::RequiresAction, E::CancelRequested, S::Cancelling),
            (S::Cancelling, E::Cancelled, S::Cancelled),
            (S::Queued, E::Cancelled, S::Cancelled),
            (S::InProgress, E::Cancelled, S::Cancelled),
            (S::Queued, E::Expire, S::Expired),
            (S::InProgress, E::Expire, S::Expired),
            (S::RequiresAction, E::Expire, S::Expired),
        ]
    }

    #[test]
    fn every_pair_is_legal_exactly_when_the_table_says() {
        let table = legal();
        for from in ALL_STATUSES {
            for event in ALL_EVENTS {
                let expected = table
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, to)| *to);
                match (next(from, event), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from:?} + {event:?}"),
                    (Err(e), None) => assert_eq!(e, Illegal { from, event }),
                    (got, want) => panic!("{from:?} + {event:?}: got {got:?}, table says {want:?}"),
                }
            }
        }
    }

    #[test]
    fn ended_runs_never_move_and_active_ones_can_always_end() {
        for from in ALL_STATUSES {
            let moves = ALL_EVENTS
                .iter()
                .filter(|e| next(from, **e).is_ok())
                .count();
            if from.is_active() {
                assert!(moves > 0, "{from:?} is stuck");
                // Every active status has a way to a terminal one.
                assert!(
                    ALL_EVENTS
                        .iter()
                        .filter_map(|e| next(from, *e).ok())
                        .any(|to| !to.is_active() || to == RunStatus::Cancelling),
                    "{from:?}"
                );
            } else {
                assert_eq!(moves, 0, "{from:?} is terminal");
            }
        }
        // What `next` produces from an active status on its ending events is terminal.
        for (from, event) in [
            (RunStatus::InProgress, RunEvent::Complete),
            (RunStatus::Cancelling, RunEvent::Cancelled),
            (RunStatus::RequiresAction, RunEvent::Expire),
        ] {
            assert!(!next(from, event).unwrap().is_active());
        }
    }

    #[test]
    fn advance_moves_the_run_only_when_the_table_allows() {
        let mut run: Run = serde_json::from_value(serde_json::json!({
            "id": "run_a", "object": "thread.run", "created_at": 1, "thread_id": "thread_a",
            "assistant_id": "asst_a", "status": "queued", "required_action": null,
            "last_error": null, "expires_at": null, "started_at": null, "cancelled_at": null,
            "failed_at": null, "completed_at": null, "incomplete_details": null,
            "model": "m", "instructions": "", "tools": [], "metadata": {}, "usage": null,
            "temperature": null, "top_p": null, "max_prompt_tokens": null,
            "max_completion_tokens": null, "truncation_strategy": null, "tool_choice": null,
            "parallel_tool_calls": true, "response_format": null,
        }))
        .unwrap();
        assert_eq!(
            advance(&mut run, RunEvent::Claim),
            Ok(RunStatus::InProgress)
        );
        assert_eq!(run.status, RunStatus::InProgress);
        let refused = advance(&mut run, RunEvent::OutputsSubmitted).unwrap_err();
        assert_eq!(refused.from, RunStatus::InProgress);
        assert_eq!(run.status, RunStatus::InProgress);
        assert_eq!(
            advance(&mut run, RunEvent::Complete),
            Ok(RunStatus::Completed)
        );
        assert!(advance(&mut run, RunEvent::CancelRequested).is_err());
        assert_eq!(run.status, RunStatus::Completed);
    }

    #[test]
    fn illegal_transitions_say_what_was_refused() {
        let e = next(RunStatus::Completed, RunEvent::CancelRequested).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a run in status 'completed' cannot take event CancelRequested"
        );
    }
}
