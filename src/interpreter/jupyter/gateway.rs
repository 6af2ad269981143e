//! The gateway's REST calls (start, interrupt, look up and delete a kernel; `GET /api`) and
//! the kernel's WebSocket channels, each bounded in time. The token goes out only in the
//! `Authorization` header; no error text built here contains it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::tls::Roots;

/// REST answers are small JSON models; anything bigger is not the gateway.
const MAX_BODY: usize = 1 << 20;
/// How much of an error body is quoted.
const QUOTED: usize = 200;
/// Kernel messages we take: a file read back (base64 of up to `file_bytes`) arrives as
/// stream chunks, so frames stay small; this only bounds a misbehaving server.
const MAX_WS_MESSAGE: usize = 64 << 20;

/// A failed delete is tried again this many times, this long apart.
const DELETE_RETRIES: u32 = 6;
const DELETE_RETRY_AFTER: Duration = Duration::from_millis(500);

/// Byte stream under the WebSocket: plain TCP or rustls.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Channels = WebSocketStream<Box<dyn Io>>;

/// Why a REST call failed.
#[derive(Debug)]
pub enum CallError {
    /// No answer (connection refused, TLS, timeout).
    Unreachable(String),
    /// 401/403 other than the kernel limit.
    Refused(String),
    /// 404: no such kernel.
    NotFound,
    /// Anything else, said as the status and a piece of the body.
    Status(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(m) | CallError::Refused(m) | CallError::Status(m) => {
                f.write_str(m)
            }
            CallError::NotFound => f.write_str("no such kernel (404)"),
        }
    }
}

/// One gateway: its base URL, the token, a pooled client.
pub struct Gateway {
    /// Base URL without a trailing slash (`http://127.0.0.1:8899`, `https://h/gateway`).
    base: String,
    host: String,
    port: u16,
    https: bool,
    tls: Option<tokio_rustls::TlsConnector>,
    token: Option<HeaderValue>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Bound on each REST call.
    call_timeout: Duration,
}

#[derive(Deserialize)]
struct KernelModel {
    id: String,
}

