//! The stand-in's two mutual-TLS services: the metadata service and the SNI proxy.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::Shared;

/// TLS that requires a client certificate signed by the stand-in's CA (as Astra does).
pub fn server_config(
    ca: &rcgen::Certificate,
    cert: &rcgen::Certificate,
    key: &rcgen::KeyPair,
) -> TlsAcceptor {
    // Named rather than the process default (rustls panics if it has to guess); aws-lc-rs, the
    // one provider the proxy compiles.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// `GET /metadata` → where the nodes are.
pub async fn serve_metadata(listener: TcpListener, tls: TlsAcceptor, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let tls = tls.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else {
                return;
            };
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let shared = shared.clone();
                async move {
                    shared.counters.metadata.fetch_add(1, Ordering::Relaxed);
                    let resp = if req.uri().path() == "/metadata" {
                        let body = json!({
                            "version": 1,
                            "region": "local",
                            "contact_info": {
                                "type": "sni_proxy",
                                "local_dc": shared.local_dc,
                                "contact_points": [shared.host_id],
                                "sni_proxy_address": format!("localhost:{}", shared.sni_addr.port()),
                            }
                        });
                        Response::new(Full::new(Bytes::from(body.to_string())))
                    } else {
                        Response::builder()
                            .status(404)
                            .body(Full::new(Bytes::new()))
                            .unwrap()
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Routes each mutual-TLS connection by its SNI (a host id) to that node.
pub async fn serve_sni(listener: TcpListener, tls: TlsAcceptor, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let tls = tls.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else {
                shared.counters.sni_refused.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let sni = stream.get_ref().1.server_name().map(str::to_owned);
            if sni.as_deref() != Some(shared.host_id.as_str()) {
                shared.counters.sni_refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            shared
                .counters
                .sni_connections
                .fetch_add(1, Ordering::Relaxed);
            let Ok(node) = TcpStream::connect(shared.node).await else {
                return;
            };
            let _ = node.set_nodelay(true);
            let (client_r, client_w) = tokio::io::split(stream);
            let (node_r, node_w) = node.into_split();
            let up = gateway(client_r, node_w, shared.clone());
            let down = copy(node_r, client_w);
            let _ = tokio::join!(up, down);
        });
    }
}

async fn copy(mut r: impl AsyncRead + Unpin, mut w: impl AsyncWrite + Unpin) {
    let _ = tokio::io::copy(&mut r, &mut w).await;
    let _ = w.shutdown().await;
}

/// CQL v4 frame header: version, flags, stream (2), opcode, body length (4).
const HEADER: usize = 9;
const AUTH_RESPONSE: u8 = 0x0F;

/// Client → node, frame by frame: a SASL PLAIN `AUTH_RESPONSE` whose password is a token the
/// stand-in accepts is rewritten to the node's password (Astra's gateway checks tokens; the
/// node has one `token` role). Every other frame passes unchanged.
async fn gateway(
    mut client: impl AsyncRead + Unpin,
    mut node: impl AsyncWrite + Unpin,
    shared: Arc<Shared>,
) {
    let mut header = [0u8; HEADER];
    loop {
        if client.read_exact(&mut header).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
        let mut body = vec![0u8; len];
        if client.read_exact(&mut body).await.is_err() {
            break;
        }
        if header[4] == AUTH_RESPONSE
            && let Some(rewritten) = rewrite_login(&body, &shared)
        {
            body = rewritten;
            header[5..9].copy_from_slice(&(body.len() as u32).to_be_bytes());
        }
        if node.write_all(&header).await.is_err() || node.write_all(&body).await.is_err() {
            break;
        }
    }
    let _ = node.shutdown().await;
}

/// `[bytes]` holding `authzid \0 user \0 password`.
fn rewrite_login(body: &[u8], shared: &Shared) -> Option<Vec<u8>> {
    let n = i32::from_be_bytes(body.get(..4)?.try_into().ok()?);
    let sasl = body.get(4..4 + usize::try_from(n).ok()?)?;
    let parts: Vec<&[u8]> = sasl.split(|b| *b == 0).collect();
    let [authzid, user, password] = parts.as_slice() else {
        return None;
    };
    let password = std::str::from_utf8(password).ok()?;
    if *user != b"token" || !shared.cql_accepts(password) {
        return None;
    }
    let node_password = super::node_password();
    let mut sasl = Vec::new();
    sasl.extend_from_slice(authzid);
    sasl.push(0);
    sasl.extend_from_slice(user);
    sasl.push(0);
    sasl.extend_from_slice(node_password.as_bytes());
    let mut out = (sasl.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&sasl);
    Some(out)
}
