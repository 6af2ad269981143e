//! `AssistantStore`: plain documents keyed by (tenant, id).

use async_trait::async_trait;

use super::SqliteStore;
use super::doc::{Table, key};
use crate::model::Assistant;
use crate::store::{AssistantStore, ListQuery, Page, StoreResult, Tenant};

static ASSISTANTS: Table = Table::new("assistants", &["id"], &[]);

#[async_trait]
impl AssistantStore for SqliteStore {
    async fn put_assistant(&self, t: &Tenant, a: &Assistant) -> StoreResult<()> {
        self.put_doc(&ASSISTANTS, key(t, &[&a.id]), vec![], a).await
    }

    async fn get_assistant(&self, t: &Tenant, id: &str) -> StoreResult<Option<Assistant>> {
        self.get_doc(&ASSISTANTS, key(t, &[id])).await
    }

    async fn list_assistants(&self, t: &Tenant, q: &ListQuery) -> StoreResult<Page<Assistant>> {
        self.list_doc(&ASSISTANTS, key(t, &[]), vec![], q).await
    }

    async fn delete_assistant(&self, t: &Tenant, id: &str) -> StoreResult<bool> {
        self.delete_doc(&ASSISTANTS, key(t, &[id])).await
    }
}
