//! The proxy's own operational endpoints: liveness, readiness (store reachable) and metrics.

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::app::AppState;
use crate::body::{self, ProxyBody};
use crate::error::Error;

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(body::json(&value));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Serving: the process accepts and answers requests.
pub async fn healthz(_state: &AppState) -> Result<Response<ProxyBody>, Error> {
    Ok(json_response(StatusCode::OK, json!({"status": "ok"})))
}

/// Ready: the store answers. Load balancers stop routing intercepted traffic here otherwise.
pub async fn readyz(state: &AppState) -> Result<Response<ProxyBody>, Error> {
    Ok(match state.store.health.ping().await {
        Ok(()) => json_response(StatusCode::OK, json!({"status": "ready", "store": "ok"})),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "unavailable", "store": e.to_string()}),
            )
        }
    })
}

pub async fn metrics(state: &AppState) -> Result<Response<ProxyBody>, Error> {
    let mut resp = Response::new(body::full(state.metrics.render()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(resp)
}
