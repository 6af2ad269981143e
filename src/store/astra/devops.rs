//! Astra's DevOps API, the few calls the proxy makes: the secure bundle URL of a database
//! (and the bundle download itself), listing and creating databases, creating keyspaces.
//!
//! Every call carries the caller's token as `Authorization: Bearer`. The token never
//! appears in what comes back from here: error texts are built from the status and a short
//! piece of the response body, with the token masked should the body ever echo it.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Token;
use super::bundle::MAX_BUNDLE_BYTES;
use crate::tls::Roots;

/// One DevOps call (or bundle download) may take this long in all.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// JSON answers are small; anything bigger is not what we asked for.
const MAX_JSON_BYTES: usize = 8 * 1024 * 1024;
/// How much of an error body is quoted in our error message.
const QUOTED_BODY: usize = 300;

/// A DevOps API failure, classified by what the caller of the proxy can do about it.
#[derive(Debug, Clone)]
pub enum DevopsError {
    /// 401/403: the token is wrong, revoked, or lacks the permission.
    Unauthorized(String),
    /// 404: no such database for this token.
    NotFound(String),
    /// The API is unreachable, overloaded, or the database is busy (409); retry later.
    Unavailable(String),
    /// Anything else.
    Other(String),
}

impl std::fmt::Display for DevopsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DevopsError::Unauthorized(m)
            | DevopsError::NotFound(m)
            | DevopsError::Unavailable(m)
            | DevopsError::Other(m) => f.write_str(m),
        }
    }
}

/// A database as the list call shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseInfo {
    pub id: String,
    pub name: String,
    /// ACTIVE, PENDING, INITIALIZING, HIBERNATED, TERMINATING, MAINTENANCE, …
    pub status: String,
}

/// What a new database is made of.
pub struct NewDatabase<'a> {
    pub name: &'a str,
    pub keyspace: &'a str,
    pub cloud_provider: &'a str,
    pub region: &'a str,
}

/// The DevOps API client: one pooled HTTPS client for the process.
pub struct Devops {
    /// Base URL without a trailing slash, e.g. `https://api.astra.datastax.com`.
    base: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Devops {
    pub fn new(base: &Uri) -> Result<Devops, String> {
        // Bundle downloads are signed cloud-storage URLs; a platform CA store (corporate
        // proxies) is honoured too.
        let roots = crate::tls::root_store(&[Roots::Mozilla, Roots::Platform])?;
        let tls = crate::tls::client_config(roots)?;
        let client = crate::tls::service_client(tls, Duration::from_secs(10));
        Ok(Devops {
            base: base.to_string().trim_end_matches('/').to_owned(),
            client,
        })
    }

    /// `POST /v2/databases/{id}/secureBundleURL` → the (short-lived, signed) download URL.
    pub async fn secure_bundle_url(&self, token: &Token, db: &str) -> Result<String, DevopsError> {
        let path = format!("/v2/databases/{db}/secureBundleURL");
        let (_, body) = self
            .call(Method::POST, &path, token, Some(json!({})))
            .await?;
        let v: Value = parse_json(&body, "secureBundleURL")?;
        // `?all=true` answers an array; the plain call an object. Accept both.
        let entry = match &v {
            Value::Array(items) => items.first().cloned().unwrap_or(Value::Null),
            other => other.clone(),
        };
        entry["downloadURL"]
            .as_str()
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| DevopsError::Other("secureBundleURL answered no downloadURL".into()))
    }

