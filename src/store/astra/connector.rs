//! Opening a CQL session to one Astra database, in process, without cql-proxy.
//!
//! Astra puts every node of a database behind one SNI proxy: a client opens mutual TLS to
//! `sni_proxy_address` and names the node it wants by sending that node's host id as SNI.
//! The `scylla` driver cannot do this (it sends no SNI, and its TLS layer takes no custom
//! connector), so the connector runs **one loopback listener per node** and lets the driver
//! speak plain CQL to those:
//!
//! ```text
//! driver ──plain TCP──► 127.0.0.1:<port for host id H> ──mTLS, SNI=H──► SNI proxy ──► node H
//! ```
//!
//! The driver learns nodes from `system.local`/`system.peers`, keyed by host id; our
//! [`AddressTranslator`] maps each host id to its listener (opening one the first time a
//! node appears). So the driver still sees every node as itself, and token-aware routing
//! sends each statement to a replica, through that replica's listener.
//!
//! Steps of [`connect`]: bundle URL from the DevOps API → bundle download → `GET /metadata`
//! on the bundle's metadata service (mutual TLS) → listeners for the contact points → CQL
//! session as user `token` → the keyspace made through the DevOps API if it is missing.
//!
//! Listener and connection tasks run on the store's task tracker and stop when the
//! [`Forwarders`] guard (kept alive by the store built over the session) is dropped, or when
//! the process shuts its stores down.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use scylla::client::session::Session;
use scylla::errors::TranslationError;
use scylla::policies::address_translator::{AddressTranslator, UntranslatedPeer};
use scylla::policies::host_filter::DcHostFilter;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Token;
use super::bundle::Bundle;
use super::devops::{Devops, DevopsError};
use crate::store::StoreError;
use crate::store::cassandra::{Connected, Settings};

/// Connecting (TCP + TLS) to the SNI proxy or the metadata service.
const HOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a keyspace just asked for may take to appear in the schema.
const KEYSPACE_WAIT: Duration = Duration::from_secs(30);
const KEYSPACE_POLL: Duration = Duration::from_millis(500);
/// The metadata answer is a few hundred bytes.
const MAX_METADATA_BYTES: usize = 1024 * 1024;

/// Why a database could not be opened, by what the caller can do about it.
#[derive(Debug, Clone)]
pub enum ConnectError {
    /// The token was refused (DevOps 401/403, or CQL login failed).
    Unauthorized(String),
    /// No such database for this token.
    NotFound(String),
    /// The database exists but cannot serve yet (keyspace being created).
    NotReady(String),
    /// Astra or the network failed; a retry may work.
    Unavailable(String),
    /// Anything else (a malformed bundle, a schema failure).
    Other(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Unauthorized(m)
            | ConnectError::NotFound(m)
            | ConnectError::NotReady(m)
            | ConnectError::Unavailable(m)
            | ConnectError::Other(m) => f.write_str(m),
        }
    }
}

impl From<DevopsError> for ConnectError {
    fn from(e: DevopsError) -> Self {
        match e {
            DevopsError::Unauthorized(m) => ConnectError::Unauthorized(m),
            DevopsError::NotFound(m) => ConnectError::NotFound(m),
            DevopsError::Unavailable(m) => ConnectError::Unavailable(m),
            DevopsError::Other(m) => ConnectError::Other(m),
        }
    }
}

impl From<ConnectError> for StoreError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Other(m) => StoreError::Other(m),
            ConnectError::Unauthorized(m)
            | ConnectError::NotFound(m)
            | ConnectError::NotReady(m)
            | ConnectError::Unavailable(m) => StoreError::Unavailable(m),
        }
    }
}

/// Where the connector runs its forwarding tasks.
#[derive(Clone)]
pub struct ForwardEnv {
    pub tasks: TaskTracker,
    /// Cancelled when the process closes its stores; every session's forwarders stop.
    pub shutdown: CancellationToken,
}

/// Which keyspace of the database holds the Assistants tables.
#[derive(Debug, Clone)]
pub struct KeyspaceChoice {
    pub name: String,
    /// Prefer the database's default keyspace (named in its bundle) over `name`.
    pub from_bundle: bool,
}

