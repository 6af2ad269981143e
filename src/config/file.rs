//! The TOML file exactly as the operator wrote it: every key optional, unknown keys refused
//! (`deny_unknown_fields`), no defaults applied here (`Config::resolve` does that).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, LogFormat, TenancyMode, err};

/// The TOML file, exactly as written by the operator. Every section and key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: FileServer,
    #[serde(default)]
    pub upstream: FileUpstream,
    #[serde(default)]
    pub store: FileStore,
    #[serde(default)]
    pub limits: FileLimits,
    #[serde(default)]
    pub tenancy: FileTenancy,
    #[serde(default)]
    pub runs: FileRuns,
    #[serde(default)]
    pub retrieval: FileRetrieval,
    #[serde(default)]
    pub astra: FileAstra,
    #[serde(default)]
    pub code_interpreter: super::FileInterpreter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAstra {
    pub devops_url: Option<String>,
    pub per_request_headers: Option<bool>,
    pub max_sessions: Option<usize>,
    pub idle_timeout_seconds: Option<u64>,
    pub keyspace: Option<String>,
    pub keyspace_from_bundle: Option<bool>,
    pub database_name: Option<String>,
    pub cloud_provider: Option<String>,
    pub region: Option<String>,
    pub retry_after_seconds: Option<u32>,
    pub connect_timeout_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRuns {
    pub expires_after_seconds: Option<u64>,
    pub lease_seconds: Option<u64>,
    pub sweep_interval_seconds: Option<u64>,
    pub default_context_tokens: Option<u64>,
    pub model_attempts: Option<u32>,
    pub model_retry_base_ms: Option<u64>,
    pub model_retry_max_wait_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    pub listen: Option<String>,
    pub log_format: Option<LogFormat>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub shutdown_grace_seconds: Option<u64>,
    pub shutdown_cleanup_seconds: Option<u64>,
    pub header_read_timeout_seconds: Option<u64>,
    pub body_read_timeout_seconds: Option<u64>,
    pub worker_threads: Option<usize>,
    pub access_log: Option<bool>,
    pub http1_fast_path: Option<bool>,
    pub busy_poll_us: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    pub url: Option<String>,
    pub connect_timeout_ms: Option<u64>,
    pub response_head_timeout_seconds: Option<u64>,
    pub idle_timeout_seconds: Option<u64>,
    pub pool_max_idle_per_host: Option<usize>,
    pub pool_idle_timeout_seconds: Option<u64>,
    pub http2: Option<bool>,
    pub native_roots: Option<bool>,
    pub extra_ca_file: Option<PathBuf>,
    pub api_key_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStore {
    pub url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_json_body_bytes: Option<u64>,
    pub max_upload_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTenancy {
    pub mode: Option<TenancyMode>,
    pub header: Option<String>,
    /// `[[tenancy.keys]]`: keys (by hash) that belong to a named tenant.
    #[serde(default)]
    pub keys: Vec<FileTenantKey>,
    /// `[tenancy.tenant_ids]`: name = the existing tenant id whose rows the name takes over.
    #[serde(default)]
    pub tenant_ids: BTreeMap<String, String>,
}

/// One `[[tenancy.keys]]` entry: the hash of a key (as `assistants-proxy tenant-id` prints
/// it) and the named tenant it acts for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTenantKey {
    pub key_hash: String,
    pub tenant: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRetrieval {
    pub embedding_model: Option<String>,
    pub max_concurrent_ingestions: Option<usize>,
    pub max_ingest_bytes: Option<u64>,
    pub embed_max_attempts: Option<u32>,
    pub embed_retry_base_ms: Option<u64>,
    pub rewrite_model: Option<String>,
}

impl FileConfig {
    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => return err(format!("cannot read config file {}: {e}", path.display())),
        };
        FileConfig::parse(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(describe(text, &e)))
    }
}

/// The parser's message and where it applies, without the copy of the offending line that
/// toml's own `Display` adds: that line may hold a secret pasted in the wrong place (an API key
/// where `[[tenancy.keys]]` wants its hash), and this message goes to stderr and to logs.
fn describe(text: &str, e: &toml::de::Error) -> String {
    let Some(before) = e.span().and_then(|span| text.get(..span.start)) else {
        return e.message().to_owned();
    };
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    format!("line {line}, column {column}: {}", e.message())
}
