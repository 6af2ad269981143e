//! The Cassandra node's own limit for the Messages API benchmark (`scripts/bench-api.sh`): the
//! CQL statements the proxy issues for one message create or one list-20, issued directly by a
//! minimal client (one scylla session, one current-thread runtime, no HTTP, no JSON beyond
//! what the rows carry), in the same closed loop as the load generator.
//!
//! usage: `cql_floor HOST:PORT KEYSPACE create|list CONNS SECONDS THREAD_ID[,THREAD_ID...]`
//!
//! The keyspace and threads are the ones the benchmark's proxy made (tenant of the key
//! `sk-bench`, as `loadgen` sends). Client i works on thread i mod n, as loadgen's connection i
//! works on URL i mod n. Per operation, exactly what the proxy does on that route:
//!
//! - create: the thread's row and the thread's lock (`runs.active_run`), read together, then
//!   the message row inserted, at LOCAL_QUORUM;
//! - list: the thread's row and the newest 21 messages, read together.
//!
//! Prints `rps p50_us p99_us operations errors`, like `loadgen closed`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;

struct Statements {
    thread: PreparedStatement,
    lock: PreparedStatement,
    insert: PreparedStatement,
    list: PreparedStatement,
}

async fn prepare(session: &Session, cql: &str) -> PreparedStatement {
    let mut p = session.prepare(cql).await.unwrap();
    p.set_consistency(Consistency::LocalQuorum);
    p
}

/// A message document of the size the proxy stores for the benchmark's body.
fn message_doc(thread_id: &str, id: &str) -> String {
    serde_json::json!({
        "id": id, "object": "thread.message", "created_at": 1_700_000_000u64,
        "thread_id": thread_id, "status": "completed", "incomplete_details": null,
        "completed_at": null, "incomplete_at": null, "role": "user",
        "content": [{"type": "text", "text": {"value": "A short benchmark message, about the size of a typical chat turn from a user.", "annotations": []}}],
        "assistant_id": null, "run_id": null, "attachments": [], "metadata": {}
    })
    .to_string()
}

async fn one(
    session: &Session,
    st: &Statements,
    tenant: &str,
    thread_id: &str,
    create: bool,
) -> bool {
    let thread = session.execute_unpaged(&st.thread, (tenant, thread_id));
    if create {
        let lock = session.execute_unpaged(&st.lock, (tenant, thread_id));
        let (thread, lock) = tokio::join!(thread, lock);
        if thread.is_err() || lock.is_err() {
            return false;
        }
        let id = assistants_proxy::ids::new_id("msg_");
        let doc = message_doc(thread_id, &id);
        session
            .execute_unpaged(&st.insert, (tenant, thread_id, id.as_str(), doc))
            .await
            .is_ok()
    } else {
        let list = session.execute_unpaged(&st.list, (tenant, thread_id, 21i32));
        let (thread, list) = tokio::join!(thread, list);
        let Ok(list) = list else { return false };
        let rows = list
            .into_rows_result()
            .ok()
            .and_then(|r| r.rows::<(Option<String>,)>().ok().map(|r| r.count()));
        thread.is_ok() && rows == Some(21)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, host, ks, op, conns, secs, threads] = &args[..] else {
        eprintln!("usage: cql_floor HOST:PORT KEYSPACE create|list CONNS SECONDS THREAD_ID[,..]");
        std::process::exit(2);
    };
    let create = match op.as_str() {
        "create" => true,
        "list" => false,
        other => panic!("unknown operation {other:?}"),
    };
    let conns: usize = conns.parse().unwrap();
    let duration = Duration::from_secs(secs.parse().unwrap());
    let threads: Vec<String> = threads.split(',').map(str::to_owned).collect();
    let tenant = assistants_proxy::tenancy::key_tenant("sk-bench");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (lat, errors) = rt.block_on(async {
        let session = Arc::new(
            SessionBuilder::new()
                .known_node(host)
                .build()
                .await
                .unwrap(),
        );
        let st = Arc::new(Statements {
            thread: prepare(&session, &format!("SELECT doc FROM {ks}.threads WHERE tenant = ? AND id = ?")).await,
            lock: prepare(&session, &format!("SELECT active_run FROM {ks}.runs WHERE tenant = ? AND thread_id = ? LIMIT 1")).await,
            insert: prepare(&session, &format!("INSERT INTO {ks}.messages (tenant, thread_id, id, doc) VALUES (?, ?, ?, ?)")).await,
            list: prepare(&session, &format!("SELECT doc FROM {ks}.messages WHERE tenant = ? AND thread_id = ? ORDER BY id DESC LIMIT ?")).await,
        });
        let deadline = Instant::now() + duration;
        let workers: Vec<_> = (0..conns)
            .map(|i| {
                let (session, st, tenant) = (session.clone(), st.clone(), tenant.clone());
                let thread_id = threads[i % threads.len()].clone();
                tokio::spawn(async move {
                    let (mut lat, mut errors) = (Vec::new(), 0u64);
                    while Instant::now() < deadline {
                        let started = Instant::now();
                        if one(&session, &st, &tenant, &thread_id, create).await {
                            lat.push(started.elapsed().as_micros() as u64);
                        } else {
                            errors += 1;
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut errors = 0;
        for w in workers {
            let (l, e) = w.await.unwrap();
            all.extend(l);
            errors += e;
        }
        (all, errors)
    });
    let mut lat = lat;
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let n = lat.len();
    println!(
        "{:.0} {} {} {n} {errors}",
        n as f64 / duration.as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
}
