//! `RunStore`: runs keyed by (tenant, thread_id, id) and steps keyed by
//! (tenant, thread_id, run_id, id).
//!
//! The one-active-run-per-thread lock is the run row's `active` flag, set from the status on
//! every write, with a partial unique index on `(tenant, thread_id) WHERE active = 1`. So a
//! run that became terminal releases its thread in the very statement that records it, a
//! lock cannot outlive its run (nor its thread, deleted with it), and `list_active_runs` is a
//! scan of that index. Writes run in the writer's `BEGIN IMMEDIATE` transaction, so the
//! check-then-insert of `create_run` cannot interleave with another writer, in this process
//! or another.

use async_trait::async_trait;
use rusqlite::OptionalExtension;
use rusqlite::types::Value as SqlValue;

use super::doc::{self, Table, key};
use super::{DbError, Durability, SqliteStore};
use crate::model::{RunRecord, RunStep};
use crate::store::{CreateRun, ListQuery, Page, RunStore, StoreError, StoreResult, Tenant};

pub(super) static RUNS: Table = Table::new(
    "runs",
    &["thread_id", "id"],
    &["status", "active", "version"],
);
static STEPS: Table = Table::new("run_steps", &["thread_id", "run_id", "id"], &[]);

/// The indexed columns of a run row, derived from the record.
pub(super) fn run_columns(r: &RunRecord) -> StoreResult<Vec<SqlValue>> {
    let version = i64::try_from(r.version)
        .map_err(|_| StoreError::Other(format!("run version {} out of range", r.version)))?;
    Ok(vec![
        SqlValue::Text(r.run.status.as_str().to_owned()),
        SqlValue::Integer(i64::from(r.run.status.is_active())),
        SqlValue::Integer(version),
    ])
}

pub(super) fn encode(r: &RunRecord) -> StoreResult<String> {
    serde_json::to_string(r).map_err(|e| StoreError::Other(format!("cannot encode run: {e}")))
}

const ACTIVE_RUN: &str = "SELECT id FROM runs WHERE tenant = ?1 AND thread_id = ?2 AND active = 1";

#[async_trait]
impl RunStore for SqliteStore {
    async fn create_run(&self, t: &Tenant, run: &RunRecord) -> StoreResult<CreateRun> {
        let key = key(t, &[&run.run.thread_id, &run.run.id]);
        let extras = run_columns(run)?;
        let body = encode(run)?;
        self.db
            .write(move |tx| {
                let busy: Option<String> = tx
                    .conn
                    .prepare_cached(ACTIVE_RUN)?
                    .query_row([&key[0], &key[1]], |r| r.get(0))
                    .optional()?;
                if let Some(active) = busy {
                    return Ok(CreateRun::ThreadBusy(active));
                }
                doc::put(tx.conn, &RUNS, &key, &extras, &body)?;
                Ok(CreateRun::Created)
            })
            .await
    }

    async fn get_run(
        &self,
        t: &Tenant,
        thread_id: &str,
        run_id: &str,
    ) -> StoreResult<Option<RunRecord>> {
        self.get_doc(&RUNS, key(t, &[thread_id, run_id])).await
    }

    async fn list_runs(
        &self,
        t: &Tenant,
        thread_id: &str,
        q: &ListQuery,
    ) -> StoreResult<Page<RunRecord>> {
        self.list_doc(&RUNS, key(t, &[thread_id]), vec![], q).await
    }

    async fn update_run(
        &self,
        t: &Tenant,
        run: &RunRecord,
        expected_version: u64,
    ) -> StoreResult<bool> {
        self.write_run(Durability::Flush, t, run, expected_version)
            .await
    }

    async fn update_run_progress(
        &self,
        t: &Tenant,
        run: &RunRecord,
        expected_version: u64,
    ) -> StoreResult<bool> {
        self.write_run(Durability::Progress, t, run, expected_version)
            .await
    }

    async fn active_run(&self, t: &Tenant, thread_id: &str) -> StoreResult<Option<String>> {
        let key = key(t, &[thread_id]);
        self.db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(ACTIVE_RUN)?
                    .query_row([&key[0], &key[1]], |r| r.get(0))
                    .optional()?)
            })
            .await
    }
    async fn list_active_runs(&self) -> StoreResult<Vec<(Tenant, RunRecord)>> {
        self.db
            .read_long(|conn| {
                let mut stmt =
                    conn.prepare_cached("SELECT tenant, body FROM runs WHERE active = 1")?;
                let mut rows = stmt.query([])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let tenant = Tenant::new(row.get_ref(0)?.as_str()?);
                    out.push((tenant, serde_json::from_str(row.get_ref(1)?.as_str()?)?));
                }
                Ok(out)
            })
            .await
    }

    async fn put_step(&self, t: &Tenant, step: &RunStep) -> StoreResult<()> {
        let key = key(t, &[&step.thread_id, &step.run_id, &step.id]);
        self.put_doc(&STEPS, key, vec![], step).await
    }

    async fn put_step_progress(&self, t: &Tenant, step: &RunStep) -> StoreResult<()> {
        let key = key(t, &[&step.thread_id, &step.run_id, &step.id]);
        self.put_doc_with(Durability::Progress, &STEPS, key, vec![], step)
            .await
    }

    async fn get_step(
        &self,
        t: &Tenant,
        thread_id: &str,
        run_id: &str,
        step_id: &str,
    ) -> StoreResult<Option<RunStep>> {
        self.get_doc(&STEPS, key(t, &[thread_id, run_id, step_id]))
            .await
    }

    async fn list_steps(
        &self,
        t: &Tenant,
        thread_id: &str,
        run_id: &str,
        q: &ListQuery,
    ) -> StoreResult<Page<RunStep>> {
        self.list_doc(&STEPS, key(t, &[thread_id, run_id]), vec![], q)
            .await
    }
}

impl SqliteStore {
    async fn write_run(
        &self,
        durability: Durability,
        t: &Tenant,
        run: &RunRecord,
        expected_version: u64,
    ) -> StoreResult<bool> {
        crate::store::check_successor(run, expected_version)?;
        let key = key(t, &[&run.run.thread_id, &run.run.id]);
        let columns = run_columns(run)?;
        let body = encode(run)?;
        let expected = i64::try_from(expected_version)
            .map_err(|_| StoreError::Other("expected run version out of range".into()))?;
        let becomes_active = run.run.status.is_active();
        self.db
            .write_with(durability, move |tx| {
                let written = tx
                    .conn
                    .prepare_cached(
                        "UPDATE runs SET status = ?1, active = ?2, version = ?3, body = ?4 \
                         WHERE tenant = ?5 AND thread_id = ?6 AND id = ?7 AND version = ?8",
                    )?
                    .execute(rusqlite::params![
                        columns[0], columns[1], columns[2], body, key[0], key[1], key[2], expected
                    ]);
                match written {
                    Ok(n) => Ok(n == 1),
                    // Only reachable by turning an ended run active again while another run
                    // holds the thread: refuse it rather than break the invariant.
                    Err(e)
                        if becomes_active
                            && e.sqlite_error_code()
                                == Some(rusqlite::ErrorCode::ConstraintViolation) =>
                    {
                        Err(DbError::Invalid(format!(
                            "run {} cannot become active: its thread has another active run",
                            key[2]
                        )))
                    }
                    Err(e) => Err(e.into()),
                }
            })
            .await
    }
}
