//! `/v1/files`: upload, list, retrieve, delete and download.
//!
//! Files of purpose `assistants`, `vision` and `user_data` live here; `batch`, `fine-tune` and
//! `evals` uploads go to the upstream (see `upload`). Retrieve, delete and download look here
//! first and forward on a local miss, since the upstream may own the id; the list merges both
//! sides (see `list`).

pub mod list;
pub mod service;
pub mod upload;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::api::common;
use crate::api::ctx::{Ctx, Reply};
use crate::app::AppState;
use crate::body::ProxyBody;
use crate::error::Error;
use crate::tenancy::Caller;

pub use list::list;
pub use upload::create;

/// Sends a request the proxy does not own to the upstream, untouched.
async fn forward(state: &AppState, req: Request<Incoming>) -> Response<ProxyBody> {
    let req = req.map(|b| b.map_err(Into::into).boxed_unsync());
    state.forwarder.forward_request(req).await
}

/// Forwards the context's request as it came.
async fn forward_ctx(ctx: Ctx<'_>) -> Reply {
    let state = ctx.state;
    let (_, req) = ctx.into_request()?;
    Ok(forward(state, req).await)
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

pub async fn retrieve(ctx: Ctx<'_>) -> Reply {
    match local(ctx.state, &ctx.caller, ctx.param("file_id")).await? {
        Some(f) => common::ok(&f),
        None => forward_ctx(ctx).await,
    }
}

pub async fn delete(ctx: Ctx<'_>) -> Reply {
    let id = ctx.param("file_id");
    let caller = &ctx.caller;
    if local(ctx.state, caller, id).await?.is_some()
        && service::delete(ctx.state, &caller.store, &caller.tenant, id).await?
    {
        // OpenAI answers `object: "file"` here, not `file.deleted`.
        return Ok(common::deleted(id, "file"));
    }
    forward_ctx(ctx).await
}

pub async fn content(ctx: Ctx<'_>) -> Reply {
    let Some(f) = local(ctx.state, &ctx.caller, ctx.param("file_id")).await? else {
        return forward_ctx(ctx).await;
    };
    if service::PRIVATE_PURPOSES.contains(&f.purpose.as_str()) {
        return Err(Error::invalid(
            format!("Not allowed to download files of purpose: {}", f.purpose),
            None,
        ));
    }
    Ok(service::content_response(
        &ctx.caller.store,
        &ctx.caller.tenant,
        &f,
    ))
}
