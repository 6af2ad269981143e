//! The `assistants-proxy` binary: parse flags, load configuration, start logging, bind, and
//! hand over to `server::run` until SIGINT/SIGTERM.

use std::process::ExitCode;

use assistants_proxy::config::{Cli, Command, Config};
use assistants_proxy::{server, telemetry, tenancy, transfer};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Migrate(a) => transfer::run(transfer::Command::Migrate(a)),
        Command::Export(a) => transfer::run(transfer::Command::Export(a)),
        Command::Import(a) => transfer::run(transfer::Command::Import(a)),
        Command::CheckConfig(args) => match Config::load(&args) {
            Ok(config) => {
                for w in config.warnings() {
                    eprintln!("warning: {w}");
                }
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::TenantId(args) => {
            match tenancy::tenant_id_command(&args, std::io::stdin().lock()) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Serve(args) => {
            let config = match Config::load(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            telemetry::init(config.log_format);
            for w in config.warnings() {
                tracing::warn!("{w}");
            }
            // One worker thread asked for: run everything on this thread. A multi-thread
            // runtime with one worker still hands every accepted connection from the accept
            // loop (on this thread) to the worker, and pays the work-stealing scheduler's
            // atomics on every wake-up; a current-thread runtime does neither. Blocking work
            // still goes to spawn_blocking's pool either way.
            let mut runtime = match config.worker_threads {
                Some(1) => tokio::runtime::Builder::new_current_thread(),
                Some(n) => {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(n);
                    b
                }
                None => tokio::runtime::Builder::new_multi_thread(),
            };
            runtime.enable_all();
            let runtime = match runtime.build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let code = runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::bind(config.listen).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("cannot listen on {}: {e}", config.listen);
                        return ExitCode::FAILURE;
                    }
                };
                match server::run(listener, config, shutdown_signal()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!("{e}");
                        ExitCode::FAILURE
                    }
                }
            });
            // Blocking work still running (a file being extracted, say) must not hold the
            // process: `server::run` has already bounded everything that matters.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            code
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
