//! The run engine: executing runs as tracked background work (independent of the request
//! that started them), translating the upstream's chat stream into Assistants events,
//! tools (function calls, file_search), cancellation, expiry and crash recovery.
//!
//! - `engine`: executes one run until it completes or needs tool outputs.
//! - `prompt`: builds the chat request from the assistant, run and thread.
//! - `translate`: pure chunk → event translation, unit-tested chunk by chunk.
//! - `events`: the event type and its SSE encoding.
//! - `sweeper`: expiry and dead-lease recovery, on every proxy.
//! - `file_search`: the file_search tool (through `crate::retrieval`).
//!
//! Creating, cancelling and resuming runs for the HTTP routes is the API's run service
//! (`api::runs::service`), which starts this engine; the engine imports nothing of the API.

pub mod code_args;
pub mod code_interpreter;
pub mod engine;
pub mod engine_state;
pub mod events;
pub mod file_search;
#[cfg(test)]
mod fixtures;
pub mod prompt;
pub mod state;
pub mod sweeper;
pub mod translate;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::config::RunsConfig;
use crate::error::Error;
use crate::interpreter::Interpreter;
use crate::model::RunStatus;
use crate::retrieval::Retrieval;
use crate::store::Store;
use crate::store::astra::AstraSessions;
use crate::upstream::Upstream;

pub use crate::clock::Clock;

/// What the run engine and the sweeper work with: built once at start-up (`AppState` holds
/// it), so the engine sees its own settings and services rather than the whole application.
/// The store a run lives in is its caller's (`Caller::store`), not one of these.
pub struct Runs {
    pub config: RunsConfig,
    pub upstream: Upstream,
    pub retrieval: Arc<Retrieval>,
    pub clock: Arc<Clock>,
    /// Runs executing in this process.
    pub registry: Registry,
    /// This process's name in run leases.
    pub instance_id: String,
    /// Cancelled when the proxy's grace period is over: engines stop and save their state.
    pub shutdown: CancellationToken,
    /// The stores the sweeper visits: the configured one, and the per-request Astra
    /// databases opened so far.
    pub store: Store,
    pub astra: Option<Arc<AstraSessions>>,
    /// code_interpreter's sessions and executor.
    pub interpreter: Arc<Interpreter>,
}

/// Why the engine stops driving a run before the run ends by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A cancel: the run ends `cancelled`.
    Cancel,
    /// The run reached its `expires_at`: it ends `expired`.
    Expire,
    /// The proxy is shutting down and its grace period is over: the run ends `failed`.
    Shutdown,
    /// Someone else resolved the run or took it over (a sweeper, another proxy): this
    /// engine writes nothing more.
    Lost,
}

impl Stop {
    fn code(self) -> u8 {
        match self {
            Stop::Cancel => 1,
            Stop::Expire => 2,
            Stop::Shutdown => 3,
            Stop::Lost => 4,
        }
    }

    fn from_code(code: u8) -> Option<Stop> {
        match code {
            1 => Some(Stop::Cancel),
            2 => Some(Stop::Expire),
            3 => Some(Stop::Shutdown),
            4 => Some(Stop::Lost),
            _ => None,
        }
    }
}

/// The engine's side of a run's stop signal: fires on a local cancel or expiry, and when
/// the proxy's shutdown token fires (the run's token is its child).
#[derive(Clone)]
pub struct StopSignal {
    token: CancellationToken,
    reason: Arc<AtomicU8>,
}

impl StopSignal {
    /// A signal of its own, fired only through [`StopSignal::stop`] or `parent`.
    pub fn child_of(parent: &CancellationToken) -> StopSignal {
        StopSignal {
            token: parent.child_token(),
            reason: Arc::new(AtomicU8::new(0)),
        }
    }

    /// Fires the signal; the first reason given is the one kept.
    pub fn stop(&self, why: Stop) {
        let _ = self
            .reason
            .compare_exchange(0, why.code(), Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    /// Resolves when the signal fires.
    pub async fn stopped(&self) {
        self.token.cancelled().await;
    }

    /// Why the signal fired (None while it has not): a reason given to `stop`, or else the
    /// parent (shutdown) fired.
    pub fn reason(&self) -> Option<Stop> {
        if !self.token.is_cancelled() {
            return None;
        }
        Some(Stop::from_code(self.reason.load(Ordering::Acquire)).unwrap_or(Stop::Shutdown))
    }
}

/// Runs executing in this process, so a cancel arriving here reaches the engine at once
/// (a cancel arriving at another proxy is seen at the next lease renewal).
#[derive(Default)]
pub struct Registry {
    running: Mutex<HashMap<String, StopSignal>>,
}

impl Registry {
    /// Registers a run; the guard unregisters it when the engine stops. `shutdown` is the
    /// proxy's: when it fires, so does the run's signal.
    pub fn enter(
        &self,
        run_id: &str,
        shutdown: &CancellationToken,
    ) -> (StopSignal, RegistryGuard<'_>) {
        let signal = StopSignal::child_of(shutdown);
        if let Ok(mut map) = self.running.lock() {
            map.insert(run_id.to_owned(), signal.clone());
        }
        (
            signal,
            RegistryGuard {
                registry: self,
                run_id: run_id.to_owned(),
            },
        )
    }

    /// Signals a locally executing run to stop; false if it is not executing here.
    pub fn stop(&self, run_id: &str, why: Stop) -> bool {
        match self.running.lock() {
            Ok(map) => match map.get(run_id) {
                Some(signal) => {
                    signal.stop(why);
                    true
                }
                None => false,
            },
            Err(_) => false,
        }
    }

    /// Cancels a locally executing run; false if it is not executing here.
    pub fn cancel(&self, run_id: &str) -> bool {
        self.stop(run_id, Stop::Cancel)
    }

    pub fn is_running(&self, run_id: &str) -> bool {
        self.running
            .lock()
            .map(|m| m.contains_key(run_id))
            .unwrap_or(false)
    }
}

pub struct RegistryGuard<'a> {
    registry: &'a Registry,
    run_id: String,
}

impl Drop for RegistryGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.registry.running.lock() {
            map.remove(&self.run_id);
        }
    }
}

/// Expires a run that is not executing (and its open steps): what a read past `expires_at`
/// and the sweeper do.
pub async fn expire(state: &Runs, r: &engine::RunRef) -> Result<(), Error> {
    let from = [RunStatus::RequiresAction, RunStatus::Queued];
    engine::end_unfinished(state, r, &None, &from, engine::Unfinished::Expired, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_keeps_its_first_reason_and_shutdown_is_the_parents() {
        let shutdown = CancellationToken::new();
        let s = StopSignal::child_of(&shutdown);
        assert_eq!(s.reason(), None);
        s.stop(Stop::Expire);
        s.stop(Stop::Cancel);
        assert_eq!(s.reason(), Some(Stop::Expire));

        let other = StopSignal::child_of(&shutdown);
        shutdown.cancel();
        assert_eq!(other.reason(), Some(Stop::Shutdown));
    }

    #[test]
    fn the_registry_reaches_only_registered_runs() {
        let reg = Registry::default();
        let shutdown = CancellationToken::new();
        let (signal, guard) = reg.enter("run_a", &shutdown);
        assert!(reg.is_running("run_a"));
        assert!(!reg.stop("run_b", Stop::Cancel));
        assert!(reg.cancel("run_a"));
        assert_eq!(signal.reason(), Some(Stop::Cancel));
        drop(guard);
        assert!(!reg.is_running("run_a"));
    }
}
