//! The run engine: executing runs as tracked background work (independent of the request
//! that started them), translating the upstream's chat stream into Assistants events,
//! tools (function calls, file_search), cancellation, expiry and crash recovery.
//!
//! - `service`: creating, cancelling, resuming runs (what the HTTP handlers call).
//! - `engine`: executes one run until it completes or needs tool outputs.
//! - `prompt`: builds the chat request from the assistant, run and thread.
//! - `translate`: pure chunk → event translation, unit-tested chunk by chunk.
//! - `events`: the event type and its SSE encoding.
//! - `sweeper`: expiry and dead-lease recovery, on every proxy.

pub mod engine;
pub mod events;
pub mod file_search;
pub mod prompt;
pub mod service;
pub mod sweeper;
pub mod translate;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

/// Wall-clock seconds for run timestamps, with an offset tests can advance (so expiry can be
/// tested without waiting ten minutes).
#[derive(Debug, Default)]
pub struct Clock {
    offset_secs: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        real + self.offset_secs.load(Ordering::Relaxed)
    }

    pub fn now_millis(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        real + self.offset_secs.load(Ordering::Relaxed) * 1000
    }

    /// Moves this process's notion of time forward (tests).
    pub fn advance(&self, secs: i64) {
        self.offset_secs.fetch_add(secs, Ordering::Relaxed);
    }
}

/// Runs executing in this process, so a cancel arriving here reaches the engine at once
/// (a cancel arriving at another proxy is seen at the next lease renewal).
#[derive(Default)]
pub struct Registry {
    running: Mutex<HashMap<String, CancellationToken>>,
}

impl Registry {
    /// Registers a run; the guard unregisters it when the engine stops.
    pub fn enter(&self, run_id: &str) -> (CancellationToken, RegistryGuard<'_>) {
        let token = CancellationToken::new();
        if let Ok(mut map) = self.running.lock() {
            map.insert(run_id.to_owned(), token.clone());
        }
        (
            token,
            RegistryGuard {
                registry: self,
                run_id: run_id.to_owned(),
            },
        )
    }

    /// Signals a locally executing run; false if it is not executing here.
    pub fn cancel(&self, run_id: &str) -> bool {
        match self.running.lock() {
            Ok(map) => match map.get(run_id) {
                Some(t) => {
                    t.cancel();
                    true
                }
                None => false,
            },
            Err(_) => false,
        }
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
