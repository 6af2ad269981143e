//! The one pooled HTTP client to the upstream, shared by the forwarder and the proxy's own
//! calls (chat completions, embeddings), plus the upstream base URL it targets.
//!
//! Built once at start-up: a per-request client would pay TCP and TLS on every call.

pub mod chat;

use std::fs;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Uri, uri::PathAndQuery};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::body::ProxyBody;
use crate::config::UpstreamConfig;

/// The connector stack: TCP (nodelay, connect timeout) → TLS (rustls) → a counter of new
/// connections, which is how pool reuse becomes visible in `/metrics`.
pub type Connector = CountingConnector<HttpsConnector<HttpConnector>>;
pub type UpstreamClient = Client<Connector, ProxyBody>;

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
        let pq = if self.base_path.is_empty() {
            PathAndQuery::try_from(path_and_query)?
        } else {
            PathAndQuery::try_from(format!("{}{}", self.base_path, path_and_query))?
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }

    pub fn authority(&self) -> &str {
        self.authority.as_str()
    }
}

/// Builds the shared client from the configuration.
pub fn build_client(cfg: &UpstreamConfig, opened: Counter) -> Result<UpstreamClient, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = root_store(cfg)?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let mut http = HttpConnector::new();
    // SSE events must leave as soon as they arrive; Nagle would hold small writes back.
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_keepalive(Some(std::time::Duration::from_secs(60)));
    http.enforce_http(false);

    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let https = if cfg.http2 {
        builder.enable_all_versions().wrap_connector(http)
    } else {
        // An HTTP/1.1 pool by default: one h2 connection would queue new requests behind long
        // streams once the server's stream limit is reached (hyper #2197).
        builder.enable_http1().wrap_connector(http)
    };

    let mut client = Client::builder(TokioExecutor::new());
    client
        // Without a timer the idle timeout silently never fires.
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(cfg.pool_idle_timeout)
        // An uncapped pool keeps one idle socket per past concurrent request.
        .pool_max_idle_per_host(cfg.pool_max_idle_per_host);
    if cfg.http2 {
        client
            .http2_keep_alive_interval(Some(std::time::Duration::from_secs(30)))
            .timer(TokioTimer::new());
    }
    Ok(client.build(CountingConnector {
        inner: https,
        opened,
    }))
}

fn root_store(cfg: &UpstreamConfig) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if cfg.native_roots {
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(error = %e, "skipping an unreadable platform root certificate");
        }
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, "platform root certificates added");
    }
    if let Some(path) = &cfg.extra_ca_file {
        let pem = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
    }
    Ok(roots)
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
    fn base_path_is_prefixed() {
        let base = UpstreamBase::new(&"http://127.0.0.1:9000/openai/".parse().unwrap()).unwrap();
        let u = base.uri_for("/v1/models").unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:9000/openai/v1/models");
        assert_eq!(base.host, "127.0.0.1:9000");
    }
}
