//! Runs and run steps.
//!
//! Run rows are written only by lightweight transactions, never by plain writes (mixing the
//! two on the same cells breaks Paxos' timestamp ordering): created with `IF NOT EXISTS`,
//! changed with `IF version = ?`, deleted with `IF EXISTS`. The thread's lock is the static
//! column `active_run` of the same partition, so creating a run and taking the lock is one
//! conditional batch (`IF NOT EXISTS` on the run row, `IF active_run = null` — or `= the
//! stale holder` — on the static row): there is never a lock naming a run that does not
//! exist yet, which is what makes taking over a stale lock safe. A terminal transition
//! releases the lock in the same way (`IF active_run = this run`).
//!
//! Every conditional write carries a fresh `write_id`; when Paxos times out or loses to
//! contention the outcome is unknown, and a SERIAL read of `write_id` tells whether it was
//! ours.
//!
//! `active_runs` indexes active runs in a few fixed shards so `list_active_runs` reads
//! small partitions instead of scanning all runs. The entry is written before the run is
//! created and removed after it ends (or when its creation lost), so the index is a
//! superset of the truth; readers check each run and drop entries of ended runs.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use scylla::statement::Consistency;
use scylla::value::CqlValue;

use super::docs::DocTable;
use super::{Applied, CassandraStore, Conn, fnv32, to_json};
use crate::model::{RunRecord, RunStatus, RunStep};
use crate::store::{CreateRun, ListQuery, Page, RunStore, StoreError, StoreResult, Tenant};

/// Reads of run documents (writes go through the LWT statements below).
const RUNS: DocTable = DocTable {
    name: "runs",
    keys: &["tenant", "thread_id", "id"],
};

const STEPS: DocTable = DocTable {
    name: "run_steps",
    keys: &["tenant", "thread_id", "run_id", "id"],
};

/// Shards of `active_runs`: enough to keep each partition small, few enough that listing
/// them all is a handful of reads.
const ACTIVE_SHARDS: u32 = 16;
/// Attempts at one conditional write under contention or timeouts before giving up.
const CAS_ATTEMPTS: u32 = 16;

fn shard(run_id: &str) -> i32 {
    // < 16, so the cast is lossless.
    (fnv32(run_id) % ACTIVE_SHARDS) as i32
}

fn text(s: &str) -> CqlValue {
    CqlValue::Text(s.to_owned())
}

fn is_active(status: Option<&str>) -> bool {
    status
        .and_then(|s| {
            serde_json::from_value::<RunStatus>(serde_json::Value::String(s.to_owned())).ok()
        })
        .is_some_and(RunStatus::is_active)
}

