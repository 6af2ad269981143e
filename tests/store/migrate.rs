//! Moving whole stores (`assistants-proxy migrate`, `export`, `import`): a SQLite store with
//! every kind of object in several tenants is copied and read back object by object through
//! the store traits (what the API serves from), an interrupted copy is resumed through the
//! real binary, `--verify` catches a difference, and an export file loads into a fresh store.
//! The Cassandra test moves SQLite → Cassandra → SQLite on the node at
//! `ASSISTANTS_PROXY_TEST_CASSANDRA`, in a keyspace of its own.

use std::path::Path;
use std::process::Command;

use assistants_proxy::ids::new_id;
use assistants_proxy::model::*;
use assistants_proxy::store::*;
use assistants_proxy::transfer;
use bytes::Bytes;
use serde_json::json;

use crate::contract::{
    assistant, cassandra_url, chunk, file, message, run, step, tenant, thread, unit_vector,
    vector_store, vs_file,
};

const TENANTS: usize = 3;
const MESSAGES_PER_THREAD: usize = 350;
/// Three content pieces: the last one short.
const BIG_FILE: usize = 2 * 1024 * 1024 + 12_345;
const DIMS: usize = 16;

/// What was written, to read back.
struct Population {
    tenants: Vec<(Tenant, Vec<String>)>,
}

fn content(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed * 7) % 251) as u8)
        .collect()
}

async fn open(url: &str) -> Store {
    Store::open(&StoreUrl::parse(url).unwrap()).await.unwrap()
}

/// Every kind in `TENANTS` tenants: assistants, files with content, a vector store with a
/// batch, a file and its chunks (one with a zero embedding), threads with messages, a
/// completed run with steps and an active run.
async fn populate(s: &Store) -> Population {
    let mut tenants = Vec::new();
    for n in 0..TENANTS {
        let t = tenant();
        let mut threads = Vec::new();
        for a in 0..2 {
            s.assistants
                .put_assistant(&t, &assistant(&format!("asst_{n}_{a}")))
                .await
                .unwrap();
        }
        let big = content(n, BIG_FILE);
        for (i, piece) in big.chunks(1024 * 1024).enumerate() {
            s.files
                .put_file_part(&t, "file-big", i as u32, Bytes::copy_from_slice(piece))
                .await
                .unwrap();
        }
        s.files
            .put_file(&t, &file("file-big", "assistants", BIG_FILE as u64))
            .await
            .unwrap();
        s.files
            .put_file_part(&t, "file-small", 0, Bytes::from_static(b"small file"))
            .await
            .unwrap();
        s.files
            .put_file(&t, &file("file-small", "user_data", 10))
            .await
            .unwrap();
        let mut vs = vector_store("vs_1");
        vs.dimensions = DIMS as u32;
        s.vector_stores.put_vector_store(&t, &vs).await.unwrap();
        s.vector_stores
            .touch_vector_store(&t, "vs_1", 1_700_000_500)
            .await
            .unwrap();
        s.vector_stores
            .put_batch(
                &t,
                &FileBatch {
                    id: "vsfb_1".into(),
                    object: "vector_store.file_batch".into(),
                    created_at: 1_700_000_000,
                    vector_store_id: "vs_1".into(),
                    status: "completed".into(),
                    file_counts: FileCounts::default(),
                    cancel_requested: false,
                },
            )
            .await
            .unwrap();
        s.vector_stores
            .put_vs_file(
                &t,
                &vs_file("vs_1", "file-big", "completed", Some("vsfb_1")),
            )
            .await
            .unwrap();
        let attrs = json!({"team": format!("t{n}")});
        let mut chunks: Vec<Chunk> = (0..6u32)
            .map(|i| {
                chunk(
                    "vs_1",
                    "file-big",
                    i,
                    unit_vector(u64::from(i) + 1, DIMS),
                    &attrs,
                )
            })
            .collect();
        chunks.push(chunk("vs_1", "file-big", 6, vec![0.0; DIMS], &attrs));
        s.chunks
            .put_chunks(&t, "vs_1", "file-big", chunks)
            .await
            .unwrap();
        for th in 0..2 {
            let thread_id = format!("thread_{th}");
            s.threads.put_thread(&t, &thread(&thread_id)).await.unwrap();
            let writes = (0..MESSAGES_PER_THREAD).map(|m| {
                let (s, t, thread_id) = (s.clone(), t.clone(), thread_id.clone());
                async move {
                    s.messages
                        .put_message(&t, &message(&thread_id, &format!("msg_{m:05}"), None))
                        .await
                }
            });
            for r in futures_util::future::join_all(writes).await {
                r.unwrap();
            }
            threads.push(thread_id);
        }
        let done = run("thread_0", "run_done", RunStatus::Completed);
        assert_eq!(
            s.runs.create_run(&t, &done).await.unwrap(),
            CreateRun::Created
        );
        for st in 0..3 {
            s.runs
                .put_step(&t, &step("thread_0", "run_done", &format!("step_{st}")))
                .await
                .unwrap();
        }
        let mut active = run("thread_1", "run_active", RunStatus::InProgress);
        active.lease_owner = Some("proxy_gone".into());
        active.lease_until = Some(1_700_000_100);
        assert_eq!(
            s.runs.create_run(&t, &active).await.unwrap(),
            CreateRun::Created
        );
        tenants.push((t, threads));
    }
    Population { tenants }
}

