//! Holding a run: renewing this proxy's lease, judging why the engine must stop, and waiting
//! (for a back-off, or the thread's vector store) while keeping the lease.

use std::time::Duration;

use super::record::{Apply, Commit, transition_from, with_state};
use super::{RunRef, TurnEnd};
use crate::error::Error;
use crate::model::{RunRecord, RunStatus, Usage};
use crate::runs::Runs;
use crate::runs::file_search;
use crate::runs::{Stop, StopSignal};
use crate::tenancy::Caller;
use crate::upstream::chat::CallError;

/// The longest a run waits for its thread's vector store to finish indexing (spec §7.2).
const STORE_READY_WAIT: Duration = Duration::from_secs(60);

/// The run as this engine last wrote it, and when it last extended its lease. Transitions
/// start from `rec` (no read unless someone else wrote meanwhile), and a lease renewed less
/// than a third of its length ago needs no renewing yet.
pub(super) struct Held {
    pub(super) rec: RunRecord,
    pub(super) renewed: tokio::time::Instant,
}

impl Held {
    pub(super) fn new(rec: RunRecord) -> Held {
        Held {
            rec,
            renewed: tokio::time::Instant::now(),
        }
    }
}

/// Waits while the thread's vector store still has files `in_progress`, at most
/// `STORE_READY_WAIT`, then lets the run search whatever is indexed by then (the spec's
/// 60-second fallback). Polls the store rather than listening for ingestion: the file may be
/// ingested by another proxy sharing the database. Returns how the run ends instead, if it
/// does: the store expired, or the run was stopped meanwhile.
pub(super) async fn await_thread_store(
    state: &Runs,
    caller: &Caller,
    r: &RunRef,
    held: &mut Held,
    signal: &StopSignal,
) -> Result<Option<TurnEnd>, Error> {
    if !held
        .rec
        .run
        .tools
        .iter()
        .any(|t| t["type"] == "file_search")
    {
        return Ok(None);
    }
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        match file_search::thread_store(state, caller, &r.thread_id).await? {
            file_search::ThreadStore::Ready => return Ok(None),
            file_search::ThreadStore::Expired(id) => {
                return Ok(Some(TurnEnd::Failed(CallError::server(format!(
                    "Vector store '{id}' has expired."
                )))));
            }
            file_search::ThreadStore::Indexing => {}
        }
        let Some(left) = STORE_READY_WAIT.checked_sub(started.elapsed()) else {
            tracing::info!(run_id = %r.run_id, waited_s = STORE_READY_WAIT.as_secs(), "thread vector store still indexing; searching what is ready");
            return Ok(None);
        };
        if let Some(stop) = wait_renewing(state, r, held, signal, pause.min(left)).await? {
            return Ok(Some(TurnEnd::Stopped(stop)));
        }
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Renews this proxy's lease (adding a finished turn's usage, if any). None: the run is
/// still this engine's to drive; otherwise why it must stop: a cancel arrived, the run
/// reached its `expires_at` (a lease is never extended past it, so a run that cannot finish
/// cannot hold its thread for ever), or it is no longer this engine's.
pub(super) async fn renew(
    state: &Runs,
    r: &RunRef,
    held: &mut Held,
    usage: Option<Usage>,
) -> Result<Option<Stop>, Error> {
    let lease_ms = state.config.lease.as_millis() as i64;
    let owner = state.instance_id.clone();
    let now = state.clock.now();
    let out = transition_from(r, Some(held.rec.clone()), Commit::Progress, |rec| {
        if rec.run.status != RunStatus::InProgress
            || rec.lease_owner.as_deref() != Some(owner.as_str())
            || rec.run.expires_at.is_some_and(|at| at <= now)
        {
            return Apply::Skip;
        }
        if let Some(u) = usage
            && let Apply::Skip = with_state(rec, |st| st.add_usage(u))
        {
            return Apply::Skip;
        }
        rec.lease_until = Some(state.clock.now_millis() + lease_ms);
        Apply::Write
    })
    .await?;
    Ok(match out {
        Some((rec, true)) => {
            held.rec = rec;
            held.renewed = tokio::time::Instant::now();
            None
        }
        Some((rec, false)) => Some(stop_for(state, &rec)),
        None => Some(Stop::Lost),
    })
}

/// Why the engine must stop, judged from a record it may no longer write to.
pub(super) fn stop_for(state: &Runs, rec: &RunRecord) -> Stop {
    stop_reason(rec, &state.instance_id, state.clock.now())
}

/// [`stop_for`] on its inputs: the record, this proxy's instance id, and the time (seconds).
fn stop_reason(rec: &RunRecord, instance_id: &str, now: i64) -> Stop {
    let ours = rec.lease_owner.as_deref() == Some(instance_id);
    match rec.run.status {
        RunStatus::Cancelling => Stop::Cancel,
        RunStatus::InProgress if ours && rec.run.expires_at.is_some_and(|at| at <= now) => {
            Stop::Expire
        }
        _ => Stop::Lost,
    }
}

/// Renews the lease if a third of it has gone since the last renewal; otherwise as [`renew`].
pub(super) async fn renew_if_due(
    state: &Runs,
    r: &RunRef,
    held: &mut Held,
) -> Result<Option<Stop>, Error> {
    if held.renewed.elapsed() < state.config.lease / 3 {
        return Ok(None);
    }
    renew(state, r, held, None).await
}

/// Sleeps for `wait` (a retry's back-off, a store's indexing), renewing the lease as it goes;
/// returns early if the run must stop.
pub(super) async fn wait_renewing(
    state: &Runs,
    r: &RunRef,
    held: &mut Held,
    signal: &StopSignal,
    wait: Duration,
) -> Result<Option<Stop>, Error> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(stop) = renew_if_due(state, r, held).await? {
            return Ok(Some(stop));
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        tokio::select! {
            () = tokio::time::sleep(left.min(state.config.lease / 3)) => {}
            () = signal.stopped() => return Ok(signal.reason()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::engine::test_record;

    fn held_by(owner: Option<&str>, status: &str, expires_at: Option<i64>) -> RunRecord {
        let mut rec = test_record(status);
        rec.lease_owner = owner.map(str::to_owned);
        rec.run.expires_at = expires_at;
        rec
    }

    #[test]
    fn a_cancel_stops_the_run_whoever_holds_it() {
        let rec = held_by(Some("other"), "cancelling", None);
        assert_eq!(stop_reason(&rec, "me", 100), Stop::Cancel);
    }

    #[test]
    fn an_expired_run_is_expired_only_by_its_holder() {
        let rec = held_by(Some("me"), "in_progress", Some(100));
        assert_eq!(stop_reason(&rec, "me", 100), Stop::Expire);
        assert_eq!(stop_reason(&rec, "me", 99), Stop::Lost);
        assert_eq!(stop_reason(&rec, "other", 100), Stop::Lost);
    }

    #[test]
    fn a_run_resolved_elsewhere_is_lost() {
        for status in ["completed", "requires_action", "queued", "expired"] {
            let rec = held_by(Some("me"), status, Some(1));
            assert_eq!(stop_reason(&rec, "me", 100), Stop::Lost, "{status}");
        }
    }
}
