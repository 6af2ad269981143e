//! What a `cassandra://` URL asks for (hosts, keyspace, consistency, credentials, TLS),
//! resolved once at start-up so configuration mistakes fail there, and the driver session
//! built from it.

use std::fmt::Display;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::statement::{Consistency, SerialConsistency};

use super::{CONNECT_TIMEOUT, Connected, REQUEST_TIMEOUT, SessionSource, fault};
use crate::store::{CassandraUrl, StoreError, StoreResult};

/// What the URL asks for, resolved once (secrets read, TLS configured).
#[derive(Clone)]
pub(crate) struct Settings {
    hosts: Vec<String>,
    keyspace: String,
    replication: u32,
    consistency: Consistency,
    credentials: Option<(String, String)>,
    tls: Option<Arc<rustls::ClientConfig>>,
    dc: Option<String>,
    create_keyspace: bool,
}

impl Settings {
    pub(super) fn from_url(url: &CassandraUrl) -> StoreResult<Settings> {
        let consistency = match url.consistency.as_str() {
            "local_quorum" => Consistency::LocalQuorum,
            "quorum" => Consistency::Quorum,
            "local_one" => Consistency::LocalOne,
            "one" => Consistency::One,
            "all" => Consistency::All,
            "each_quorum" => Consistency::EachQuorum,
            other => return Err(config_error(format!("unknown consistency {other:?}"))),
        };
        // Astra logs in as user `token` with an `AstraCS:` application token as password;
        // that is this same pair, so nothing here is specific to it.
        let credentials = match (&url.user, &url.password_env) {
            (None, None) => None,
            (Some(user), Some(var)) => {
                let password = std::env::var(var).map_err(|_| {
                    config_error(format!("password_env names {var:?}, which is not set"))
                })?;
                Some((user.clone(), password))
            }
            (Some(_), None) => {
                return Err(config_error(
                    "user is set but password_env is not (name the variable holding the password)",
                ));
            }
            (None, Some(_)) => return Err(config_error("password_env is set but user is not")),
        };
        let tls = if url.tls {
            Some(tls_config(url.ca_file.as_deref())?)
        } else {
            None
        };
        Ok(Settings {
            hosts: url.hosts.clone(),
            keyspace: url.keyspace.clone(),
            replication: url.replication,
            consistency,
            credentials,
            tls,
            dc: url.dc.clone(),
            create_keyspace: url.create_keyspace,
        })
    }

    /// Astra's form: contact points that are the connector's local forwarders, user `token`
    /// with the application token as password, LOCAL_QUORUM (Astra refuses writes at
    /// ONE/LOCAL_ONE/ANY), routing that prefers the bundle's local DC.
    pub(crate) fn astra(
        hosts: Vec<String>,
        keyspace: &str,
        token: &str,
        local_dc: Option<String>,
    ) -> Settings {
        Settings {
            hosts,
            keyspace: keyspace.to_owned(),
            replication: 3,
            consistency: Consistency::LocalQuorum,
            credentials: Some(("token".to_owned(), token.to_owned())),
            tls: None,
            dc: local_dc,
            // As before this field existed: `open` made the keyspace when missing.
            create_keyspace: true,
        }
    }

    pub(crate) fn session_builder(&self) -> SessionBuilder {
        let mut policy = DefaultPolicy::builder();
        if let Some(dc) = &self.dc {
            policy = policy.prefer_datacenter(dc.clone());
        }
        let profile = ExecutionProfile::builder()
            .consistency(self.consistency)
            .serial_consistency(Some(SerialConsistency::LocalSerial))
            .request_timeout(Some(REQUEST_TIMEOUT))
            .load_balancing_policy(policy.build())
            .build();
        let mut builder = SessionBuilder::new()
            .known_nodes(&self.hosts)
            .connection_timeout(CONNECT_TIMEOUT)
            .default_execution_profile_handle(profile.into_handle())
            // Client timestamps, monotonic per process: "replace" is a range delete followed
            // by inserts, and the inserts must win even when coordinators' clocks differ.
            .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()));
        if let Some((user, password)) = &self.credentials {
            builder = builder.user(user.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            builder = builder.tls_context(Some(tls.clone()));
        }
        builder
    }
}

fn config_error(message: impl Display) -> StoreError {
    StoreError::Other(format!("Cassandra store configuration: {message}"))
}

/// A TLS client trusting `ca_file` if given, else the platform's roots (the Mozilla roots
/// when the platform has none). The driver verifies node certificates against the node's IP
/// address (it sends no SNI), so certificates must carry IP SANs.
fn tls_config(ca_file: Option<&Path>) -> StoreResult<Arc<rustls::ClientConfig>> {
    use crate::tls::{Roots, root_store};
    let roots = match ca_file {
        Some(path) => {
            root_store(&[Roots::PemFile(path)]).map_err(|e| config_error(format!("ca_file {e}")))?
        }
        None => {
            let platform = root_store(&[Roots::Platform]).map_err(config_error)?;
            if platform.is_empty() {
                root_store(&[Roots::Mozilla]).map_err(config_error)?
            } else {
                platform
            }
        }
    };
    let config = crate::tls::client_config(roots).map_err(config_error)?;
    Ok(Arc::new(config))
}

#[async_trait]
impl SessionSource for Settings {
    async fn open(&self) -> StoreResult<Connected> {
        let session = self
            .session_builder()
            .build()
            .await
            .map_err(|e| fault("connecting", e))?;
        Ok(Connected {
            session,
            keyspace: self.keyspace.clone(),
            replication: self.replication,
            create_keyspace: self.create_keyspace,
            keep: None,
        })
    }

    fn describe(&self) -> String {
        format!("keyspace {}", self.keyspace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(query: &str) -> CassandraUrl {
        match crate::store::StoreUrl::parse(&format!("cassandra://127.0.0.1:9042/ks{query}")) {
            Ok(crate::store::StoreUrl::Cassandra(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn credentials_come_from_the_named_variable() {
        // Astra's form: user `token`, the `AstraCS:` token in a variable (PATH stands in).
        let s = Settings::from_url(&url("?user=token&password_env=PATH")).unwrap();
        let (user, password) = s.credentials.unwrap();
        assert_eq!(user, "token");
        assert_eq!(password, std::env::var("PATH").unwrap());
        assert!(Settings::from_url(&url("")).unwrap().credentials.is_none());
        for bad in [
            "?user=token&password_env=AP_TEST_SURELY_UNSET_VARIABLE",
            "?user=token",
            "?password_env=PATH",
        ] {
            assert!(
                matches!(Settings::from_url(&url(bad)), Err(StoreError::Other(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn consistency_levels_map() {
        let s = Settings::from_url(&url("?consistency=local_one")).unwrap();
        assert_eq!(s.consistency, Consistency::LocalOne);
        assert_eq!(
            Settings::from_url(&url("")).unwrap().consistency,
            Consistency::LocalQuorum
        );
    }

    #[test]
    fn tls_trusts_the_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).unwrap();
        let s = Settings::from_url(&url(&format!("?ca_file={}", path.display()))).unwrap();
        assert!(s.tls.is_some());
        assert!(Settings::from_url(&url("?tls=true")).unwrap().tls.is_some());

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        for bad in [empty, dir.path().join("missing.pem")] {
            let r = Settings::from_url(&url(&format!("?ca_file={}", bad.display())));
            assert!(matches!(r, Err(StoreError::Other(_))));
        }
    }
}
