//! The one pooled HTTP client to the upstream, shared by the forwarder and the proxy's own
//! calls (chat completions, embeddings), plus the upstream base URL it targets.
//!
//! Built once at start-up: a per-request client would pay TCP and TLS on every call.

pub mod chat;
mod errors;
pub mod pool;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, Uri, uri::PathAndQuery};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus_client::metrics::counter::Counter;

use crate::body::ProxyBody;
use crate::config::UpstreamConfig;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::tls::Roots;
pub use errors::{ClientBodyError, classify, head_timeout_error};
pub use pool::{SendError, UpstreamBody};

/// The upstream as every part of the proxy reaches it: the pooled client, where it points,
/// and the two waits every exchange is bounded by (the answer's head, then the silence
/// allowed between two body frames). Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    client: UpstreamClient,
    base: UpstreamBase,
    head_timeout: Duration,
    idle_timeout: Duration,
    metrics: Metrics,
}

impl Upstream {
    /// The client and base from the configuration (connections counted in `metrics`).
    pub fn new(cfg: &UpstreamConfig, metrics: Metrics) -> Result<Upstream, String> {
        Ok(Upstream {
            client: build_client(cfg, metrics.upstream_connections.clone())?,
            base: UpstreamBase::new(&cfg.url)?,
            head_timeout: cfg.response_head_timeout,
            idle_timeout: cfg.idle_timeout,
            metrics,
        })
    }

    pub fn base(&self) -> &UpstreamBase {
        &self.base
    }

    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The longest silence allowed between two frames of an upstream body
    /// (`upstream.idle_timeout_seconds`), for forwarded answers and the proxy's own calls.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Sends a request over the pool within the response-head timeout: forwarded requests
    /// and the proxy's own calls (chat completions, embeddings) alike.
    pub async fn send(&self, req: Request<ProxyBody>) -> Result<Response<UpstreamBody>, Error> {
        self.metrics.upstream_requests.inc();
        let started = Instant::now();
        let result = tokio::time::timeout(self.head_timeout, self.client.request(req)).await;
        self.metrics.observe_upstream_head(started.elapsed());
        match result {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(&e, self.base.authority())),
            Err(_) => Err(head_timeout_error(self.base.authority(), self.head_timeout)),
        }
    }
}

/// The connector stack: TCP (nodelay, connect timeout) → TLS (rustls) → a counter of new
/// connections, which is how pool reuse becomes visible in `/metrics`.
pub type Connector = CountingConnector<HttpsConnector<HttpConnector>>;

/// The client every upstream request goes through: the proxy's own HTTP/1.1 pool, or, when
/// `upstream.http2` lets the upstream choose HTTP/2 by ALPN, hyper-util's client (which
/// multiplexes h2 and pools both protocols).
#[derive(Clone)]
pub enum UpstreamClient {
    Http1(pool::Http1Pool),
    Negotiated(Box<Client<Connector, ProxyBody>>),
}

impl UpstreamClient {
    /// Closes the pool's connections (the proxy's own pool only; hyper-util's client closes
    /// its connections when dropped).
    pub async fn close(&self) {
        if let UpstreamClient::Http1(pool) = self {
            pool.close().await;
        }
    }

    /// The HTTP/1.1 pool's connector (TCP, TLS with the configured roots, the connections
    /// counter), for the HTTP/1 relay to dial the same way; None when the upstream may speak h2.
    pub fn http1_connector(&self) -> Option<Connector> {
        match self {
            UpstreamClient::Http1(pool) => Some(pool.connector()),
            UpstreamClient::Negotiated(_) => None,
        }
    }

    /// Sends a request with an absolute URI (from [`UpstreamBase::uri_for`]) or one from
    /// [`UpstreamBase::forwarded_uri`].
    pub async fn request(
        &self,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        match self {
            UpstreamClient::Http1(pool) => {
                // On its own connection, an HTTP/1.1 request names only the path (origin
                // form); the upstream's authority travels in `Host`.
                if req.uri().scheme().is_some()
                    && let Some(pq) = req.uri().path_and_query().cloned()
                {
                    *req.uri_mut() = Uri::from(pq);
                }
                pool.send(req).await
            }
            UpstreamClient::Negotiated(client) => match client.request(req).await {
                Ok(resp) => Ok(resp.map(UpstreamBody::unpooled)),
                Err(e) if e.is_connect() => Err(SendError::Connect(Box::new(e))),
                Err(e) => Err(SendError::Exchange(Box::new(e))),
            },
        }
    }
}

