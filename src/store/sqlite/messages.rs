//! `MessageStore`: documents keyed by (tenant, thread_id, id), with `run_id` beside them so
//! "the messages of one run" is an index range too.

use async_trait::async_trait;

use super::doc::{Table, key, opt_text};
use super::{Durability, SqliteStore};
use crate::model::Message;
use crate::store::{ListQuery, MessageStore, Page, StoreResult, Tenant};

pub(super) static MESSAGES: Table = Table::new("messages", &["thread_id", "id"], &["run_id"]);

#[async_trait]
impl MessageStore for SqliteStore {
    async fn put_message(&self, t: &Tenant, m: &Message) -> StoreResult<()> {
        self.write_message(Durability::Flush, t, m).await
    }

    async fn put_message_progress(&self, t: &Tenant, m: &Message) -> StoreResult<()> {
        self.write_message(Durability::Progress, t, m).await
    }

    async fn get_message(
        &self,
        t: &Tenant,
        thread_id: &str,
        id: &str,
    ) -> StoreResult<Option<Message>> {
        self.get_doc(&MESSAGES, key(t, &[thread_id, id])).await
    }

    async fn list_messages(
        &self,
        t: &Tenant,
        thread_id: &str,
        run_id: Option<&str>,
        q: &ListQuery,
    ) -> StoreResult<Page<Message>> {
        let filters = run_id
            .map(|r| vec![("run_id", opt_text(Some(r)))])
            .unwrap_or_default();
        self.list_doc(&MESSAGES, key(t, &[thread_id]), filters, q)
            .await
    }

    async fn delete_message(&self, t: &Tenant, thread_id: &str, id: &str) -> StoreResult<bool> {
        self.delete_doc(&MESSAGES, key(t, &[thread_id, id])).await
    }
}

impl SqliteStore {
    async fn write_message(&self, d: Durability, t: &Tenant, m: &Message) -> StoreResult<()> {
        let extras = vec![opt_text(m.run_id.as_deref())];
        let key = key(t, &[&m.thread_id, &m.id]);
        self.put_doc_with(d, &MESSAGES, key, extras, m).await
    }
}
