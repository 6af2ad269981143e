//! The embedded SQLite backend (placeholder until the implementation lands).

use std::path::Path;

use super::{Store, StoreError, StoreResult};

/// Opens (creating and migrating) the database file.
pub async fn open(path: &Path) -> StoreResult<Store> {
    Err(StoreError::Other(format!(
        "SQLite backend not implemented yet ({})",
        path.display()
    )))
}
