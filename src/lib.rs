//! assistants-proxy: a transparent reverse proxy for OpenAI-compatible APIs that serves the
//! stateful Assistants surface (assistants, threads, messages, runs, vector stores, files)
//! from a database the operator owns, and forwards everything else byte for byte.
//!
//! Module map, top layer first (docs/ARCHITECTURE.md explains it; tests/layers.rs checks
//! that imports only point down):
//! - [`server`], [`h1`]: listener, connections, TLS, the HTTP/1 relay, shutdown order.
//! - [`api`]: handlers, services and request types per resource; `dispatch`.
//! - [`app`]: the shared state (`AppState`) and start-up.
//! - [`runs`]: the run engine, its state machine, the sweeper.
//! - [`retrieval`]: vector-store ingestion (extract, chunk, embed) and search;
//!   [`interpreter`]: code_interpreter's executors and per-thread sessions.
//! - [`forward`]: the pass-through forwarder; [`tenancy`]: who a request acts for.
//! - [`upstream`]: the pooled upstream client; [`telemetry`]: logging.
//! - [`config`]: flags, TOML file, validation; [`error`]: the one error type.
//! - [`transfer`]: moving whole stores (`migrate`, `export`, `import`).
//! - [`store`]: storage traits and backends (SQLite, Cassandra, Astra).
//! - Foundation: [`model`] (the API's objects), [`ids`], [`body`], [`metrics`], [`tls`],
//!   [`secrets`] (credentials out of kept text), [`clock`], [`routes`] (the route table),
//!   [`shutdown`] (the cancellation watch), [`busy_poll`].

pub mod api;
pub mod app;
pub mod body;
pub mod busy_poll;
pub mod clock;
pub mod config;
pub mod error;
pub mod forward;
pub mod h1;
pub mod ids;
pub mod interpreter;
pub mod metrics;
pub mod model;
pub mod retrieval;
pub mod routes;
pub mod runs;
pub mod secrets;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tenancy;
pub mod tls;
pub mod transfer;
pub mod upstream;
