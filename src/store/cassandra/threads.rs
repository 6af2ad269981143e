//! Threads: one single-row partition per thread (threads are never listed). Deleting one
//! cascades to its messages, runs (through `runs.rs`, which owns the LWT rules) and steps.

use async_trait::async_trait;

use super::CassandraStore;
use super::docs::DocTable;
use super::messages::MESSAGES;
use crate::model::Thread;
use crate::store::{StoreResult, Tenant, ThreadStore};

const THREADS: DocTable = DocTable {
    name: "threads",
    keys: &["tenant", "id"],
};

#[async_trait]
impl ThreadStore for CassandraStore {
    async fn put_thread(&self, t: &Tenant, thread: &Thread) -> StoreResult<()> {
        self.conn()
            .await?
            .doc_put(&THREADS, &[t.as_str()], &thread.id, thread)
            .await
    }

    async fn get_thread(&self, t: &Tenant, id: &str) -> StoreResult<Option<Thread>> {
        self.conn()
            .await?
            .doc_get(&THREADS, &[t.as_str()], id)
            .await
    }

    async fn delete_thread(&self, t: &Tenant, id: &str) -> StoreResult<bool> {
        let conn = self.conn().await?;
        let existed = conn.doc_exists(&THREADS, &[t.as_str()], id).await?;
        // Children first, the thread last: an interrupted delete can be repeated.
        conn.delete_thread_runs(t, id).await?;
        conn.doc_delete_partition(&MESSAGES, &[t.as_str(), id])
            .await?;
        conn.doc_delete_blind(&THREADS, &[t.as_str()], id).await?;
        Ok(existed)
    }
}