fn all() -> ListQuery {
    ListQuery {
        limit: 100,
        order: Order::Asc,
        after: None,
        before: None,
    }
}

/// Every message of a thread, in order, paging as the API does.
async fn messages(s: &Store, t: &Tenant, thread_id: &str) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    loop {
        let mut q = all();
        q.after = out.last().map(|m| m.id.clone());
        let page = s
            .messages
            .list_messages(t, thread_id, None, &q)
            .await
            .unwrap();
        out.extend(page.items);
        if !page.has_more {
            return out;
        }
    }
}

/// Reads every populated object from both stores and asserts they are the same.
async fn same_objects(a: &Store, b: &Store, p: &Population) {
    for (t, threads) in &p.tenants {
        let (la, lb) = (
            a.assistants.list_assistants(t, &all()).await.unwrap(),
            b.assistants.list_assistants(t, &all()).await.unwrap(),
        );
        assert_eq!(la.items.len(), 2);
        assert_eq!(la, lb);
        let (fa, fb) = (
            a.files.list_files(t, None, &all()).await.unwrap(),
            b.files.list_files(t, None, &all()).await.unwrap(),
        );
        assert_eq!(fa.items.len(), 2);
        assert_eq!(fa, fb);
        for f in &fa.items {
            let (ca, cb) = (
                content::read_all(a, t, f).await.unwrap(),
                content::read_all(b, t, f).await.unwrap(),
            );
            assert_eq!(ca.len() as u64, f.bytes);
            assert!(ca == cb, "content of {} differs", f.id);
        }
        let (va, vb) = (
            a.vector_stores.get_vector_store(t, "vs_1").await.unwrap(),
            b.vector_stores.get_vector_store(t, "vs_1").await.unwrap(),
        );
        assert_eq!(va.as_ref().unwrap().last_active_at, Some(1_700_000_500));
        assert_eq!(va, vb);
        let (ba, bb) = (
            a.vector_stores
                .get_batch(t, "vs_1", "vsfb_1")
                .await
                .unwrap(),
            b.vector_stores
                .get_batch(t, "vs_1", "vsfb_1")
                .await
                .unwrap(),
        );
        assert!(ba.is_some());
        assert_eq!(ba, bb);
        let q = VsFileQuery::first(100, Order::Asc);
        let filter = VsFileFilter::default();
        let (ma, mb) = (
            a.vector_stores
                .list_vs_files(t, "vs_1", &filter, &q)
                .await
                .unwrap(),
            b.vector_stores
                .list_vs_files(t, "vs_1", &filter, &q)
                .await
                .unwrap(),
        );
        assert_eq!(ma.items.len(), 1);
        assert_eq!(ma, mb);
        let (ka, kb) = (
            a.chunks.file_chunks(t, "vs_1", "file-big").await.unwrap(),
            b.chunks.file_chunks(t, "vs_1", "file-big").await.unwrap(),
        );
        assert_eq!(ka.len(), 7);
        let strip = |c: &Chunk| (c.index, c.text.clone(), c.attributes.clone());
        assert_eq!(
            ka.iter().map(strip).collect::<Vec<_>>(),
            kb.iter().map(strip).collect::<Vec<_>>()
        );
        // Embeddings: the nearest chunk to chunk 3's vector is chunk 3 on both sides.
        for s in [a, b] {
            let hits = s
                .chunks
                .search(t, &["vs_1".to_owned()], &unit_vector(4, DIMS), 1, None)
                .await
                .unwrap();
            assert_eq!(hits.first().map(|h| h.index), Some(3));
        }
        for thread_id in threads {
            assert_eq!(
                a.threads.get_thread(t, thread_id).await.unwrap(),
                b.threads.get_thread(t, thread_id).await.unwrap()
            );
            let (ma, mb) = (
                messages(a, t, thread_id).await,
                messages(b, t, thread_id).await,
            );
            assert_eq!(ma.len(), MESSAGES_PER_THREAD);
            assert_eq!(ma, mb);
            let (ra, rb) = (
                a.runs.list_runs(t, thread_id, &all()).await.unwrap(),
                b.runs.list_runs(t, thread_id, &all()).await.unwrap(),
            );
            assert_eq!(ra.items.len(), 1);
            assert_eq!(ra, rb);
            assert_eq!(
                a.runs.active_run(t, thread_id).await.unwrap(),
                b.runs.active_run(t, thread_id).await.unwrap()
            );
        }
        let (sa, sb) = (
            a.runs
                .list_steps(t, "thread_0", "run_done", &all())
                .await
                .unwrap(),
            b.runs
                .list_steps(t, "thread_0", "run_done", &all())
                .await
                .unwrap(),
        );
        assert_eq!(sa.items.len(), 3);
        assert_eq!(sa, sb);
        // The active run is active on the target: it holds its thread and the sweeper
        // finds it (to resolve it by lease and expiry).
        assert_eq!(
            b.runs.active_run(t, "thread_1").await.unwrap().as_deref(),
            Some("run_active")
        );
        let busy = b
            .runs
            .create_run(t, &run("thread_1", "run_new", RunStatus::Queued))
            .await
            .unwrap();
        assert_eq!(busy, CreateRun::ThreadBusy("run_active".into()));
    }
    let active = b.runs.list_active_runs().await.unwrap();
    for (t, _) in &p.tenants {
        assert!(
            active
                .iter()
                .any(|(at, r)| at == t && r.run.id == "run_active"),
            "the active run of {t:?} is not listed"
        );
    }
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_assistants-proxy"))
}

