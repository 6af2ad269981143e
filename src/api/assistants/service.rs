//! Assistant rules: ids and timestamps, referenced resources that must exist, and the
//! `vector_stores` helper that creates a store for `file_search`.

use std::sync::Arc;

use serde_json::json;

use super::types::AssistantFields;
use crate::api::fields::{Field, array_too_long};
use crate::api::vector_stores::service::{self as vector_stores, NewVectorStore};
use crate::app::AppState;
use crate::error::Error;
use crate::ids::{new_id, now_secs};
use crate::model::{Assistant, FileSearchResources, ToolResources};
use crate::store::{ListQuery, Page, Store, Tenant};
use crate::tenancy::Caller;

pub fn not_found(id: &str) -> Error {
    Error::not_found(format!("No assistant found with id '{id}'."))
}

/// Writes the assistant as it now is (every change is a whole-document write).
async fn save(caller: &Caller, a: &Assistant) -> Result<(), Error> {
    caller
        .store
        .assistants
        .put_assistant(&caller.tenant, a)
        .await?;
    Ok(())
}

pub async fn load(store: &Store, tenant: &Tenant, id: &str) -> Result<Assistant, Error> {
    store
        .assistants
        .get_assistant(tenant, id)
        .await?
        .ok_or_else(|| not_found(id))
}

pub async fn list(caller: &Caller, q: &ListQuery) -> Result<Page<Assistant>, Error> {
    Ok(caller
        .store
        .assistants
        .list_assistants(&caller.tenant, q)
        .await?)
}

pub async fn delete(caller: &Caller, id: &str) -> Result<(), Error> {
    if !caller
        .store
        .assistants
        .delete_assistant(&caller.tenant, id)
        .await?
    {
        return Err(not_found(id));
    }
    Ok(())
}

/// How many files a v1 assistant may carry (`file_ids`).
const MAX_V1_FILES: usize = 20;

/// Attaches a file to a v1 assistant (idempotent: a file already there is not added twice).
pub async fn add_file(caller: &Caller, id: &str, file_id: &str) -> Result<Assistant, Error> {
    let mut a = load(&caller.store, &caller.tenant, id).await?;
    check_file(&caller.store, &caller.tenant, file_id).await?;
    if !a.v1_file_ids.iter().any(|f| f == file_id) {
        if a.v1_file_ids.len() >= MAX_V1_FILES {
            return Err(array_too_long(
                "file_ids",
                MAX_V1_FILES,
                a.v1_file_ids.len() + 1,
            ));
        }
        a.v1_file_ids.push(file_id.to_owned());
        save(caller, &a).await?;
    }
    Ok(a)
}

/// A v1 assistant's file, or OpenAI's 404 for one it does not carry.
pub fn file_of<'a>(a: &'a Assistant, file_id: &str) -> Result<&'a String, Error> {
    a.v1_file_ids.iter().find(|f| *f == file_id).ok_or_else(|| {
        Error::not_found(format!(
            "No file found with id '{file_id}' on assistant '{}'.",
            a.id
        ))
    })
}

/// Detaches a file from a v1 assistant; the id removed.
pub async fn remove_file(caller: &Caller, id: &str, file_id: &str) -> Result<String, Error> {
    let mut a = load(&caller.store, &caller.tenant, id).await?;
    let file_id = file_of(&a, file_id)?.clone();
    a.v1_file_ids.retain(|f| *f != file_id);
    save(caller, &a).await?;
    Ok(file_id)
}

/// Checks that every id in `tool_resources` names an object of this tenant.
pub async fn check_resources(
    store: &Store,
    tenant: &Tenant,
    tr: &ToolResources,
) -> Result<(), Error> {
    for id in tr.vector_store_ids() {
        if store
            .vector_stores
            .get_vector_store(tenant, id)
            .await?
            .is_none()
        {
            return Err(vector_stores::not_found(id));
        }
    }
    for id in tr.code_interpreter_file_ids() {
        check_file(store, tenant, id).await?;
    }
    Ok(())
}

pub async fn check_file(store: &Store, tenant: &Tenant, id: &str) -> Result<(), Error> {
    if store.files.get_file(tenant, id).await?.is_none() {
        return Err(Error::NotFound {
            message: format!("No such File object: {id}"),
            param: Some("file_id".into()),
        });
    }
    Ok(())
}

