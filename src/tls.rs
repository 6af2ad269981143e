//! TLS in one place: the one crypto provider, trust anchors, and the client and server
//! configurations every part of the proxy builds from them (the upstream client, the
//! listener, Cassandra and Astra connections, Astra's DevOps API).
//!
//! The provider is aws-lc-rs. The Cassandra driver's rustls feature turns on rustls's default
//! features, which compile aws-lc-rs whatever this crate asks for; choosing ring here would
//! compile a second provider beside it, so the proxy uses the one it gets anyway.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The crypto provider of every TLS configuration the proxy builds.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A source of trusted roots.
#[derive(Debug, Clone, Copy)]
pub enum Roots<'a> {
    /// The Mozilla roots compiled into the binary (webpki-roots).
    Mozilla,
    /// The platform's certificate store (a corporate CA, say); certificates it cannot
    /// parse are skipped with a warning.
    Platform,
    /// Every certificate of a PEM file; a file without one is an error.
    PemFile(&'a Path),
    /// Certificates already parsed (an Astra bundle's CA).
    Certs(&'a [CertificateDer<'static>]),
}

/// The roots of all `sources` together.
pub fn root_store(sources: &[Roots<'_>]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for source in sources {
        match source {
            Roots::Mozilla => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Roots::Platform => {
                let native = rustls_native_certs::load_native_certs();
                for e in &native.errors {
                    tracing::warn!(error = %e, "skipping an unreadable platform root certificate");
                }
                let (added, ignored) = roots.add_parsable_certificates(native.certs);
                tracing::debug!(added, ignored, "platform root certificates added");
            }
            Roots::PemFile(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
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
            Roots::Certs(certs) => {
                for cert in *certs {
                    roots
                        .add(cert.clone())
                        .map_err(|e| format!("CA certificate: {e}"))?;
                }
            }
        }
    }
    Ok(roots)
}

/// A client configuration trusting `roots`, without a client certificate.
pub fn client_config(roots: RootCertStore) -> Result<rustls::ClientConfig, String> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A server configuration from PEM files (a certificate chain and its key), offering `alpn`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A pooled HTTP/1 client, http or https through rustls, for the proxy's own small calls to
/// other services (Astra's DevOps API, a Jupyter gateway's REST API). Connecting is bounded
/// by `connect_timeout`; idle connections close after 30 s.
pub fn service_client(
    tls: rustls::ClientConfig,
    connect_timeout: std::time::Duration,
) -> hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_come_from_each_source() {
        let mozilla = root_store(&[Roots::Mozilla]).unwrap();
        assert!(mozilla.len() > 100);
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let e = root_store(&[Roots::PemFile(&empty)]).unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let missing = dir.path().join("missing.pem");
        assert!(root_store(&[Roots::PemFile(&missing)]).is_err());
        assert!(client_config(mozilla).is_ok());
    }
}
