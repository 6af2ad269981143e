//! Message rules: the thread lock, attachment side effects (a `file_search` attachment joins
//! the thread's vector store, created on demand; a `code_interpreter` one joins the thread's
//! code-interpreter files), and the message object itself.

use std::sync::Arc;

use super::types::NewMessage;
use crate::api::fields::Field;
use crate::api::files::service as files;
use crate::api::vector_stores::service::{self as vector_stores, NewVectorStore};
use crate::app::AppState;
use crate::error::Error;
use crate::ids::{new_id, now_secs};
use crate::model::Metadata;
use crate::model::{CodeInterpreterResources, ExpiresAfter, FileSearchResources, Message, Thread};
use crate::store::{ListQuery, Page, Store, Tenant};
use crate::tenancy::Caller;

pub fn not_found(id: &str) -> Error {
    Error::not_found(format!("No message found with id '{id}'."))
}

use crate::api::threads::service::load_thread;

/// A message of a thread of this tenant (the thread first: its 404 wins).
pub async fn load(caller: &Caller, thread_id: &str, message_id: &str) -> Result<Message, Error> {
    // Both read at once (on a networked store each is a round trip); the thread's answer is
    // looked at first.
    let (thread, message) = tokio::join!(
        load_thread(&caller.store, &caller.tenant, thread_id),
        caller
            .store
            .messages
            .get_message(&caller.tenant, thread_id, message_id)
    );
    thread?;
    message?.ok_or_else(|| not_found(message_id))
}

pub async fn list(
    caller: &Caller,
    thread_id: &str,
    run_id: Option<&str>,
    q: &ListQuery,
) -> Result<Page<Message>, Error> {
    // As in `load`: the page is read beside the thread, which still answers first.
    let (thread, page) = tokio::join!(
        load_thread(&caller.store, &caller.tenant, thread_id),
        caller
            .store
            .messages
            .list_messages(&caller.tenant, thread_id, run_id, q)
    );
    thread?;
    Ok(page?)
}

/// Modify changes only `metadata`: absent keeps it, null clears it, a value replaces it.
pub async fn modify(
    caller: &Caller,
    thread_id: &str,
    message_id: &str,
    metadata: Field<Metadata>,
) -> Result<Message, Error> {
    let mut m = load(caller, thread_id, message_id).await?;
    match metadata {
        Field::Set(md) => m.metadata = md,
        Field::Null => m.metadata.clear(),
        Field::Absent => {}
    }
    caller
        .store
        .messages
        .put_message(&caller.tenant, &m)
        .await?;
    Ok(m)
}

pub async fn delete(caller: &Caller, thread_id: &str, message_id: &str) -> Result<(), Error> {
    load_thread(&caller.store, &caller.tenant, thread_id).await?;
    if !caller
        .store
        .messages
        .delete_message(&caller.tenant, thread_id, message_id)
        .await?
    {
        return Err(not_found(message_id));
    }
    Ok(())
}

/// Refuses new messages while a run is active on the thread.
pub async fn check_unlocked(store: &Store, tenant: &Tenant, thread_id: &str) -> Result<(), Error> {
    if let Some(run_id) = store.runs.active_run(tenant, thread_id).await? {
        return Err(Error::invalid(
            format!("Can't add messages to {thread_id} while a run {run_id} is active."),
            None,
        ));
    }
    Ok(())
}

/// Refuses a message whose `image_file` parts name a file that does not exist here (or is
/// another tenant's): OpenAI answers 404, and a run would otherwise show the model nothing.
/// `path` locates the message in the request body (`messages[0]`), empty for a message body.
pub async fn check_images(
    state: &AppState,
    caller: &Caller,
    new: &NewMessage,
    path: &str,
) -> Result<(), Error> {
    for (i, part) in new.content.iter().enumerate() {
        let Some(file_id) = part["image_file"]["file_id"].as_str() else {
            continue;
        };
        if files::find(state, &caller.store, &caller.tenant, file_id)
            .await?
            .is_none()
        {
            let param = match path {
                "" => format!("content[{i}].image_file.file_id"),
                _ => format!("{path}.content[{i}].image_file.file_id"),
            };
            return Err(Error::NotFound {
                message: format!("No such File object: {file_id}"),
                param: Some(param),
            });
        }
    }
    Ok(())
}