/// Opens a session to database `db` as the token's holder, with the keyspace present.
pub async fn connect(
    devops: &Devops,
    token: &Token,
    db: &str,
    keyspace: &KeyspaceChoice,
    env: &ForwardEnv,
    budget: Duration,
) -> Result<Connected, ConnectError> {
    let started = Instant::now();
    let attempt = connect_inner(devops, token, db, keyspace, env);
    let connected = match tokio::time::timeout(budget, attempt).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ConnectError::Unavailable(format!(
                "opening Astra database {db} took longer than {}s",
                budget.as_secs()
            )));
        }
    };
    tracing::info!(
        database = db,
        keyspace = %connected.keyspace,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Astra session open"
    );
    Ok(connected)
}

async fn connect_inner(
    devops: &Devops,
    token: &Token,
    db: &str,
    keyspace: &KeyspaceChoice,
    env: &ForwardEnv,
) -> Result<Connected, ConnectError> {
    let url = devops.secure_bundle_url(token, db).await?;
    let zip = devops.download(&url).await?;
    let bundle = Bundle::parse(&zip).map_err(ConnectError::Other)?;
    let keyspace = match (&bundle.keyspace, keyspace.from_bundle) {
        (Some(own), true) => own.as_str(),
        _ => keyspace.name.as_str(),
    };
    // The store's CQL names the keyspace unquoted, so Cassandra folds it to lower case; the
    // schema lookup and the DevOps request must use that same, folded name.
    let keyspace = keyspace.to_ascii_lowercase();
    let keyspace = keyspace.as_str();
    // The name goes into CQL text; a bundle is not trusted to make it safe.
    if !crate::store::url::valid_keyspace(keyspace) {
        return Err(ConnectError::Other(format!(
            "Astra database {db}: keyspace name {keyspace:?} is not usable"
        )));
    }
    let tls = bundle.tls_config().map_err(ConnectError::Other)?;
    let meta = fetch_metadata(&bundle, tls.clone()).await?;
    let info = meta.contact_info;
    if info.contact_points.is_empty() {
        return Err(ConnectError::Unavailable(format!(
            "the metadata service of Astra database {db} names no contact points"
        )));
    }
    let local_dc = info.local_dc.or(bundle.local_dc.clone());
    // The guard first: an error from here on drops it, which stops the listeners.
    let guard = Forwarders(env.shutdown.child_token());
    let nodes = Arc::new(SniNodes {
        proxy: info.sni_proxy_address,
        tls: TlsConnector::from(tls),
        listeners: tokio::sync::Mutex::new(HashMap::new()),
        cancel: guard.0.clone(),
        tasks: env.tasks.clone(),
    });
    let mut contacts = Vec::with_capacity(info.contact_points.len());
    for host_id in &info.contact_points {
        let addr = nodes
            .local_addr(host_id)
            .await
            .map_err(|e| ConnectError::Other(format!("opening a local forwarder: {e}")))?;
        contacts.push(addr.to_string());
    }
    let settings = Settings::astra(contacts, keyspace, token.expose(), local_dc.clone());
    let mut builder = settings
        .session_builder()
        .address_translator(Arc::new(Translator(nodes.clone())));
    if let Some(dc) = local_dc {
        // Nodes of other regions sit behind their own region's SNI proxy, not this one.
        builder = builder.host_filter(Arc::new(DcHostFilter::new(dc)));
    }
    let session = builder.build().await.map_err(|e| {
        let text = format!("{e:?}");
        if is_auth_failure(&text) {
            ConnectError::Unauthorized(format!(
                "CQL login to Astra database {db} as user token was refused"
            ))
        } else {
            ConnectError::Unavailable(format!("connecting to Astra database {db}: {e}"))
        }
    })?;
    ensure_keyspace(&session, devops, token, db, keyspace).await?;
    Ok(Connected {
        session,
        keyspace: keyspace.to_owned(),
        replication: 3,
        create_keyspace: false,
        keep: Some(Box::new(guard)),
    })
}