/// Resolves a `vector_stores` helper into a fresh store id.
pub async fn apply_helper(
    state: &Arc<AppState>,
    caller: &Caller,
    tr: &mut ToolResources,
    helper: Option<crate::api::validate::VectorStoreHelper>,
    expires_after: Option<crate::model::ExpiresAfter>,
) -> Result<(), Error> {
    if let Some(h) = helper {
        for id in &h.file_ids {
            check_file(&caller.store, &caller.tenant, id).await?;
        }
        let vs = vector_stores::create(
            state,
            caller,
            NewVectorStore {
                name: None,
                file_ids: h.file_ids,
                chunking_strategy: h.chunking_strategy,
                expires_after,
                metadata: h.metadata.unwrap_or_default(),
            },
        )
        .await?;
        tr.file_search = Some(FileSearchResources {
            vector_store_ids: vec![vs.id],
        });
    }
    Ok(())
}

pub async fn create(
    state: &Arc<AppState>,
    caller: &Caller,
    f: AssistantFields,
) -> Result<Assistant, Error> {
    let mut tool_resources = f.tool_resources.into_option().unwrap_or_default();
    check_resources(&caller.store, &caller.tenant, &tool_resources).await?;
    let v1_file_ids = f.file_ids.into_option().unwrap_or_default();
    for id in &v1_file_ids {
        check_file(&caller.store, &caller.tenant, id).await?;
    }
    apply_helper(
        state,
        caller,
        &mut tool_resources,
        f.vector_store_helper,
        None,
    )
    .await?;
    let a = Assistant {
        id: new_id("asst_"),
        object: "assistant".into(),
        created_at: now_secs(),
        name: f.name.into_option(),
        description: f.description.into_option(),
        model: f.model.into_option().unwrap_or_default(),
        instructions: f.instructions.into_option(),
        tools: f.tools.into_option().unwrap_or_default(),
        tool_resources,
        metadata: f.metadata.into_option().unwrap_or_default(),
        temperature: Some(f.temperature.into_option().unwrap_or(1.0)),
        top_p: Some(f.top_p.into_option().unwrap_or(1.0)),
        response_format: f
            .response_format
            .into_option()
            .unwrap_or_else(|| json!("auto")),
        v1_file_ids,
        reasoning_effort: f.reasoning_effort.into_option(),
    };
    save(caller, &a).await?;
    Ok(a)
}

pub async fn modify(caller: &Caller, id: &str, f: AssistantFields) -> Result<Assistant, Error> {
    let mut a = load(&caller.store, &caller.tenant, id).await?;
    if let Field::Set(model) = f.model {
        a.model = model;
    }
    a.name = f.name.apply(a.name);
    a.description = f.description.apply(a.description);
    a.instructions = f.instructions.apply(a.instructions);
    match f.tools {
        Field::Set(t) => a.tools = t,
        Field::Null => a.tools.clear(),
        Field::Absent => {}
    }
    match f.tool_resources {
        Field::Set(tr) => {
            check_resources(&caller.store, &caller.tenant, &tr).await?;
            // Modify replaces each given list and keeps the others.
            if tr.code_interpreter.is_some() {
                a.tool_resources.code_interpreter = tr.code_interpreter;
            }
            if tr.file_search.is_some() {
                a.tool_resources.file_search = tr.file_search;
            }
        }
        Field::Null => a.tool_resources = ToolResources::default(),
        Field::Absent => {}
    }
    match f.metadata {
        Field::Set(m) => a.metadata = m,
        Field::Null => a.metadata.clear(),
        Field::Absent => {}
    }
    a.temperature = Some(f.temperature.apply(a.temperature).unwrap_or(1.0));
    a.top_p = Some(f.top_p.apply(a.top_p).unwrap_or(1.0));
    a.reasoning_effort = f.reasoning_effort.apply(a.reasoning_effort);
    a.response_format = f
        .response_format
        .apply(Some(a.response_format))
        .unwrap_or_else(|| json!("auto"));
    if let Field::Set(ids) = f.file_ids {
        for fid in &ids {
            check_file(&caller.store, &caller.tenant, fid).await?;
        }
        a.v1_file_ids = ids;
    }
    save(caller, &a).await?;
    Ok(a)
}
