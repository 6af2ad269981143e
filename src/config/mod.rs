//! Process configuration: command-line flags (each with an `ASSISTANTS_PROXY_*` environment
//! fallback), the optional TOML file for everything flags don't cover, and validation.
//!
//! Precedence is flag or environment variable, then the file, then the compiled-in default.
//! The file is strict (`deny_unknown_fields`): a typo in an operator's config is an error at
//! start-up, never a silently ignored setting.

mod file;
mod flags;
mod interpreter;
mod tenancy;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use crate::store::astra::{AstraConfig, DEFAULT_ASTRA_DEVOPS};
pub use file::*;
pub use flags::*;
pub use interpreter::*;
pub use tenancy::*;

/// Default listen address: loopback, so a sidecar is not exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default upstream: the real OpenAI API (an origin, without `/v1`).
pub const DEFAULT_UPSTREAM: &str = "https://api.openai.com";
/// Default store: an embedded SQLite file in the working directory.
pub const DEFAULT_STORE: &str = "sqlite://./assistants.db";
/// Default embedding model of new vector stores.
pub const DEFAULT_EMBEDDING_MODEL: &str = "text-embedding-3-small";
/// Chat model that rewrites vector-store search queries (`rewrite_query: true`): a small,
/// cheap one, since the answer is a few words.
pub const DEFAULT_REWRITE_MODEL: &str = "gpt-4o-mini";

/// How a request is mapped to the tenant that owns the objects it touches.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TenancyMode {
    /// Tenant = a hash of the bearer key (the key itself is never stored).
    #[default]
    Key,
    /// One tenant for every caller: a private sidecar.
    Single,
    /// Tenant taken from a header set by a trusted gateway in front of the proxy.
    Header,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    pub tls: Option<TlsFiles>,
    pub upstream: UpstreamConfig,
    pub store_url: String,
    pub limits: Limits,
    pub tenancy: Tenancy,
    pub retrieval: RetrievalConfig,
    /// How long in-flight requests, streams and runs may go on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// After the grace period, how long stopped work has to save its state before the
    /// process exits regardless.
    pub shutdown_cleanup: Duration,
    /// hyper's HTTP/1 header read timeout: slowloris protection.
    pub header_read_timeout: Duration,
    /// Longest gap between two pieces of a request body the proxy reads itself (JSON bodies,
    /// uploads); past it the request is answered 408 and its connection closed.
    pub body_read_timeout: Duration,
    /// Tokio worker threads; `None` = one per CPU the process may run on.
    pub worker_threads: Option<usize>,
    pub access_log: bool,
    /// Plain-text HTTP/1.1 requests that are forwarded go through the proxy's own HTTP/1
    /// relay (`crate::h1`) instead of hyper's server and client; anything else still does.
    pub http1_fast_path: bool,
    /// Keep polling the sockets for this long after the last request instead of sleeping
    /// (`crate::busy_poll`); `None` = off.
    pub busy_poll: Option<Duration>,
    pub runs: RunsConfig,
    pub astra: AstraConfig,
    pub code_interpreter: InterpreterConfig,
}

#[derive(Debug, Clone)]
pub struct RunsConfig {
    /// How long an active run may wait (notably in `requires_action`) before it expires.
    pub expires_after: Duration,
    /// How long a proxy's claim on an executing run lasts without renewal; after a crash,
    /// another proxy (or the restarted one) resolves the run once this has passed.
    pub lease: Duration,
    /// How often each proxy looks for expired runs and dead leases.
    pub sweep_interval: Duration,
    /// Context window assumed for models the proxy does not know.
    pub default_context_tokens: u64,
    /// Attempts per model call that fails before any output (429, 5xx, connection lost,
    /// upstream silent); 1 = no retry.
    pub model_attempts: u32,
    /// First retry delay; doubles per attempt up to `model_retry_max_wait`.
    pub model_retry_base: Duration,
    /// Longest wait before a retry; an upstream asking (`retry-after`) for longer fails the
    /// run at once instead.
    pub model_retry_max_wait: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Origin plus optional base path, without a trailing slash.
    pub url: http::Uri,
    pub connect_timeout: Duration,
    /// Time allowed from sending a request until the response head arrives.
    pub response_head_timeout: Duration,
    /// Time allowed between two body frames of a response (never a whole-response limit,
    /// so long streams live as long as they keep producing).
    pub idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub pool_idle_timeout: Duration,
    pub http2: bool,
    pub native_roots: bool,
    pub extra_ca_file: Option<PathBuf>,
    /// Name of an environment variable holding a key used for the proxy's own upstream calls.
    pub api_key_env: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest JSON body accepted on intercepted routes.
    pub max_json_body_bytes: u64,
    /// Largest file upload accepted on `/v1/files`.
    pub max_upload_bytes: u64,
}

