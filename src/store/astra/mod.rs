//! DataStax Astra DB as the store: a caller's own database chosen per request
//! (`astra-api-token` + optional `astra-db-id`, as in datastax/astra-assistants-api), or one
//! database for the whole proxy (`--store astra://DATABASE_ID`).
//!
//! Astra is Cassandra 5 behind a TLS front door, so everything past the session is the
//! Cassandra backend's (`store::cassandra`: schema, statements, error mapping). This module
//! owns the door: the DevOps API (`devops`), the secure connect bundle (`bundle`), the
//! in-process connector that gives the `scylla` driver per-node mutual TLS with SNI through
//! local forwarders (`connector`), and the bounded per-request session cache (`sessions`).
//!
//! Astra's rules are kept: writes at LOCAL_QUORUM (never ONE/LOCAL_ONE/ANY), vector search as
//! on Cassandra 5 (ANN reads at LOCAL_ONE), keyspaces created through the DevOps API only.
//!
//! Tokens stay in memory: they are not logged, not put in errors or metrics, and the
//! session cache is keyed by a hash of them.

mod bundle;
mod connector;
mod devops;
mod sessions;
mod settings;

use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

pub use bundle::Bundle;
pub use sessions::AstraSessions;
pub use settings::{AstraConfig, DEFAULT_ASTRA_DEVOPS};

use super::cassandra::{Connected, SessionSource};
use super::url::AstraUrl;
use super::{Store, StoreEnv, StoreError, StoreResult};

/// An Astra application token. It has no `Display`, and its `Debug` is masked, so it cannot
/// reach a log line or an error text by accident.
#[derive(Clone)]
pub struct Token(Arc<str>);

/// A token's cache key: SHA-256 over a domain tag and the token.
pub type TokenHash = [u8; 32];

impl Token {
    pub fn new(token: &str) -> Token {
        Token(token.into())
    }

    /// The token itself, for the DevOps `Authorization` header and the CQL login only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        let mut h = Sha256::new();
        h.update(b"assistants-proxy astra token v1\0");
        h.update(self.0.as_bytes());
        h.finalize().into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The database a request asks for through its headers.
#[derive(Debug, Clone)]
pub struct AstraTarget {
    pub token: Token,
    /// Lower-case UUID; None = the token's default database.
    pub database_id: Option<String>,
}

/// Whether `s` is a UUID in its usual 8-4-4-4-12 hex form (how Astra names databases).
pub fn is_database_id(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Opens the `astra://` store: one database for every request without Astra headers. Like
/// `cassandra://`, an unreachable database does not stop start-up; the store connects on
/// demand. A missing token variable does stop it (a configuration mistake).
pub async fn open(url: &AstraUrl, env: &StoreEnv) -> StoreResult<Store> {
    let token = std::env::var(&url.token_env).map_err(|_| {
        StoreError::Other(format!(
            "Astra store configuration: token_env names {:?}, which is not set",
            url.token_env
        ))
    })?;
    let devops = devops::Devops::new(&env.astra.devops_url)
        .map_err(|e| StoreError::Other(format!("Astra DevOps client: {e}")))?;
    let source = Pinned {
        devops,
        token: Token::new(token.trim()),
        database: url.database_id.clone(),
        keyspace: connector::KeyspaceChoice {
            name: url.keyspace.clone(),
            from_bundle: false,
        },
        forward: connector::ForwardEnv {
            tasks: env.tasks.clone(),
            shutdown: env.shutdown.clone(),
        },
        budget: env.astra.connect_timeout,
    };
    super::cassandra::open_source(Arc::new(source)).await
}

/// The `astra://` store's way to (re)open its session.
struct Pinned {
    devops: devops::Devops,
    token: Token,
    database: String,
    keyspace: connector::KeyspaceChoice,
    forward: connector::ForwardEnv,
    budget: std::time::Duration,
}

#[async_trait]
impl SessionSource for Pinned {
    async fn open(&self) -> StoreResult<Connected> {
        connector::connect(
            &self.devops,
            &self.token,
            &self.database,
            &self.keyspace,
            &self.forward,
            self.budget,
        )
        .await
        .map_err(StoreError::from)
    }

    fn describe(&self) -> String {
        format!(
            "Astra database {}, keyspace {}",
            self.database, self.keyspace.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_do_not_print() {
        let t = Token::new("AstraCS:very-secret");
        assert!(!format!("{t:?}").contains("secret"));
        let target = AstraTarget {
            token: t.clone(),
            database_id: None,
        };
        assert!(!format!("{target:?}").contains("secret"));
        assert_eq!(t.hash(), Token::new("AstraCS:very-secret").hash());
        assert_ne!(t.hash(), Token::new("AstraCS:other").hash());
    }

    #[test]
    fn database_ids_are_uuids() {
        assert!(is_database_id("0b6f7d5e-1111-4222-8333-444455556666"));
        assert!(is_database_id("0B6F7D5E-1111-4222-8333-444455556666"));
        assert!(!is_database_id("0b6f7d5e11114222833344445555666"));
        assert!(!is_database_id("0b6f7d5e-1111-4222-8333-44445555666g"));
        assert!(!is_database_id(""));
    }
}
