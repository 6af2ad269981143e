//! `/v1/threads`: create (with initial messages and tool resources), retrieve, modify,
//! delete. Runs live in `runs`; messages in `messages`.

pub mod service;

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::api::common::{self, check_id};
use crate::api::validate::ApiVersion;
use crate::app::AppState;
use crate::body::ProxyBody;
use crate::error::Error;
use crate::model::Thread;
use crate::routes::PathParams;

pub fn render(t: &Thread, version: ApiVersion) -> Value {
    let mut v = json!({
        "id": t.id,
        "object": "thread",
        "created_at": t.created_at,
        "metadata": t.metadata,
    });
    if version == ApiVersion::V2 {
        v["tool_resources"] = json!(t.tool_resources);
    }
    v
}

fn thread_id(params: &PathParams) -> Result<&str, Error> {
    let id = params.get("thread_id").unwrap_or_default();
    check_id("thread_id", id, "thread_")?;
    Ok(id)
}

pub async fn create(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    _params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let fields = common::json_body(req, &state.config).await?;
    let new = service::parse_create(fields, caller.version, "")?;
    let (thread, _) = service::create(state, &caller, new).await?;
    Ok(common::json_response(
        StatusCode::OK,
        &render(&thread, caller.version),
    ))
}

pub async fn retrieve(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let id = thread_id(&params)?;
    let t = crate::api::messages::service::load_thread(&caller.store, &caller.tenant, id).await?;
    Ok(common::json_response(
        StatusCode::OK,
        &render(&t, caller.version),
    ))
}

pub async fn modify(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let id = thread_id(&params)?.to_owned();
    let fields = common::json_body(req, &state.config).await?;
    let t = service::modify(&caller, &id, fields).await?;
    Ok(common::json_response(
        StatusCode::OK,
        &render(&t, caller.version),
    ))
}

pub async fn delete(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let id = thread_id(&params)?;
    if !caller
        .store
        .threads
        .delete_thread(&caller.tenant, id)
        .await?
    {
        return Err(crate::api::messages::service::thread_not_found(id));
    }
    Ok(common::deleted(id, "thread.deleted"))
}
