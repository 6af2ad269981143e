//! Every proxy periodically resolves runs nobody can finish: runs past `expires_at` expire
//! (waiting for tool outputs, or still executing: a run executing here is told to stop, one
//! executing elsewhere is taken over once its owner had a whole lease to end it itself and
//! did not, whatever its lease says); runs whose executing proxy stopped renewing its lease
//! (a crash, `kill -9`, a lost node) fail with `server_error`, or end `cancelled` if a cancel
//! was pending. Several proxies sweeping at once is safe: every resolution is compare-and-set.

use std::sync::Arc;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::engine::{self, Apply, RunRef, Unfinished, transition};
use super::{Stop, expire};
use crate::error::Error;
use crate::model::RunStatus;
use crate::runs::Runs;
use crate::store::Store;

/// Sweeps until `stop` (the start of shutdown: a proxy on its way out takes no runs over).
pub async fn run(state: Arc<Runs>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.sweep_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        match sweep_once(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(resolved = n, "resolved abandoned or expired runs"),
            // The store may be briefly unavailable; the next sweep retries.
            Err(e) => tracing::debug!(error = %e, "run sweep failed"),
        }
    }
}

/// One pass over the configured store and every open Astra session (a database nobody
/// has used since its session closed is swept when it is next opened); returns how many
/// runs it resolved. One store failing does not keep the others from being swept.
pub async fn sweep_once(state: &Runs) -> Result<usize, Error> {
    let mut stores = vec![state.store.clone()];
    if let Some(sessions) = &state.astra {
        stores.extend(sessions.open_stores());
    }
    let mut resolved = 0;
    let mut first_error = None;
    for store in stores {
        match sweep_store(state, &store).await {
            Ok(n) => resolved += n,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if resolved == 0 => Err(e),
        _ => Ok(resolved),
    }
}

async fn sweep_store(state: &Runs, store: &Store) -> Result<usize, Error> {
    let now = state.clock.now();
    let now_ms = state.clock.now_millis();
    let mut resolved = 0;
    let lease_ms = state.config.lease.as_millis() as i64;
    for (tenant, rec) in store.runs.list_active_runs().await? {
        let expired = rec.run.expires_at.is_some_and(|at| at <= now);
        if state.registry.is_running(&rec.run.id) {
            // The engine ends it itself (it stops renewing at `expires_at`); this reaches it
            // at once even while it waits on the upstream.
            if expired && state.registry.stop(&rec.run.id, Stop::Expire) {
                resolved += 1;
            }
            continue;
        }
        let r = RunRef {
            store: store.clone(),
            tenant,
            thread_id: rec.run.thread_id.clone(),
            run_id: rec.run.id.clone(),
        };
        // A queued run holds no lease yet: the proxy that made it claims it as soon as it can.
        // It counts as held for a lease from its creation, or another proxy sweeping before
        // that claim lands (a slow store, a lost node) would fail a live run, and its stream
        // would end without a word. A creator that died before claiming leaves it to the
        // sweep once that lease has gone.
        let lease_dead = match rec.lease_until {
            Some(until) => until < now_ms,
            None if rec.run.status == RunStatus::Queued => {
                rec.run
                    .created_at
                    .saturating_mul(1000)
                    .saturating_add(lease_ms)
                    < now_ms
            }
            None => true,
        };
        // An owner that kept renewing a whole lease past `expires_at` will not end the run
        // (a proxy whose engine is stuck): its lease no longer protects the run.
        let overdue = rec
            .run
            .expires_at
            .is_some_and(|at| at * 1000 + lease_ms <= now_ms);
        match rec.run.status {
            RunStatus::RequiresAction if expired => {
                expire(state, &r).await?;
                resolved += 1;
            }
            RunStatus::Cancelling if lease_dead => {
                engine::finalize_cancel(state, &r, &None).await?;
                resolved += 1;
            }
            RunStatus::Queued | RunStatus::InProgress if expired && (lease_dead || overdue) => {
                take_over(state, &r, rec.version, Abandoned::Expired).await?;
                resolved += 1;
            }
            RunStatus::Queued | RunStatus::InProgress if lease_dead => {
                take_over(state, &r, rec.version, Abandoned::Failed).await?;
                resolved += 1;
            }
            _ => {}
        }
    }
    Ok(resolved)
}

/// How a run taken over from its executor ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Abandoned {
    /// Its executor is gone: `failed`, with `server_error`.
    Failed,
    /// It is past `expires_at`: `expired`.
    Expired,
}

/// Ends a run whose executor is gone (or past its expiry), keeping its partial output as
/// `incomplete`.
///
/// In three steps, so that nobody who sees the run ended can then read its message still
/// `in_progress`: take the lease over (compare-and-set on the version judged abandoned, so a
/// live executor that renewed meanwhile wins, and one that renews later finds the run no
/// longer its own and stops writing), close the open message and steps, then end the run. A
/// sweeper that dies between the steps leaves a lease that runs out, and the next sweep
/// repeats them (closing is idempotent).
async fn take_over(
    state: &Runs,
    r: &RunRef,
    seen_version: u64,
    outcome: Abandoned,
) -> Result<(), Error> {
    let now = state.clock.now();
    let now_ms = state.clock.now_millis();
    let lease_ms = state.config.lease.as_millis() as i64;
    let taken = transition(r, |rec| {
        // Only if nothing changed since we judged it (a renewal would bump the version).
        if rec.version != seen_version
            || !matches!(rec.run.status, RunStatus::Queued | RunStatus::InProgress)
        {
            return Apply::Skip;
        }
        rec.lease_owner = Some(state.instance_id.clone());
        rec.lease_until = Some(now_ms + lease_ms);
        Apply::Write
    })
    .await?;
    let Some((taken, true)) = taken else {
        return Ok(());
    };
    let (how, last_error) = match outcome {
        Abandoned::Expired => (Unfinished::Expired, None),
        Abandoned::Failed => (
            Unfinished::Failed,
            Some(json!({
                "code": "server_error",
                "message": "The proxy executing this run stopped before it finished; the run was not completed.",
            })),
        ),
    };
    let (step_status, reason) = how.labels();
    engine::close_open_items(r, step_status, reason, last_error.as_ref(), now, &None).await?;
    transition(r, |rec| {
        if rec.version != taken.version
            || !matches!(rec.run.status, RunStatus::Queued | RunStatus::InProgress)
        {
            return Apply::Skip;
        }
        if last_error.is_some() {
            rec.run.last_error = last_error.clone();
        }
        engine::finish_run(rec, how.event(), now)
    })
    .await?;
    Ok(())
}
