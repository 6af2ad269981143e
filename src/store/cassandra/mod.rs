//! The Cassandra 5 / Astra backend (placeholder until the implementation lands).

use super::{CassandraUrl, Store, StoreError, StoreResult};

/// Connects (lazily: an unreachable cluster must not stop the proxy) and migrates the schema.
pub async fn open(url: &CassandraUrl) -> StoreResult<Store> {
    Err(StoreError::Other(format!(
        "Cassandra backend not implemented yet ({})",
        url.keyspace
    )))
}
