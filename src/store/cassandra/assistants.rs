//! Assistants: one document per assistant in the tenant's partition, listed by id.

use async_trait::async_trait;

use super::CassandraStore;
use super::docs::DocTable;
use crate::model::Assistant;
use crate::store::{AssistantStore, ListQuery, Page, StoreResult, Tenant};

const ASSISTANTS: DocTable = DocTable {
    name: "assistants",
    keys: &["tenant", "id"],
};

#[async_trait]
impl AssistantStore for CassandraStore {
    async fn put_assistant(&self, t: &Tenant, a: &Assistant) -> StoreResult<()> {
        self.conn()
            .await?
            .doc_put(&ASSISTANTS, &[t.as_str()], &a.id, a)
            .await
    }

    async fn get_assistant(&self, t: &Tenant, id: &str) -> StoreResult<Option<Assistant>> {
        self.conn()
            .await?
            .doc_get(&ASSISTANTS, &[t.as_str()], id)
            .await
    }

    async fn list_assistants(&self, t: &Tenant, q: &ListQuery) -> StoreResult<Page<Assistant>> {
        self.conn()
            .await?
            .doc_list(&ASSISTANTS, &[t.as_str()], q, None)
            .await
    }

    async fn delete_assistant(&self, t: &Tenant, id: &str) -> StoreResult<bool> {
        self.conn()
            .await?
            .doc_delete(&ASSISTANTS, &[t.as_str()], id)
            .await
    }
}
