//! Retrieval for `file_search` and vector-store search: the ingestion pipeline (extract →
//! chunk → embed → store) and query-time search.
//!
//! - [`extract`]: file bytes → text (text, Markdown, code, JSON, HTML, PDF, DOCX).
//! - [`chunk`]: text → token windows (tiktoken `cl100k_base`).
//! - [`embed`]: texts → vectors through the upstream's `/v1/embeddings`, batched, retried.
//! - [`ingest`]: the tracked background task that ingests one vector-store file, holding a
//!   lease so a reader can tell a dead ingestion from a slow one.
//! - [`search`]: query → best-first chunks across vector stores (also the run engine's
//!   `file_search` tool); [`rewrite`]: a search's `rewrite_query`, by the upstream's chat model.
//!
//! - [`stores`]: the vector-store rules the API and the run engine share (derived status and
//!   counts, expiry, activity).
//!
//! [`Retrieval`] is the pipeline's handle: what it uses of the process (settings, the upstream,
//! the clock, the task tracker and the shutdown token) and the runtime state it shares. It is
//! built once with `AppState` and held there, never in a global, so several proxies in one test
//! process stay apart.

pub mod chunk;
pub mod embed;
pub mod extract;
pub mod ingest;
pub mod rewrite;
pub mod search;
pub mod stores;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::RetrievalConfig;
use crate::store::Tenant;
use crate::upstream::Upstream;

/// Why a file could not be ingested, in OpenAI's `last_error` terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestError {
    /// `server_error`, `unsupported_file` or `invalid_file` (the spec's enum).
    pub code: &'static str,
    pub message: String,
}

impl IngestError {
    pub fn unsupported(message: impl Into<String>) -> IngestError {
        IngestError {
            code: "unsupported_file",
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> IngestError {
        IngestError {
            code: "invalid_file",
            message: message.into(),
        }
    }

    pub fn server(message: impl Into<String>) -> IngestError {
        IngestError {
            code: "server_error",
            message: message.into(),
        }
    }

    /// The `last_error` object of a failed vector-store file.
    pub fn to_last_error(&self) -> Value {
        json!({"code": self.code, "message": self.message})
    }
}

/// Identifies one vector-store file of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub tenant: String,
    pub vector_store_id: String,
    pub file_id: String,
}

impl FileKey {
    pub fn new(tenant: &Tenant, vector_store_id: &str, file_id: &str) -> FileKey {
        FileKey {
            tenant: tenant.as_str().to_owned(),
            vector_store_id: vector_store_id.to_owned(),
            file_id: file_id.to_owned(),
        }
    }
}

/// One registered ingestion.
#[derive(Debug, Clone)]
pub struct Registration {
    pub key: FileKey,
    generation: u64,
    /// Cancelled when the ingestion must stop.
    pub token: CancellationToken,
}

/// How often a store's in-progress files are scanned for dead ingestions at most: the lease
/// is a minute long, so a few seconds of delay in noticing one costs nothing, while a poller
/// retrieving a large batch every second would otherwise re-read every file each time.
const REPAIR_SCAN_INTERVAL: Duration = Duration::from_secs(5);

/// The pipeline's handle: what it uses of the process, and its per-process state.
pub struct Retrieval {
    pub config: RetrievalConfig,
    /// Embeddings and query rewrites go through it.
    pub upstream: Upstream,
    /// Vector-store expiry and activity (tests can move it forward).
    pub clock: Arc<Clock>,
    /// Ingestions run as tracked background work; shutdown waits for them.
    pub tasks: TaskTracker,
    /// Cancelled when the grace period ends: ingestions stop and record why.
    pub shutdown: CancellationToken,
    /// Bounds concurrent ingestions; queued ones wait here (still holding their lease).
    pub permits: Arc<Semaphore>,
    /// Ingestions this process runs (queued or active), by file: the token stops one when
    /// its file is deleted, its batch cancelled or its store deleted.
    running: Mutex<HashMap<FileKey, (u64, CancellationToken)>>,
    /// Tells registrations of the same file apart.
    generation: AtomicU64,
    /// When each store (by tenant and id) was last scanned for expired leases.
    scanned: Mutex<HashMap<(String, String), Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent whatever a panicking holder was doing (single inserts and
    // removes), so a poisoned lock is still usable.
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Retrieval {
    pub fn new(
        config: RetrievalConfig,
        upstream: Upstream,
        clock: Arc<Clock>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Retrieval {
        Retrieval {
            permits: Arc::new(Semaphore::new(config.max_concurrent_ingestions.max(1))),
            config,
            upstream,
            clock,
            tasks,
            shutdown,
            running: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            scanned: Mutex::new(HashMap::new()),
        }
    }

    /// Registers an ingestion; a previous one of the same file is cancelled (re-added files
    /// start over).
    pub fn register(&self, key: FileKey) -> Registration {
        let token = CancellationToken::new();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        if let Some((_, old)) = lock(&self.running).insert(key.clone(), (generation, token.clone()))
        {
            old.cancel();
        }
        Registration {
            key,
            generation,
            token,
        }
    }

    /// Forgets an ingestion that ended, unless a newer one of the same file replaced it.
    pub fn unregister(&self, reg: &Registration) {
        let mut running = lock(&self.running);
        if running
            .get(&reg.key)
            .is_some_and(|(g, _)| *g == reg.generation)
        {
            running.remove(&reg.key);
        }
    }

    /// Whether `reg` is still the file's latest registration (not replaced by a re-add).
    pub fn is_current(&self, reg: &Registration) -> bool {
        lock(&self.running)
            .get(&reg.key)
            .is_some_and(|(g, _)| *g == reg.generation)
    }

    /// Whether this process is ingesting the file right now (its lease is then alive).
    pub fn is_running(&self, key: &FileKey) -> bool {
        lock(&self.running).contains_key(key)
    }

    /// Stops every ingestion matching `pred`.
    pub fn cancel_where(&self, pred: impl Fn(&FileKey) -> bool) {
        for (key, (_, token)) in lock(&self.running).iter() {
            if pred(key) {
                token.cancel();
            }
        }
    }

    /// Whether a store is due for a lease scan (and records that it is being scanned).
    pub fn scan_due(&self, tenant: &Tenant, vs_id: &str) -> bool {
        let mut scanned = lock(&self.scanned);
        let now = Instant::now();
        // Keep the map small: entries older than the interval carry no information.
        if scanned.len() > 10_000 {
            scanned.retain(|_, at| now.duration_since(*at) < REPAIR_SCAN_INTERVAL);
        }
        let key = (tenant.as_str().to_owned(), vs_id.to_owned());
        match scanned.get(&key) {
            Some(at) if now.duration_since(*at) < REPAIR_SCAN_INTERVAL => false,
            _ => {
                scanned.insert(key, now);
                true
            }
        }
    }
}
