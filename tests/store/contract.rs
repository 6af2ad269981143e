//! The store contract: one suite, written once, run against every backend (SQLite always;
//! Cassandra at `ASSISTANTS_PROXY_TEST_CASSANDRA`, which the README's test command sets after
//! starting a real node; without it the Cassandra tests fail rather than skip).
//!
//! Each test uses fresh random tenants, so tests share a Cassandra keyspace without seeing
//! each other's rows.

use std::collections::HashSet;
use std::sync::Arc;

use assistants_proxy::ids::new_id;
use assistants_proxy::model::*;
use assistants_proxy::store::*;
use bytes::Bytes;
use serde_json::{Value, json};

pub fn tenant() -> Tenant {
    Tenant::new(new_id("t_"))
}

pub fn assistant(id: &str) -> Assistant {
    Assistant {
        id: id.to_owned(),
        object: "assistant".into(),
        created_at: 1_700_000_000,
        name: Some("helper".into()),
        description: None,
        model: "gpt-4o".into(),
        instructions: Some("be brief".into()),
        tools: vec![json!({"type": "file_search"})],
        tool_resources: ToolResources::default(),
        metadata: Metadata::from([("k".to_owned(), "v".to_owned())]),
        temperature: Some(1.0),
        top_p: Some(1.0),
        response_format: json!("auto"),
        v1_file_ids: vec![],
        reasoning_effort: Some("low".into()),
    }
}

pub fn thread(id: &str) -> Thread {
    Thread {
        id: id.to_owned(),
        object: "thread".into(),
        created_at: 1_700_000_000,
        tool_resources: ToolResources::default(),
        metadata: Metadata::new(),
    }
}

pub fn message(thread_id: &str, id: &str, run_id: Option<&str>) -> Message {
    Message {
        id: id.to_owned(),
        object: "thread.message".into(),
        created_at: 1_700_000_000,
        thread_id: thread_id.to_owned(),
        status: "completed".into(),
        incomplete_details: None,
        completed_at: None,
        incomplete_at: None,
        role: "user".into(),
        content: vec![
            json!({"type": "text", "text": {"value": format!("hi {id}"), "annotations": []}}),
        ]
        .into(),
        assistant_id: None,
        run_id: run_id.map(str::to_owned),
        attachments: vec![],
        metadata: Metadata::new(),
    }
}

pub fn run(thread_id: &str, id: &str, status: RunStatus) -> RunRecord {
    RunRecord {
        run: Run {
            id: id.to_owned(),
            object: "thread.run".into(),
            created_at: 1_700_000_000,
            thread_id: thread_id.to_owned(),
            assistant_id: "asst_x".into(),
            status,
            required_action: None,
            last_error: None,
            expires_at: Some(1_700_000_600),
            started_at: None,
            cancelled_at: None,
            failed_at: None,
            completed_at: None,
            incomplete_details: None,
            model: "gpt-4o".into(),
            instructions: String::new(),
            tools: vec![],
            metadata: Metadata::new(),
            usage: None,
            temperature: Some(1.0),
            top_p: Some(1.0),
            max_prompt_tokens: None,
            max_completion_tokens: None,
            truncation_strategy: json!({"type": "auto", "last_messages": null}),
            tool_choice: json!("auto"),
            parallel_tool_calls: true,
            response_format: json!("auto"),
        },
        version: 1,
        lease_owner: None,
        lease_until: None,
        state: Value::Null,
    }
}

pub fn step(thread_id: &str, run_id: &str, id: &str) -> RunStep {
    RunStep {
        id: id.to_owned(),
        object: "thread.run.step".into(),
        created_at: 1_700_000_000,
        assistant_id: "asst_x".into(),
        thread_id: thread_id.to_owned(),
        run_id: run_id.to_owned(),
        kind: "message_creation".into(),
        status: StepStatus::Completed,
        step_details: json!({"type": "message_creation", "message_creation": {"message_id": "msg_x"}}),
        last_error: None,
        expired_at: None,
        cancelled_at: None,
        failed_at: None,
        completed_at: Some(1_700_000_001),
        metadata: Metadata::new(),
        usage: None,
    }
}

pub fn file(id: &str, purpose: &str, bytes: u64) -> FileObject {
    FileObject {
        id: id.to_owned(),
        object: "file".into(),
        bytes,
        created_at: 1_700_000_000,
        expires_at: None,
        filename: "notes.txt".into(),
        purpose: purpose.to_owned(),
        status: "processed".into(),
        status_details: None,
    }
}

pub fn vector_store(id: &str) -> VectorStore {
    VectorStore {
        id: id.to_owned(),
        object: "vector_store".into(),
        created_at: 1_700_000_000,
        name: Some("docs".into()),
        usage_bytes: 0,
        file_counts: FileCounts::default(),
        status: "completed".into(),
        expires_after: None,
        expires_at: None,
        last_active_at: Some(1_700_000_000),
        metadata: Metadata::new(),
        embedding_model: "text-embedding-3-small".into(),
        dimensions: 0,
    }
}

pub fn vs_file(vs_id: &str, file_id: &str, status: &str, batch: Option<&str>) -> VectorStoreFile {
    VectorStoreFile {
        id: file_id.to_owned(),
        object: "vector_store.file".into(),
        usage_bytes: 100,
        created_at: 1_700_000_000,
        vector_store_id: vs_id.to_owned(),
        status: status.to_owned(),
        last_error: None,
        chunking_strategy: json!({"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}}),
        attributes: None,
        batch_id: batch.map(str::to_owned),
        ingest_lease_until: None,
    }
}

/// A deterministic pseudo-random unit vector.
pub fn unit_vector(seed: u64, dims: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= norm);
    v
}

pub fn chunk(vs_id: &str, file_id: &str, index: u32, embedding: Vec<f32>, attrs: &Value) -> Chunk {
    Chunk {
        vector_store_id: vs_id.to_owned(),
        file_id: file_id.to_owned(),
        index,
        text: format!("{file_id} chunk {index}"),
        embedding,
        attributes: attrs.as_object().cloned().unwrap_or_default(),
    }
}

fn ids<T>(page: &Page<T>, id: impl for<'a> Fn(&'a T) -> &'a str) -> Vec<String> {
    page.items.iter().map(|x| id(x).to_owned()).collect()
}

