//! Crash safety of the SQLite store: a child process writes as fast as it can and prints each
//! write once the store has acknowledged it; the test kills it with SIGKILL mid-stream, reopens
//! the file and checks that every acknowledged write is there.
//!
//! The child is this test binary itself, re-run with `CHILD_ENV` naming the database file
//! (the test then plays the child's part instead of the parent's).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use assistants_proxy::ids::new_id;
use assistants_proxy::store::*;
use bytes::Bytes;
use serde_json::json;

use crate::contract::{chunk, message, thread, unit_vector};

const CHILD_ENV: &str = "ASSISTANTS_PROXY_CRASH_CHILD_DB";
const TEST_NAME: &str = "sqlite_crash::acknowledged_writes_survive_sigkill";
/// Acknowledgements to see before the kill: enough that it lands amid a stream of commits.
const ACKS_BEFORE_KILL: usize = 600;

fn tenant() -> Tenant {
    Tenant::new("crash-tenant")
}

async fn open(path: &str) -> Store {
    Store::open(&StoreUrl::parse(&format!("sqlite://{path}")).unwrap())
        .await
        .unwrap()
}

/// The child: concurrent writers, each printing `ack <kind> <ids…>` after every write.
fn child(path: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = open(path).await;
        let t = tenant();
        let th = thread(&new_id("thread_"));
        s.threads.put_thread(&t, &th).await.unwrap();
        let vs = new_id("vs_");
        let mut tasks = Vec::new();
        for w in 0..12u64 {
            let (s, t, th, vs) = (s.clone(), t.clone(), th.id.clone(), vs.clone());
            tasks.push(tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let line = match (w, n % 10) {
                        (0, _) | (_, 5) => {
                            let file = new_id("file-");
                            let c = chunk(&vs, &file, 0, unit_vector(n, 8), &json!({}));
                            s.chunks.put_chunks(&t, &vs, &file, vec![c]).await.unwrap();
                            format!("ack chunk {vs} {file}")
                        }
                        (1, _) => {
                            let file = new_id("file-");
                            let data = Bytes::from(vec![n as u8; 64 * 1024]);
                            s.files.put_file_part(&t, &file, 0, data).await.unwrap();
                            format!("ack part {file} {}", n as u8)
                        }
                        _ => {
                            let m = message(&th, &new_id("msg_"), None);
                            s.messages.put_message(&t, &m).await.unwrap();
                            format!("ack msg {th} {}", m.id)
                        }
                    };
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{line}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(&path);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db").display().to_string();
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = proc.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("ack ") && tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acks.len() < ACKS_BEFORE_KILL {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => acks.push(line),
            Err(e) => {
                let _ = proc.kill();
                panic!(
                    "the child stopped acknowledging after {} writes: {e}",
                    acks.len()
                );
            }
        }
    }
    // Rust's `Child::kill` is SIGKILL on Unix: no destructor, no checkpoint, no flush.
    proc.kill().unwrap();
    proc.wait().unwrap();
    reader.join().unwrap();
    // Acknowledgements already in the pipe count too: each was printed after its commit.
    acks.extend(rx.try_iter());

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = open(&path).await;
        let t = tenant();
        let (mut msgs, mut parts, mut chunks) = (0, 0, 0);
        for ack in &acks {
            let f: Vec<&str> = ack.split(' ').collect();
            match f[1] {
                "msg" => {
                    msgs += 1;
                    assert!(
                        s.messages
                            .get_message(&t, f[2], f[3])
                            .await
                            .unwrap()
                            .is_some(),
                        "lost {ack}"
                    );
                }
                "part" => {
                    parts += 1;
                    let data = s.files.get_file_part(&t, f[2], 0).await.unwrap();
                    let byte: u8 = f[3].parse().unwrap();
                    assert_eq!(data, Some(Bytes::from(vec![byte; 64 * 1024])), "lost {ack}");
                }
                "chunk" => {
                    chunks += 1;
                    let found = s.chunks.file_chunks(&t, f[2], f[3]).await.unwrap();
                    assert_eq!(found.len(), 1, "lost {ack}");
                }
                other => panic!("unknown ack {other}"),
            }
        }
        assert!(
            msgs > 0 && parts > 0 && chunks > 0,
            "{msgs} {parts} {chunks}"
        );
    });
}
