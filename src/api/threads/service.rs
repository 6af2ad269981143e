//! Thread rules: a create body with initial messages (validated all before anything is
//! written), tool resources (a `vector_stores` helper makes a store expiring 7 days after its
//! last activity), and modify (ids only, lists replaced).

use std::sync::Arc;

use crate::api::assistants::service::{apply_helper, check_resources};
use crate::api::fields::{Field, Fields};
use crate::api::messages::service as messages;
use crate::api::messages::types::{self as message_types, NewMessage};
use crate::api::validate::{self, ApiVersion, VectorStoreHelper};
use crate::app::AppState;
use crate::error::Error;
use crate::ids::{new_id, now_secs};
use crate::model::{ExpiresAfter, Message, Metadata, Thread, ToolResources};
use crate::store::{Store, Tenant};
use crate::tenancy::Caller;

/// Initial messages of one create request (the spec sets no limit; this bounds the work).
pub const MAX_INITIAL_MESSAGES: usize = 32;

#[derive(Debug, Default)]
pub struct NewThread {
    pub messages: Vec<NewMessage>,
    pub tool_resources: ToolResources,
    pub helper: Option<VectorStoreHelper>,
    pub metadata: Metadata,
    /// Where the body sits in the request (`thread.` inside create-thread-and-run), for the
    /// errors found after parsing.
    pub param_prefix: String,
}

pub fn not_found(id: &str) -> Error {
    Error::not_found(format!("No thread found with id '{id}'."))
}

pub async fn load_thread(store: &Store, tenant: &Tenant, id: &str) -> Result<Thread, Error> {
    store
        .threads
        .get_thread(tenant, id)
        .await?
        .ok_or_else(|| not_found(id))
}

pub async fn delete(state: &AppState, caller: &Caller, id: &str) -> Result<(), Error> {
    if !caller
        .store
        .threads
        .delete_thread(&caller.tenant, id)
        .await?
    {
        return Err(not_found(id));
    }
    // The thread's interpreter session (variables, files) goes with it.
    let key = (caller.tenant.as_str().to_owned(), id.to_owned());
    state.runs.interpreter.close(&key).await;
    Ok(())
}

/// Parses a CreateThread body; `prefix` names its position inside another body (`thread.`).
pub fn parse_create(mut f: Fields, version: ApiVersion, prefix: &str) -> Result<NewThread, Error> {
    let messages = match f.array("messages", MAX_INITIAL_MESSAGES)? {
        Field::Set(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let mf = Fields::nested(m, &format!("{prefix}messages[{i}]"))?;
                message_types::parse(mf, version)
            })
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    let (tool_resources, helper) = match f.object("tool_resources")? {
        Field::Set(tr) => validate::tool_resources(tr, true)?,
        _ => (ToolResources::default(), None),
    };
    let metadata = f.metadata()?.into_option().unwrap_or_default();
    f.finish()?;
    Ok(NewThread {
        messages,
        tool_resources,
        helper,
        metadata,
        param_prefix: prefix.to_owned(),
    })
}

/// Creates the thread and its initial messages, in order.
pub async fn create(
    state: &Arc<AppState>,
    caller: &Caller,
    new: NewThread,
) -> Result<(Thread, Vec<Message>), Error> {
    let mut tool_resources = new.tool_resources;
    check_resources(&caller.store, &caller.tenant, &tool_resources).await?;
    for (i, m) in new.messages.iter().enumerate() {
        let path = format!("{}messages[{i}]", new.param_prefix);
        messages::check_images(state, caller, m, &path).await?;
    }
    let expiry = ExpiresAfter {
        anchor: "last_active_at".into(),
        days: 7,
    };
    apply_helper(state, caller, &mut tool_resources, new.helper, Some(expiry)).await?;
    let mut thread = Thread {
        id: new_id("thread_"),
        object: "thread".into(),
        created_at: now_secs(),
        tool_resources,
        metadata: new.metadata,
    };
    if new.messages.iter().all(|m| m.attachments.is_empty()) {
        // Nothing to resolve first: the thread and its messages are written at once (one
        // commit on SQLite). Each insert takes its id on its first poll, and join_all polls
        // in order, so the ids keep the messages' order.
        let inserts = new
            .messages
            .into_iter()
            .map(|m| messages::insert(&caller.store, &caller.tenant, &thread.id, m, None, None));
        let (written, made) = tokio::join!(
            caller.store.threads.put_thread(&caller.tenant, &thread),
            futures_util::future::join_all(inserts)
        );
        written?;
        let made = made.into_iter().collect::<Result<Vec<_>, _>>()?;
        return Ok((thread, made));
    }
    caller
        .store
        .threads
        .put_thread(&caller.tenant, &thread)
        .await?;
    let mut made = Vec::with_capacity(new.messages.len());
    for m in new.messages {
        messages::apply_attachments(state, caller, &mut thread, &m).await?;
        made.push(
            messages::insert(&caller.store, &caller.tenant, &thread.id, m, None, None).await?,
        );
    }
    Ok((thread, made))
}

pub async fn modify(caller: &Caller, id: &str, mut f: Fields) -> Result<Thread, Error> {
    let tool_resources = match f.object("tool_resources")? {
        Field::Set(tr) => Field::Set(validate::tool_resources(tr, false)?.0),
        Field::Null => Field::Null,
        Field::Absent => Field::Absent,
    };
    let metadata = f.metadata()?;
    f.finish()?;
    let mut t = load_thread(&caller.store, &caller.tenant, id).await?;
    match tool_resources {
        Field::Set(tr) => {
            check_resources(&caller.store, &caller.tenant, &tr).await?;
            if tr.code_interpreter.is_some() {
                t.tool_resources.code_interpreter = tr.code_interpreter;
            }
            if tr.file_search.is_some() {
                t.tool_resources.file_search = tr.file_search;
            }
        }
        Field::Null => t.tool_resources = ToolResources::default(),
        Field::Absent => {}
    }
    match metadata {
        Field::Set(m) => t.metadata = m,
        Field::Null => t.metadata.clear(),
        Field::Absent => {}
    }
    caller.store.threads.put_thread(&caller.tenant, &t).await?;
    Ok(t)
}
