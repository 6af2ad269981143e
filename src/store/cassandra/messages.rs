//! Messages: one partition per thread, clustered by the creation-ordered message id.

use async_trait::async_trait;

use super::CassandraStore;
use super::docs::DocTable;
use crate::model::Message;
use crate::store::{ListQuery, MessageStore, Page, StoreResult, Tenant};

pub(super) const MESSAGES: DocTable = DocTable {
    name: "messages",
    keys: &["tenant", "thread_id", "id"],
};

#[async_trait]
impl MessageStore for CassandraStore {
    async fn put_message(&self, t: &Tenant, m: &Message) -> StoreResult<()> {
        let key = [t.as_str(), m.thread_id.as_str()];
        self.conn().await?.doc_put(&MESSAGES, &key, &m.id, m).await
    }

    async fn get_message(
        &self,
        t: &Tenant,
        thread_id: &str,
        id: &str,
    ) -> StoreResult<Option<Message>> {
        self.conn()
            .await?
            .doc_get(&MESSAGES, &[t.as_str(), thread_id], id)
            .await
    }

    async fn list_messages(
        &self,
        t: &Tenant,
        thread_id: &str,
        run_id: Option<&str>,
        q: &ListQuery,
    ) -> StoreResult<Page<Message>> {
        let conn = self.conn().await?;
        let key = [t.as_str(), thread_id];
        match run_id {
            // A run's messages are few and near each other: filter while walking the range.
            Some(run) => {
                let keep = move |m: &Message| m.run_id.as_deref() == Some(run);
                conn.doc_list(&MESSAGES, &key, q, Some(&keep)).await
            }
            None => conn.doc_list(&MESSAGES, &key, q, None).await,
        }
    }

    async fn delete_message(&self, t: &Tenant, thread_id: &str, id: &str) -> StoreResult<bool> {
        self.conn()
            .await?
            .doc_delete(&MESSAGES, &[t.as_str(), thread_id], id)
            .await
    }
}
