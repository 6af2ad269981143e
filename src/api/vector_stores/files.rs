//! `/v1/vector_stores/{vector_store_id}/files`: add, list, retrieve, update attributes,
//! remove, and read back the parsed content.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{respond, service, types, vs_id};
use crate::api::common::{self, ListParams, check_id};
use crate::app::AppState;
use crate::body::ProxyBody;
use crate::error::Error;
use crate::retrieval::ingest;
use crate::routes::PathParams;
use crate::store::{Page, VsFileFilter};

fn file_id(params: &PathParams) -> Result<String, Error> {
    let id = params.get("file_id").unwrap_or_default();
    check_id("file_id", id, "file-")?;
    Ok(id.to_owned())
}

pub async fn create(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let vs = vs_id(&params)?;
    let fields = common::json_body(req, &state.config).await?;
    let new = types::parse_add_file(fields)?;
    let store = service::load(state, &caller.store, &caller.tenant, &vs).await?;
    service::check_not_expired(&store, state.clock.now())?;
    let f = service::add_file(
        state,
        &caller,
        &vs,
        &new.file_id,
        new.chunking_strategy,
        new.attributes,
        None,
    )
    .await?;
    Ok(respond(&types::render_file(&f)))
}

/// Lists a store's files (or a batch's, with `batch_id`), repairing dead ingestions first.
pub async fn list_in(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    vs: &str,
    batch_id: Option<String>,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let p = ListParams::parse(req.uri().query(), 20, 100, true)?;
    let status = types::status_filter(&p)?;
    // 404 for a missing store (or batch), not an empty list.
    service::load(state, &caller.store, &caller.tenant, vs).await?;
    if let Some(b) = &batch_id {
        service::load_batch(state, &caller.store, &caller.tenant, vs, b).await?;
    }
    let filter = VsFileFilter { status, batch_id };
    let page = service::list_files(&caller.store, &caller.tenant, vs, &filter, &p.query).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for mut f in page.items {
        ingest::repair(&state.retrieval, &caller.store, &caller.tenant, &mut f).await?;
        items.push(f);
    }
    let page = Page {
        items,
        has_more: page.has_more,
    };
    Ok(common::list_response(&page, |f| &f.id, types::render_file))
}

pub async fn list(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let vs = vs_id(&params)?;
    list_in(state, req, &vs, None).await
}

pub async fn retrieve(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let vs = vs_id(&params)?;
    let id = file_id(&params)?;
    service::load(state, &caller.store, &caller.tenant, &vs).await?;
    let f = service::load_file(state, &caller.store, &caller.tenant, &vs, &id).await?;
    Ok(respond(&types::render_file(&f)))
}

pub async fn update(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let vs = vs_id(&params)?;
    let id = file_id(&params)?;
    let fields = common::json_body(req, &state.config).await?;
    let attributes = types::parse_update_file(fields)?;
    service::load(state, &caller.store, &caller.tenant, &vs).await?;
    let f =
        service::set_attributes(state, &caller.store, &caller.tenant, &vs, &id, attributes).await?;
    Ok(respond(&types::render_file(&f)))
}

pub async fn delete(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let vs = vs_id(&params)?;
    let id = file_id(&params)?;
    service::load(state, &caller.store, &caller.tenant, &vs).await?;
    if !service::remove_file(state, &caller.store, &caller.tenant, &vs, &id).await? {
        return Err(service::file_not_found(&vs, &id));
    }
    Ok(common::deleted(&id, "vector_store.file.deleted"))
}

pub async fn content(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let vs = vs_id(&params)?;
    let id = file_id(&params)?;
    service::load(state, &caller.store, &caller.tenant, &vs).await?;
    service::load_file(state, &caller.store, &caller.tenant, &vs, &id).await?;
    let chunks = caller
        .store
        .chunks
        .file_chunks(&caller.tenant, &vs, &id)
        .await?;
    let data: Vec<Value> = chunks
        .iter()
        .map(|c| json!({"type": "text", "text": c.text}))
        .collect();
    Ok(common::json_response(
        StatusCode::OK,
        &json!({
            "object": "vector_store.file_content.page",
            "data": data,
            "has_more": false,
            "next_page": null,
        }),
    ))
}
