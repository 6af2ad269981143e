//! assistants-proxy: a transparent reverse proxy for OpenAI-compatible APIs that serves the
//! stateful Assistants surface (assistants, threads, messages, runs, vector stores, files)
//! from a database the operator owns, and forwards everything else byte for byte.
//!
//! Module map:
//! - [`config`]: flags, TOML file, validation.
//! - [`server`]: listener, connections, graceful shutdown; [`routes`]: the route table.
//! - [`clock`]: the process clock (timestamps, expiry; tests move it forward).
//! - [`shutdown`]: the cancellation watch the listener and the HTTP/1 relay ([`h1`]) share.
//! - [`forward`]: the pass-through forwarder; [`upstream`]: the pooled upstream client.
//! - [`api`]: local handlers per resource; [`store`]: storage traits and backends.
//! - [`retrieval`]: vector-store ingestion (extract, chunk, embed) and search.
//! - [`error`]: the one error type; [`metrics`]: Prometheus series; [`body`]: body types.
//! - [`secrets`]: scrubbing credentials out of upstream text the proxy keeps or returns.
//! - [`tls`]: the crypto provider, trust anchors, client and server configurations.

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
pub mod upstream;