impl Gateway {
    pub fn new(url: &Uri, token: Option<String>, call_timeout: Duration) -> Result<Self, String> {
        let https = match url.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("the gateway URL {url} is not http:// or https://")),
        };
        let host = url
            .host()
            .ok_or_else(|| format!("the gateway URL {url} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let token = match token {
            None => None,
            Some(t) => {
                let mut v = HeaderValue::from_str(&format!("token {t}")).map_err(|_| {
                    "the gateway token holds characters a header cannot carry".to_owned()
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let roots = crate::tls::root_store(&[Roots::Mozilla, Roots::Platform])?;
        let tls_config = crate::tls::client_config(roots)?;
        let tls = https.then(|| tokio_rustls::TlsConnector::from(Arc::new(tls_config.clone())));
        let client = crate::tls::service_client(tls_config, call_timeout);
        Ok(Gateway {
            base: url.to_string().trim_end_matches('/').to_owned(),
            host,
            port,
            https,
            tls,
            token,
            client,
            call_timeout,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let uri = format!("{}{path}", self.base);
        let mut req = Request::builder().method(method).uri(&uri);
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, t.clone());
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req
            .body(body)
            .map_err(|e| CallError::Status(format!("request {uri}: {e}")))?;
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| CallError::Unreachable(format!("{uri}: {}", error_chain(&e))))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| CallError::Unreachable(format!("{uri}: reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, CallError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.call_timeout, work)
            .await
            .map_err(|_| {
                CallError::Unreachable(format!(
                    "{uri}: no answer within {} s",
                    self.call_timeout.as_secs_f32()
                ))
            })??;
        match status {
            s if s.is_success() => Ok((s, body)),
            StatusCode::NOT_FOUND => Err(CallError::NotFound),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if !is_kernel_limit(&body) => {
                Err(CallError::Refused(format!(
                    "the gateway refused the request (HTTP {status}): wrong or missing token?"
                )))
            }
            s => Err(CallError::Status(format!(
                "{uri}: HTTP {s}: {}",
                quote(&body)
            ))),
        }
    }

    /// `GET /api`: the gateway answers and takes our token.
    pub async fn check(&self) -> Result<(), CallError> {
        self.call(Method::GET, "/api", None).await.map(|_| ())
    }

    /// `POST /api/kernels` → the new kernel's id.
    pub async fn start_kernel(&self, name: &str) -> Result<String, CallError> {
        let (_, body) = self
            .call(
                Method::POST,
                "/api/kernels",
                Some(serde_json::json!({ "name": name })),
            )
            .await?;
        let m: KernelModel = serde_json::from_slice(&body).map_err(|e| {
            CallError::Status(format!("the gateway's kernel model is unreadable: {e}"))
        })?;
        if !is_kernel_id(&m.id) {
            return Err(CallError::Status(
                "the gateway answered an odd kernel id".into(),
            ));
        }
        Ok(m.id)
    }

    /// `GET /api/kernels/{id}`: Ok when the kernel still exists.
    pub async fn kernel(&self, id: &str) -> Result<(), CallError> {
        self.call(Method::GET, &format!("/api/kernels/{id}"), None)
            .await
            .map(|_| ())
    }

    pub async fn interrupt(&self, id: &str) -> Result<(), CallError> {
        self.call(Method::POST, &format!("/api/kernels/{id}/interrupt"), None)
            .await
            .map(|_| ())
    }

    /// `DELETE /api/kernels/{id}`; a kernel already gone counts as deleted. Tried again
    /// after a 5xx: jupyter_server answers 500 to a delete while it restarts a kernel that
    /// died, which is just when we delete one.
    pub async fn delete_kernel(&self, id: &str) -> Result<(), CallError> {
        let mut attempt = 0;
        loop {
            match self
                .call(Method::DELETE, &format!("/api/kernels/{id}"), None)
                .await
            {
                Ok(_) | Err(CallError::NotFound) => return Ok(()),
                Err(CallError::Status(_)) if attempt < DELETE_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(DELETE_RETRY_AFTER).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens `…/api/kernels/{id}/channels` (JSON text frames, one `channel` field each).
    pub async fn channels(&self, id: &str, session: &str) -> Result<Channels, CallError> {
        let scheme = if self.https { "wss" } else { "ws" };
        let rest = self
            .base
            .split_once("://")
            .map_or(self.base.as_str(), |(_, r)| r);
        let url = format!("{scheme}://{rest}/api/kernels/{id}/channels?session_id={session}");
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| CallError::Status(format!("{url}: {e}")))?;
        if let Some(t) = &self.token {
            req.headers_mut().insert(header::AUTHORIZATION, t.clone());
        }
        let work = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| CallError::Unreachable(format!("{url}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let io: Box<dyn Io> = match &self.tls {
                Some(tls) => {
                    let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                        .map_err(|e| CallError::Unreachable(format!("{url}: {e}")))?;
                    Box::new(
                        tls.connect(name, tcp)
                            .await
                            .map_err(|e| CallError::Unreachable(format!("{url}: TLS: {e}")))?,
                    )
                }
                None => Box::new(tcp),
            };
            let config = WebSocketConfig::default()
                .max_message_size(Some(MAX_WS_MESSAGE))
                .max_frame_size(Some(MAX_WS_MESSAGE));
            tokio_tungstenite::client_async_with_config(req, io, Some(config))
                .await
                .map(|(ws, _)| ws)
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Http(r) => match r.status() {
                        StatusCode::NOT_FOUND => CallError::NotFound,
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                            CallError::Refused(format!(
                                "the gateway refused the kernel channels (HTTP {})",
                                r.status()
                            ))
                        }
                        s => CallError::Status(format!("{url}: HTTP {s}")),
                    },
                    e => CallError::Unreachable(format!("{url}: {e}")),
                })
        };
        tokio::time::timeout(self.call_timeout, work)
            .await
            .map_err(|_| {
                CallError::Unreachable(format!("{url}: no WebSocket within the timeout"))
            })?
    }
}

/// KG's `max_kernels` answers 403 "Resource Limit"; that is not a token problem.
fn is_kernel_limit(body: &[u8]) -> bool {
    String::from_utf8_lossy(body).contains("Resource Limit")
}

/// Kernel ids go into URL paths: only UUID-like text.
fn is_kernel_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(QUOTED);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].trim().to_owned()
}

/// hyper-util's error says only "client error (Connect)"; the cause says why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_ids_and_limits_are_recognised() {
        assert!(is_kernel_id("0b1c4f1e-8d7a-4c1f-9a55-0f6c1f3c2d11"));
        assert!(!is_kernel_id("../x"));
        assert!(!is_kernel_id(""));
        assert!(is_kernel_limit(b"{\"message\":\"Resource Limit\"}"));
        assert!(!is_kernel_limit(b"Forbidden"));
        assert_eq!(quote("é".repeat(300).as_bytes()).chars().count(), 100);
    }

    #[test]
    fn the_token_is_not_in_what_a_gateway_shows() {
        let url: Uri = "http://127.0.0.1:1".parse().unwrap();
        let g = Gateway::new(&url, Some("s3cret".into()), Duration::from_secs(1)).unwrap();
        assert_eq!(g.base(), "http://127.0.0.1:1");
        assert!(g.token.as_ref().unwrap().is_sensitive());
        assert!(Gateway::new(&url, Some("a\nb".into()), Duration::from_secs(1)).is_err());
    }
}
