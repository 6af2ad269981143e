//! Moving whole stores: `migrate` (store to store, resumable, with `--verify`), `export` and
//! `import` (a versioned JSON-lines file). Built on the backends' bulk interface
//! (`store::dump`): scans in pages from a resume position, verbatim idempotent writes.
//!
//! The commands' flags live here (the CLI in `config::flags` names them) and [`run`] is what
//! the binary calls; everything else is a library function the tests call directly.

mod archive;
mod migrate;
mod progress;
mod verify;

use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;

pub use archive::{FORMAT, VERSION, export, import};
pub use migrate::{Outcome, Plan, default_state_path, migrate};
pub use verify::{Comparison, Tally, compare, report, tally};

use crate::store::dump::Kind;
use crate::store::{Store, StoreEnv, StoreUrl, Tenant};

/// Exit status of a run stopped early (a signal or `--stop-after`): re-run to resume.
pub const EXIT_INTERRUPTED: u8 = 3;

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Source store URL (sqlite://PATH, cassandra://…, astra://…)
    #[arg(long)]
    pub from: String,
    /// Target store URL
    #[arg(long)]
    pub to: String,
    /// Copy only this tenant (its id as stored)
    #[arg(long)]
    pub tenant: Option<String>,
    /// After copying, compare counts and checksums of every kind on both sides
    #[arg(long)]
    pub verify: bool,
    /// Only compare (no copy)
    #[arg(long, conflicts_with = "verify")]
    pub verify_only: bool,
    /// Progress file for resuming [default: ./assistants-proxy-migrate-<hash>.json]
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Stop as if interrupted once this many objects were copied (for testing resumption)
    #[arg(long, hide = true)]
    pub stop_after: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Store URL to export
    #[arg(long, env = "ASSISTANTS_PROXY_STORE")]
    pub store: String,
    /// Output file ('-': standard output)
    #[arg(long)]
    pub to: PathBuf,
    /// Export only this tenant
    #[arg(long)]
    pub tenant: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Store URL to import into
    #[arg(long, env = "ASSISTANTS_PROXY_STORE")]
    pub store: String,
    /// Input file written by `export` ('-': standard input)
    #[arg(long)]
    pub from: PathBuf,
    /// Import only this tenant's records
    #[arg(long)]
    pub tenant: Option<String>,
}

/// A failure of a transfer command, said to the operator as is.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Failure(pub String);

impl Failure {
    pub fn new(m: impl Into<String>) -> Failure {
        Failure(m.into())
    }
}

/// Source and target of a migration.
pub struct Opened {
    pub from: Store,
    pub to: Store,
}

/// Opens a store for a transfer. A source must exist (opening would create a SQLite file or
/// a Cassandra keyspace).
pub async fn open(url: &str, env: &StoreEnv, must_exist: bool) -> Result<Store, Failure> {
    let mut parsed = StoreUrl::parse(url).map_err(|e| Failure::new(e.to_string()))?;
    if let StoreUrl::Sqlite { path } = &parsed
        && must_exist
        && !path.exists()
    {
        return Err(Failure::new(format!("{} does not exist", path.display())));
    }
    // Likewise a Cassandra source's keyspace: made on connect, a mistyped one would read as
    // an empty store.
    if let StoreUrl::Cassandra(c) = &mut parsed
        && must_exist
    {
        c.create_keyspace = false;
    }
    let store = Store::open_with(&parsed, env)
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
    // Cassandra connects lazily: fail now, clearly, rather than on the first page.
    store
        .health
        .ping()
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
    Ok(store)
}

/// Runs `migrate`, `export` or `import` as the binary does: its own runtime, progress on
/// stderr, a summary on stdout, Ctrl-C stopping at the next page boundary (resumable).
pub fn run(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: stopping after the page being copied");
                flag.store(true, Ordering::Relaxed);
            }
        });
        match command_main(command, stop).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// The transfer commands, as [`run`] takes them.
pub enum Command {
    Migrate(MigrateArgs),
    Export(ExportArgs),
    Import(ImportArgs),
}

async fn command_main(command: Command, stop: Arc<AtomicBool>) -> Result<ExitCode, Failure> {
    let env = StoreEnv::new(crate::store::astra::AstraConfig::default());
    let outcome = match command {
        Command::Migrate(a) => run_migrate(&a, &env, stop).await,
        Command::Export(a) => run_export(&a, &env).await,
        Command::Import(a) => run_import(&a, &env).await,
    };
    env.close().await;
    outcome
}

