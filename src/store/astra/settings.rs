//! The Astra settings the store needs (from the `[astra]` section of the configuration).

use std::time::Duration;

/// Default DevOps API of Astra's production environment.
pub const DEFAULT_ASTRA_DEVOPS: &str = "https://api.astra.datastax.com";

/// DataStax Astra: how the proxy reaches Astra's DevOps API and keeps per-request sessions
/// (`astra-api-token` / `astra-db-id` headers) and the `astra://` store.
#[derive(Debug, Clone)]
pub struct AstraConfig {
    /// Base URL of Astra's DevOps API (bundle URLs, databases, keyspaces); another value
    /// for other Astra environments, or for tests.
    pub devops_url: http::Uri,
    /// Whether intercepted routes honour `astra-api-token` / `astra-db-id`. When off, such
    /// requests are refused rather than silently served from the configured store.
    pub per_request_headers: bool,
    /// Open per-request sessions kept at most (least recently used idle ones go first).
    pub max_sessions: usize,
    /// A per-request session unused this long is closed.
    pub idle_timeout: Duration,
    /// Keyspace the Assistants tables live in, in every per-request database.
    pub keyspace: String,
    /// Use each database's own default keyspace (the one its bundle names) instead of
    /// `keyspace`, which then only names the keyspace of databases the proxy creates.
    pub keyspace_from_bundle: bool,
    /// The database found, or created, for a caller who sends no `astra-db-id`.
    pub database_name: String,
    pub cloud_provider: String,
    pub region: String,
    /// `Retry-After` given while a database is being created.
    pub retry_after: u32,
    /// Budget for opening one database's session (bundle, metadata, CQL, schema).
    pub connect_timeout: Duration,
}

impl Default for AstraConfig {
    fn default() -> Self {
        AstraConfig {
            devops_url: http::Uri::from_static(DEFAULT_ASTRA_DEVOPS),
            per_request_headers: true,
            max_sessions: 64,
            idle_timeout: Duration::from_secs(600),
            keyspace: "assistant_api".to_owned(),
            keyspace_from_bundle: false,
            database_name: "assistant_api_db".to_owned(),
            cloud_provider: "GCP".to_owned(),
            region: "us-east1".to_owned(),
            retry_after: 10,
            connect_timeout: Duration::from_secs(60),
        }
    }
}