/// The stream a [`Connector`] opens: TCP, or TLS over it for an https upstream.
pub type ConnectorStream =
    hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>;

/// Opens one connection to `target` (scheme and authority) through `connector`.
pub async fn dial(connector: &Connector, target: &Uri) -> Result<ConnectorStream, SendError> {
    use tower_service::Service;
    let mut connector = connector.clone();
    std::future::poll_fn(|cx| connector.poll_ready(cx))
        .await
        .map_err(SendError::Connect)?;
    connector
        .call(target.clone())
        .await
        .map_err(SendError::Connect)
}

/// Counts every connection the pool decides to open.
#[derive(Clone)]
pub struct CountingConnector<C> {
    inner: C,
    opened: Counter,
}

impl<C> tower_service::Service<Uri> for CountingConnector<C>
where
    C: tower_service::Service<Uri>,
{
    type Response = C::Response;
    type Error = C::Error;
    type Future = C::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        self.opened.inc();
        self.inner.call(uri)
    }
}

/// Where requests go: scheme and authority of the upstream plus an optional base path.
#[derive(Clone, Debug)]
pub struct UpstreamBase {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// Path prefix without a trailing slash ("" for a bare origin).
    base_path: Arc<str>,
    /// The `Host` header every upstream request carries (CDNs route by it).
    pub host: HeaderValue,
}

impl UpstreamBase {
    pub fn new(url: &Uri) -> Result<UpstreamBase, String> {
        let scheme = url.scheme().cloned().ok_or("upstream URL has no scheme")?;
        let authority = url.authority().cloned().ok_or("upstream URL has no host")?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        Ok(UpstreamBase {
            scheme,
            authority,
            base_path: url.path().trim_end_matches('/').into(),
            host,
        })
    }

    /// The absolute URI for a request's path and query, byte for byte.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(self.upstream_path(path_and_query)?)
            .build()
    }

    /// The URI a forwarded request goes out with, for the client that will send it: origin form
    /// (path and query) for the proxy's own HTTP/1.1 pool, absolute for hyper-util's client.
    /// An HTTP/1 request's own origin-form URI is reused as it is when no base path is added.
    pub fn forwarded_uri(&self, uri: Uri, client: &UpstreamClient) -> Result<Uri, http::Error> {
        let origin_form = matches!(client, UpstreamClient::Http1(_));
        if origin_form && self.base_path.is_empty() && uri.scheme().is_none() {
            return Ok(uri);
        }
        let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
        if origin_form {
            return Ok(Uri::from(self.upstream_path(pq)?));
        }
        self.uri_for(pq)
    }

    /// The upstream's base path followed by a request's path and query.
    fn upstream_path(&self, path_and_query: &str) -> Result<PathAndQuery, http::Error> {
        Ok(if self.base_path.is_empty() {
            PathAndQuery::try_from(path_and_query)?
        } else {
            PathAndQuery::try_from(format!("{}{}", self.base_path, path_and_query))?
        })
    }

    /// The path prefixed to every request's ("" for a bare origin; no trailing slash).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// Scheme and authority alone: what a connector dials.
    pub fn origin(&self) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query("/")
            .build()
    }

    pub fn authority(&self) -> &str {
        self.authority.as_str()
    }
}