/// `migrate` through the binary, stopped after `stop_after` objects when given; its exit
/// status and output.
fn migrate_cli(from: &str, to: &str, state: &Path, extra: &[&str]) -> (i32, String) {
    let out = binary()
        .args(["migrate", "--from", from, "--to", to, "--state"])
        .arg(state)
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Copies `from` into `to` through the binary, interrupted twice on the way, then verified.
fn migrate_with_interruptions(from: &str, to: &str, dir: &Path) {
    let state = dir.join(format!("state-{}.json", new_id("")));
    let (code, out) = migrate_cli(from, to, &state, &["--stop-after", "700"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("resume"), "{out}");
    assert!(state.exists());
    let (code, out) = migrate_cli(from, to, &state, &["--stop-after", "600"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("resuming"), "{out}");
    let (code, out) = migrate_cli(from, to, &state, &["--verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("resuming"), "{out}");
    assert!(!out.contains("MISMATCH"), "{out}");
    let copied = out
        .lines()
        .find(|l| l.starts_with("copied messages"))
        .unwrap_or_else(|| panic!("no message count in {out}"));
    assert!(
        copied.ends_with(&format!(" {}", TENANTS * 2 * MESSAGES_PER_THREAD)),
        "{copied}"
    );
    assert!(
        !state.exists(),
        "the state file stays after a complete copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_sqlite_resumes_verifies_and_round_trips_an_export() {
    let dir = tempfile::tempdir().unwrap();
    let src_url = format!("sqlite://{}", dir.path().join("src.db").display());
    let dst_url = format!("sqlite://{}", dir.path().join("dst.db").display());
    let population = {
        let src = open(&src_url).await;
        populate(&src).await
    };
    // The stores are closed while the binary works on them (SQLite allows one process).
    migrate_with_interruptions(&src_url, &dst_url, dir.path());
    let (src, dst) = (open(&src_url).await, open(&dst_url).await);
    same_objects(&src, &dst, &population).await;

    // Re-running a complete copy changes nothing: still no duplicates, still equal.
    let t0 = &population.tenants[0].0;
    let cmp = transfer::compare(&*src.dump, &*dst.dump, None)
        .await
        .unwrap();
    assert!(transfer::report(&cmp).1, "{}", transfer::report(&cmp).0);

    // A deliberate difference: an extra message and a changed assistant in the target.
    dst.messages
        .put_message(t0, &message("thread_0", "msg_extra", None))
        .await
        .unwrap();
    let mut changed = assistant("asst_0_0");
    changed.name = Some("renamed".into());
    dst.assistants.put_assistant(t0, &changed).await.unwrap();
    let cmp = transfer::compare(&*src.dump, &*dst.dump, None)
        .await
        .unwrap();
    let (text, ok) = transfer::report(&cmp);
    assert!(!ok);
    assert!(
        text.contains("messages") && text.contains("MISMATCH (counts differ)"),
        "{text}"
    );
    assert!(text.contains("MISMATCH (contents differ)"), "{text}");
    drop((src, dst));
    let (code, out) = migrate_cli(
        &src_url,
        &dst_url,
        &dir.path().join("s.json"),
        &["--verify-only"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("MISMATCH"), "{out}");

    // One tenant only: its objects are copied, the others' are not.
    let one_url = format!("sqlite://{}", dir.path().join("one.db").display());
    let (t0, t1) = (&population.tenants[0].0, &population.tenants[1].0);
    let (code, out) = migrate_cli(
        &src_url,
        &one_url,
        &dir.path().join("one.json"),
        &["--tenant", t0.as_str(), "--verify"],
    );
    assert_eq!(code, 0, "{out}");
    {
        let one = open(&one_url).await;
        let mine = one.assistants.list_assistants(t0, &all()).await.unwrap();
        assert_eq!(mine.items.len(), 2);
        let theirs = one.assistants.list_assistants(t1, &all()).await.unwrap();
        assert!(theirs.items.is_empty());
        assert_eq!(
            messages(&one, t0, "thread_1").await.len(),
            MESSAGES_PER_THREAD
        );
    }

    // Export, then import into a fresh store, twice (idempotent), through the binary.
    let export = dir.path().join("export.jsonl");
    let out = binary()
        .args(["export", "--store", &src_url, "--to"])
        .arg(&export)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = std::fs::read_to_string(&export).unwrap();
    let header: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(header["format"], transfer::FORMAT);
    assert_eq!(header["version"], transfer::VERSION);
    // No line holds more than one content piece (1 MiB, base64).
    assert!(first.lines().all(|l| l.len() < 1_500_000));
    let imported_url = format!("sqlite://{}", dir.path().join("imported.db").display());
    for _ in 0..2 {
        let out = binary()
            .args(["import", "--store", &imported_url, "--from"])
            .arg(&export)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (src, imported) = (open(&src_url).await, open(&imported_url).await);
    same_objects(&src, &imported, &population).await;
    let cmp = transfer::compare(&*src.dump, &*imported.dump, None)
        .await
        .unwrap();
    assert!(transfer::report(&cmp).1, "{}", transfer::report(&cmp).0);

    // A truncated export is refused (after writing what it held).
    let cut: String = first.lines().take(50).map(|l| format!("{l}\n")).collect();
    let cut_path = dir.path().join("cut.jsonl");
    std::fs::write(&cut_path, cut).unwrap();
    let mut input = std::io::BufReader::new(std::fs::File::open(&cut_path).unwrap());
    let err = transfer::import(&imported, None, &mut input)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Cassandra: ASSISTANTS_PROXY_TEST_CASSANDRA=HOST:PORT cargo test -- --include-ignored (scripts/test.sh starts a node and does that)"]
async fn sqlite_to_cassandra_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let src_url = format!("sqlite://{}", dir.path().join("src.db").display());
    let back_url = format!("sqlite://{}", dir.path().join("back.db").display());
    // A keyspace of its own: a migration copies every tenant of the keyspace.
    let cass_url = cassandra_url(&format!("ap_migrate_{}", new_id("").to_lowercase()));
    let population = {
        let src = open(&src_url).await;
        populate(&src).await
    };
    migrate_with_interruptions(&src_url, &cass_url, dir.path());
    {
        let (src, cass) = (open(&src_url).await, open(&cass_url).await);
        same_objects(&src, &cass, &population).await;
    }
    migrate_with_interruptions(&cass_url, &back_url, dir.path());
    let (src, back) = (open(&src_url).await, open(&back_url).await);
    same_objects(&src, &back, &population).await;
    let cmp = transfer::compare(&*src.dump, &*back.dump, None)
        .await
        .unwrap();
    assert!(transfer::report(&cmp).1, "{}", transfer::report(&cmp).0);

    // A mistyped source keyspace is an error, not an empty store (and is not created).
    let typo = cassandra_url(&format!("ap_migrate_typo_{}", new_id("").to_lowercase()));
    let (code, out) = migrate_cli(&typo, &back_url, &dir.path().join("typo.json"), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not exist"), "{out}");
    let (code, out) = migrate_cli(&typo, &back_url, &dir.path().join("typo.json"), &[]);
    assert!(
        code == 1 && out.contains("does not exist"),
        "created by the first try: {out}"
    );
}