/// Applies attachment side effects to the thread (and stores it when changed).
pub async fn apply_attachments(
    state: &Arc<AppState>,
    caller: &Caller,
    thread: &mut Thread,
    new: &NewMessage,
) -> Result<(), Error> {
    if new.attachments.is_empty() {
        return Ok(());
    }
    let mut changed = false;
    for a in &new.attachments {
        if caller
            .store
            .files
            .get_file(&caller.tenant, &a.file_id)
            .await?
            .is_none()
        {
            return Err(Error::NotFound {
                message: format!("No such File object: {}", a.file_id),
                param: Some("file_id".into()),
            });
        }
        for tool in &a.tools {
            match tool["type"].as_str() {
                Some("code_interpreter") => {
                    let ci = thread
                        .tool_resources
                        .code_interpreter
                        .get_or_insert_with(CodeInterpreterResources::default);
                    if !ci.file_ids.contains(&a.file_id) && ci.file_ids.len() < 20 {
                        ci.file_ids.push(a.file_id.clone());
                        changed = true;
                    }
                }
                Some("file_search") => {
                    let vs_id = match thread.tool_resources.vector_store_ids().first() {
                        Some(id) => id.clone(),
                        None => {
                            // The thread's own store, expiring 7 days after its last activity.
                            let vs = vector_stores::create(
                                state,
                                caller,
                                NewVectorStore {
                                    expires_after: Some(ExpiresAfter {
                                        anchor: "last_active_at".into(),
                                        days: 7,
                                    }),
                                    ..NewVectorStore::default()
                                },
                            )
                            .await?;
                            thread.tool_resources.file_search = Some(FileSearchResources {
                                vector_store_ids: vec![vs.id.clone()],
                            });
                            changed = true;
                            vs.id
                        }
                    };
                    let existing = caller
                        .store
                        .vector_stores
                        .get_vs_file(&caller.tenant, &vs_id, &a.file_id)
                        .await?;
                    if existing.is_none() {
                        vector_stores::add_file(
                            state, caller, &vs_id, &a.file_id, None, None, None,
                        )
                        .await?;
                    }
                }
                _ => {}
            }
        }
    }
    if changed {
        caller
            .store
            .threads
            .put_thread(&caller.tenant, thread)
            .await?;
    }
    Ok(())
}

/// Builds and stores a message (attachments already applied by the caller).
pub async fn insert(
    store: &Store,
    tenant: &Tenant,
    thread_id: &str,
    new: NewMessage,
    run_id: Option<&str>,
    assistant_id: Option<&str>,
) -> Result<Message, Error> {
    let now = now_secs();
    let m = Message {
        id: new_id("msg_"),
        object: "thread.message".into(),
        created_at: now,
        thread_id: thread_id.to_owned(),
        status: "completed".into(),
        incomplete_details: None,
        completed_at: Some(now),
        incomplete_at: None,
        role: new.role.into(),
        content: new.content.into(),
        assistant_id: assistant_id.map(str::to_owned),
        run_id: run_id.map(str::to_owned),
        attachments: new.attachments,
        metadata: new.metadata,
    };
    store.messages.put_message(tenant, &m).await?;
    Ok(m)
}

/// Creates a user-supplied message on an existing thread: lock check, attachments, insert.
pub async fn create(
    state: &Arc<AppState>,
    caller: &Caller,
    thread_id: &str,
    new: NewMessage,
) -> Result<Message, Error> {
    // The thread and its lock are read at once: neither read needs the other, and on a
    // networked store each is a round trip. The thread's 404 still wins (a missing thread
    // has no lock, so the only error the lock read could add is the store's own).
    let (thread, unlocked) = tokio::join!(
        load_thread(&caller.store, &caller.tenant, thread_id),
        check_unlocked(&caller.store, &caller.tenant, thread_id)
    );
    let mut thread = thread?;
    unlocked?;
    check_images(state, caller, &new, "").await?;
    apply_attachments(state, caller, &mut thread, &new).await?;
    insert(&caller.store, &caller.tenant, &thread.id, new, None, None).await
}
