//! Writes to the run record: compare-and-set transitions, ending a run through the state
//! machine, and the engine state (usage, file_search bookkeeping) kept inside it.

use super::RunRef;
use crate::error::Error;
use crate::model::{RunRecord, RunStatus, Usage};
use crate::runs::engine_state::{self, EngineState};
use crate::runs::state::{self as machine, Illegal, RunEvent};

/// What a compare-and-set transition closure decided.
pub enum Apply {
    Write,
    /// Leave the record as it is (the transition no longer applies).
    Skip,
}

/// Loads the freshest record, applies `f`, and writes it with compare-and-set, retrying when
/// another writer got there first. Returns the record as stored afterwards (None if the run
/// no longer exists).
pub async fn transition(
    r: &RunRef,
    f: impl FnMut(&mut RunRecord) -> Apply,
) -> Result<Option<(RunRecord, bool)>, Error> {
    transition_from(r, None, Commit::Durable, f).await
}

/// How a write of the run engine must reach the store.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// On disk before going on: the states clients act on (queued, requires_action, ended).
    Durable,
    /// The run's in-flight progress (claim, lease, partial answers): visible at once, made
    /// durable by the next durable write (see `MessageStore::put_message_progress`). A power
    /// cut can only take the run back to an earlier in-flight state, which crash recovery
    /// handles like a proxy that died mid-run.
    Progress,
}

/// [`transition`] starting from a record this engine wrote last (`known`), which saves the read
/// in the common case: the compare-and-set still catches anyone who wrote since, and then the
/// transition starts over from a fresh read. A `Skip` decided on `known` is also re-checked on
/// a fresh read, since a stale record must not turn a transition down.
pub async fn transition_from(
    r: &RunRef,
    mut known: Option<RunRecord>,
    commit: Commit,
    mut f: impl FnMut(&mut RunRecord) -> Apply,
) -> Result<Option<(RunRecord, bool)>, Error> {
    for _ in 0..32 {
        let cached = known.is_some();
        let current = match known.take() {
            Some(rec) => rec,
            None => match r
                .store
                .runs
                .get_run(&r.tenant, &r.thread_id, &r.run_id)
                .await?
            {
                Some(rec) => rec,
                None => return Ok(None),
            },
        };
        let mut next = current.clone();
        match f(&mut next) {
            Apply::Skip if cached => continue,
            Apply::Skip => return Ok(Some((current, false))),
            Apply::Write => {
                next.version = current.version + 1;
                let runs = &r.store.runs;
                let written = match commit {
                    Commit::Durable => runs.update_run(&r.tenant, &next, current.version).await?,
                    Commit::Progress => {
                        runs.update_run_progress(&r.tenant, &next, current.version)
                            .await?
                    }
                };
                if written {
                    return Ok(Some((next, true)));
                }
            }
        }
    }
    Err(Error::internal("the run changed too often to update it"))
}

/// Ends the run on `event` (through the state machine), marks the terminal timestamps and
/// clears what only active runs carry. The callers have checked the run may end so: a refusal
/// is an internal error, logged, and the record is left as it is.
pub fn finish_run(rec: &mut RunRecord, event: RunEvent, now: i64) -> Apply {
    let usage = usage_of(rec);
    let run = &mut rec.run;
    let status = match machine::advance(run, event) {
        Ok(status) => status,
        Err(e) => return refused(e, &run.id),
    };
    run.required_action = None;
    match status {
        RunStatus::Completed => run.completed_at = Some(now),
        RunStatus::Failed => run.failed_at = Some(now),
        RunStatus::Cancelled => run.cancelled_at = Some(now),
        _ => {}
    }
    if status != RunStatus::Expired {
        run.expires_at = None;
    }
    run.usage = Some(usage);
    rec.lease_owner = None;
    rec.lease_until = None;
    Apply::Write
}

/// A transition the caller's own checks let through but the state machine refuses: a bug in
/// the proxy, not in the request. Logged; the record is left as it is.
fn refused(e: Illegal, run_id: &str) -> Apply {
    tracing::error!(run_id, error = %e, "internal error: illegal run transition refused");
    Apply::Skip
}

/// Usage accumulated over the run's upstream calls (kept in engine state until it is shown).
/// An unreadable state counts nothing, logged: the run still ends.
pub fn usage_of(rec: &RunRecord) -> Usage {
    match EngineState::of(rec) {
        Ok(st) => st.usage(),
        Err(e) => {
            tracing::error!(run_id = %rec.run.id, error = %e, "internal error");
            Usage::default()
        }
    }
}

/// Changes the engine state of `rec`; an unreadable state is an internal error, logged, and
/// the record is then left as it is (`Skip`).
pub(super) fn with_state(rec: &mut RunRecord, f: impl FnOnce(&mut EngineState)) -> Apply {
    match engine_state::update(rec, f) {
        Ok(()) => Apply::Write,
        Err(e) => {
            tracing::error!(run_id = %rec.run.id, error = %e, "internal error");
            Apply::Skip
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::engine::test_record;

    #[test]
    fn finishing_a_run_stamps_its_end_and_drops_what_only_active_runs_carry() {
        let mut rec = test_record("in_progress");
        rec.run.required_action = Some(serde_json::json!({"type": "submit_tool_outputs"}));
        engine_state::update(&mut rec, |st| {
            st.add_usage(Usage {
                prompt_tokens: 10,
                completion_tokens: 4,
                total_tokens: 14,
            })
        })
        .unwrap();
        assert!(matches!(
            finish_run(&mut rec, RunEvent::Complete, 77),
            Apply::Write
        ));
        assert_eq!(rec.run.status, RunStatus::Completed);
        assert_eq!(rec.run.completed_at, Some(77));
        assert_eq!(rec.run.expires_at, None);
        assert_eq!(rec.run.required_action, None);
        assert_eq!((rec.lease_owner, rec.lease_until), (None, None));
        let usage = rec.run.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.total_tokens), (10, 14));
    }

    #[test]
    fn an_expired_run_keeps_its_expires_at() {
        let mut rec = test_record("in_progress");
        assert!(matches!(
            finish_run(&mut rec, RunEvent::Expire, 77),
            Apply::Write
        ));
        assert_eq!(rec.run.status, RunStatus::Expired);
        assert_eq!(rec.run.expires_at, Some(50));
    }

    #[test]
    fn a_transition_the_state_machine_refuses_leaves_the_record_as_it_is() {
        let mut rec = test_record("completed");
        let before = rec.clone();
        assert!(matches!(
            finish_run(&mut rec, RunEvent::Fail, 77),
            Apply::Skip
        ));
        assert_eq!(rec, before);
    }

    #[test]
    fn an_unreadable_engine_state_counts_no_usage_and_is_not_changed() {
        let mut rec = test_record("in_progress");
        rec.state = serde_json::json!({"usage": "lots"});
        assert_eq!(usage_of(&rec), Usage::default());
        assert!(matches!(
            with_state(&mut rec, |st| st.include_content = true),
            Apply::Skip
        ));
        assert_eq!(rec.state, serde_json::json!({"usage": "lots"}));
    }
}
