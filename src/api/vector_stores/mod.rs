//! `/v1/vector_stores`: stores (create, list, retrieve, modify, delete, search), their files
//! (`files`) and file batches (`batches`). Handlers decode, call `service`, and encode with
//! `types`; ingestion and search live in `crate::retrieval`.

pub mod batches;
pub mod files;
pub mod service;
pub mod types;

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::api::common::{self, ListParams, check_id};
use crate::app::AppState;
use crate::body::ProxyBody;
use crate::error::Error;
use crate::retrieval::{rewrite, search};
use crate::routes::PathParams;

/// Poll interval suggested to the SDKs' `create_and_poll` helpers while files ingest.
const POLL_HINT_MS: u32 = 500;

fn vs_id(params: &PathParams) -> Result<String, Error> {
    let id = params.get("vector_store_id").unwrap_or_default();
    check_id("vector_store_id", id, "vs_")?;
    Ok(id.to_owned())
}

fn respond(value: &serde_json::Value) -> Response<ProxyBody> {
    common::with_poll_hint(common::json_response(StatusCode::OK, value), POLL_HINT_MS)
}

pub async fn create(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    _params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let fields = common::json_body(req, &state.config).await?;
    let new = types::parse_create(fields)?;
    let vs = service::create(state, &caller, new).await?;
    Ok(respond(&types::render_store(&vs)))
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
        .vector_stores
        .list_vector_stores(&caller.tenant, &p.query)
        .await?;
    let mut items = Vec::with_capacity(page.items.len());
    for vs in page.items {
        items.push(service::derive(state, &caller.store, &caller.tenant, vs).await?);
    }
    let page = crate::store::Page {
        items,
        has_more: page.has_more,
    };
    Ok(common::list_response(&page, |v| &v.id, types::render_store))
}

pub async fn retrieve(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let id = vs_id(&params)?;
    let vs = service::load(state, &caller.store, &caller.tenant, &id).await?;
    Ok(respond(&types::render_store(&vs)))
}

pub async fn modify(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let id = vs_id(&params)?;
    let fields = common::json_body(req, &state.config).await?;
    let changes = types::parse_modify(fields)?;
    let vs = service::modify(state, &caller.store, &caller.tenant, &id, changes).await?;
    Ok(respond(&types::render_store(&vs)))
}

pub async fn delete(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let id = vs_id(&params)?;
    if !service::delete(state, &caller.store, &caller.tenant, &id).await? {
        return Err(service::not_found(&id));
    }
    Ok(common::deleted(&id, "vector_store.deleted"))
}

pub async fn search(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let id = vs_id(&params)?;
    let fields = common::json_body(req, &state.config).await?;
    let mut s = types::parse_search(fields)?;
    let vs = service::load(state, &caller.store, &caller.tenant, &id).await?;
    service::check_not_expired(&vs, state.clock.now())?;
    if s.rewrite_query {
        s.queries = rewrite::rewrite_all(state, &caller, &s.queries).await?;
    }
    let hits = search::search_many(
        state,
        &caller,
        std::slice::from_ref(&vs.id),
        &s.queries,
        s.max_num_results,
        s.ranking.as_ref(),
        s.filters.as_ref(),
    )
    .await?;
    service::touch(state, &caller.store, &caller.tenant, &vs.id).await?;
    Ok(common::json_response(
        StatusCode::OK,
        &types::render_search(&s.queries, &hits),
    ))
}