/// File ingestion for vector stores (extract, chunk, embed) and search.
#[derive(Debug, Clone)]
pub struct RetrievalConfig {
    /// Embedding model of new vector stores (kept per store, so changing it later does not mix
    /// vectors of two models in one store).
    pub embedding_model: String,
    /// Files ingested at once per process; the rest wait their turn (a 2000-file batch must not
    /// start 2000 extractions and embedding streams together).
    pub max_concurrent_ingestions: usize,
    /// Largest file a vector store ingests: extraction needs the whole file in memory.
    pub max_ingest_bytes: u64,
    /// Attempts per embeddings call on 429/5xx/unreachable before the file fails.
    pub embed_max_attempts: u32,
    /// First retry delay; doubles per attempt (a `retry-after` from the upstream wins).
    pub embed_retry_base: Duration,
    /// Chat model asked to rewrite a search query when a search sets `rewrite_query`.
    pub rewrite_model: String,
}

/// A configuration problem, reported before anything starts.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

impl Config {
    /// Reads the file named by `--config` (if any) and merges the flags over it.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        Config::resolve(args, file)
    }

    /// Merges flags over a parsed file and validates the result.
    pub fn resolve(args: &ServeArgs, file: FileConfig) -> Result<Config, ConfigError> {
        let listen_text = args
            .listen
            .clone()
            .or(file.server.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = match listen_text.parse() {
            Ok(addr) => addr,
            Err(_) => {
                return err(format!(
                    "invalid listen address {listen_text:?}: expected IP:PORT, e.g. 127.0.0.1:8080"
                ));
            }
        };

        let tls = match (
            args.tls_cert.clone().or(file.server.tls_cert),
            args.tls_key.clone().or(file.server.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return err("tls_cert and tls_key must be given together"),
        };

        let upstream_text = args
            .upstream
            .clone()
            .or(file.upstream.url.clone())
            .unwrap_or_else(|| DEFAULT_UPSTREAM.to_owned());
        let url = parse_upstream(&upstream_text)?;

        let store_url = args
            .store
            .clone()
            .or(file.store.url)
            .unwrap_or_else(|| DEFAULT_STORE.to_owned());
        crate::store::StoreUrl::parse(&store_url).map_err(|e| ConfigError(e.to_string()))?;

        let f = file.upstream;
        let secs = |v: Option<u64>, d: u64| Duration::from_secs(v.unwrap_or(d));
        let upstream = UpstreamConfig {
            url,
            connect_timeout: Duration::from_millis(f.connect_timeout_ms.unwrap_or(10_000)),
            // OpenAI's own SDKs wait up to 600 s for a non-streamed completion.
            response_head_timeout: secs(f.response_head_timeout_seconds, 600),
            idle_timeout: secs(f.idle_timeout_seconds, 300),
            pool_max_idle_per_host: f.pool_max_idle_per_host.unwrap_or(64),
            // Below the keep-alive of typical upstreams (60 s and more), so the pool drops an
            // idle connection before the server does and a reused socket is not already dead.
            pool_idle_timeout: secs(f.pool_idle_timeout_seconds, 20),
            http2: f.http2.unwrap_or(false),
            native_roots: f.native_roots.unwrap_or(false),
            extra_ca_file: f.extra_ca_file,
            api_key_env: f.api_key_env,
        };
        if upstream.connect_timeout.is_zero()
            || upstream.response_head_timeout.is_zero()
            || upstream.idle_timeout.is_zero()
        {
            return err("upstream timeouts must be greater than zero");
        }
        if let Some(name) = &upstream.api_key_env
            && (name.is_empty() || name.contains('='))
        {
            return err(format!(
                "upstream.api_key_env must be the NAME of an environment variable, got {name:?}"
            ));
        }
        if let Some(ca) = &upstream.extra_ca_file
            && !ca.is_file()
        {
            return err(format!(
                "upstream.extra_ca_file {} does not exist",
                ca.display()
            ));
        }

        let limits = Limits {
            max_json_body_bytes: file.limits.max_json_body_bytes.unwrap_or(32 * 1024 * 1024),
            max_upload_bytes: file.limits.max_upload_bytes.unwrap_or(512 * 1024 * 1024),
        };
        if limits.max_json_body_bytes < 1024 || limits.max_upload_bytes < 1024 {
            return err("limits must be at least 1024 bytes");
        }

        let tenancy = resolve_tenancy(file.tenancy)?;

        let r = file.retrieval;
        let retrieval = RetrievalConfig {
            embedding_model: r
                .embedding_model
                .unwrap_or_else(|| DEFAULT_EMBEDDING_MODEL.to_owned()),
            max_concurrent_ingestions: r.max_concurrent_ingestions.unwrap_or(4),
            max_ingest_bytes: r.max_ingest_bytes.unwrap_or(128 * 1024 * 1024),
            embed_max_attempts: r.embed_max_attempts.unwrap_or(5),
            embed_retry_base: Duration::from_millis(r.embed_retry_base_ms.unwrap_or(500)),
            rewrite_model: r
                .rewrite_model
                .unwrap_or_else(|| DEFAULT_REWRITE_MODEL.to_owned()),
        };
        if retrieval.embedding_model.is_empty() {
            return err("retrieval.embedding_model must not be empty");
        }
        if retrieval.rewrite_model.trim().is_empty() {
            return err("retrieval.rewrite_model must not be empty");
        }
        if retrieval.max_concurrent_ingestions == 0 || retrieval.embed_max_attempts == 0 {
            return err(
                "retrieval.max_concurrent_ingestions and embed_max_attempts must be at least 1",
            );
        }

        let worker_threads = file.server.worker_threads;
        if worker_threads == Some(0) {
            return err("server.worker_threads must be at least 1");
        }
        let busy_poll = file
            .server
            .busy_poll_us
            .filter(|us| *us > 0)
            .map(Duration::from_micros);
        // With several workers one polling task would keep one of them turning, whichever the
        // scheduler put it on, and the others would still sleep.
        if busy_poll.is_some() && worker_threads != Some(1) {
            return err(
                "server.busy_poll_us needs server.worker_threads = 1 (one event loop, pinned to a core of its own)",
            );
        }
        let shutdown_grace = secs(file.server.shutdown_grace_seconds, 30);
        let shutdown_cleanup = secs(file.server.shutdown_cleanup_seconds, 5);
        let header_read_timeout = secs(file.server.header_read_timeout_seconds, 30);
        if header_read_timeout.is_zero() {
            return err("server.header_read_timeout_seconds must be greater than zero");
        }
        let body_read_timeout = secs(file.server.body_read_timeout_seconds, 30);
        if body_read_timeout.is_zero() {
            return err("server.body_read_timeout_seconds must be greater than zero");
        }

        let runs = RunsConfig {
            expires_after: secs(file.runs.expires_after_seconds, 600),
            lease: secs(file.runs.lease_seconds, 30),
            sweep_interval: secs(file.runs.sweep_interval_seconds, 5),
            default_context_tokens: file.runs.default_context_tokens.unwrap_or(128_000),
            model_attempts: file.runs.model_attempts.unwrap_or(4),
            model_retry_base: Duration::from_millis(file.runs.model_retry_base_ms.unwrap_or(500)),
            model_retry_max_wait: secs(file.runs.model_retry_max_wait_seconds, 20),
        };
        if runs.expires_after.is_zero() || runs.lease.as_secs() < 2 || runs.sweep_interval.is_zero()
        {
            return err(
                "runs: expires_after_seconds and sweep_interval_seconds must be > 0, lease_seconds >= 2",
            );
        }
        if runs.model_attempts == 0 {
            return err("runs.model_attempts must be at least 1 (1 = no retry)");
        }

        let astra = resolve_astra(file.astra)?;
        let code_interpreter = resolve_interpreter(
            file.code_interpreter,
            std::env::var_os("ASSISTANTS_PROXY_PYTHON").map(PathBuf::from),
        )?;

        Ok(Config {
            astra,
            code_interpreter,
            runs,
            listen,
            log_format: args
                .log_format
                .or(file.server.log_format)
                .unwrap_or_default(),
            tls,
            upstream,
            store_url,
            limits,
            tenancy,
            retrieval,
            shutdown_grace,
            shutdown_cleanup,
            header_read_timeout,
            body_read_timeout,
            worker_threads,
            access_log: file.server.access_log.unwrap_or(true),
            http1_fast_path: file.server.http1_fast_path.unwrap_or(true),
            busy_poll,
        })
    }

    /// Settings that are legal but probably not what the operator wants.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self
            .upstream
            .url
            .path()
            .trim_end_matches('/')
            .ends_with("/v1")
        {
            out.push(format!(
                "upstream {} ends in /v1; the proxy appends the request path (which already starts with /v1)",
                self.upstream.url
            ));
        }
        if self.upstream.url.scheme_str() == Some("http")
            && !is_loopback_host(self.upstream.url.host().unwrap_or(""))
        {
            out.push(format!(
                "upstream {} is plain http: API keys cross the network unencrypted",
                self.upstream.url
            ));
        }
        if self.astra.devops_url.scheme_str() == Some("http")
            && !is_loopback_host(self.astra.devops_url.host().unwrap_or(""))
        {
            out.push(format!(
                "astra.devops_url {} is plain http: Astra tokens cross the network unencrypted",
                self.astra.devops_url
            ));
        }
        if !self.listen.ip().is_loopback() && self.tls.is_none() {
            out.push(format!(
                "listening on {} without TLS: callers' API keys cross the network unencrypted",
                self.listen
            ));
        }
        self.tenancy.warnings(&mut out);
        out
    }
}