fn tenant_of(t: &Option<String>) -> Option<Tenant> {
    t.as_deref().map(Tenant::new)
}

fn print_counts(verb: &str, counts: &[(Kind, u64, u64)]) {
    for (kind, n, bytes) in counts {
        if *bytes > 0 {
            println!("{verb} {:<18} {n:>9}  ({bytes} bytes)", kind.name());
        } else {
            println!("{verb} {:<18} {n:>9}", kind.name());
        }
    }
}

async fn run_migrate(
    a: &MigrateArgs,
    env: &StoreEnv,
    stop: Arc<AtomicBool>,
) -> Result<ExitCode, Failure> {
    if a.from == a.to {
        return Err(Failure::new("--from and --to name the same store"));
    }
    let stores = Opened {
        from: open(&a.from, env, true).await?,
        to: open(&a.to, env, false).await?,
    };
    let tenant = tenant_of(&a.tenant);
    if !a.verify_only {
        let plan = Plan {
            from: &a.from,
            to: &a.to,
            tenant: tenant.clone(),
            state: a.state.clone(),
            stop_after: a.stop_after,
        };
        match migrate(&plan, &stores, stop).await? {
            Outcome::Complete {
                kinds,
                copied,
                elapsed,
            } => {
                print_counts("copied", &kinds);
                let secs = elapsed.as_secs_f64();
                println!(
                    "{copied} objects copied in {secs:.1} s ({:.0}/s)",
                    copied as f64 / secs.max(0.001)
                );
            }
            Outcome::Interrupted { state, copied } => {
                println!(
                    "stopped after {copied} objects; progress is in {}: run the same command \
                     again to resume",
                    state.display()
                );
                return Ok(ExitCode::from(EXIT_INTERRUPTED));
            }
        }
    }
    if a.verify || a.verify_only {
        let comparisons = compare(&*stores.from.dump, &*stores.to.dump, tenant.as_ref()).await?;
        let (text, ok) = report(&comparisons);
        print!("{text}");
        if !ok {
            eprintln!("error: the stores differ (see the MISMATCH lines)");
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_export(a: &ExportArgs, env: &StoreEnv) -> Result<ExitCode, Failure> {
    let store = open(&a.store, env, true).await?;
    let tenant = tenant_of(&a.tenant);
    let counts = if a.to.as_os_str() == "-" {
        let mut out = BufWriter::new(std::io::stdout().lock());
        export(&store, tenant.as_ref(), &mut out).await?
    } else {
        let file = std::fs::File::create(&a.to)
            .map_err(|e| Failure::new(format!("creating {}: {e}", a.to.display())))?;
        let mut out = BufWriter::new(file);
        let counts = export(&store, tenant.as_ref(), &mut out).await?;
        out.into_inner()
            .map_err(|e| Failure::new(format!("writing {}: {e}", a.to.display())))?
            .sync_all()
            .map_err(|e| Failure::new(format!("writing {}: {e}", a.to.display())))?;
        counts
    };
    let counts: Vec<_> = counts.into_iter().map(|(k, n)| (k, n, 0)).collect();
    // The records went to stdout with '-': the summary goes to stderr then.
    if a.to.as_os_str() == "-" {
        for (k, n, _) in &counts {
            eprintln!("exported {:<18} {n:>9}", k.name());
        }
    } else {
        print_counts("exported", &counts);
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_import(a: &ImportArgs, env: &StoreEnv) -> Result<ExitCode, Failure> {
    let store = open(&a.store, env, false).await?;
    let tenant = tenant_of(&a.tenant);
    let counts = if a.from.as_os_str() == "-" {
        let mut input = BufReader::new(std::io::stdin().lock());
        import(&store, tenant.as_ref(), &mut input).await?
    } else {
        let file = std::fs::File::open(&a.from)
            .map_err(|e| Failure::new(format!("opening {}: {e}", a.from.display())))?;
        let mut input = BufReader::new(file);
        import(&store, tenant.as_ref(), &mut input).await?
    };
    let counts: Vec<_> = counts.into_iter().map(|(k, n)| (k, n, 0)).collect();
    print_counts("imported", &counts);
    Ok(ExitCode::SUCCESS)
}