/// Builds the shared client from the configuration.
pub fn build_client(cfg: &UpstreamConfig, opened: Counter) -> Result<UpstreamClient, String> {
    if !cfg.http2 {
        // An HTTP/1.1 pool by default: one h2 connection would queue new requests behind long
        // streams once the server's stream limit is reached (hyper #2197).
        let (builder, http) = connector_parts(cfg)?;
        let connector = CountingConnector {
            inner: builder.enable_http1().wrap_connector(http),
            opened,
        };
        let target = UpstreamBase::new(&cfg.url)?
            .origin()
            .map_err(|e| e.to_string())?;
        return Ok(UpstreamClient::Http1(pool::Http1Pool::new(
            connector,
            target,
            cfg.pool_max_idle_per_host,
            cfg.pool_idle_timeout,
        )));
    }
    let (builder, http) = connector_parts(cfg)?;
    let https = builder.enable_all_versions().wrap_connector(http);

    let mut client = Client::builder(TokioExecutor::new());
    client
        // Without a timer the idle timeout silently never fires.
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(cfg.pool_idle_timeout)
        // An uncapped pool keeps one idle socket per past concurrent request.
        .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
        .http2_keep_alive_interval(Some(std::time::Duration::from_secs(30)))
        .timer(TokioTimer::new());
    let connector = CountingConnector {
        inner: https,
        opened,
    };
    Ok(UpstreamClient::Negotiated(Box::new(
        client.build(connector),
    )))
}

/// TLS settings (roots from the configuration) and the TCP connector under them.
fn connector_parts(
    cfg: &UpstreamConfig,
) -> Result<
    (
        hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsProtocols1>,
        HttpConnector,
    ),
    String,
> {
    let mut sources = vec![Roots::Mozilla];
    if cfg.native_roots {
        sources.push(Roots::Platform);
    }
    if let Some(path) = &cfg.extra_ca_file {
        sources.push(Roots::PemFile(path));
    }
    let tls = crate::tls::client_config(crate::tls::root_store(&sources)?)?;

    let mut http = HttpConnector::new();
    // SSE events must leave as soon as they arrive; Nagle would hold small writes back.
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_keepalive(Some(std::time::Duration::from_secs(60)));
    http.enforce_http(false);

    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    Ok((builder, http))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_keeps_path_and_query_bytes() {
        let base = UpstreamBase::new(&"https://api.openai.com".parse().unwrap()).unwrap();
        let u = base.uri_for("/v1/x%2Fy?a=%20b&a=c").unwrap();
        assert_eq!(u.to_string(), "https://api.openai.com/v1/x%2Fy?a=%20b&a=c");
        assert_eq!(base.host, "api.openai.com");
    }

    #[test]
    fn forwarded_uri_takes_the_form_its_client_sends() {
        let cfg = |url: &str| {
            let args = crate::config::ServeArgs::default();
            let mut c = crate::config::Config::resolve(&args, Default::default()).unwrap();
            c.upstream.url = url.parse().unwrap();
            c.upstream
        };
        let pool = build_client(&cfg("http://127.0.0.1:9000"), Counter::default()).unwrap();
        let base = UpstreamBase::new(&"http://127.0.0.1:9000".parse().unwrap()).unwrap();
        let origin: Uri = "/v1/x%2Fy?a=%20b".parse().unwrap();
        let u = base.forwarded_uri(origin.clone(), &pool).unwrap();
        assert_eq!(u.to_string(), "/v1/x%2Fy?a=%20b");
        // An absolute-form request target (or an h2 request) keeps only its path and query.
        let absolute: Uri = "http://elsewhere/v1/m?q=1".parse().unwrap();
        assert_eq!(base.forwarded_uri(absolute, &pool).unwrap(), "/v1/m?q=1");

        let based = UpstreamBase::new(&"http://127.0.0.1:9000/openai".parse().unwrap()).unwrap();
        let u = based.forwarded_uri(origin.clone(), &pool).unwrap();
        assert_eq!(u.to_string(), "/openai/v1/x%2Fy?a=%20b");

        let mut h2 = cfg("http://127.0.0.1:9000/openai");
        h2.http2 = true;
        let negotiated = build_client(&h2, Counter::default()).unwrap();
        let u = based.forwarded_uri(origin, &negotiated).unwrap();
        assert_eq!(
            u.to_string(),
            "http://127.0.0.1:9000/openai/v1/x%2Fy?a=%20b"
        );
    }

    #[test]
    fn base_path_is_prefixed() {
        let base = UpstreamBase::new(&"http://127.0.0.1:9000/openai/".parse().unwrap()).unwrap();
        let u = base.uri_for("/v1/models").unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:9000/openai/v1/models");
        assert_eq!(base.host, "127.0.0.1:9000");
    }
}
