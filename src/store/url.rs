//! Parsing of `--store` URLs into a backend choice. Only syntax lives here; connecting is the
//! backends' business.

use std::path::PathBuf;

pub const ACCEPTED_FORMS: &str = "expected sqlite://PATH (e.g. sqlite://./assistants.db or sqlite:///var/lib/ap.db) \
or cassandra://HOST:PORT[,HOST:PORT...]/KEYSPACE[?user=NAME&password_env=VAR&replication=N&consistency=local_quorum&tls=true&ca_file=PATH&dc=NAME]";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite { path: PathBuf },
    Cassandra(CassandraUrl),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CassandraUrl {
    pub hosts: Vec<String>,
    pub keyspace: String,
    pub user: Option<String>,
    /// Name of the environment variable holding the password (never the password itself).
    pub password_env: Option<String>,
    /// Replication factor for SimpleStrategy when the keyspace is created.
    pub replication: u32,
    /// Consistency for reads and writes: `local_quorum` (default), `quorum`, `local_one`, `one`.
    pub consistency: String,
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    /// Local datacenter for DC-aware routing.
    pub dc: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid store URL {url:?}: {reason}; {ACCEPTED_FORMS}")]
pub struct StoreUrlError {
    url: String,
    reason: String,
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<StoreUrl, StoreUrlError> {
        let fail = |reason: &str| StoreUrlError {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(fail("the SQLite path is empty"));
            }
            return Ok(StoreUrl::Sqlite {
                path: PathBuf::from(path),
            });
        }
        if let Some(rest) = url.strip_prefix("cassandra://") {
            let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
            let (hosts, keyspace) = main
                .split_once('/')
                .ok_or_else(|| fail("the keyspace is missing"))?;
            let hosts: Vec<String> = hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| {
                    if h.contains(':') && !h.ends_with(']') {
                        h.to_owned()
                    } else {
                        format!("{h}:9042")
                    }
                })
                .collect();
            if hosts.is_empty() {
                return Err(fail("no host given"));
            }
            let keyspace = keyspace.trim_end_matches('/').to_owned();
            if keyspace.is_empty()
                || keyspace.len() > 48
                || !keyspace
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                || keyspace.starts_with('_')
            {
                return Err(fail(
                    "the keyspace must be 1-48 letters, digits or underscores",
                ));
            }
            let mut out = CassandraUrl {
                hosts,
                keyspace,
                user: None,
                password_env: None,
                replication: 1,
                consistency: "local_quorum".to_owned(),
                tls: false,
                ca_file: None,
                dc: None,
            };
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                match k {
                    "user" => out.user = Some(v.to_owned()),
                    "password_env" => out.password_env = Some(v.to_owned()),
                    "password" => {
                        return Err(fail(
                            "passwords are not accepted in the URL; name an environment variable with password_env",
                        ));
                    }
                    "replication" => {
                        out.replication = v
                            .parse()
                            .ok()
                            .filter(|n| *n >= 1)
                            .ok_or_else(|| fail("replication must be a positive integer"))?;
                    }
                    "consistency" => {
                        let v = v.to_ascii_lowercase();
                        if ![
                            "local_quorum",
                            "quorum",
                            "local_one",
                            "one",
                            "all",
                            "each_quorum",
                        ]
                        .contains(&v.as_str())
                        {
                            return Err(fail("unknown consistency level"));
                        }
                        out.consistency = v;
                    }
                    "tls" => out.tls = v == "true" || v == "1",
                    "ca_file" => {
                        out.ca_file = Some(PathBuf::from(v));
                        out.tls = true;
                    }
                    "dc" => out.dc = Some(v.to_owned()),
                    other => return Err(fail(&format!("unknown option {other:?}"))),
                }
            }
            return Ok(StoreUrl::Cassandra(out));
        }
        Err(fail("unknown scheme"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            StoreUrl::parse("sqlite://./assistants.db").unwrap(),
            StoreUrl::Sqlite {
                path: "./assistants.db".into()
            }
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/x.db").unwrap(),
            StoreUrl::Sqlite {
                path: "/var/lib/x.db".into()
            }
        );
        assert!(StoreUrl::parse("sqlite://").is_err());
    }

    #[test]
    fn cassandra_urls() {
        let StoreUrl::Cassandra(c) = StoreUrl::parse(
            "cassandra://10.0.0.1:9042,10.0.0.2/assistants?user=token&password_env=ASTRA_TOKEN&replication=3",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.hosts, vec!["10.0.0.1:9042", "10.0.0.2:9042"]);
        assert_eq!(c.keyspace, "assistants");
        assert_eq!(c.user.as_deref(), Some("token"));
        assert_eq!(c.password_env.as_deref(), Some("ASTRA_TOKEN"));
        assert_eq!(c.replication, 3);
        assert_eq!(c.consistency, "local_quorum");
    }

    #[test]
    fn errors_name_the_accepted_forms() {
        for bad in [
            "mysql://x",
            "cassandra://host",
            "cassandra:///ks",
            "cassandra://h/ks?password=x",
            "cassandra://h/bad-name",
            "cassandra://h/ks?replication=0",
            "cassandra://h/ks?nope=1",
        ] {
            let e = StoreUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains("sqlite://PATH"), "{bad}: {e}");
        }
    }
}
