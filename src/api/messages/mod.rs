//! `/v1/threads/{thread_id}/messages`: create, list (with `run_id`), retrieve, modify
//! (metadata only), delete; and the v1 message-files routes.

pub mod service;
pub mod types;

use serde::Serialize;
use serde_json::{Value, json};

use crate::api::common;
use crate::api::ctx::{Ctx, Reply, ok_json};
use crate::api::validate::ApiVersion;
use crate::error::Error;
use crate::model::Message;

/// A message in the caller's API version's wire form, ready to serialize. The current
/// version is the stored object itself, written out without a `Value` tree in between (a
/// page of messages is the proxy's most frequent answer); v1 is rare and built by [`render`].
#[derive(Serialize)]
#[serde(untagged)]
pub enum Wire<'a> {
    Current(&'a Message),
    V1(Value),
}

pub fn wire(m: &Message, version: ApiVersion) -> Wire<'_> {
    match version {
        ApiVersion::V1 => Wire::V1(render(m, version)),
        ApiVersion::V2 => Wire::Current(m),
    }
}

/// The wire form for the caller's API version as a `Value` (v1 shows `file_ids` instead of
/// attachments).
pub fn render(m: &Message, version: ApiVersion) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
    if version == ApiVersion::V1
        && let Some(o) = v.as_object_mut()
    {
        o.remove("attachments");
        o.insert(
            "file_ids".into(),
            json!(m.attachments.iter().map(|a| &a.file_id).collect::<Vec<_>>()),
        );
    }
    v
}

/// The thread and message ids of a single-message route, checked in path order.
fn ids(ctx: &Ctx<'_>) -> Result<(String, String), Error> {
    let thread_id = ctx.id("thread_id", "thread_")?;
    Ok((thread_id, ctx.id("message_id", "msg_")?))
}

pub async fn create(mut ctx: Ctx<'_>) -> Reply {
    let thread_id = ctx.id("thread_id", "thread_")?;
    let fields = ctx.json().await?;
    let new = types::parse(fields, ctx.version())?;
    let m = service::create(ctx.state, &ctx.caller, &thread_id, new).await?;
    ok_json(&wire(&m, ctx.version()))
}

pub async fn list(ctx: Ctx<'_>) -> Reply {
    let thread_id = ctx.id("thread_id", "thread_")?;
    let p = ctx.list_params()?;
    let page = service::list(&ctx.caller, &thread_id, p.get("run_id"), &p.query).await?;
    Ok(common::list_response(
        &page,
        |m| &m.id,
        |m| wire(m, ctx.version()),
    ))
}

pub async fn retrieve(ctx: Ctx<'_>) -> Reply {
    let (thread_id, message_id) = ids(&ctx)?;
    let m = service::load(&ctx.caller, &thread_id, &message_id).await?;
    ok_json(&wire(&m, ctx.version()))
}

pub async fn modify(mut ctx: Ctx<'_>) -> Reply {
    let (thread_id, message_id) = ids(&ctx)?;
    let mut fields = ctx.json().await?;
    let metadata = fields.metadata()?;
    fields.finish()?;
    let m = service::modify(&ctx.caller, &thread_id, &message_id, metadata).await?;
    ok_json(&wire(&m, ctx.version()))
}

pub async fn delete(ctx: Ctx<'_>) -> Reply {
    let (thread_id, message_id) = ids(&ctx)?;
    service::delete(&ctx.caller, &thread_id, &message_id).await?;
    Ok(common::deleted(&message_id, "thread.message.deleted"))
}

// ---- v1 message files ------------------------------------------------------------------

fn message_file(m: &Message, file_id: &str) -> Value {
    json!({"id": file_id, "object": "thread.message.file", "created_at": m.created_at, "message_id": m.id})
}

pub async fn list_files(ctx: Ctx<'_>) -> Reply {
    let (thread_id, message_id) = ids(&ctx)?;
    let p = ctx.list_params()?;
    let m = service::load(&ctx.caller, &thread_id, &message_id).await?;
    let file_ids: Vec<String> = m.attachments.iter().map(|a| a.file_id.clone()).collect();
    let page = common::page_of_ids(&file_ids, &p.query);
    Ok(common::list_response(
        &page,
        |f| f.as_str(),
        |f| message_file(&m, f),
    ))
}

pub async fn retrieve_file(ctx: Ctx<'_>) -> Reply {
    let (thread_id, message_id) = ids(&ctx)?;
    let m = service::load(&ctx.caller, &thread_id, &message_id).await?;
    let file_id = ctx.param("file_id");
    if !m.attachments.iter().any(|a| a.file_id == file_id) {
        return Err(Error::not_found(format!(
            "No file found with id '{file_id}' on message '{}'.",
            m.id
        )));
    }
    ok_json(&message_file(&m, file_id))
}
