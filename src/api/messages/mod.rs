//! `/v1/threads/{thread_id}/messages`: create, list (with `run_id`), retrieve, modify
//! (metadata only), delete; and the v1 message-files routes.

pub mod service;
pub mod types;

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::common::{self, Field, ListParams, check_id};
use crate::api::validate::ApiVersion;
use crate::app::AppState;
use crate::body::ProxyBody;
use crate::error::Error;
use crate::model::Message;
use crate::routes::PathParams;
use crate::tenancy::Caller;

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

fn ids(params: &PathParams) -> Result<(&str, Option<&str>), Error> {
    let thread_id = params.get("thread_id").unwrap_or_default();
    check_id("thread_id", thread_id, "thread_")?;
    let message_id = params.get("message_id");
    if let Some(m) = message_id {
        check_id("message_id", m, "msg_")?;
    }
    Ok((thread_id, message_id))
}

async fn load(caller: &Caller, thread_id: &str, message_id: &str) -> Result<Message, Error> {
    service::load_thread(&caller.store, &caller.tenant, thread_id).await?;
    caller
        .store
        .messages
        .get_message(&caller.tenant, thread_id, message_id)
        .await?
        .ok_or_else(|| service::not_found(message_id))
}

pub async fn create(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let (thread_id, _) = ids(&params)?;
    let thread_id = thread_id.to_owned();
    let fields = common::json_body(req, &state.config).await?;
    let new = types::parse(fields, caller.version)?;
    let mut thread = service::load_thread(&caller.store, &caller.tenant, &thread_id).await?;
    let m = service::create(state, &caller, &mut thread, new).await?;
    Ok(common::json_response(
        StatusCode::OK,
        &wire(&m, caller.version),
    ))
}

pub async fn list(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let (thread_id, _) = ids(&params)?;
    let p = ListParams::parse(req.uri().query(), 20, 100, true)?;
    service::load_thread(&caller.store, &caller.tenant, thread_id).await?;
    let page = caller
        .store
        .messages
        .list_messages(&caller.tenant, thread_id, p.get("run_id"), &p.query)
        .await?;
    Ok(common::list_response(
        &page,
        |m| &m.id,
        |m| wire(m, caller.version),
    ))
}

pub async fn retrieve(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let (thread_id, message_id) = ids(&params)?;
    let m = load(&caller, thread_id, message_id.unwrap_or_default()).await?;
    Ok(common::json_response(
        StatusCode::OK,
        &wire(&m, caller.version),
    ))
}

pub async fn modify(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let (thread_id, message_id) = ids(&params)?;
    let (thread_id, message_id) = (
        thread_id.to_owned(),
        message_id.unwrap_or_default().to_owned(),
    );
    let mut fields = common::json_body(req, &state.config).await?;
    let metadata = fields.metadata()?;
    fields.finish()?;
    let mut m = load(&caller, &thread_id, &message_id).await?;
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
    Ok(common::json_response(
        StatusCode::OK,
        &wire(&m, caller.version),
    ))
}

pub async fn delete(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let (thread_id, message_id) = ids(&params)?;
    let message_id = message_id.unwrap_or_default();
    service::load_thread(&caller.store, &caller.tenant, thread_id).await?;
    if !caller
        .store
        .messages
        .delete_message(&caller.tenant, thread_id, message_id)
        .await?
    {
        return Err(service::not_found(message_id));
    }
    Ok(common::deleted(message_id, "thread.message.deleted"))
}

// ---- v1 message files ------------------------------------------------------------------

fn message_file(m: &Message, file_id: &str) -> Value {
    json!({"id": file_id, "object": "thread.message.file", "created_at": m.created_at, "message_id": m.id})
}

pub async fn list_files(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let (thread_id, message_id) = ids(&params)?;
    let p = ListParams::parse(req.uri().query(), 20, 100, true)?;
    let m = load(&caller, thread_id, message_id.unwrap_or_default()).await?;
    let file_ids: Vec<String> = m.attachments.iter().map(|a| a.file_id.clone()).collect();
    let page = common::page_of_ids(&file_ids, &p.query);
    Ok(common::list_response(
        &page,
        |f| f.as_str(),
        |f| message_file(&m, f),
    ))
}

pub async fn retrieve_file(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let (thread_id, message_id) = ids(&params)?;
    let m = load(&caller, thread_id, message_id.unwrap_or_default()).await?;
    let file_id = params.get("file_id").unwrap_or_default();
    if !m.attachments.iter().any(|a| a.file_id == file_id) {
        return Err(Error::not_found(format!(
            "No file found with id '{file_id}' on message '{}'.",
            m.id
        )));
    }
    Ok(common::json_response(
        StatusCode::OK,
        &message_file(&m, file_id),
    ))
}
