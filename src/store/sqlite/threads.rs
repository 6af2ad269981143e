//! `ThreadStore`: documents keyed by (tenant, id); deleting one cascades, in one transaction,
//! to the thread's messages, runs (and with them its lock: see `runs.rs`) and run steps.

use async_trait::async_trait;

use super::SqliteStore;
use super::doc::{self, Table, key};
use crate::model::Thread;
use crate::store::{StoreResult, Tenant, ThreadStore};

static THREADS: Table = Table::new("threads", &["id"], &[]);

/// The thread's children, deleted with it.
const CASCADE: [&str; 3] = [
    "DELETE FROM messages WHERE tenant = ?1 AND thread_id = ?2",
    "DELETE FROM runs WHERE tenant = ?1 AND thread_id = ?2",
    "DELETE FROM run_steps WHERE tenant = ?1 AND thread_id = ?2",
];

#[async_trait]
impl ThreadStore for SqliteStore {
    async fn put_thread(&self, t: &Tenant, thread: &Thread) -> StoreResult<()> {
        self.put_doc(&THREADS, key(t, &[&thread.id]), vec![], thread)
            .await
    }

    async fn get_thread(&self, t: &Tenant, id: &str) -> StoreResult<Option<Thread>> {
        self.get_doc(&THREADS, key(t, &[id])).await
    }

    async fn delete_thread(&self, t: &Tenant, id: &str) -> StoreResult<bool> {
        let key = key(t, &[id]);
        self.db
            .write(move |tx| {
                let existed = doc::delete(tx.conn, &THREADS, &key)?;
                for sql in CASCADE {
                    tx.conn.prepare_cached(sql)?.execute([&key[0], &key[1]])?;
                }
                Ok(existed)
            })
            .await
    }
}
