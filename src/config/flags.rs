//! Command-line flags (each with an `ASSISTANTS_PROXY_*` environment fallback): their names
//! are a public contract, so they live apart from the file's keys and the resolved values.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

#[derive(Debug, Parser)]
#[command(name = "assistants-proxy", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve(ServeArgs),
    /// Validate the configuration (file, flags and environment) and exit.
    CheckConfig(ServeArgs),
    /// Print a key's hash (for `[[tenancy.keys]]`) and the tenant id its rows are stored under.
    /// The key is read from an environment variable or stdin, never from the command line.
    TenantId(TenantIdArgs),
    /// Copy every object from one store to another (resumable; see README "Moving a store").
    Migrate(crate::transfer::MigrateArgs),
    /// Write a store's objects to a JSON-lines file (docs/export-format.md).
    Export(crate::transfer::ExportArgs),
    /// Load a file written by `export` into a store.
    Import(crate::transfer::ImportArgs),
}

/// Flags of `tenant-id`. No flag takes the key itself: argv is visible to every user of the
/// machine and kept in shell histories.
#[derive(Debug, Clone, Args)]
pub struct TenantIdArgs {
    /// Environment variable holding the key
    #[arg(long, value_name = "VAR", default_value = "OPENAI_API_KEY")]
    pub key_env: String,
    /// Read the key from standard input instead (one line)
    #[arg(long, conflicts_with = "key_env")]
    pub stdin: bool,
    /// TOML configuration file: also show the tenant its `[[tenancy.keys]]` map the key to
    #[arg(long, env = "ASSISTANTS_PROXY_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Flags shared by `serve` and `check-config`. Their names are a public contract.
#[derive(Debug, Default, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "ASSISTANTS_PROXY_LISTEN")]
    pub listen: Option<String>,
    /// Upstream origin that un-intercepted requests are forwarded to [default: https://api.openai.com]
    #[arg(long, env = "ASSISTANTS_PROXY_UPSTREAM")]
    pub upstream: Option<String>,
    /// Store URL: sqlite://PATH or cassandra://HOST:PORT[,HOST:PORT...]/KEYSPACE [default: sqlite://./assistants.db]
    #[arg(long, env = "ASSISTANTS_PROXY_STORE")]
    pub store: Option<String>,
    /// TOML configuration file
    #[arg(long, env = "ASSISTANTS_PROXY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format [default: pretty]
    #[arg(long, env = "ASSISTANTS_PROXY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// PEM certificate chain: serve HTTPS (ALPN h2 and http/1.1) instead of clear text
    #[arg(long, env = "ASSISTANTS_PROXY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long, env = "ASSISTANTS_PROXY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}
