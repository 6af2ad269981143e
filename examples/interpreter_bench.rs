//! Benchmark of the local code_interpreter executor, beside its baseline in the same run:
//! a warm `print(1)` round trip through a session vs a bare `python3 -c 'print(1)'` (the
//! sandbox's own interpreter), a cold session start (sandbox + interpreter + the numpy,
//! pandas and matplotlib preload), and the memory of idle sessions (RSS and PSS of the
//! processes each one adds: bwrap, bwrap's init in the sandbox, the driver).
//!
//! Needs the environment of scripts/interpreter-env.sh and bubblewrap (as root, the
//! sandboxes run as uid 65534):
//!
//!   scripts/interpreter-env.sh
//!   cargo run --release --example interpreter_bench [-- ROUNDS [SESSIONS]]
//!
//! ROUNDS (default 50) is the number of timed calls of each kind; SESSIONS (default 10)
//! the idle sessions held at once for the memory figure. `ASSISTANTS_PROXY_PYTHON` picks
//! another environment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use assistants_proxy::config::{DEFAULT_INTERPRETER_PYTHON, ExecLimits, LocalExecutor};
use assistants_proxy::interpreter::local::Local;
use assistants_proxy::interpreter::{Executor, Output};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Parent of every process on the host.
fn parents() -> std::collections::HashMap<u32, u32> {
    let mut map = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(e.path().join("stat"))
            && let Some((_, rest)) = stat.rsplit_once(')')
            && let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok())
        {
            map.insert(pid, ppid);
        }
    }
    map
}

/// (pid, RSS kB, PSS kB) of every process this benchmark's sandboxes run (descendants of
/// this process; other users' sandboxes on the host are left out).
fn sandbox_procs() -> Vec<(u32, u64, u64)> {
    let parent = parents();
    let me = std::process::id();
    let mine = |mut p: u32| {
        for _ in 0..64 {
            match parent.get(&p) {
                Some(&pp) if pp == me => return true,
                Some(&pp) if pp > 1 => p = pp,
                _ => return false,
            }
        }
        false
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if !mine(pid) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .map(str::to_string)
        };
        let rss = field("VmRSS:").and_then(|v| v.parse().ok()).unwrap_or(0);
        let pss = std::fs::read_to_string(e.path().join("smaps_rollup"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Pss:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0);
        out.push((pid, rss, pss));
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(50, |a| a.parse().expect("ROUNDS"));
    let sessions: usize = args.next().map_or(10, |a| a.parse().expect("SESSIONS"));
    let python = std::env::var_os("ASSISTANTS_PROXY_PYTHON")
        .map_or_else(|| PathBuf::from(DEFAULT_INTERPRETER_PYTHON), PathBuf::from);
    assert!(
        python.exists(),
        "{} is missing: run scripts/interpreter-env.sh",
        python.display()
    );
    let cfg = LocalExecutor {
        python: python.clone(),
        bwrap: PathBuf::from("bwrap"),
        uid: 65534,
        gid: 65534,
        allow_unsandboxed: false,
    };
    let ex = Local::new(cfg, ExecLimits::default(), Duration::from_secs(60));
    ex.check().await.expect("check");

    // Baseline: the same interpreter, no sandbox, one process per call.
    let mut bare = Vec::new();
    for i in 0..rounds + 3 {
        let t = Instant::now();
        let out = std::process::Command::new(&python)
            .args(["-c", "print(1)"])
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"1\n");
        if i >= 3 {
            bare.push(ms(t.elapsed()));
        }
    }

    // Cold starts: each a new sandbox with the preload, then closed.
    let mut cold = Vec::new();
    for _ in 0..(rounds / 5).max(5) {
        let t = Instant::now();
        let s = ex.open().await.expect("open");
        cold.push(ms(t.elapsed()));
        s.close().await;
    }

    // Warm round trips in one session.
    let mut s = ex.open().await.expect("open");
    let mut warm = Vec::new();
    for i in 0..rounds + 5 {
        let t = Instant::now();
        let e = s.execute("print(1)").await.expect("execute");
        let d = ms(t.elapsed());
        assert_eq!(e.outputs, vec![Output::Logs("1\n".into())]);
        if i >= 5 {
            warm.push(d);
        }
    }
    s.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Idle sessions: what each adds.
    let before: Vec<u32> = sandbox_procs().iter().map(|p| p.0).collect();
    let mut held = Vec::new();
    for _ in 0..sessions {
        let mut s = ex.open().await.expect("open");
        s.execute("x = 1").await.expect("execute");
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let added: Vec<(u32, u64, u64)> = sandbox_procs()
        .into_iter()
        .filter(|p| !before.contains(&p.0))
        .collect();
    let rss: u64 = added.iter().map(|p| p.1).sum();
    let pss: u64 = added.iter().map(|p| p.2).sum();
    for s in held {
        s.close().await;
    }

    let n = sessions.max(1) as f64;
    println!(
        "interpreter_bench: {rounds} rounds, python {}",
        python.display()
    );
    println!(
        "bare `python3 -c 'print(1)'`     p50 {:7.2} ms  p90 {:7.2} ms",
        pct(&mut bare, 0.5),
        pct(&mut bare, 0.9)
    );
    println!(
        "warm print(1) through a session  p50 {:7.2} ms  p90 {:7.2} ms",
        pct(&mut warm, 0.5),
        pct(&mut warm, 0.9)
    );
    println!(
        "cold session start ({:2} starts)   p50 {:7.1} ms  p90 {:7.1} ms",
        cold.len(),
        pct(&mut cold, 0.5),
        pct(&mut cold, 0.9)
    );
    println!(
        "idle session ({sessions} held, {} processes): RSS {:.1} MiB, PSS {:.1} MiB each",
        added.len(),
        rss as f64 / 1024.0 / n,
        pss as f64 / 1024.0 / n
    );
}
