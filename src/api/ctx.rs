//! The request context every intercepted handler starts from: the caller (resolved once, by
//! `dispatch`), the checked path ids, the query, and the bounded JSON body; and [`Reply`],
//! what every handler returns. Handlers then only call their service and render.

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use crate::api::common::{self, ListParams};
use crate::api::fields::Fields;
use crate::api::validate::ApiVersion;
use crate::app::AppState;
use crate::body::ProxyBody;
use crate::error::Error;
use crate::routes::PathParams;
use crate::tenancy::Caller;

/// What every handler answers: a response, or an error rendered in OpenAI's shape.
pub type Reply = Result<Response<ProxyBody>, Error>;

/// 200 with the JSON-encoded value.
pub fn ok_json<T: Serialize + ?Sized>(value: &T) -> Reply {
    Ok(common::json_response(StatusCode::OK, value))
}

/// One intercepted request, with its caller already resolved.
pub struct Ctx<'a> {
    pub state: &'a Arc<AppState>,
    pub caller: Caller,
    head: Parts,
    /// Taken by the first read; `None` afterwards.
    body: Option<Incoming>,
    params: PathParams,
}

impl<'a> Ctx<'a> {
    /// Resolves the caller first, as every handler did: a request nobody may make is not
    /// looked at further.
    pub async fn new(
        state: &'a Arc<AppState>,
        req: Request<Incoming>,
        params: PathParams,
    ) -> Result<Ctx<'a>, Error> {
        let caller = state.caller(req.headers()).await?;
        let (head, body) = req.into_parts();
        Ok(Ctx {
            state,
            caller,
            head,
            body: Some(body),
            params,
        })
    }

    /// The caller's API version (v1 or v2 wire shapes).
    pub fn version(&self) -> ApiVersion {
        self.caller.version
    }

    /// A path parameter as matched, unchecked (empty when the route has none by that name).
    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).unwrap_or_default()
    }

    /// A path id, checked for its prefix before any lookup, as OpenAI does.
    pub fn id(&self, name: &str, prefix: &str) -> Result<String, Error> {
        let id = self.param(name);
        common::check_id(name, id, prefix)?;
        Ok(id.to_owned())
    }

    pub fn query(&self) -> Option<&str> {
        self.head.uri.query()
    }

    /// The standard list parameters: 20 by default, at most 100, `before` allowed.
    pub fn list_params(&self) -> Result<ListParams, Error> {
        ListParams::parse(self.query(), 20, 100, true)
    }

    /// The whole body, under the configured JSON limit and idle timeout.
    pub async fn body(&mut self) -> Result<Bytes, Error> {
        let body = self
            .body
            .take()
            .ok_or_else(|| Error::internal("the request body was already read"))?;
        let config = &self.state.config;
        common::read_body(
            body,
            config.limits.max_json_body_bytes,
            config.body_read_timeout,
        )
        .await
    }

    /// The body as a JSON object (empty body: empty object).
    pub async fn json(&mut self) -> Result<Fields, Error> {
        let bytes = self.body().await?;
        common::parse_object(&bytes)
    }

    /// The request as it came, for handlers that forward it or read it themselves (uploads).
    pub fn into_request(self) -> Result<(Caller, Request<Incoming>), Error> {
        let body = self
            .body
            .ok_or_else(|| Error::internal("the request body was already read"))?;
        Ok((self.caller, Request::from_parts(self.head, body)))
    }
}
