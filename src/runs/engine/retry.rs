//! Whether and when a failed model call is tried again: the decision (pure, [`retry_wait`])
//! and the wait that follows it, which keeps the run's lease.

use std::time::Duration;

use super::RunRef;
use super::lease::{Held, wait_renewing};
use crate::config::RunsConfig;
use crate::error::Error;
use crate::runs::Runs;
use crate::runs::{Stop, StopSignal};
use crate::upstream::chat::CallError;

/// Whether a failed model call is tried again, after a wait: only a transient failure (429,
/// 5xx, an unreachable, broken or silent upstream), only before the turn has produced any
/// output (a retry cannot take back what clients were sent), at most `runs.model_attempts`
/// times, never longer than the upstream's `retry-after` or `runs.model_retry_max_wait`
/// allow, and never past the run's `expires_at`.
pub(super) enum Retry {
    Again,
    Stop(Stop),
    GiveUp(CallError),
}

/// How long to wait before trying a call that failed with `e` on its `attempt`-th try again,
/// or None to give up. `now_ms` is the clock in milliseconds, `expires_at` the run's (seconds).
pub(super) fn retry_wait(
    cfg: &RunsConfig,
    e: &CallError,
    attempt: u32,
    now_ms: i64,
    expires_at: Option<i64>,
) -> Option<Duration> {
    if !e.transient || attempt >= cfg.model_attempts {
        return None;
    }
    let wait = match e.retry_after {
        // Waiting less than the upstream asked would only be refused again.
        Some(hint) if hint > cfg.model_retry_max_wait => return None,
        Some(hint) => hint,
        None => cfg
            .model_retry_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(cfg.model_retry_max_wait),
    };
    if expires_at.is_some_and(|at| now_ms + wait.as_millis() as i64 >= at * 1000) {
        return None;
    }
    Some(wait)
}

pub(super) async fn before_retry(
    state: &Runs,
    r: &RunRef,
    held: &mut Held,
    signal: &StopSignal,
    mut e: CallError,
    attempt: u32,
) -> Result<Retry, Error> {
    let now_ms = state.clock.now_millis();
    let expires_at = held.rec.run.expires_at;
    let Some(wait) = retry_wait(&state.config, &e, attempt, now_ms, expires_at) else {
        if attempt > 1 {
            e.message = format!("{} (gave up after {attempt} attempts)", e.message);
        }
        return Ok(Retry::GiveUp(e));
    };
    tracing::info!(run_id = %r.run_id, attempt, wait_ms = wait.as_millis() as u64, error = %e, "model call failed before any output; retrying");
    Ok(match wait_renewing(state, r, held, signal, wait).await? {
        Some(stop) => Retry::Stop(stop),
        None => Retry::Again,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RunsConfig {
        RunsConfig {
            expires_after: Duration::from_secs(600),
            lease: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(5),
            default_context_tokens: 8192,
            model_attempts: 4,
            model_retry_base: Duration::from_millis(500),
            model_retry_max_wait: Duration::from_secs(3),
        }
    }

    fn transient() -> CallError {
        CallError {
            transient: true,
            ..CallError::server("upstream 503")
        }
    }

    #[test]
    fn backoff_doubles_per_attempt_up_to_the_max_wait() {
        let c = cfg();
        let e = transient();
        assert_eq!(
            retry_wait(&c, &e, 1, 0, None),
            Some(Duration::from_millis(500))
        );
        assert_eq!(retry_wait(&c, &e, 2, 0, None), Some(Duration::from_secs(1)));
        assert_eq!(retry_wait(&c, &e, 3, 0, None), Some(Duration::from_secs(2)));
        let many = RunsConfig {
            model_attempts: 100,
            ..cfg()
        };
        assert_eq!(
            retry_wait(&many, &e, 4, 0, None),
            Some(Duration::from_secs(3))
        );
        // The shift is capped, so a huge attempt count neither overflows nor panics.
        assert_eq!(
            retry_wait(&many, &e, 99, 0, None),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn gives_up_after_the_last_attempt_or_on_a_permanent_failure() {
        let c = cfg();
        assert_eq!(retry_wait(&c, &transient(), 4, 0, None), None);
        assert_eq!(
            retry_wait(&c, &CallError::server("bad model"), 1, 0, None),
            None
        );
        let once = RunsConfig {
            model_attempts: 1,
            ..cfg()
        };
        assert_eq!(retry_wait(&once, &transient(), 1, 0, None), None);
    }

    #[test]
    fn follows_the_upstreams_retry_after_unless_it_is_too_long() {
        let c = cfg();
        let mut e = transient();
        e.retry_after = Some(Duration::from_millis(2500));
        assert_eq!(
            retry_wait(&c, &e, 1, 0, None),
            Some(Duration::from_millis(2500))
        );
        e.retry_after = Some(Duration::from_secs(4));
        assert_eq!(retry_wait(&c, &e, 1, 0, None), None);
    }

    #[test]
    fn never_waits_past_the_runs_expiry() {
        let c = cfg();
        let e = transient();
        // Expires at t=10 s; a 500 ms wait from 9.4 s stays before it, from 9.5 s it does not.
        assert_eq!(
            retry_wait(&c, &e, 1, 9_400, Some(10)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(retry_wait(&c, &e, 1, 9_500, Some(10)), None);
    }
}
