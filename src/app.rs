//! The proxy's shared state and its start-up: everything a request, a run or an ingestion
//! may need (configuration, metrics, the upstream client, the store, the task tracker and
//! the shutdown token, the run registry), built once from the configuration.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::forward::Forwarder;
use crate::metrics::Metrics;
use crate::routes::RouteTable;
use crate::store::astra::AstraSessions;
use crate::store::{Store, StoreEnv, StoreUrl};
use crate::tenancy::Caller;
use crate::upstream::Upstream;

/// Everything a request handler may need, shared by all connections.
pub struct AppState {
    pub config: Config,
    pub metrics: Metrics,
    /// The upstream: the proxy's own calls (chat completions, embeddings) go through it.
    pub upstream: Upstream,
    /// Forwards what the proxy does not answer itself (over the same upstream).
    pub forwarder: Forwarder,
    pub store: Store,
    /// Per-request Astra databases (`astra-api-token`), when `astra.per_request_headers`.
    pub astra: Option<Arc<AstraSessions>>,
    /// The stores' own background work (Astra forwarders), closed after `tasks`.
    pub store_env: StoreEnv,
    pub routes: RouteTable,
    /// Background work (upgrade tunnels, later runs and ingestion); shutdown waits for it.
    pub tasks: TaskTracker,
    /// Cancelled when the grace period ends: long-lived work stops and saves its state.
    pub shutdown: CancellationToken,
    /// Run timestamps and expiry (tests can move it forward).
    pub clock: Arc<crate::clock::Clock>,
    /// The run engine's handle (its settings, the runs executing here, this process's name
    /// in run leases), sharing this state's upstream, retrieval, clock and shutdown token.
    pub runs: Arc<crate::runs::Runs>,
    /// Retrieval's handle (ingestion, search, vector-store rules), sharing this state's
    /// settings, upstream, clock, tasks and shutdown token.
    pub retrieval: Arc<crate::retrieval::Retrieval>,
    /// Polls the sockets between requests instead of sleeping (`server.busy_poll_us`).
    pub busy_poll: Option<Arc<crate::busy_poll::BusyPoll>>,
    request_ids: RequestIds,
}

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("TLS: {0}")]
    Tls(String),
}

impl AppState {
    /// Builds the shared state: upstream client, store, metrics.
    pub async fn build(config: Config) -> Result<Arc<AppState>, StartError> {
        let metrics = Metrics::new();
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let upstream =
            Upstream::new(&config.upstream, metrics.clone()).map_err(StartError::Config)?;
        let forwarder = Forwarder::new(upstream.clone(), tasks.clone(), shutdown.clone());
        let store_url =
            StoreUrl::parse(&config.store_url).map_err(|e| StartError::Config(e.to_string()))?;
        let store_env = StoreEnv::new(config.astra.clone());
        let store = Store::open_with(&store_url, &store_env).await?;
        let astra = if config.astra.per_request_headers {
            Some(Arc::new(
                AstraSessions::new(&config.astra, &store_env).map_err(StartError::Config)?,
            ))
        } else {
            None
        };
        let clock = Arc::new(crate::clock::Clock::default());
        let retrieval = Arc::new(crate::retrieval::Retrieval::new(
            config.retrieval.clone(),
            upstream.clone(),
            clock.clone(),
            tasks.clone(),
            shutdown.clone(),
        ));
        let interpreter = Arc::new(crate::interpreter::Interpreter::new(
            config.code_interpreter.clone(),
            crate::interpreter::executor_for(&config.code_interpreter),
            tasks.clone(),
        ));
        // Checking the executor starts a sandbox or asks the gateway: in the background, so
        // start-up does not wait on it; the log says what it found.
        let checking = interpreter.clone();
        tasks.spawn(async move { checking.check().await });
        let runs = Arc::new(crate::runs::Runs {
            interpreter,
            config: config.runs.clone(),
            upstream: upstream.clone(),
            retrieval: retrieval.clone(),
            clock: clock.clone(),
            registry: crate::runs::Registry::default(),
            instance_id: crate::ids::new_id("proxy_"),
            shutdown: shutdown.clone(),
            store: store.clone(),
            astra: astra.clone(),
        });
        let busy_poll = config
            .busy_poll
            .map(|window| Arc::new(crate::busy_poll::BusyPoll::new(window)));
        Ok(Arc::new(AppState {
            config,
            metrics,
            upstream,
            forwarder,
            store,
            astra,
            store_env,
            routes: RouteTable::new(),
            tasks,
            shutdown,
            clock,
            runs,
            retrieval,
            busy_poll,
            request_ids: RequestIds::new(),
        }))
    }

    /// Every request, on the relay or through hyper, says it arrived: busy polling, when on,
    /// keeps polling for another window.
    pub fn request_arrived(&self) {
        if let Some(poll) = &self.busy_poll {
            poll.touch();
        }
    }

    /// Who a request acts for, and the store that serves it (see [`Caller::resolve`]).
    pub async fn caller(&self, headers: &http::HeaderMap) -> Result<Caller, crate::error::Error> {
        Caller::resolve(headers, &self.config, &self.store, self.astra.as_deref()).await
    }

    /// A new request id (for logs and the `x-request-id` of local answers).
    pub fn next_request_id(&self) -> RequestId {
        self.request_ids.next()
    }
}

/// A request id: `req_` + a per-process random prefix + a counter. Cheap, unique, and
/// meaningless to anyone who sees it. Kept as its two numbers and formatted only when shown
/// (a disabled span or a forwarded request never needs the text).
#[derive(Clone, Copy)]
pub struct RequestId {
    prefix: u32,
    n: u64,
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "req_{:08x}{:012x}", self.prefix, self.n)
    }
}

struct RequestIds {
    prefix: u32,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or(0);
        RequestIds {
            prefix: nanos ^ std::process::id().rotate_left(16),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> RequestId {
        RequestId {
            prefix: self.prefix,
            n: self.counter.fetch_add(1, Ordering::Relaxed),
        }
    }
}
