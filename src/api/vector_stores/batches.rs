//! `/v1/vector_stores/{vector_store_id}/file_batches`: create, retrieve, cancel, list files.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use super::{respond, service, types, vs_id};
use crate::api::common::{self, check_id};
use crate::app::AppState;
use crate::body::ProxyBody;
use crate::error::Error;
use crate::routes::PathParams;

fn batch_id(params: &PathParams) -> Result<String, Error> {
    let id = params.get("batch_id").unwrap_or_default();
    check_id("batch_id", id, "vsfb_")?;
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
    let items = types::parse_batch(fields)?;
    let store = service::load(state, &caller.store, &caller.tenant, &vs).await?;
    service::check_not_expired(&store, state.clock.now())?;
    let b = service::create_batch(state, &caller, &vs, items).await?;
    Ok(respond(&types::render_batch(&b)))
}

pub async fn retrieve(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let vs = vs_id(&params)?;
    let id = batch_id(&params)?;
    service::load(state, &caller.store, &caller.tenant, &vs).await?;
    let b = service::load_batch(state, &caller.store, &caller.tenant, &vs, &id).await?;
    Ok(respond(&types::render_batch(&b)))
}

pub async fn cancel(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let vs = vs_id(&params)?;
    let id = batch_id(&params)?;
    service::load(state, &caller.store, &caller.tenant, &vs).await?;
    let b = service::cancel_batch(state, &caller.store, &caller.tenant, &vs, &id).await?;
    Ok(respond(&types::render_batch(&b)))
}

pub async fn list_files(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let vs = vs_id(&params)?;
    let id = batch_id(&params)?;
    super::files::list_in(state, req, &vs, Some(id)).await
}