fn resolve_astra(f: FileAstra) -> Result<AstraConfig, ConfigError> {
    let d = AstraConfig::default();
    let devops_url = match f.devops_url {
        None => d.devops_url,
        Some(text) => match parse_upstream(&text) {
            Ok(u) => u,
            Err(e) => return err(format!("astra.devops_url: {}", e.0)),
        },
    };
    let keyspace = f.keyspace.unwrap_or(d.keyspace);
    if keyspace.is_empty()
        || keyspace.len() > 48
        || keyspace.starts_with('_')
        || !keyspace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return err("astra.keyspace must be 1-48 letters, digits or underscores");
    }
    let secs = |v: Option<u64>, d: Duration| v.map(Duration::from_secs).unwrap_or(d);
    let config = AstraConfig {
        devops_url,
        per_request_headers: f.per_request_headers.unwrap_or(d.per_request_headers),
        max_sessions: f.max_sessions.unwrap_or(d.max_sessions),
        idle_timeout: secs(f.idle_timeout_seconds, d.idle_timeout),
        keyspace,
        keyspace_from_bundle: f.keyspace_from_bundle.unwrap_or(d.keyspace_from_bundle),
        database_name: f.database_name.unwrap_or(d.database_name),
        cloud_provider: f.cloud_provider.unwrap_or(d.cloud_provider),
        region: f.region.unwrap_or(d.region),
        retry_after: f.retry_after_seconds.unwrap_or(d.retry_after),
        connect_timeout: secs(f.connect_timeout_seconds, d.connect_timeout),
    };
    if config.max_sessions == 0 || config.idle_timeout.is_zero() || config.connect_timeout.is_zero()
    {
        return err(
            "astra: max_sessions, idle_timeout_seconds and connect_timeout_seconds must be > 0",
        );
    }
    if config.database_name.is_empty() {
        return err("astra.database_name must not be empty");
    }
    Ok(config)
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

fn parse_upstream(text: &str) -> Result<http::Uri, ConfigError> {
    let trimmed = text.trim_end_matches('/');
    let uri: http::Uri = match trimmed.parse() {
        Ok(u) => u,
        Err(_) => return err(format!("invalid upstream URL {text:?}")),
    };
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return err(format!(
                "upstream URL {text:?} must start with http:// or https://"
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return err(format!("upstream URL {text:?} has no host"));
    }
    if uri.query().is_some() {
        return err(format!("upstream URL {text:?} must not carry a query"));
    }
    Ok(uri)
}
