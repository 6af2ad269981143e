//! `/v1/files`: upload, list, retrieve, delete and download.
//!
//! Files of purpose `assistants`, `vision` and `user_data` live here; `batch`, `fine-tune` and
//! `evals` uploads go to the upstream (see `upload`). Retrieve, delete and download look here
//! first and forward on a local miss, since the upstream may own the id; the list merges both
//! sides (see `list`).

pub mod list;
pub mod service;
pub mod upload;

use std::sync::Arc;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::api::common;
use crate::app::AppState;
use crate::body::ProxyBody;
use crate::error::Error;
use crate::routes::PathParams;
use crate::tenancy::Caller;

pub use list::list;
pub use upload::create;

fn file_id(params: &PathParams) -> String {
    params.get("file_id").unwrap_or_default().to_owned()
}

/// Sends a request the proxy does not own to the upstream, untouched.
async fn forward(state: &AppState, req: Request<Incoming>) -> Response<ProxyBody> {
    let req = req.map(|b| b.map_err(Into::into).boxed_unsync());
    state.forwarder.forward_request(req).await
}

/// The local file, or `None` when the request should go upstream (ids this proxy never
/// issues are not even looked up).
async fn local(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Option<crate::model::FileObject>, Error> {
    if !id.starts_with("file-") {
        return Ok(None);
    }
    service::find(state, &caller.store, &caller.tenant, id).await
}

pub async fn retrieve(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    match local(state, &caller, &file_id(&params)).await? {
        Some(f) => common::ok(&f),
        None => Ok(forward(state, req).await),
    }
}

pub async fn delete(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let id = file_id(&params);
    if local(state, &caller, &id).await?.is_some()
        && service::delete(state, &caller.store, &caller.tenant, &id).await?
    {
        // OpenAI answers `object: "file"` here, not `file.deleted`.
        return Ok(common::deleted(&id, "file"));
    }
    Ok(forward(state, req).await)
}

pub async fn content(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let caller = state.caller(req.headers()).await?;
    let Some(f) = local(state, &caller, &file_id(&params)).await? else {
        return Ok(forward(state, req).await);
    };
    if service::PRIVATE_PURPOSES.contains(&f.purpose.as_str()) {
        return Err(Error::invalid(
            format!("Not allowed to download files of purpose: {}", f.purpose),
            None,
        ));
    }
    Ok(service::content_response(&caller.store, &caller.tenant, &f))
}
