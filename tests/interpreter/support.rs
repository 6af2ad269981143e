//! What every interpreter test shares: the executor with small limits, and reading logs.

use std::path::PathBuf;
use std::time::Duration;

use assistants_proxy::config::{DEFAULT_INTERPRETER_PYTHON, ExecLimits, LocalExecutor};
use assistants_proxy::interpreter::local::Local;
use assistants_proxy::interpreter::{Execution, Executor, Output, Session};

/// The sandbox's Python; a failure naming the script when it is missing.
pub fn python() -> PathBuf {
    let p = std::env::var_os("ASSISTANTS_PROXY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_INTERPRETER_PYTHON));
    assert!(
        p.exists(),
        "{} is missing: run scripts/interpreter-env.sh (or set ASSISTANTS_PROXY_PYTHON)",
        p.display()
    );
    p
}

/// Small limits so the bombs end fast on a loaded 2-core machine.
pub fn limits() -> ExecLimits {
    ExecLimits {
        timeout: Duration::from_secs(3),
        cpu_seconds: 30,
        memory_bytes: 512 << 20,
        max_processes: 32,
        output_bytes: 16 * 1024,
        disk_bytes: 64 << 20,
        file_bytes: 1 << 20,
    }
}

pub fn config() -> LocalExecutor {
    LocalExecutor {
        python: python(),
        bwrap: PathBuf::from("bwrap"),
        uid: 65534,
        gid: 65534,
        allow_unsandboxed: false,
    }
}

pub fn local() -> Local {
    Local::new(config(), limits(), Duration::from_secs(60))
}

pub async fn open(ex: &Local) -> Box<dyn Session> {
    match ex.open().await {
        Ok(s) => s,
        Err(e) => panic!("{e} (is the environment made by scripts/interpreter-env.sh?)"),
    }
}

/// Runs code that must not lose the session.
pub async fn run(s: &mut Box<dyn Session>, code: &str) -> Execution {
    match s.execute(code).await {
        Ok(e) => e,
        Err(e) => panic!("{code:?}: {e}"),
    }
}

pub fn logs(e: &Execution) -> String {
    e.outputs
        .iter()
        .filter_map(|o| match o {
            Output::Logs(l) => Some(l.as_str()),
            Output::Image(_) => None,
        })
        .collect()
}

/// A fresh session still works (after a bomb, a lost session, …).
pub async fn another_session_works(ex: &Local) {
    let mut s = open(ex).await;
    let e = run(&mut s, "print(6 * 7)").await;
    assert_eq!(logs(&e), "42\n");
    assert!(!e.error);
    s.close().await;
}

/// Processes on the host running as the sandbox's uid (every session's, these tests run
/// several at once).
pub fn sandbox_processes() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("status")).is_ok_and(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("65534"))
            })
        })
        .count()
}
