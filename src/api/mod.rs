//! Local handlers, one module per resource; `dispatch` maps a resolved endpoint to its handler.
//! Handlers are thin: decode, call the service, encode.

pub mod ops;

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::ProxyBody;
use crate::error::Error;
use crate::routes::{Endpoint, PathParams};
use crate::server::AppState;

pub async fn dispatch(
    endpoint: Endpoint,
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    let _ = (&req, &params);
    match endpoint {
        Endpoint::Healthz => Ok(ops::healthz()),
        Endpoint::Readyz => Ok(ops::readyz(state).await),
        Endpoint::Metrics => Ok(ops::metrics(state)),
    }
}
