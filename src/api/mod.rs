//! Local handlers, one module per resource; `dispatch` (expanded from the route list in
//! `routes::endpoints!`) maps a resolved endpoint to its handler. Handlers are thin: they take
//! a [`ctx::Ctx`], call their service, and render.

pub mod assistants;
pub mod common;
pub mod ctx;
pub mod fields;
pub mod files;
pub mod messages;
pub mod ops;
pub mod runs;
pub mod threads;
pub mod validate;
pub mod vector_stores;

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::app::AppState;
use crate::body::ProxyBody;
use crate::error::Error;
use crate::routes::{Endpoint, PathParams, endpoints};
use ctx::Ctx;

/// Calls one endpoint's handler: the proxy's own endpoints take only the state, the rest a
/// [`Ctx`] (which resolves the caller first).
macro_rules! call_handler {
    (Own, $handler:path, $state:ident, $req:ident, $params:ident) => {
        $handler($state).await
    };
    ($scope:ident, $handler:path, $state:ident, $req:ident, $params:ident) => {
        $handler(Ctx::new($state, $req, $params).await?).await
    };
}

/// Expands the route list (`routes::endpoints!`) into `dispatch`.
macro_rules! dispatch_table {
    ($($name:ident: $method:ident $pattern:literal => $handler:path, $scope:ident;)*) => {
        /// Answers a resolved local endpoint with its handler.
        pub async fn dispatch(
            endpoint: Endpoint,
            state: &Arc<AppState>,
            req: Request<Incoming>,
            params: PathParams,
        ) -> Result<Response<ProxyBody>, Error> {
            // Before anything else, as OpenAI does: a request in the wrong shape is not looked at.
            if endpoint.is_assistants_beta() {
                validate::ApiVersion::required(req.headers())?;
            }
            match endpoint {
                $(Endpoint::$name => call_handler!($scope, $handler, state, req, params),)*
            }
        }
    };
}
endpoints!(dispatch_table);