fn q(limit: usize, order: Order, after: Option<&str>, before: Option<&str>) -> ListQuery {
    ListQuery {
        limit,
        order,
        after: after.map(str::to_owned),
        before: before.map(str::to_owned),
    }
}

fn pos(created_at: i64, file_id: &str) -> VsFilePos {
    VsFilePos {
        created_at,
        file_id: file_id.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// The contract, one function per property; the macro at the end runs each on every backend.
// ---------------------------------------------------------------------------------------

pub async fn assistants_crud(s: &Store) {
    let t = tenant();
    let mut a = assistant(&new_id("asst_"));
    s.assistants.put_assistant(&t, &a).await.unwrap();
    assert_eq!(
        s.assistants.get_assistant(&t, &a.id).await.unwrap(),
        Some(a.clone())
    );
    a.name = Some("renamed".into());
    a.metadata.insert("x".into(), "y".into());
    s.assistants.put_assistant(&t, &a).await.unwrap();
    assert_eq!(
        s.assistants.get_assistant(&t, &a.id).await.unwrap(),
        Some(a.clone())
    );
    assert!(s.assistants.delete_assistant(&t, &a.id).await.unwrap());
    assert!(!s.assistants.delete_assistant(&t, &a.id).await.unwrap());
    assert_eq!(s.assistants.get_assistant(&t, &a.id).await.unwrap(), None);
}

pub async fn threads_and_messages_crud(s: &Store) {
    let t = tenant();
    let th = thread(&new_id("thread_"));
    s.threads.put_thread(&t, &th).await.unwrap();
    assert_eq!(
        s.threads.get_thread(&t, &th.id).await.unwrap(),
        Some(th.clone())
    );
    let mut m = message(&th.id, &new_id("msg_"), None);
    // Written as in-flight progress first: readable at once all the same.
    s.messages.put_message_progress(&t, &m).await.unwrap();
    assert_eq!(
        s.messages.get_message(&t, &th.id, &m.id).await.unwrap(),
        Some(m.clone())
    );
    m.metadata.insert("edited".into(), "1".into());
    s.messages.put_message(&t, &m).await.unwrap();
    assert_eq!(
        s.messages.get_message(&t, &th.id, &m.id).await.unwrap(),
        Some(m.clone())
    );
    // The message is scoped by its thread.
    assert_eq!(
        s.messages
            .get_message(&t, "thread_other", &m.id)
            .await
            .unwrap(),
        None
    );
    assert!(s.messages.delete_message(&t, &th.id, &m.id).await.unwrap());
    assert_eq!(
        s.messages.get_message(&t, &th.id, &m.id).await.unwrap(),
        None
    );
}

pub async fn message_pagination(s: &Store) {
    let t = tenant();
    let th = thread(&new_id("thread_"));
    s.threads.put_thread(&t, &th).await.unwrap();
    // 25 messages in the same second: order must still be creation order.
    let mut made = Vec::new();
    for i in 0..25 {
        let run = (i % 5 == 0).then_some("run_filter");
        let m = message(&th.id, &new_id("msg_"), run);
        s.messages.put_message(&t, &m).await.unwrap();
        made.push(m.id);
    }
    fn id(m: &Message) -> &str {
        &m.id
    }

    let p = s
        .messages
        .list_messages(&t, &th.id, None, &q(10, Order::Desc, None, None))
        .await
        .unwrap();
    let newest: Vec<String> = made.iter().rev().take(10).cloned().collect();
    assert_eq!(ids(&p, id), newest);
    assert!(p.has_more);

    let p2 = s
        .messages
        .list_messages(&t, &th.id, None, &q(10, Order::Desc, Some(&made[15]), None))
        .await
        .unwrap();
    assert_eq!(
        ids(&p2, id),
        made[5..15].iter().rev().cloned().collect::<Vec<_>>()
    );
    assert!(p2.has_more);

    let p3 = s
        .messages
        .list_messages(&t, &th.id, None, &q(10, Order::Desc, Some(&made[5]), None))
        .await
        .unwrap();
    assert_eq!(
        ids(&p3, id),
        made[0..5].iter().rev().cloned().collect::<Vec<_>>()
    );
    assert!(!p3.has_more);

    let asc = s
        .messages
        .list_messages(&t, &th.id, None, &q(7, Order::Asc, None, None))
        .await
        .unwrap();
    assert_eq!(ids(&asc, id), made[0..7].to_vec());
    assert!(asc.has_more);
    let asc2 = s
        .messages
        .list_messages(&t, &th.id, None, &q(100, Order::Asc, Some(&made[20]), None))
        .await
        .unwrap();
    assert_eq!(ids(&asc2, id), made[21..].to_vec());
    assert!(!asc2.has_more);

    // `before` returns the items just before the cursor in the requested order.
    let before_desc = s
        .messages
        .list_messages(&t, &th.id, None, &q(3, Order::Desc, None, Some(&made[10])))
        .await
        .unwrap();
    assert_eq!(
        ids(&before_desc, id),
        vec![made[13].clone(), made[12].clone(), made[11].clone()]
    );
    assert!(before_desc.has_more);
    let before_asc = s
        .messages
        .list_messages(&t, &th.id, None, &q(3, Order::Asc, None, Some(&made[10])))
        .await
        .unwrap();
    assert_eq!(ids(&before_asc, id), made[7..10].to_vec());
    let edge = s
        .messages
        .list_messages(&t, &th.id, None, &q(20, Order::Asc, None, Some(&made[2])))
        .await
        .unwrap();
    assert_eq!(ids(&edge, id), made[0..2].to_vec());
    assert!(!edge.has_more);

    let by_run = s
        .messages
        .list_messages(
            &t,
            &th.id,
            Some("run_filter"),
            &q(100, Order::Asc, None, None),
        )
        .await
        .unwrap();
    let expected: Vec<String> = made.iter().step_by(5).cloned().collect();
    assert_eq!(ids(&by_run, id), expected);

    let empty = s
        .messages
        .list_messages(&t, &new_id("thread_"), None, &ListQuery::default())
        .await
        .unwrap();
    assert!(empty.items.is_empty() && !empty.has_more);
}

pub async fn tenant_isolation(s: &Store) {
    let (t1, t2) = (tenant(), tenant());
    let a = assistant(&new_id("asst_"));
    s.assistants.put_assistant(&t1, &a).await.unwrap();
    let th = thread(&new_id("thread_"));
    s.threads.put_thread(&t1, &th).await.unwrap();
    let m = message(&th.id, &new_id("msg_"), None);
    s.messages.put_message(&t1, &m).await.unwrap();
    let f = file(&new_id("file-"), "assistants", 3);
    s.files.put_file(&t1, &f).await.unwrap();
    s.files
        .put_file_part(&t1, &f.id, 0, Bytes::from_static(b"abc"))
        .await
        .unwrap();
    let vs = vector_store(&new_id("vs_"));
    s.vector_stores.put_vector_store(&t1, &vs).await.unwrap();
    let r = run(&th.id, &new_id("run_"), RunStatus::Queued);
    assert_eq!(
        s.runs.create_run(&t1, &r).await.unwrap(),
        CreateRun::Created
    );

    assert_eq!(s.assistants.get_assistant(&t2, &a.id).await.unwrap(), None);
    assert!(
        s.assistants
            .list_assistants(&t2, &ListQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(!s.assistants.delete_assistant(&t2, &a.id).await.unwrap());
    assert_eq!(s.threads.get_thread(&t2, &th.id).await.unwrap(), None);
    assert!(!s.threads.delete_thread(&t2, &th.id).await.unwrap());
    assert_eq!(
        s.messages.get_message(&t2, &th.id, &m.id).await.unwrap(),
        None
    );
    assert!(
        s.messages
            .list_messages(&t2, &th.id, None, &ListQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(s.files.get_file(&t2, &f.id).await.unwrap(), None);
    assert_eq!(s.files.get_file_part(&t2, &f.id, 0).await.unwrap(), None);
    assert!(
        s.files
            .list_files(&t2, None, &ListQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        s.vector_stores.get_vector_store(&t2, &vs.id).await.unwrap(),
        None
    );
    assert!(
        s.vector_stores
            .list_vector_stores(&t2, &ListQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(s.runs.get_run(&t2, &th.id, &r.run.id).await.unwrap(), None);
    assert!(
        s.runs
            .list_runs(&t2, &th.id, &ListQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(s.runs.active_run(&t2, &th.id).await.unwrap(), None);
    // The owner still sees everything.
    assert_eq!(
        s.assistants.get_assistant(&t1, &a.id).await.unwrap(),
        Some(a)
    );
    assert_eq!(
        s.runs.active_run(&t1, &th.id).await.unwrap(),
        Some(r.run.id.clone())
    );
}

pub async fn runs_and_steps(s: &Store) {
    let t = tenant();
    let th = thread(&new_id("thread_"));
    s.threads.put_thread(&t, &th).await.unwrap();
    let r = run(&th.id, &new_id("run_"), RunStatus::Queued);
    assert_eq!(s.runs.create_run(&t, &r).await.unwrap(), CreateRun::Created);
    assert_eq!(
        s.runs.get_run(&t, &th.id, &r.run.id).await.unwrap(),
        Some(r.clone())
    );
    assert_eq!(
        s.runs.active_run(&t, &th.id).await.unwrap(),
        Some(r.run.id.clone())
    );
    let second = run(&th.id, &new_id("run_"), RunStatus::Queued);
    assert_eq!(
        s.runs.create_run(&t, &second).await.unwrap(),
        CreateRun::ThreadBusy(r.run.id.clone())
    );
    assert!(
        s.runs
            .list_active_runs()
            .await
            .unwrap()
            .iter()
            .any(|(tt, rr)| *tt == t && rr.run.id == r.run.id)
    );

    // Compare-and-set transitions.
    let mut next = r.clone();
    next.version = 2;
    next.run.status = RunStatus::InProgress;
    next.lease_owner = Some("proxy-a".into());
    next.lease_until = Some(1_700_000_030_000);
    // (The claim is in-flight progress: same compare-and-set, maybe not yet on disk.)
    assert!(s.runs.update_run_progress(&t, &next, 1).await.unwrap());
    let mut stale = r.clone();
    stale.version = 2;
    stale.run.status = RunStatus::Cancelled;
    assert!(
        !s.runs.update_run(&t, &stale, 1).await.unwrap(),
        "a stale version must lose"
    );
    assert!(
        !s.runs.update_run_progress(&t, &stale, 1).await.unwrap(),
        "a stale version must lose, progress or not"
    );
    assert_eq!(
        s.runs.get_run(&t, &th.id, &r.run.id).await.unwrap(),
        Some(next.clone())
    );

    for i in 0..3 {
        let st = step(&th.id, &r.run.id, &new_id("step_"));
        if i % 2 == 0 {
            s.runs.put_step(&t, &st).await.unwrap();
        } else {
            s.runs.put_step_progress(&t, &st).await.unwrap();
        }
        assert_eq!(
            s.runs
                .get_step(&t, &th.id, &r.run.id, &st.id)
                .await
                .unwrap(),
            Some(st.clone()),
            "step {i}"
        );
    }
    let steps = s
        .runs
        .list_steps(&t, &th.id, &r.run.id, &q(2, Order::Asc, None, None))
        .await
        .unwrap();
    assert_eq!(steps.items.len(), 2);
    assert!(steps.has_more);

    // Terminal: the thread is free again and the run leaves the active set.
    let mut done = next.clone();
    done.version = 3;
    done.run.status = RunStatus::Completed;
    done.run.expires_at = None;
    done.lease_owner = None;
    done.lease_until = None;
    assert!(s.runs.update_run(&t, &done, 2).await.unwrap());
    assert_eq!(s.runs.active_run(&t, &th.id).await.unwrap(), None);
    assert!(
        !s.runs
            .list_active_runs()
            .await
            .unwrap()
            .iter()
            .any(|(tt, rr)| *tt == t && rr.run.id == r.run.id)
    );
    let third = run(&th.id, &new_id("run_"), RunStatus::Queued);
    assert_eq!(
        s.runs.create_run(&t, &third).await.unwrap(),
        CreateRun::Created
    );
    let listed = s
        .runs
        .list_runs(&t, &th.id, &ListQuery::default())
        .await
        .unwrap();
    assert_eq!(
        ids(&listed, |r| r.run.id.as_str()),
        vec![third.run.id.clone(), r.run.id.clone()]
    );
}

pub async fn concurrent_run_claims(s: Arc<Store>) {
    let t = tenant();
    let th = new_id("thread_");
    s.threads.put_thread(&t, &thread(&th)).await.unwrap();
    // 20 concurrent creates on one thread: exactly one wins.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (s, t, th) = (s.clone(), t.clone(), th.clone());
        tasks.push(tokio::spawn(async move {
            let r = run(&th, &new_id("run_"), RunStatus::Queued);
            (r.run.id.clone(), s.runs.create_run(&t, &r).await.unwrap())
        }));
    }
    let mut winners = Vec::new();
    let mut busy = HashSet::new();
    for task in tasks {
        match task.await.unwrap() {
            (id, CreateRun::Created) => winners.push(id),
            (_, CreateRun::ThreadBusy(active)) => {
                busy.insert(active);
            }
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert!(busy.len() <= 1 && busy.iter().all(|b| *b == winners[0]));

    // 20 concurrent claims of the same version: exactly one wins.
    let won = winners[0].clone();
    let base = s.runs.get_run(&t, &th, &won).await.unwrap().unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (s, t, mut claim) = (s.clone(), t.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            claim.version = base.version + 1;
            claim.run.status = RunStatus::InProgress;
            claim.lease_owner = Some(format!("proxy-{i}"));
            s.runs.update_run(&t, &claim, base.version).await.unwrap()
        }));
    }
    let mut wins = 0;
    for task in tasks {
        if task.await.unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
}

pub async fn thread_delete_cascades(s: &Store) {
    let t = tenant();
    let th = thread(&new_id("thread_"));
    s.threads.put_thread(&t, &th).await.unwrap();
    let m = message(&th.id, &new_id("msg_"), None);
    s.messages.put_message(&t, &m).await.unwrap();
    let r = run(&th.id, &new_id("run_"), RunStatus::Queued);
    s.runs.create_run(&t, &r).await.unwrap();
    let st = step(&th.id, &r.run.id, &new_id("step_"));
    s.runs.put_step(&t, &st).await.unwrap();

    assert!(s.threads.delete_thread(&t, &th.id).await.unwrap());
    assert_eq!(s.threads.get_thread(&t, &th.id).await.unwrap(), None);
    assert_eq!(
        s.messages.get_message(&t, &th.id, &m.id).await.unwrap(),
        None
    );
    assert_eq!(s.runs.get_run(&t, &th.id, &r.run.id).await.unwrap(), None);
    assert_eq!(
        s.runs
            .get_step(&t, &th.id, &r.run.id, &st.id)
            .await
            .unwrap(),
        None
    );
    assert!(
        !s.runs
            .list_active_runs()
            .await
            .unwrap()
            .iter()
            .any(|(_, rr)| rr.run.id == r.run.id),
        "a deleted thread's run is no longer active"
    );
}

pub async fn files_and_parts(s: &Store) {
    let t = tenant();
    let f = file(&new_id("file-"), "assistants", 3 * 1024 * 1024);
    let piece = |i: u8| Bytes::from(vec![i; 1024 * 1024]);
    for i in 0..3u8 {
        s.files
            .put_file_part(&t, &f.id, u32::from(i), piece(i))
            .await
            .unwrap();
    }
    s.files.put_file(&t, &f).await.unwrap();
    assert_eq!(s.files.get_file(&t, &f.id).await.unwrap(), Some(f.clone()));
    for i in 0..3u8 {
        assert_eq!(
            s.files
                .get_file_part(&t, &f.id, u32::from(i))
                .await
                .unwrap(),
            Some(piece(i))
        );
    }
    assert_eq!(s.files.get_file_part(&t, &f.id, 3).await.unwrap(), None);

    let batch = file(&new_id("file-"), "batch", 1);
    s.files.put_file(&t, &batch).await.unwrap();
    let all = s
        .files
        .list_files(&t, None, &q(10_000, Order::Desc, None, None))
        .await
        .unwrap();
    assert_eq!(
        ids(&all, |f| f.id.as_str()),
        vec![batch.id.clone(), f.id.clone()]
    );
    let only = s
        .files
        .list_files(&t, Some("assistants"), &q(10_000, Order::Desc, None, None))
        .await
        .unwrap();
    assert_eq!(ids(&only, |f| f.id.as_str()), vec![f.id.clone()]);
    let after = s
        .files
        .list_files(&t, None, &q(10, Order::Desc, Some(&batch.id), None))
        .await
        .unwrap();
    assert_eq!(ids(&after, |f| f.id.as_str()), vec![f.id.clone()]);

    assert!(s.files.delete_file(&t, &f.id).await.unwrap());
    assert_eq!(s.files.get_file(&t, &f.id).await.unwrap(), None);
    assert_eq!(s.files.get_file_part(&t, &f.id, 0).await.unwrap(), None);
}

pub async fn vector_stores_files_and_batches(s: &Store) {
    let t = tenant();
    let vs = vector_store(&new_id("vs_"));
    s.vector_stores.put_vector_store(&t, &vs).await.unwrap();
    assert_eq!(
        s.vector_stores.get_vector_store(&t, &vs.id).await.unwrap(),
        Some(vs.clone())
    );
    let batch = FileBatch {
        id: new_id("vsfb_"),
        object: "vector_store.files_batch".into(),
        created_at: 1_700_000_000,
        vector_store_id: vs.id.clone(),
        status: "in_progress".into(),
        file_counts: FileCounts::default(),
        cancel_requested: false,
    };
    s.vector_stores.put_batch(&t, &batch).await.unwrap();
    assert_eq!(
        s.vector_stores
            .get_batch(&t, &vs.id, &batch.id)
            .await
            .unwrap(),
        Some(batch.clone())
    );

    let statuses = [
        "completed",
        "completed",
        "in_progress",
        "failed",
        "cancelled",
    ];
    let mut file_ids = Vec::new();
    for (i, st) in statuses.iter().enumerate() {
        let fid = new_id("file-");
        let b = (i < 2).then_some(batch.id.as_str());
        s.vector_stores
            .put_vs_file(&t, &vs_file(&vs.id, &fid, st, b))
            .await
            .unwrap();
        file_ids.push(fid);
    }
    let (counts, bytes) = s
        .vector_stores
        .count_vs_files(&t, &vs.id, None)
        .await
        .unwrap();
    assert_eq!(
        counts,
        FileCounts {
            in_progress: 1,
            completed: 2,
            failed: 1,
            cancelled: 1,
            total: 5
        }
    );
    assert_eq!(bytes, 500);
    let (bc, _) = s
        .vector_stores
        .count_vs_files(&t, &vs.id, Some(&batch.id))
        .await
        .unwrap();
    assert_eq!(bc.total, 2);
    assert_eq!(bc.completed, 2);

    let completed = s
        .vector_stores
        .list_vs_files(
            &t,
            &vs.id,
            &VsFileFilter {
                status: Some("completed".into()),
                batch_id: None,
            },
            &VsFileQuery::first(20, Order::Desc),
        )
        .await
        .unwrap();
    assert_eq!(completed.items.len(), 2);
    let in_batch = s
        .vector_stores
        .list_vs_files(
            &t,
            &vs.id,
            &VsFileFilter {
                status: None,
                batch_id: Some(batch.id.clone()),
            },
            &VsFileQuery::first(1, Order::Asc),
        )
        .await
        .unwrap();
    assert_eq!(ids(&in_batch, |f| f.id.as_str()), vec![file_ids[0].clone()]);
    assert!(in_batch.has_more);
    let all_desc = s
        .vector_stores
        .list_vs_files(
            &t,
            &vs.id,
            &VsFileFilter::default(),
            &VsFileQuery {
                after: Some(pos(1_700_000_000, &file_ids[4])),
                ..VsFileQuery::first(2, Order::Desc)
            },
        )
        .await
        .unwrap();
    assert_eq!(
        ids(&all_desc, |f| f.id.as_str()),
        vec![file_ids[3].clone(), file_ids[2].clone()]
    );

    let mut updated = vs_file(&vs.id, &file_ids[2], "completed", None);
    updated.attributes = Some(json!({"lang": "en"}).as_object().unwrap().clone());
    s.vector_stores.put_vs_file(&t, &updated).await.unwrap();
    assert_eq!(
        s.vector_stores
            .get_vs_file(&t, &vs.id, &file_ids[2])
            .await
            .unwrap(),
        Some(updated)
    );

    assert!(
        s.vector_stores
            .delete_vs_file(&t, &vs.id, &file_ids[0])
            .await
            .unwrap()
    );
    assert_eq!(
        s.vector_stores
            .get_vs_file(&t, &vs.id, &file_ids[0])
            .await
            .unwrap(),
        None
    );
    let listed = s
        .vector_stores
        .list_vector_stores(&t, &ListQuery::default())
        .await
        .unwrap();
    assert_eq!(ids(&listed, |v| v.id.as_str()), vec![vs.id.clone()]);

    assert!(
        s.vector_stores
            .delete_vector_store(&t, &vs.id)
            .await
            .unwrap()
    );
    assert_eq!(
        s.vector_stores.get_vector_store(&t, &vs.id).await.unwrap(),
        None
    );
    assert_eq!(
        s.vector_stores
            .get_vs_file(&t, &vs.id, &file_ids[1])
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.vector_stores
            .get_batch(&t, &vs.id, &batch.id)
            .await
            .unwrap(),
        None
    );
}

/// A store's files (and a batch's) list by attach time, then id, whatever their ids say:
/// cursors are positions in that order, a re-attached file moves to its new time, and the
/// status and batch filters keep the order.
pub async fn vs_files_list_by_attach_time(s: &Store) {
    let t = tenant();
    let vs = vector_store(&new_id("vs_"));
    s.vector_stores.put_vector_store(&t, &vs).await.unwrap();
    let batch = new_id("vsfb_");
    // Ids in upload order a < b < c < d; attached d, b (same second), c, a.
    let [a, b, c, d] = [(); 4].map(|()| new_id("file-"));
    let attach = |id: &str, at: i64, status: &str, in_batch: bool| {
        let mut f = vs_file(&vs.id, id, status, in_batch.then_some(batch.as_str()));
        f.created_at = at;
        f
    };
    for f in [
        attach(&d, 100, "completed", true),
        attach(&b, 100, "in_progress", false),
        attach(&c, 200, "completed", true),
        attach(&a, 300, "completed", true),
    ] {
        s.vector_stores.put_vs_file(&t, &f).await.unwrap();
    }
    let list = async |filter: &VsFileFilter, q: VsFileQuery| {
        let page = s
            .vector_stores
            .list_vs_files(&t, &vs.id, filter, &q)
            .await
            .unwrap();
        (ids(&page, |f| f.id.as_str()), page.has_more)
    };
    let all = VsFileFilter::default();
    // The tie at 100 is broken by id: b < d.
    let asc = vec![b.clone(), d.clone(), c.clone(), a.clone()];
    let desc: Vec<String> = asc.iter().rev().cloned().collect();
    assert_eq!(
        list(&all, VsFileQuery::first(10, Order::Asc)).await,
        (asc.clone(), false)
    );
    assert_eq!(
        list(&all, VsFileQuery::first(10, Order::Desc)).await,
        (desc.clone(), false)
    );
    assert_eq!(
        list(&all, VsFileQuery::first(2, Order::Desc)).await,
        (vec![a.clone(), c.clone()], true)
    );
    let after = |at, id: &str, order, limit| VsFileQuery {
        after: Some(pos(at, id)),
        ..VsFileQuery::first(limit, order)
    };
    let before = |at, id: &str, order, limit| VsFileQuery {
        before: Some(pos(at, id)),
        ..VsFileQuery::first(limit, order)
    };
    assert_eq!(
        list(&all, after(200, &c, Order::Desc, 10)).await,
        (vec![d.clone(), b.clone()], false)
    );
    assert_eq!(
        list(&all, after(100, &b, Order::Asc, 2)).await,
        (vec![d.clone(), c.clone()], true)
    );
    // `before` pages back towards the start, the page still in the requested order.
    assert_eq!(
        list(&all, before(100, &b, Order::Desc, 2)).await,
        (vec![c.clone(), d.clone()], true)
    );
    assert_eq!(
        list(&all, before(300, &a, Order::Asc, 10)).await,
        (vec![b.clone(), d.clone(), c.clone()], false)
    );
    // Both cursors: the files between them.
    let between = VsFileQuery {
        after: Some(pos(300, &a)),
        before: Some(pos(100, &b)),
        ..VsFileQuery::first(10, Order::Desc)
    };
    assert_eq!(
        list(&all, between).await,
        (vec![c.clone(), d.clone()], false)
    );

    // A batch's files and a status keep the same order.
    let in_batch = VsFileFilter {
        status: None,
        batch_id: Some(batch.clone()),
    };
    assert_eq!(
        list(&in_batch, VsFileQuery::first(10, Order::Asc)).await,
        (vec![d.clone(), c.clone(), a.clone()], false)
    );
    assert_eq!(
        list(&in_batch, after(200, &c, Order::Desc, 10)).await,
        (vec![d.clone()], false)
    );
    let completed = VsFileFilter {
        status: Some("completed".into()),
        batch_id: None,
    };
    assert_eq!(
        list(&completed, VsFileQuery::first(2, Order::Desc)).await,
        (vec![a.clone(), c.clone()], true)
    );

    // Re-attaching d later moves it to the end.
    s.vector_stores
        .put_vs_file(&t, &attach(&d, 400, "in_progress", false))
        .await
        .unwrap();
    assert_eq!(
        list(&all, VsFileQuery::first(10, Order::Asc)).await,
        (vec![b.clone(), c.clone(), a.clone(), d.clone()], false)
    );
    assert_eq!(
        list(&in_batch, VsFileQuery::first(10, Order::Asc)).await,
        (vec![c.clone(), a.clone()], false)
    );
}

/// A store's activity is written alone: a whole-row rewrite with an older copy of the row
/// keeps it, the later of two touches wins, expiry follows it, and a deleted store stays
/// deleted however late a touch comes.
pub async fn vector_store_activity_is_its_own_write(s: &Store) {
    let t = tenant();
    let day = 86_400;
    let mut vs = vector_store(&new_id("vs_"));
    vs.last_active_at = Some(1_000);
    vs.expires_after = Some(ExpiresAfter {
        anchor: "last_active_at".into(),
        days: 7,
    });
    vs.expires_at = Some(1_000 + 7 * day);
    let vss = &s.vector_stores;
    vss.put_vector_store(&t, &vs).await.unwrap();
    let plain = vector_store(&new_id("vs_"));
    vss.put_vector_store(&t, &plain).await.unwrap();

    vss.touch_vector_store(&t, &vs.id, 2_000).await.unwrap();
    let got = vss.get_vector_store(&t, &vs.id).await.unwrap().unwrap();
    assert_eq!(
        (got.last_active_at, got.expires_at),
        (Some(2_000), Some(2_000 + 7 * day))
    );
    // The row read before the touch, written back with a change of its own (as the first
    // ingestion sets the dimension): both survive.
    let mut stale = vs.clone();
    stale.dimensions = 8;
    stale.name = Some("renamed".into());
    vss.put_vector_store(&t, &stale).await.unwrap();
    let got = vss.get_vector_store(&t, &vs.id).await.unwrap().unwrap();
    assert_eq!((got.dimensions, got.name.as_deref()), (8, Some("renamed")));
    assert_eq!(
        (got.last_active_at, got.expires_at),
        (Some(2_000), Some(2_000 + 7 * day))
    );
    // An older touch does not move it back.
    vss.touch_vector_store(&t, &vs.id, 1_500).await.unwrap();
    assert_eq!(
        vss.get_vector_store(&t, &vs.id)
            .await
            .unwrap()
            .unwrap()
            .last_active_at,
        Some(2_000)
    );
    // Without expires_after there is no expiry to move; a touch older than the row's own
    // activity changes nothing.
    vss.touch_vector_store(&t, &plain.id, 1_800_000_000)
        .await
        .unwrap();
    vss.touch_vector_store(&t, &plain.id, 5).await.unwrap();
    let got = vss.get_vector_store(&t, &plain.id).await.unwrap().unwrap();
    assert_eq!(
        (got.last_active_at, got.expires_at),
        (Some(1_800_000_000), None)
    );
    // Lists show the same.
    let listed = vss
        .list_vector_stores(&t, &ListQuery::default())
        .await
        .unwrap();
    let active: Vec<(String, Option<i64>)> = listed
        .items
        .iter()
        .map(|v| (v.id.clone(), v.last_active_at))
        .collect();
    assert_eq!(
        active,
        vec![
            (plain.id.clone(), Some(1_800_000_000)),
            (vs.id.clone(), Some(2_000))
        ]
    );
    // Deleted, then touched late: still gone, and not deleted twice.
    assert!(vss.delete_vector_store(&t, &vs.id).await.unwrap());
    vss.touch_vector_store(&t, &vs.id, 3_000).await.unwrap();
    assert_eq!(vss.get_vector_store(&t, &vs.id).await.unwrap(), None);
    assert!(!vss.delete_vector_store(&t, &vs.id).await.unwrap());
    let listed = vss
        .list_vector_stores(&t, &ListQuery::default())
        .await
        .unwrap();
    assert_eq!(ids(&listed, |v| v.id.as_str()), vec![plain.id.clone()]);
}

pub async fn file_delete_cascades_to_chunks_and_memberships(s: &Store) {
    let t = tenant();
    let dims = 8;
    let f = file(&new_id("file-"), "assistants", 10);
    s.files.put_file(&t, &f).await.unwrap();
    let (vs1, vs2) = (vector_store(&new_id("vs_")), vector_store(&new_id("vs_")));
    for vs in [&vs1, &vs2] {
        s.vector_stores.put_vector_store(&t, vs).await.unwrap();
        s.vector_stores
            .put_vs_file(&t, &vs_file(&vs.id, &f.id, "completed", None))
            .await
            .unwrap();
        let chunks = (0..3)
            .map(|i| {
                chunk(
                    &vs.id,
                    &f.id,
                    i,
                    unit_vector(u64::from(i) + 1, dims),
                    &json!({}),
                )
            })
            .collect();
        s.chunks
            .put_chunks(&t, &vs.id, &f.id, chunks)
            .await
            .unwrap();
    }
    let found = s
        .chunks
        .search(
            &t,
            &[vs1.id.clone(), vs2.id.clone()],
            &unit_vector(1, dims),
            10,
            None,
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 6);

    assert!(s.files.delete_file(&t, &f.id).await.unwrap());
    for vs in [&vs1, &vs2] {
        assert_eq!(
            s.vector_stores
                .get_vs_file(&t, &vs.id, &f.id)
                .await
                .unwrap(),
            None
        );
        assert!(
            s.chunks
                .file_chunks(&t, &vs.id, &f.id)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            s.vector_stores
                .count_vs_files(&t, &vs.id, None)
                .await
                .unwrap()
                .0
                .total,
            0
        );
    }
    let found = s
        .chunks
        .search(
            &t,
            &[vs1.id.clone(), vs2.id.clone()],
            &unit_vector(1, dims),
            10,
            None,
        )
        .await
        .unwrap();
    assert!(found.is_empty());
}

pub async fn chunks_round_trip(s: &Store) {
    let t = tenant();
    let vs = vector_store(&new_id("vs_"));
    s.vector_stores.put_vector_store(&t, &vs).await.unwrap();
    let fid = new_id("file-");
    let chunks: Vec<Chunk> = (0..5)
        .map(|i| {
            chunk(
                &vs.id,
                &fid,
                i,
                unit_vector(u64::from(i) + 10, 16),
                &json!({"a": 1}),
            )
        })
        .collect();
    s.chunks
        .put_chunks(&t, &vs.id, &fid, chunks.clone())
        .await
        .unwrap();
    let back = s.chunks.file_chunks(&t, &vs.id, &fid).await.unwrap();
    assert_eq!(back.len(), 5);
    for (a, b) in back.iter().zip(&chunks) {
        assert_eq!(
            (a.index, &a.text, &a.attributes),
            (b.index, &b.text, &b.attributes)
        );
    }
    // Replacing a file's chunks drops the old ones.
    s.chunks
        .put_chunks(&t, &vs.id, &fid, chunks[..2].to_vec())
        .await
        .unwrap();
    assert_eq!(
        s.chunks.file_chunks(&t, &vs.id, &fid).await.unwrap().len(),
        2
    );
    let attrs = json!({"a": 2, "tag": "x"}).as_object().unwrap().clone();
    s.chunks
        .set_chunk_attributes(&t, &vs.id, &fid, &attrs)
        .await
        .unwrap();
    assert!(
        s.chunks
            .file_chunks(&t, &vs.id, &fid)
            .await
            .unwrap()
            .iter()
            .all(|c| c.attributes == attrs)
    );
    s.chunks.delete_chunks(&t, &vs.id, &fid).await.unwrap();
    assert!(
        s.chunks
            .file_chunks(&t, &vs.id, &fid)
            .await
            .unwrap()
            .is_empty()
    );
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// Search agrees with brute-force cosine top-k; `min_recall` is 1.0 for exact backends.
pub async fn search_matches_brute_force(s: &Store, min_recall: f64) {
    let t = tenant();
    let dims = 64;
    let (vs_a, vs_b, vs_other) = (
        vector_store(&new_id("vs_")),
        vector_store(&new_id("vs_")),
        vector_store(&new_id("vs_")),
    );
    let mut all: Vec<Chunk> = Vec::new();
    for (n, vs) in [&vs_a, &vs_b, &vs_other].into_iter().enumerate() {
        s.vector_stores.put_vector_store(&t, vs).await.unwrap();
        for f in 0..6u64 {
            let fid = new_id("file-");
            let attrs = json!({"parity": if f % 2 == 0 { "even" } else { "odd" }, "rank": f});
            let chunks: Vec<Chunk> = (0..25u32)
                .map(|i| {
                    chunk(
                        &vs.id,
                        &fid,
                        i,
                        unit_vector((n as u64) * 10_000 + f * 100 + u64::from(i) + 1, dims),
                        &attrs,
                    )
                })
                .collect();
            s.chunks
                .put_chunks(&t, &vs.id, &fid, chunks.clone())
                .await
                .unwrap();
            all.extend(chunks);
        }
    }
    let stores = vec![vs_a.id.clone(), vs_b.id.clone()];
    let filter: AttributeFilter = serde_json::from_value(json!({"type": "and", "filters": [
        {"type": "eq", "key": "parity", "value": "even"},
        {"type": "lte", "key": "rank", "value": 4}
    ]}))
    .unwrap();
    let mut total_hits = 0usize;
    let mut total_expected = 0usize;
    for query_seed in 0..10u64 {
        let query = unit_vector(777_000 + query_seed, dims);
        for f in [None, Some(&filter)] {
            let mut expected: Vec<(&Chunk, f32)> = all
                .iter()
                .filter(|c| stores.contains(&c.vector_store_id))
                .filter(|c| f.is_none_or(|f| f.matches(&c.attributes)))
                .map(|c| (c, cosine(&c.embedding, &query)))
                .collect();
            expected.sort_by(|a, b| b.1.total_cmp(&a.1));
            expected.truncate(10);
            let got = s.chunks.search(&t, &stores, &query, 10, f).await.unwrap();
            assert!(got.len() <= 10);
            for w in got.windows(2) {
                assert!(w[0].score >= w[1].score, "results are best first");
            }
            for g in &got {
                assert!(
                    stores.contains(&g.vector_store_id),
                    "a chunk of another store leaked"
                );
                if let Some(f) = f {
                    assert!(f.matches(&g.attributes), "a filtered-out chunk leaked");
                }
            }
            let expected_keys: HashSet<(String, u32)> = expected
                .iter()
                .map(|(c, _)| (c.file_id.clone(), c.index))
                .collect();
            let hits = got
                .iter()
                .filter(|g| expected_keys.contains(&(g.file_id.clone(), g.index)))
                .count();
            if min_recall >= 1.0 {
                assert_eq!(got.len(), expected.len());
                for (g, (e, score)) in got.iter().zip(&expected) {
                    assert_eq!((g.file_id.as_str(), g.index), (e.file_id.as_str(), e.index));
                    assert!(
                        (g.score - score).abs() < 1e-3,
                        "score {} vs {}",
                        g.score,
                        score
                    );
                }
            }
            total_hits += hits;
            total_expected += expected.len();
        }
    }
    let recall = total_hits as f64 / total_expected as f64;
    assert!(
        recall >= min_recall,
        "recall@10 = {recall:.3} < {min_recall}"
    );
}

/// Everything written survives closing and reopening the store.
pub async fn survives_reopen(open: impl AsyncFn() -> Store) {
    let t = tenant();
    let a = assistant(&new_id("asst_"));
    let th = thread(&new_id("thread_"));
    let m = message(&th.id, &new_id("msg_"), None);
    let f = file(&new_id("file-"), "assistants", 5);
    let r = run(&th.id, &new_id("run_"), RunStatus::Queued);
    let vs = vector_store(&new_id("vs_"));
    {
        let s = open().await;
        s.assistants.put_assistant(&t, &a).await.unwrap();
        s.threads.put_thread(&t, &th).await.unwrap();
        s.messages.put_message(&t, &m).await.unwrap();
        s.files
            .put_file_part(&t, &f.id, 0, Bytes::from_static(b"hello"))
            .await
            .unwrap();
        s.files.put_file(&t, &f).await.unwrap();
        s.runs.create_run(&t, &r).await.unwrap();
        s.vector_stores.put_vector_store(&t, &vs).await.unwrap();
        s.chunks
            .put_chunks(
                &t,
                &vs.id,
                &f.id,
                vec![chunk(&vs.id, &f.id, 0, unit_vector(5, 8), &json!({}))],
            )
            .await
            .unwrap();
    }
    let s = open().await;
    assert_eq!(
        s.assistants.get_assistant(&t, &a.id).await.unwrap(),
        Some(a)
    );
    assert_eq!(
        s.threads.get_thread(&t, &th.id).await.unwrap(),
        Some(th.clone())
    );
    assert_eq!(
        s.messages.get_message(&t, &th.id, &m.id).await.unwrap(),
        Some(m)
    );
    assert_eq!(s.files.get_file(&t, &f.id).await.unwrap(), Some(f.clone()));
    assert_eq!(
        s.files.get_file_part(&t, &f.id, 0).await.unwrap(),
        Some(Bytes::from_static(b"hello"))
    );
    assert_eq!(
        s.runs.get_run(&t, &th.id, &r.run.id).await.unwrap(),
        Some(r.clone())
    );
    assert_eq!(s.runs.active_run(&t, &th.id).await.unwrap(), Some(r.run.id));
    assert_eq!(
        s.vector_stores.get_vector_store(&t, &vs.id).await.unwrap(),
        Some(vs.clone())
    );
    let hits = s
        .chunks
        .search(
            &t,
            std::slice::from_ref(&vs.id),
            &unit_vector(5, 8),
            1,
            None,
        )
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert!((hits[0].score - 1.0).abs() < 1e-4);
}

// ---------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------

/// The Cassandra node the README's test command starts; the tests fail without it.
pub fn cassandra_url(keyspace: &str) -> String {
    let hosts = std::env::var("ASSISTANTS_PROXY_TEST_CASSANDRA").unwrap_or_else(|_| {
        panic!(
            "ASSISTANTS_PROXY_TEST_CASSANDRA is not set: start a node with scripts/cassandra.sh start \
             and set it to 127.0.0.1:9042 (scripts/test.sh does both)"
        )
    });
    format!("cassandra://{hosts}/{keyspace}")
}

async fn open_url(url: &str) -> Store {
    Store::open(&StoreUrl::parse(url).unwrap()).await.unwrap()
}

macro_rules! contract {
    ($(#[$meta:meta])* $backend:ident, $open:expr, $recall:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            $(#[$meta])*
            async fn assistants() {
                let (s, _g) = $open.await;
                assistants_crud(&s).await;
            }
            #[tokio::test]
            $(#[$meta])*
            async fn threads_and_messages() {
                let (s, _g) = $open.await;
                threads_and_messages_crud(&s).await;
            }
            #[tokio::test]
            $(#[$meta])*
            async fn pagination() {
                let (s, _g) = $open.await;
                message_pagination(&s).await;
            }
            #[tokio::test]
            $(#[$meta])*
            async fn isolation() {
                let (s, _g) = $open.await;
                tenant_isolation(&s).await;
            }
            #[tokio::test]
            $(#[$meta])*
            async fn runs() {
                let (s, _g) = $open.await;
                runs_and_steps(&s).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$meta])*
            async fn concurrent_claims() {
                let (s, _g) = $open.await;
                concurrent_run_claims(Arc::new(s)).await;
            }
            #[tokio::test]
            $(#[$meta])*
            async fn thread_cascade() {
                let (s, _g) = $open.await;
                thread_delete_cascades(&s).await;
            }
            #[tokio::test]
            $(#[$meta])*
            async fn files() {
                let (s, _g) = $open.await;
                files_and_parts(&s).await;
            }
            #[tokio::test]
            $(#[$meta])*
            async fn vector_stores() {
                let (s, _g) = $open.await;
                vector_stores_files_and_batches(&s).await;
            }
            #[tokio::test]
            $(#[$meta])*
            async fn vs_activity() {
                let (s, _g) = $open.await;
                vector_store_activity_is_its_own_write(&s).await;
            }
            #[tokio::test]
            $(#[$meta])*
            async fn vs_files_order() {
                let (s, _g) = $open.await;
                vs_files_list_by_attach_time(&s).await;
            }
            #[tokio::test]
            $(#[$meta])*
            async fn file_cascade() {
                let (s, _g) = $open.await;
                file_delete_cascades_to_chunks_and_memberships(&s).await;
            }
            #[tokio::test]
            $(#[$meta])*
            async fn chunks() {
                let (s, _g) = $open.await;
                chunks_round_trip(&s).await;
            }
            #[tokio::test]
            $(#[$meta])*
            async fn search() {
                let (s, _g) = $open.await;
                search_matches_brute_force(&s, $recall).await;
            }
        }
    };
}

/// A fresh SQLite file per test; the guard keeps its directory alive.
async fn open_sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("contract.db").display());
    (open_url(&url).await, dir)
}

/// One shared keyspace; tests stay apart through their random tenants.
async fn open_cassandra() -> (Store, ()) {
    (open_url(&cassandra_url("ap_contract")).await, ())
}

contract!(sqlite, open_sqlite(), 1.0);
contract!(
    #[ignore = "needs Cassandra: ASSISTANTS_PROXY_TEST_CASSANDRA=HOST:PORT cargo test -- --include-ignored (scripts/test.sh starts a node and does that)"]
    cassandra,
    open_cassandra(),
    0.9
);

#[tokio::test]
async fn sqlite_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("reopen.db").display());
    survives_reopen(async || open_url(&url).await).await;
}

#[tokio::test]
#[ignore = "needs Cassandra: ASSISTANTS_PROXY_TEST_CASSANDRA=HOST:PORT cargo test -- --include-ignored (scripts/test.sh starts a node and does that)"]
async fn cassandra_survives_reopen() {
    let url = cassandra_url("ap_contract");
    survives_reopen(async || open_url(&url).await).await;
}