    /// Fetches the bundle from its signed URL (no token: the URL is the credential).
    pub async fn download(&self, url: &str) -> Result<Bytes, DevopsError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| DevopsError::Other("the bundle download URL is not a URL".into()))?;
        let req = Request::get(uri)
            .body(Full::new(Bytes::new()))
            .map_err(|e| DevopsError::Other(format!("bundle request: {e}")))?;
        let (status, body) = self.send(req, MAX_BUNDLE_BYTES, None).await?;
        if !status.is_success() {
            // Signed-URL failures say nothing about the token: the URL expired or broke.
            return Err(DevopsError::Unavailable(format!(
                "downloading the secure connect bundle: HTTP {status}"
            )));
        }
        Ok(body)
    }

    /// The caller's databases that are not terminated.
    pub async fn list_databases(&self, token: &Token) -> Result<Vec<DatabaseInfo>, DevopsError> {
        #[derive(Deserialize)]
        struct Info {
            #[serde(default)]
            name: String,
        }
        #[derive(Deserialize)]
        struct Db {
            id: String,
            #[serde(default)]
            status: String,
            #[serde(default)]
            info: Option<Info>,
        }
        let (_, body) = self
            .call(
                Method::GET,
                "/v2/databases?include=nonterminated&provider=ALL&limit=200",
                token,
                None,
            )
            .await?;
        let dbs: Vec<Db> = parse_json(&body, "database list")?;
        Ok(dbs
            .into_iter()
            .map(|d| DatabaseInfo {
                id: d.id,
                name: d.info.map(|i| i.name).unwrap_or_default(),
                status: d.status,
            })
            .collect())
    }

    /// Asks for a new serverless vector database; answers its id when the API tells it
    /// (the `Location` header).
    pub async fn create_database(
        &self,
        token: &Token,
        db: &NewDatabase<'_>,
    ) -> Result<Option<String>, DevopsError> {
        let body = json!({
            "name": db.name,
            "keyspace": db.keyspace,
            "cloudProvider": db.cloud_provider,
            "region": db.region,
            "tier": "serverless",
            "capacityUnits": 1,
            "dbType": "vector",
        });
        let (location, _) = self
            .call(Method::POST, "/v2/databases", token, Some(body))
            .await?;
        Ok(location.and_then(|l| {
            l.trim_end_matches('/')
                .rsplit('/')
                .next()
                .filter(|id| super::is_database_id(id))
                .map(str::to_ascii_lowercase)
        }))
    }

    /// `POST /v2/databases/{id}/keyspaces/{name}`: Astra refuses keyspace DDL over CQL.
    pub async fn create_keyspace(
        &self,
        token: &Token,
        db: &str,
        keyspace: &str,
    ) -> Result<(), DevopsError> {
        let path = format!("/v2/databases/{db}/keyspaces/{keyspace}");
        self.call(Method::POST, &path, token, Some(json!({})))
            .await?;
        Ok(())
    }

    /// One authenticated call; answers the `Location` header and the body of a 2xx.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &Token,
        body: Option<Value>,
    ) -> Result<(Option<String>, Bytes), DevopsError> {
        let uri = format!("{}{path}", self.base);
        let auth = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
            DevopsError::Unauthorized("the Astra token is not a valid header value".into())
        })?;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(header::AUTHORIZATION, auth)
            .header(header::ACCEPT, "application/json");
        let bytes = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| DevopsError::Other(format!("DevOps request: {e}")))?;
        let mut location = None;
        let (status, body) = self.send(req, MAX_JSON_BYTES, Some(&mut location)).await?;
        if status.is_success() {
            return Ok((location, body));
        }
        let quoted: String = String::from_utf8_lossy(&body)
            .chars()
            .take(QUOTED_BODY)
            .collect::<String>()
            .replace(token.expose(), "<redacted>");
        let message = format!("Astra DevOps API {method} {path}: HTTP {status}: {quoted}");
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => DevopsError::Unauthorized(message),
            StatusCode::NOT_FOUND => DevopsError::NotFound(message),
            StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS => {
                DevopsError::Unavailable(message)
            }
            s if s.is_server_error() => DevopsError::Unavailable(message),
            _ => DevopsError::Other(message),
        })
    }

    async fn send(
        &self,
        req: Request<Full<Bytes>>,
        limit: usize,
        location: Option<&mut Option<String>>,
    ) -> Result<(StatusCode, Bytes), DevopsError> {
        let what = format!("{} {}", req.method(), req.uri().path());
        let exchange = async {
            let resp =
                self.client.request(req).await.map_err(|e| {
                    DevopsError::Unavailable(format!("Astra DevOps API {what}: {e}"))
                })?;
            let status = resp.status();
            if let Some(slot) = location {
                *slot = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
            }
            let body = Limited::new(resp.into_body(), limit)
                .collect()
                .await
                .map_err(|e| DevopsError::Unavailable(format!("Astra DevOps API {what}: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        match tokio::time::timeout(CALL_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err(DevopsError::Unavailable(format!(
                "Astra DevOps API {what}: no answer within {}s",
                CALL_TIMEOUT.as_secs()
            ))),
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, DevopsError> {
    serde_json::from_slice(body)
        .map_err(|e| DevopsError::Other(format!("Astra DevOps API {what}: unexpected answer: {e}")))
}