/// Jittered exponential backoff for contended Paxos rounds.
async fn backoff(attempt: u32) {
    let base = 10u64 << attempt.min(6);
    let jitter = u64::from(getrandom::u32().unwrap_or(0)) % base.max(1);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

/// How a read of the lock or a run row is made.
#[derive(Clone, Copy)]
enum Read {
    /// At LOCAL_SERIAL: linearizable with the conditional writes (it completes any Paxos round
    /// in flight), at the price of a Paxos round of its own. For the writers' own checks.
    Serial,
    /// At the store's consistency: every acknowledged conditional write is seen (see
    /// `active_run`), a round still in flight may not be.
    Plain,
}

/// What a read sees of a run row.
#[derive(scylla::DeserializeRow)]
struct RunCells {
    version: Option<i64>,
    status: Option<String>,
    write_id: Option<String>,
    active_run: Option<String>,
}

impl Conn {
    fn runs_table(&self) -> String {
        self.table("runs")
    }

    /// Rows read at LOCAL_SERIAL (linearizable with the LWTs), retried through the
    /// timeouts Paxos contention causes.
    async fn serial_rows<R>(&self, cql: &str, values: Vec<CqlValue>) -> StoreResult<Vec<R>>
    where
        R: for<'f> scylla::deserialize::row::DeserializeRow<'f, 'f>,
    {
        let mut p = self.prepare(cql).await?;
        p.set_consistency(Consistency::LocalSerial);
        let mut attempt = 0;
        loop {
            match self.exec_prepared(&p, &values).await {
                Ok(result) => return super::typed_rows(result),
                Err(StoreError::Unavailable(_)) if attempt < CAS_ATTEMPTS / 2 => {
                    backoff(attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn read_rows<R>(&self, how: Read, cql: &str, values: Vec<CqlValue>) -> StoreResult<Vec<R>>
    where
        R: for<'f> scylla::deserialize::row::DeserializeRow<'f, 'f>,
    {
        match how {
            Read::Serial => self.serial_rows(cql, values).await,
            Read::Plain => self.rows(cql, values).await,
        }
    }

    async fn run_cells(
        &self,
        how: Read,
        t: &Tenant,
        thread_id: &str,
        run_id: &str,
    ) -> StoreResult<Option<RunCells>> {
        let cql = format!(
            "SELECT version, status, write_id, active_run FROM {} \
             WHERE tenant = ? AND thread_id = ? AND id = ?",
            self.runs_table()
        );
        let values = vec![text(t.as_str()), text(thread_id), text(run_id)];
        let rows: Vec<RunCells> = self.read_rows(how, &cql, values).await?;
        Ok(rows.into_iter().next())
    }

    /// The thread's lock holder.
    async fn lock_holder(
        &self,
        how: Read,
        t: &Tenant,
        thread_id: &str,
    ) -> StoreResult<Option<String>> {
        let cql = format!(
            "SELECT active_run FROM {} WHERE tenant = ? AND thread_id = ? LIMIT 1",
            self.runs_table()
        );
        let values = vec![text(t.as_str()), text(thread_id)];
        let rows: Vec<(Option<String>,)> = self.read_rows(how, &cql, values).await?;
        Ok(rows.into_iter().next().and_then(|(h,)| h))
    }

    /// A conditional write retried while its outcome is unknown; `No` is final.
    pub(super) async fn lwt_settled(
        &self,
        cql: &str,
        values: Vec<CqlValue>,
    ) -> StoreResult<Applied> {
        for attempt in 0..CAS_ATTEMPTS {
            match self.lwt(cql, &values).await? {
                Applied::Unknown => backoff(attempt).await,
                settled => return Ok(settled),
            }
        }
        Err(StoreError::Unavailable(
            "Cassandra: a conditional write stayed unresolved (Paxos contention)".into(),
        ))
    }

    pub(super) async fn index_active(
        &self,
        t: &Tenant,
        thread_id: &str,
        run_id: &str,
    ) -> StoreResult<()> {
        let cql = format!(
            "INSERT INTO {} (shard, tenant, thread_id, run_id) VALUES (?, ?, ?, ?)",
            self.table("active_runs")
        );
        self.exec(&cql, (shard(run_id), t.as_str(), thread_id, run_id))
            .await?;
        Ok(())
    }

    async fn unindex_active(&self, t: &str, thread_id: &str, run_id: &str) -> StoreResult<()> {
        let cql = format!(
            "DELETE FROM {} WHERE shard = ? AND tenant = ? AND thread_id = ? AND run_id = ?",
            self.table("active_runs")
        );
        self.exec(&cql, (shard(run_id), t, thread_id, run_id))
            .await?;
        Ok(())
    }

    /// The run rows, their steps, index entries and the lock of a thread being deleted.
    pub(super) async fn delete_thread_runs(&self, t: &Tenant, thread_id: &str) -> StoreResult<()> {
        let delete = format!(
            "DELETE FROM {} WHERE tenant = ? AND thread_id = ? AND id = ? IF EXISTS",
            self.runs_table()
        );
        for run_id in self.doc_ids(&RUNS, &[t.as_str(), thread_id]).await? {
            self.doc_delete_partition(&STEPS, &[t.as_str(), thread_id, &run_id])
                .await?;
            self.lwt_settled(
                &delete,
                vec![text(t.as_str()), text(thread_id), text(&run_id)],
            )
            .await?;
            self.unindex_active(t.as_str(), thread_id, &run_id).await?;
        }
        if let Some(holder) = self.lock_holder(Read::Serial, t, thread_id).await? {
            let release = format!(
                "UPDATE {} SET active_run = null WHERE tenant = ? AND thread_id = ? IF active_run = ?",
                self.runs_table()
            );
            self.lwt_settled(
                &release,
                vec![text(t.as_str()), text(thread_id), text(&holder)],
            )
            .await?;
        }
        Ok(())
    }

    /// One attempt at creating `run` and taking its thread's lock from `holder` (None: free).
    async fn try_create(
        &self,
        t: &Tenant,
        run: &RunRecord,
        doc: &str,
        write_id: &str,
        holder: Option<&str>,
    ) -> StoreResult<Applied> {
        let r = &run.run;
        let insert = format!(
            "INSERT INTO {} (tenant, thread_id, id, doc, version, status, write_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
            self.runs_table()
        );
        let lock = format!(
            "UPDATE {} SET active_run = ? WHERE tenant = ? AND thread_id = ? IF active_run = {}",
            self.runs_table(),
            if holder.is_some() { "?" } else { "null" }
        );
        let mut lock_values = vec![text(&r.id), text(t.as_str()), text(&r.thread_id)];
        if let Some(h) = holder {
            lock_values.push(text(h));
        }
        let insert_values = vec![
            text(t.as_str()),
            text(&r.thread_id),
            text(&r.id),
            text(doc),
            CqlValue::BigInt(i64::try_from(run.version).unwrap_or(i64::MAX)),
            text(r.status.as_str()),
            text(write_id),
        ];
        self.lwt_batch(&[&insert, &lock], vec![insert_values, lock_values])
            .await
    }

    /// Removes the run `try_create` wrote with `write_id` and releases its lock, if that
    /// write applied; settles an unknown outcome first.
    async fn undo_create(&self, t: &Tenant, run: &RunRecord, write_id: &str) -> StoreResult<()> {
        let r = &run.run;
        let delete = format!(
            "DELETE FROM {} WHERE tenant = ? AND thread_id = ? AND id = ? IF write_id = ?",
            self.runs_table()
        );
        let unlock = format!(
            "UPDATE {} SET active_run = null WHERE tenant = ? AND thread_id = ? IF active_run = ?",
            self.runs_table()
        );
        let key = || vec![text(t.as_str()), text(&r.thread_id)];
        let mut delete_values = key();
        delete_values.extend([text(&r.id), text(write_id)]);
        let mut unlock_values = key();
        unlock_values.push(text(&r.id));
        for attempt in 0..CAS_ATTEMPTS {
            let values = vec![delete_values.clone(), unlock_values.clone()];
            match self.lwt_batch(&[&delete, &unlock], values).await? {
                Applied::Unknown => backoff(attempt).await,
                // Not applied: the create never took effect, so there is nothing to undo.
                Applied::Yes | Applied::No => return Ok(()),
            }
        }
        Err(StoreError::Unavailable(
            "Cassandra: undoing a run create stayed unresolved (Paxos contention)".into(),
        ))
    }

    /// One attempt at the compare-and-set of `update_run`, releasing the lock in the same
    /// transaction when `release` is set.
    async fn try_update(
        &self,
        t: &Tenant,
        run: &RunRecord,
        doc: &str,
        write_id: &str,
        expected: i64,
        release: bool,
    ) -> StoreResult<Applied> {
        let r = &run.run;
        let update = format!(
            "UPDATE {} SET doc = ?, version = ?, status = ?, write_id = ? \
             WHERE tenant = ? AND thread_id = ? AND id = ? IF version = ?",
            self.runs_table()
        );
        let values = vec![
            text(doc),
            CqlValue::BigInt(i64::try_from(run.version).unwrap_or(i64::MAX)),
            text(r.status.as_str()),
            text(write_id),
            text(t.as_str()),
            text(&r.thread_id),
            text(&r.id),
            CqlValue::BigInt(expected),
        ];
        if !release {
            return self.lwt(&update, values).await;
        }
        let unlock = format!(
            "UPDATE {} SET active_run = null WHERE tenant = ? AND thread_id = ? IF active_run = ?",
            self.runs_table()
        );
        let unlock_values = vec![text(t.as_str()), text(&r.thread_id), text(&r.id)];
        self.lwt_batch(&[&update, &unlock], vec![values, unlock_values])
            .await
    }
}

#[async_trait]
impl RunStore for CassandraStore {
    async fn create_run(&self, t: &Tenant, run: &RunRecord) -> StoreResult<CreateRun> {
        let conn = self.conn().await?;
        let (thread_id, run_id) = (run.run.thread_id.as_str(), run.run.id.as_str());
        let doc = to_json(run)?;
        let write_id = crate::ids::new_body();
        // The index entry (what recovery after a crash finds active runs by) and the first
        // attempt go out together: neither needs the other, and each is a round trip before
        // the run can be announced. The first attempt assumes the lock is free, as it is
        // unless a run is active (ended runs release it in their last write), so the usual
        // create is one Paxos round and not two; a holder is read only once that has lost.
        let (indexed, first) = tokio::join!(
            conn.index_active(t, thread_id, run_id),
            conn.try_create(t, run, &doc, &write_id, None)
        );
        if let Err(e) = indexed {
            // A run holding the lock without an index entry would be invisible to recovery:
            // take it back before reporting the failure.
            if !matches!(first, Ok(Applied::No)) {
                conn.undo_create(t, run, &write_id).await?;
            }
            return Err(e);
        }
        let mut outcome = first?;
        for attempt in 0..CAS_ATTEMPTS {
            if attempt > 0 {
                let holder = conn.lock_holder(Read::Serial, t, thread_id).await?;
                if let Some(h) = holder.as_deref().filter(|h| *h != run_id) {
                    let held = conn.run_cells(Read::Serial, t, thread_id, h).await?;
                    if held.is_some_and(|c| is_active(c.status.as_deref())) {
                        conn.unindex_active(t.as_str(), thread_id, run_id).await?;
                        return Ok(CreateRun::ThreadBusy(h.to_owned()));
                    }
                    // The holder ended (or was deleted) without releasing: take the lock
                    // over, conditioned on that stale value.
                }
                outcome = if holder.as_deref() == Some(run_id) {
                    Applied::No
                } else {
                    conn.try_create(t, run, &doc, &write_id, holder.as_deref())
                        .await?
                };
            }
            if outcome == Applied::Yes {
                return Ok(CreateRun::Created);
            }
            // Lost, or unknown: if our row is there with our write id, it was us.
            if let Some(cells) = conn.run_cells(Read::Serial, t, thread_id, run_id).await? {
                if cells.write_id.as_deref() == Some(write_id.as_str()) {
                    return Ok(CreateRun::Created);
                }
                return Err(StoreError::Other(format!("run {run_id} already exists")));
            }
            if outcome == Applied::Unknown {
                super::runs::backoff(attempt).await;
            }
        }
        Err(StoreError::Unavailable(
            "Cassandra: creating the run kept losing to contention".into(),
        ))
    }

    async fn get_run(
        &self,
        t: &Tenant,
        thread_id: &str,
        run_id: &str,
    ) -> StoreResult<Option<RunRecord>> {
        self.conn()
            .await?
            .doc_get(&RUNS, &[t.as_str(), thread_id], run_id)
            .await
    }

    async fn list_runs(
        &self,
        t: &Tenant,
        thread_id: &str,
        q: &ListQuery,
    ) -> StoreResult<Page<RunRecord>> {
        self.conn()
            .await?
            .doc_list(&RUNS, &[t.as_str(), thread_id], q, None)
            .await
    }

    async fn update_run(
        &self,
        t: &Tenant,
        run: &RunRecord,
        expected_version: u64,
    ) -> StoreResult<bool> {
        crate::store::check_successor(run, expected_version)?;
        let conn = self.conn().await?;
        let (thread_id, run_id) = (run.run.thread_id.as_str(), run.run.id.as_str());
        let expected = i64::try_from(expected_version).unwrap_or(i64::MAX);
        let doc = to_json(run)?;
        let write_id = crate::ids::new_body();
        let terminal = !run.run.status.is_active();
        let mut release = terminal;
        let mut written = false;
        for attempt in 0..CAS_ATTEMPTS {
            let outcome = conn
                .try_update(t, run, &doc, &write_id, expected, release)
                .await?;
            if outcome == Applied::Yes {
                written = true;
                break;
            }
            let Some(cells) = conn.run_cells(Read::Serial, t, thread_id, run_id).await? else {
                return Ok(false);
            };
            if cells.write_id.as_deref() == Some(write_id.as_str()) {
                written = true;
                break;
            }
            if cells.version != Some(expected) {
                return Ok(false);
            }
            // The version still matches: either the lock is not ours to release (it was
            // taken over, or this run never held it), or Paxos was contended.
            if outcome == Applied::No && release && cells.active_run.as_deref() != Some(run_id) {
                release = false;
                continue;
            }
            backoff(attempt).await;
        }
        if !written {
            return Err(StoreError::Unavailable(
                "Cassandra: updating the run kept losing to contention".into(),
            ));
        }
        if terminal {
            conn.unindex_active(t.as_str(), thread_id, run_id).await?;
        }
        Ok(true)
    }

    /// Ordinary reads, not LOCAL_SERIAL ones: this is asked on every message create, where a
    /// SERIAL read cost a Paxos round (a prepare that writes its promise, on every replica)
    /// and bought nothing. The lock and the run's status are written only by Paxos rounds,
    /// whose commit is acknowledged at the store's consistency (LOCAL_QUORUM by default), so
    /// a read at that consistency sees every lock change acknowledged before it began. What
    /// it can miss is a run create still in flight, which a SERIAL read would have completed
    /// and seen; but the caller's write after this check is not conditional either way, so a
    /// run created between the check and that write slips in with either read. The writers
    /// (`create_run`, `update_run`, thread delete) keep their SERIAL reads: they decide
    /// conditional writes on what they read.
    async fn active_run(&self, t: &Tenant, thread_id: &str) -> StoreResult<Option<String>> {
        let conn = self.conn().await?;
        let Some(holder) = conn.lock_holder(Read::Plain, t, thread_id).await? else {
            return Ok(None);
        };
        // A lock left by a run that ended without releasing it does not count.
        let cells = conn.run_cells(Read::Plain, t, thread_id, &holder).await?;
        Ok(cells
            .is_some_and(|c| is_active(c.status.as_deref()))
            .then_some(holder))
    }

    async fn list_active_runs(&self) -> StoreResult<Vec<(Tenant, RunRecord)>> {
        let conn = self.conn().await?;
        let cql = format!(
            "SELECT tenant, thread_id, run_id FROM {} WHERE shard = ?",
            conn.table("active_runs")
        );
        let conn = &conn;
        let shards = join_all((0..ACTIVE_SHARDS as i32).map(|s| {
            let cql = cql.as_str();
            async move { conn.rows::<(String, String, String)>(cql, (s,)).await }
        }))
        .await;
        let mut out = Vec::new();
        for entries in shards {
            for (tenant, thread_id, run_id) in entries? {
                let record: Option<RunRecord> =
                    conn.doc_get(&RUNS, &[&tenant, &thread_id], &run_id).await?;
                match record {
                    Some(r) if r.run.status.is_active() => out.push((Tenant::new(tenant), r)),
                    // Ended: a leftover entry (the run's end was interrupted); drop it.
                    Some(_) => conn.unindex_active(&tenant, &thread_id, &run_id).await?,
                    // Not there: a create in flight, or one that lost; leave it.
                    None => {}
                }
            }
        }
        Ok(out)
    }

    async fn put_step(&self, t: &Tenant, step: &RunStep) -> StoreResult<()> {
        let key = [t.as_str(), step.thread_id.as_str(), step.run_id.as_str()];
        self.conn()
            .await?
            .doc_put(&STEPS, &key, &step.id, step)
            .await
    }

    async fn get_step(
        &self,
        t: &Tenant,
        thread_id: &str,
        run_id: &str,
        step_id: &str,
    ) -> StoreResult<Option<RunStep>> {
        let key = [t.as_str(), thread_id, run_id];
        self.conn().await?.doc_get(&STEPS, &key, step_id).await
    }

    async fn list_steps(
        &self,
        t: &Tenant,
        thread_id: &str,
        run_id: &str,
        q: &ListQuery,
    ) -> StoreResult<Page<RunStep>> {
        let key = [t.as_str(), thread_id, run_id];
        self.conn().await?.doc_list(&STEPS, &key, q, None).await
    }
}