/// Whether a driver error's text names a failed login (the error sits deep inside pool and
/// metadata errors; the server's own words are the stable part).
fn is_auth_failure(text: &str) -> bool {
    [
        "AuthenticationError",
        "Bad credentials",
        "bad credentials",
        "password are incorrect",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// Creates the keyspace through the DevOps API if CQL does not show it, then waits for it.
async fn ensure_keyspace(
    session: &Session,
    devops: &Devops,
    token: &Token,
    db: &str,
    keyspace: &str,
) -> Result<(), ConnectError> {
    if keyspace_exists(session, keyspace).await? {
        return Ok(());
    }
    match devops.create_keyspace(token, db, keyspace).await {
        // Busy (409): a creation is already under way; wait for it like for ours.
        Ok(()) | Err(DevopsError::Unavailable(_)) => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(database = db, keyspace, "asked Astra for the keyspace");
    let started = Instant::now();
    while started.elapsed() < KEYSPACE_WAIT {
        tokio::time::sleep(KEYSPACE_POLL).await;
        if keyspace_exists(session, keyspace).await? {
            // Every coordinator must know it before tables are made in it.
            session.await_schema_agreement().await.map_err(|e| {
                ConnectError::Unavailable(format!("awaiting schema agreement: {e}"))
            })?;
            return Ok(());
        }
    }
    Err(ConnectError::NotReady(format!(
        "the keyspace {keyspace} of Astra database {db} is being created"
    )))
}

async fn keyspace_exists(session: &Session, keyspace: &str) -> Result<bool, ConnectError> {
    let result = session
        .query_unpaged(
            "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .map_err(|e| ConnectError::Unavailable(format!("reading the schema: {e}")))?;
    let rows = result
        .into_rows_result()
        .map_err(|e| ConnectError::Other(format!("reading the schema: {e}")))?;
    Ok(rows.rows_num() > 0)
}

/// `GET /metadata` as the metadata service answers it (other fields ignored).
#[derive(Debug, Deserialize)]
struct Metadata {
    contact_info: ContactInfo,
}

#[derive(Debug, Deserialize)]
struct ContactInfo {
    sni_proxy_address: String,
    #[serde(default)]
    contact_points: Vec<String>,
    #[serde(default)]
    local_dc: Option<String>,
}

/// Asks the bundle's metadata service, over mutual TLS, where the nodes are.
async fn fetch_metadata(
    bundle: &Bundle,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Metadata, ConnectError> {
    let unavailable = |e: String| {
        ConnectError::Unavailable(format!(
            "Astra metadata service {}:{}: {e}",
            bundle.host, bundle.port
        ))
    };
    let stream = open_tls(
        &format!("{}:{}", bundle.host, bundle.port),
        bundle.server_name().map_err(ConnectError::Other)?,
        &TlsConnector::from(tls),
    )
    .await
    .map_err(|e| unavailable(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let req = Request::get("/metadata")
        .header(
            http::header::HOST,
            format!("{}:{}", bundle.host, bundle.port),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| ConnectError::Other(e.to_string()))?;
    let exchange = async {
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_METADATA_BYTES)
            .collect()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()));
        Ok::<_, hyper::Error>((status, body))
    };
    // The connection is driven alongside the exchange and dropped once the answer is in.
    tokio::pin!(conn, exchange);
    let mut conn_done = false;
    let (status, body) = loop {
        tokio::select! {
            biased;
            r = &mut exchange => break r.map_err(|e| unavailable(e.to_string()))?,
            c = &mut conn, if !conn_done => {
                conn_done = true;
                if let Err(e) = c {
                    return Err(unavailable(e.to_string()));
                }
            }
        }
    };
    let body = body.map_err(|e| unavailable(e.to_string()))?.to_bytes();
    if !status.is_success() {
        return Err(unavailable(format!("HTTP {status}")));
    }
    serde_json::from_slice(&body).map_err(|e| unavailable(format!("unexpected answer: {e}")))
}

/// TCP then TLS to `addr`, naming `name` (SNI), each step bounded by [`HOP_TIMEOUT`].
async fn open_tls(
    addr: &str,
    name: ServerName<'static>,
    tls: &TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
    let tcp = tokio::time::timeout(HOP_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out())??;
    // CQL frames are small and latency-bound; never let Nagle hold them.
    tcp.set_nodelay(true)?;
    tokio::time::timeout(HOP_TIMEOUT, tls.connect(name, tcp))
        .await
        .map_err(|_| timed_out())?
}

/// Stops a session's listeners and forwarded connections when dropped.
struct Forwarders(CancellationToken);

impl Drop for Forwarders {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The per-node listeners of one session.
struct SniNodes {
    /// `host:port` of the SNI proxy.
    proxy: String,
    tls: TlsConnector,
    /// host id → its loopback listener. A tokio mutex: binding happens under it, so two
    /// translations of one new node open one listener.
    listeners: tokio::sync::Mutex<HashMap<String, SocketAddr>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl SniNodes {
    /// The loopback address that reaches node `host_id`, listening from the first call on.
    async fn local_addr(self: &Arc<Self>, host_id: &str) -> std::io::Result<SocketAddr> {
        let host_id = host_id.to_ascii_lowercase();
        let mut listeners = self.listeners.lock().await;
        if let Some(addr) = listeners.get(&host_id) {
            return Ok(*addr);
        }
        // The SNI must be a valid name before anything listens for it.
        ServerName::try_from(host_id.clone()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("host id {host_id:?} is not usable as SNI: {e}"),
            )
        })?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        self.tasks
            .spawn(accept_loop(self.clone(), listener, host_id.clone()));
        tracing::debug!(host_id = %host_id, local = %addr, "Astra node forwarder listening");
        listeners.insert(host_id, addr);
        Ok(addr)
    }
}

async fn accept_loop(nodes: Arc<SniNodes>, listener: TcpListener, host_id: String) {
    loop {
        let inbound = tokio::select! {
            () = nodes.cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually EMFILE: back off rather than spin.
                    tracing::warn!(error = %e, "Astra forwarder accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let n = nodes.clone();
        let h = host_id.clone();
        nodes.tasks.spawn(async move {
            tokio::select! {
                () = n.cancel.cancelled() => {}
                r = forward(&n, &h, inbound) => {
                    if let Err(e) = r {
                        tracing::debug!(host_id = %h, error = %e, "Astra forwarded connection ended");
                    }
                }
            }
        });
    }
}

/// One driver connection, relayed to node `host_id` through the SNI proxy.
async fn forward(nodes: &SniNodes, host_id: &str, mut inbound: TcpStream) -> std::io::Result<()> {
    inbound.set_nodelay(true)?;
    let name = ServerName::try_from(host_id.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut outbound = open_tls(&nodes.proxy, name, &nodes.tls).await?;
    tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await?;
    Ok(())
}

/// Maps every node the driver learns of, by host id, to its local forwarder.
struct Translator(Arc<SniNodes>);

#[async_trait]
impl AddressTranslator for Translator {
    async fn translate_address(
        &self,
        peer: &UntranslatedPeer,
    ) -> Result<SocketAddr, TranslationError> {
        self.0
            .local_addr(&peer.host_id().to_string())
            .await
            .map_err(|e| TranslationError::IoError(Arc::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_failures_are_recognised() {
        assert!(is_auth_failure(
            "Authentication failed - bad credentials: Provided username token and/or password are incorrect"
        ));
        assert!(is_auth_failure("DbError(AuthenticationError, ..)"));
        assert!(!is_auth_failure("Connection refused (os error 111)"));
    }

    #[test]
    fn host_ids_are_valid_sni_names() {
        // Astra's SNI is the bare host id; rustls must accept it as a DNS name.
        let id = "2f3d1c8e-0b4a-4c7d-9e61-5a0f7b9c1d2e".to_owned();
        assert!(matches!(
            ServerName::try_from(id),
            Ok(ServerName::DnsName(_))
        ));
    }
}
