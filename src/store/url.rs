//! Parsing of `--store` URLs into a backend choice. Only syntax lives here; connecting is the
//! backends' business.

use std::path::PathBuf;

pub const ACCEPTED_FORMS: &str = "expected sqlite://PATH (e.g. sqlite://./assistants.db or sqlite:///var/lib/ap.db) \
or cassandra://HOST:PORT[,HOST:PORT...]/KEYSPACE[?user=NAME&password_env=VAR&replication=N&consistency=local_quorum&tls=true&ca_file=PATH&dc=NAME] \
or astra://DATABASE_ID[?keyspace=NAME&token_env=VAR] (token_env defaults to ASTRA_DB_APPLICATION_TOKEN)";

/// Where `astra://` reads the application token when the URL names no variable.
pub const DEFAULT_ASTRA_TOKEN_ENV: &str = "ASTRA_DB_APPLICATION_TOKEN";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite { path: PathBuf },
    Cassandra(CassandraUrl),
    Astra(AstraUrl),
}

/// One DataStax Astra database, reached through its secure connect bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AstraUrl {
    /// The database id (a UUID), as the DevOps API names it.
    pub database_id: String,
    pub keyspace: String,
    /// Name of the environment variable holding the `AstraCS:` token (never the token).
    pub token_env: String,
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
    /// Whether a missing keyspace is created (always, from a URL). A store only read from
    /// (a migration's source) turns this off, so a mistyped keyspace is an error rather than
    /// an empty store.
    pub create_keyspace: bool,
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
            url: redact_secrets(url),
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
            if !valid_keyspace(&keyspace) {
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
                create_keyspace: true,
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
        if let Some(rest) = url.strip_prefix("astra://") {
            let (id, query) = rest.split_once('?').unwrap_or((rest, ""));
            let id = id.trim_end_matches('/');
            if !crate::store::astra::is_database_id(id) {
                return Err(fail("the Astra database id must be a UUID"));
            }
            let mut out = AstraUrl {
                database_id: id.to_ascii_lowercase(),
                keyspace: "assistant_api".to_owned(),
                token_env: DEFAULT_ASTRA_TOKEN_ENV.to_owned(),
            };
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                match k {
                    "keyspace" => {
                        if !valid_keyspace(v) {
                            return Err(fail(
                                "the keyspace must be 1-48 letters, digits or underscores",
                            ));
                        }
                        out.keyspace = v.to_owned();
                    }
                    "token_env" if !v.is_empty() && !v.contains('=') => {
                        out.token_env = v.to_owned()
                    }
                    "token_env" => return Err(fail("token_env must name a variable")),
                    "token" | "password" => {
                        return Err(fail(
                            "tokens are not accepted in the URL; name an environment variable with token_env",
                        ));
                    }
                    other => return Err(fail(&format!("unknown option {other:?}"))),
                }
            }
            return Ok(StoreUrl::Astra(out));
        }
        Err(fail("unknown scheme"))
    }
}

/// The URL with the values of `password=` / `token=` masked: errors quote the URL, and a
/// secret pasted into it must not travel on into logs.
fn redact_secrets(url: &str) -> String {
    let Some((main, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k == "password" || k == "token" => format!("{k}=<redacted>"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{main}?{}", pairs.join("&"))
}

pub(crate) fn valid_keyspace(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 48
        && !k.starts_with('_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
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
    fn astra_urls() {
        let id = "1b2e3c4d-0000-4000-8000-00000000abcd";
        let StoreUrl::Astra(a) = StoreUrl::parse(&format!("astra://{id}")).unwrap() else {
            panic!()
        };
        assert_eq!(a.database_id, id);
        assert_eq!(a.keyspace, "assistant_api");
        assert_eq!(a.token_env, "ASTRA_DB_APPLICATION_TOKEN");
        let StoreUrl::Astra(a) = StoreUrl::parse(&format!(
            "astra://{}?keyspace=ks1&token_env=MY_TOKEN",
            id.to_uppercase()
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(a.database_id, id);
        assert_eq!(a.keyspace, "ks1");
        assert_eq!(a.token_env, "MY_TOKEN");
        for bad in [
            "astra://not-a-uuid".to_owned(),
            format!("astra://{id}?token=AstraCS:x"),
            format!("astra://{id}?keyspace=bad-name"),
            format!("astra://{id}?region=x"),
        ] {
            let e = StoreUrl::parse(&bad).unwrap_err().to_string();
            assert!(e.contains("astra://DATABASE_ID"), "{bad}: {e}");
            assert!(!e.contains("AstraCS:x"), "{e}");
        }
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
