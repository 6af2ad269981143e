//! `/v1/assistants`: create, list, retrieve, modify, delete (and the v1 assistant-files
//! routes, which map onto the assistant's `file_ids`).

pub mod service;
pub mod types;

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::api::common::{self, ListParams, check_id};
use crate::api::validate::{ApiVersion, tools_for};
use crate::app::AppState;
use crate::body::ProxyBody;
use crate::error::Error;
use crate::model::Assistant;
use crate::routes::PathParams;

/// The wire form for the caller's API version.
pub fn render(a: &Assistant, version: ApiVersion) -> Value {
    let mut v = json!({
        "id": a.id,
        "object": "assistant",
        "created_at": a.created_at,
        "name": a.name,
        "description": a.description,
        "model": a.model,
        "instructions": a.instructions,
        "tools": tools_for(version, &a.tools),
        "metadata": a.metadata,
        "temperature": a.temperature,
        "top_p": a.top_p,
        "response_format": a.response_format,
    });
    match version {
        ApiVersion::V2 => v["tool_resources"] = json!(a.tool_resources),
        ApiVersion::V1 => v["file_ids"] = json!(a.v1_file_ids),
    }
    v
}

fn param<'a>(params: &'a PathParams, name: &str) -> &'a str {
    params.get(name).unwrap_or_default()
}

pub async fn create(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    _params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let fields = common::json_body(req, &state.config).await?;
    let parsed = types::parse(fields, caller.version, true)?;
    let a = service::create(state, &caller, parsed).await?;
    Ok(common::json_response(
        http::StatusCode::OK,
        &render(&a, caller.version),
    ))
}

pub async fn list(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    _params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let p = ListParams::parse(req.uri().query(), 20, 100, true)?;
    let page = caller
        .store
        .assistants
        .list_assistants(&caller.tenant, &p.query)
        .await?;
    Ok(common::list_response(
        &page,
        |a| &a.id,
        |a| render(a, caller.version),
    ))
}

pub async fn retrieve(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let id = param(&params, "assistant_id");
    check_id("assistant_id", id, "asst_")?;
    let a = service::load(&caller.store, &caller.tenant, id).await?;
    Ok(common::json_response(
        http::StatusCode::OK,
        &render(&a, caller.version),
    ))
}

pub async fn modify(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let id = param(&params, "assistant_id").to_owned();
    check_id("assistant_id", &id, "asst_")?;
    let fields = common::json_body(req, &state.config).await?;
    let parsed = types::parse(fields, caller.version, false)?;
    let a = service::modify(&caller, &id, parsed).await?;
    Ok(common::json_response(
        http::StatusCode::OK,
        &render(&a, caller.version),
    ))
}

pub async fn delete(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let id = param(&params, "assistant_id");
    check_id("assistant_id", id, "asst_")?;
    if !caller
        .store
        .assistants
        .delete_assistant(&caller.tenant, id)
        .await?
    {
        return Err(service::not_found(id));
    }
    Ok(common::deleted(id, "assistant.deleted"))
}

// ---- v1 assistant files ----------------------------------------------------------------

fn assistant_file(a: &Assistant, file_id: &str) -> Value {
    json!({"id": file_id, "object": "assistant.file", "created_at": a.created_at, "assistant_id": a.id})
}

pub async fn create_file(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let id = param(&params, "assistant_id").to_owned();
    check_id("assistant_id", &id, "asst_")?;
    let mut fields = common::json_body(req, &state.config).await?;
    let file_id = fields.required_string("file_id", 128)?;
    fields.finish()?;
    let mut a = service::load(&caller.store, &caller.tenant, &id).await?;
    service::check_file(&caller.store, &caller.tenant, &file_id).await?;
    if !a.v1_file_ids.contains(&file_id) {
        if a.v1_file_ids.len() >= 20 {
            return Err(common::array_too_long(
                "file_ids",
                20,
                a.v1_file_ids.len() + 1,
            ));
        }
        a.v1_file_ids.push(file_id.clone());
        caller
            .store
            .assistants
            .put_assistant(&caller.tenant, &a)
            .await?;
    }
    Ok(common::json_response(
        http::StatusCode::OK,
        &assistant_file(&a, &file_id),
    ))
}

pub async fn list_files(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let id = param(&params, "assistant_id");
    check_id("assistant_id", id, "asst_")?;
    let p = ListParams::parse(req.uri().query(), 20, 100, true)?;
    let a = service::load(&caller.store, &caller.tenant, id).await?;
    let page = common::page_of_ids(&a.v1_file_ids, &p.query);
    Ok(common::list_response(
        &page,
        |f| f.as_str(),
        |f| assistant_file(&a, f),
    ))
}

fn file_of<'a>(a: &'a Assistant, file_id: &str) -> Result<&'a String, Error> {
    a.v1_file_ids.iter().find(|f| *f == file_id).ok_or_else(|| {
        Error::not_found(format!(
            "No file found with id '{file_id}' on assistant '{}'.",
            a.id
        ))
    })
}

pub async fn retrieve_file(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let id = param(&params, "assistant_id");
    check_id("assistant_id", id, "asst_")?;
    let a = service::load(&caller.store, &caller.tenant, id).await?;
    let f = file_of(&a, param(&params, "file_id"))?;
    Ok(common::json_response(
        http::StatusCode::OK,
        &assistant_file(&a, f),
    ))
}

pub async fn delete_file(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let id = param(&params, "assistant_id");
    check_id("assistant_id", id, "asst_")?;
    let mut a = service::load(&caller.store, &caller.tenant, id).await?;
    let file_id = file_of(&a, param(&params, "file_id"))?.clone();
    a.v1_file_ids.retain(|f| *f != file_id);
    caller
        .store
        .assistants
        .put_assistant(&caller.tenant, &a)
        .await?;
    Ok(common::deleted(&file_id, "assistant.file.deleted"))
}
