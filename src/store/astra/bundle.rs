//! Astra's secure connect bundle: a zip with `config.json` (the metadata service's `host` and
//! `port`, the default keyspace, the local DC), the CA that signs Astra's servers (`ca.crt`),
//! and this database's client certificate and key (`cert`, `key`). From it we build the one
//! rustls client configuration every Astra connection uses.
//!
//! Astra's servers present certificates for the bundle's `host`, but every CQL connection
//! carries a node's host id as SNI (that is how the SNI proxy routes it). So certificates are
//! checked against the bundle's `host`, whatever name the connection asked for:
//! [`BundleVerifier`] does exactly that, delegating everything else to webpki.

use std::io::Read;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::Deserialize;

/// The largest bundle accepted (real ones are a few kB; the JKS stores inside are the bulk).
pub const MAX_BUNDLE_BYTES: usize = 4 * 1024 * 1024;
/// The largest single member read from it.
const MAX_MEMBER_BYTES: u64 = 1024 * 1024;

/// What the proxy needs from a bundle. The private key stays in memory only.
pub struct Bundle {
    /// The metadata service's host name, and the name every Astra server certificate carries.
    pub host: String,
    /// The metadata service's port.
    pub port: u16,
    /// The database's default keyspace, when the bundle names one.
    pub keyspace: Option<String>,
    /// The local datacenter, when the bundle names it (the metadata service says it too).
    pub local_dc: Option<String>,
    ca: Vec<CertificateDer<'static>>,
    cert: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("keyspace", &self.keyspace)
            .field("local_dc", &self.local_dc)
            .finish_non_exhaustive()
    }
}

/// `config.json` as Astra writes it (other fields are ignored).
#[derive(Deserialize)]
struct ConfigJson {
    host: String,
    port: u16,
    #[serde(default)]
    keyspace: Option<String>,
    #[serde(default, rename = "localDC")]
    local_dc: Option<String>,
}

impl Bundle {
    /// Reads a bundle from the bytes of its zip archive.
    pub fn parse(zip_bytes: &[u8]) -> Result<Bundle, String> {
        if zip_bytes.len() > MAX_BUNDLE_BYTES {
            return Err(format!(
                "the secure connect bundle is larger than {MAX_BUNDLE_BYTES} bytes"
            ));
        }
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes))
            .map_err(|e| format!("the secure connect bundle is not a zip archive: {e}"))?;
        let mut member = |name: &str| -> Result<Vec<u8>, String> {
            let file = archive
                .by_name(name)
                .map_err(|e| format!("the secure connect bundle has no {name}: {e}"))?;
            let mut out = Vec::new();
            file.take(MAX_MEMBER_BYTES)
                .read_to_end(&mut out)
                .map_err(|e| format!("reading {name} from the secure connect bundle: {e}"))?;
            Ok(out)
        };
        let config: ConfigJson = serde_json::from_slice(&member("config.json")?)
            .map_err(|e| format!("the bundle's config.json: {e}"))?;
        let ca = certs(&member("ca.crt")?, "ca.crt")?;
        let cert = certs(&member("cert")?, "cert")?;
        let key = PrivateKeyDer::from_pem_slice(&member("key")?)
            .map_err(|e| format!("the bundle's key: {e}"))?;
        if config.host.is_empty() {
            return Err("the bundle's config.json names no host".into());
        }
        Ok(Bundle {
            host: config.host,
            port: config.port,
            keyspace: config.keyspace.filter(|k| !k.is_empty()),
            local_dc: config.local_dc.filter(|d| !d.is_empty()),
            ca,
            cert,
            key,
        })
    }

    /// The name Astra's server certificates are checked against.
    pub fn server_name(&self) -> Result<ServerName<'static>, String> {
        ServerName::try_from(self.host.clone())
            .map_err(|e| format!("the bundle's host {:?}: {e}", self.host))
    }

    /// Mutual TLS as Astra wants it: the bundle's client certificate, the bundle's CA as the
    /// only trust anchor, and server certificates checked against the bundle's `host`.
    pub fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let provider = crate::tls::provider();
        let roots = crate::tls::root_store(&[crate::tls::Roots::Certs(&self.ca)])
            .map_err(|e| format!("the bundle's {e}"))?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("the bundle's CA: {e}"))?;
        let verifier = Arc::new(BundleVerifier {
            inner,
            name: self.server_name()?,
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.cert.clone(), self.key.clone_key())
            .map_err(|e| format!("the bundle's client certificate: {e}"))?;
        Ok(Arc::new(config))
    }
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let out = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the bundle's {what}: {e}"))?;
    if out.is_empty() {
        return Err(format!("the bundle's {what} holds no certificate"));
    }
    Ok(out)
}

/// Full webpki verification (chain to the bundle's CA, validity, key usage), against the
/// bundle's host name instead of the name the connection was opened for (a host id).
#[derive(Debug)]
struct BundleVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for BundleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _requested: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut out);
        for (name, data) in members {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
        out.into_inner()
    }

    #[test]
    fn reads_a_bundle_and_builds_mutual_tls() {
        let ca = rcgen::generate_simple_self_signed(vec!["ca".into()]).unwrap();
        let client = rcgen::generate_simple_self_signed(vec!["client".into()]).unwrap();
        let config = br#"{"host":"db.example.test","port":29080,"cql_port":29042,"keyspace":"ks","localDC":"dc1","caCertLocation":"./ca.crt"}"#;
        let bytes = zip_of(&[
            ("config.json", config),
            ("ca.crt", ca.cert.pem().as_bytes()),
            ("cert", client.cert.pem().as_bytes()),
            ("key", client.signing_key.serialize_pem().as_bytes()),
        ]);
        let b = Bundle::parse(&bytes).unwrap();
        assert_eq!((b.host.as_str(), b.port), ("db.example.test", 29080));
        assert_eq!(b.keyspace.as_deref(), Some("ks"));
        assert_eq!(b.local_dc.as_deref(), Some("dc1"));
        b.tls_config().unwrap();
        // The key never shows in debug output.
        assert!(!format!("{b:?}").contains("PRIVATE"));
    }

    #[test]
    fn broken_bundles_are_explained() {
        assert!(Bundle::parse(b"not a zip").unwrap_err().contains("zip"));
        let e = Bundle::parse(&zip_of(&[("config.json", b"{}")])).unwrap_err();
        assert!(e.contains("config.json"), "{e}");
        let e = Bundle::parse(&zip_of(&[(
            "config.json",
            br#"{"host":"h","port":1}"#.as_slice(),
        )]))
        .unwrap_err();
        assert!(e.contains("ca.crt"), "{e}");
    }
}
