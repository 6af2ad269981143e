//! A local stand-in for DataStax Astra, faithful where the proxy touches it:
//!
//! - a **DevOps API** (plain HTTP on 127.0.0.1:0): `POST /v2/databases/{id}/secureBundleURL`,
//!   the signed bundle download, `GET`/`POST /v2/databases` (created databases stay PENDING
//!   for a few list calls, then turn ACTIVE), `POST /v2/databases/{id}/keyspaces/{name}`
//!   (creates the keyspace on the real node as superuser and grants it to the `token` role);
//!   unknown tokens get 401, databases of another token 404;
//! - a **secure connect bundle** per database, generated here: `config.json`, the stand-in's
//!   own CA, and a client certificate for that database signed by it;
//! - a **metadata service** over mutual TLS (`GET /metadata`) naming the real node's host id
//!   as the only contact point and the SNI proxy's address;
//! - an **SNI proxy** over mutual TLS that routes by SNI (= host id) to the local Cassandra 5
//!   node running with `PasswordAuthenticator`, refusing unknown names and certificates not
//!   signed by the stand-in's CA.
//!
//! The node has one `token` role with one password, while Astra accepts every valid token as
//! that user's password. The SNI proxy plays Astra's CQL gateway there: it reads the client's
//! SASL PLAIN response and, when the password is a token the stand-in knows (and has not
//! revoked), logs in with the node's password instead; anything else reaches the node as
//! sent and is refused by Cassandra itself.
//!
//! Control routes for tests in other processes: `POST /stand-in/tokens` → `{"token"}` (a new
//! valid token) and `POST /stand-in/databases` `{"token", "keyspace", "name"?}` → `{"id"}` (an
//! ACTIVE database of that token using that keyspace).
//!
//! Needs `ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH` (a node started with `CASSANDRA_AUTH=password`,
//! superuser cassandra/cassandra); without it the tests fail, never skip.
//!
//! A crate of its own (a dev-dependency of assistants-proxy) so `tests/astra`, `benches/astra.rs`
//! and `examples/fake_astra.rs` (the SDK suite's stand-in process) share one copy; it does not
//! depend on the proxy.

// Test support code: a panic here is a test failure with a clear message, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sni;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The password of the node's `token` role, shared by every stand-in in the process (and by
/// the store test that logs in as `token`, which reads the same variable).
pub fn node_password() -> String {
    std::env::var("AP_TEST_ASTRA_TOKEN")
        .unwrap_or_else(|_| "AstraCS:stand-in:node-side-password".to_owned())
}

/// The password-mode node (`host:port`).
pub fn auth_node() -> String {
    std::env::var("ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH").unwrap_or_else(|_| {
        panic!(
            "ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH is not set: start a node with \
             CASSANDRA_AUTH=password CASSANDRA_PORT=9043 CASSANDRA_STORAGE_PORT=7001 \
             scripts/cassandra.sh start and set it to 127.0.0.1:9043 (scripts/test.sh does both)"
        )
    })
}

/// How many list calls a newly created database stays PENDING for.
pub const PENDING_POLLS: u32 = 2;

#[derive(Clone)]
struct Database {
    id: String,
    name: String,
    owner: String,
    keyspace: String,
    status: String,
    pending_polls: u32,
    client_cert: String,
    client_key: String,
}

#[derive(Default)]
struct Registry {
    /// token → revoked for CQL only (DevOps still accepts it)
    tokens: HashMap<String, bool>,
    databases: HashMap<String, Database>,
    /// download id → database id
    downloads: HashMap<String, String>,
}

/// Counters the tests read.
#[derive(Default)]
pub struct Counters {
    pub bundle_urls: AtomicUsize,
    pub downloads: AtomicUsize,
    pub lists: AtomicUsize,
    pub creates: AtomicUsize,
    pub keyspace_creates: AtomicUsize,
    pub metadata: AtomicUsize,
    pub sni_connections: AtomicUsize,
    pub sni_refused: AtomicUsize,
}

pub(crate) struct Shared {
    registry: Mutex<Registry>,
    pub counters: Counters,
    node: SocketAddr,
    host_id: String,
    local_dc: String,
    ca_pem: String,
    ca: Issuer<'static, KeyPair>,
    devops_addr: SocketAddr,
    metadata_addr: SocketAddr,
    sni_addr: SocketAddr,
    admin: tokio::sync::OnceCell<Session>,
}

/// The running stand-in. Dropping it stops nothing explicitly: its tasks die with the test's
/// runtime.
pub struct FakeAstra {
    shared: Arc<Shared>,
}

/// The hostname in every bundle; the servers' certificate is issued for it.
const BUNDLE_HOST: &str = "localhost";

impl FakeAstra {
    pub async fn start() -> FakeAstra {
        let node: SocketAddr = auth_node().parse().expect("node address");
        ensure_token_role(&node.to_string()).await;
        let (host_id, local_dc) = node_identity(&node.to_string()).await;

        // The stand-in's CA, and the certificate both TLS services present.
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Fake Astra CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let mut server_params = CertificateParams::new(vec![BUNDLE_HOST.to_owned()]).unwrap();
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

        let devops = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metadata = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sni = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shared = Arc::new(Shared {
            registry: Mutex::new(Registry::default()),
            counters: Counters::default(),
            node,
            host_id,
            local_dc,
            ca_pem: ca_cert.pem(),
            ca,
            devops_addr: devops.local_addr().unwrap(),
            metadata_addr: metadata.local_addr().unwrap(),
            sni_addr: sni.local_addr().unwrap(),
            admin: tokio::sync::OnceCell::new(),
        });
        let tls = sni::server_config(&ca_cert, &server_cert, &server_key);
        tokio::spawn(serve_devops(devops, shared.clone()));
        tokio::spawn(sni::serve_metadata(metadata, tls.clone(), shared.clone()));
        tokio::spawn(sni::serve_sni(sni, tls, shared.clone()));
        FakeAstra { shared }
    }

    /// Base URL of the DevOps API (for `[astra] devops_url`).
    pub fn devops_url(&self) -> String {
        format!("http://{}", self.shared.devops_addr)
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// The node's host id (the SNI the proxy must send).
    pub fn host_id(&self) -> &str {
        &self.shared.host_id
    }

    /// A new valid token (an account with no databases yet).
    pub fn new_token(&self) -> String {
        let token = format!("AstraCS:fake:{}", random_hex());
        self.shared
            .registry
            .lock()
            .unwrap()
            .tokens
            .insert(token.clone(), false);
        token
    }

    /// An ACTIVE database of `token`, with its own keyspace name (`keyspace`, or a fresh one).
    /// The keyspace itself is not created: the proxy asks the DevOps API for it.
    pub fn new_database(&self, token: &str, name: &str, keyspace: Option<&str>) -> String {
        let id = uuid_like();
        let keyspace = keyspace
            .map(str::to_owned)
            .unwrap_or_else(|| format!("ap_astra_{}", id.replace('-', "").get(..12).unwrap_or("")));
        let db = self.make_database(&id, name, token, &keyspace, "ACTIVE", 0);
        self.shared
            .registry
            .lock()
            .unwrap()
            .databases
            .insert(id.clone(), db);
        id
    }

    /// The keyspace the stand-in gave a database (what its bundle names).
    pub fn keyspace_of(&self, db: &str) -> String {
        self.shared.registry.lock().unwrap().databases[db]
            .keyspace
            .clone()
    }

    /// The token's databases, as (id, name, status).
    pub fn databases_of(&self, token: &str) -> Vec<(String, String, String)> {
        self.shared
            .registry
            .lock()
            .unwrap()
            .databases
            .values()
            .filter(|d| d.owner == token)
            .map(|d| (d.id.clone(), d.name.clone(), d.status.clone()))
            .collect()
    }

    /// Revokes a token: the DevOps API refuses it from now on (401).
    pub fn revoke(&self, token: &str) {
        self.shared.registry.lock().unwrap().tokens.remove(token);
    }

    /// Makes a revoked token valid again (same databases).
    pub fn restore(&self, token: &str) {
        self.shared
            .registry
            .lock()
            .unwrap()
            .tokens
            .insert(token.to_owned(), false);
    }

    /// Like [`new_database`](Self::new_database) with a named keyspace that may already exist
    /// on the node (left by an earlier run or another test; reusing it spares a schema
    /// creation). As in Astra, a database's tokens may use its keyspaces: the keyspace is made
    /// if missing and granted to `token` before the id is handed out. (Granting only when it
    /// already existed raced: a proxy of a concurrent test could find the keyspace another
    /// test's DevOps call had just made, before that call's GRANT, and be refused CREATE.)
    pub async fn database_with_keyspace(&self, token: &str, name: &str, keyspace: &str) -> String {
        let id = self.new_database(token, name, Some(keyspace));
        create_keyspace(&self.shared, keyspace).await;
        id
    }

    /// Makes a keyspace on the node (if missing) and lets the `token` role use it, as
    /// Astra's DevOps API would; for callers that need it before any proxy asks.
    pub async fn ensure_keyspace(&self, keyspace: &str) {
        create_keyspace(&self.shared, keyspace).await;
    }

    /// Drops a keyspace a test made (so test runs do not pile them up on the node).
    pub async fn drop_keyspace(&self, keyspace: &str) {
        self.shared
            .admin()
            .await
            .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
            .await
            .unwrap();
    }

    /// Revokes a token for CQL only: the DevOps API still answers, the CQL login fails.
    pub fn revoke_cql(&self, token: &str) {
        if let Some(r) = self.shared.registry.lock().unwrap().tokens.get_mut(token) {
            *r = true;
        }
    }

    fn make_database(
        &self,
        id: &str,
        name: &str,
        owner: &str,
        keyspace: &str,
        status: &str,
        pending_polls: u32,
    ) -> Database {
        // Each database has its own client certificate, signed by the stand-in's CA.
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("client {id}"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.shared.ca).unwrap();
        Database {
            id: id.to_owned(),
            name: name.to_owned(),
            owner: owner.to_owned(),
            keyspace: keyspace.to_owned(),
            status: status.to_owned(),
            pending_polls,
            client_cert: cert.pem(),
            client_key: key.serialize_pem(),
        }
    }
}

impl Shared {
    /// Whether `password` is a token Astra's CQL gateway would accept.
    pub(crate) fn cql_accepts(&self, password: &str) -> bool {
        matches!(
            self.registry.lock().unwrap().tokens.get(password),
            Some(false)
        )
    }

    async fn admin(&self) -> &Session {
        self.admin
            .get_or_init(|| async {
                SessionBuilder::new()
                    .known_node_addr(self.node)
                    .user("cassandra", "cassandra")
                    .build()
                    .await
                    .expect("superuser session to the password-mode node")
            })
            .await
    }
}

/// 128 random bits in hex: the unguessable part of tokens, download links and ids.
fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn uuid_like() -> String {
    let h = random_hex();
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Makes sure the node's `token` role logs in with [`node_password`]; done once per process.
async fn ensure_token_role(node: &str) {
    static READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    READY
        .get_or_init(|| async {
            let password = node_password();
            let works = SessionBuilder::new()
                .known_node(node)
                .user("token", &password)
                .build()
                .await
                .is_ok();
            if works {
                return;
            }
            let admin = SessionBuilder::new()
                .known_node(node)
                .user("cassandra", "cassandra")
                .build()
                .await
                .expect("superuser cassandra/cassandra on the password-mode node");
            for cql in [
                // Dropped and made anew: Cassandra 5 throttles password changes of one role.
                "DROP ROLE IF EXISTS \"token\"".to_owned(),
                format!("CREATE ROLE \"token\" WITH PASSWORD = '{password}' AND LOGIN = true"),
            ] {
                admin.query_unpaged(cql, ()).await.unwrap();
            }
        })
        .await;
}

/// The node's host id and datacenter, from `system.local`.
async fn node_identity(node: &str) -> (String, String) {
    let s = SessionBuilder::new()
        .known_node(node)
        .user("cassandra", "cassandra")
        .build()
        .await
        .expect("superuser session");
    let rows = s
        .query_unpaged("SELECT host_id, data_center FROM system.local", ())
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let (host_id, dc): (scylla::value::CqlValue, String) = rows.single_row().unwrap();
    let host_id = match host_id {
        scylla::value::CqlValue::Uuid(u) => u.to_string(),
        other => panic!("host_id {other:?}"),
    };
    (host_id, dc)
}

// ---------------------------------------------------------------------------------------
// DevOps API
// ---------------------------------------------------------------------------------------

async fn serve_devops(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(devops(&shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn astra_error(status: StatusCode, description: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        json!({"errors": [{"description": description, "ID": 340018}]}),
    )
}

async fn devops(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();

    // The bundle download: a signed URL, no token.
    if method == http::Method::GET && segments.first() == Some(&"bundles") {
        shared.counters.downloads.fetch_add(1, Ordering::Relaxed);
        let db = {
            let reg = shared.registry.lock().unwrap();
            segments
                .get(1)
                .and_then(|d| reg.downloads.get(*d))
                .and_then(|id| reg.databases.get(id))
                .cloned()
        };
        return match db {
            Some(db) => Response::builder()
                .header("content-type", "application/zip")
                .body(Full::new(Bytes::from(bundle_zip(shared, &db))))
                .unwrap(),
            None => astra_error(StatusCode::FORBIDDEN, "expired or unknown signature"),
        };
    }

    // The stand-in's own control routes, for tests in other processes (the Python SDK
    // suite through `examples/fake_astra.rs`); Astra has nothing like them.
    if method == http::Method::POST && segments.first() == Some(&"stand-in") {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let fake = FakeAstra {
            shared: shared.clone(),
        };
        return match segments.get(1) {
            Some(&"tokens") => reply(StatusCode::OK, json!({"token": fake.new_token()})),
            Some(&"databases") => {
                let (Some(token), Some(keyspace)) =
                    (body["token"].as_str(), body["keyspace"].as_str())
                else {
                    return astra_error(StatusCode::BAD_REQUEST, "token and keyspace required");
                };
                if !keyspace
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return astra_error(StatusCode::BAD_REQUEST, "invalid keyspace name");
                }
                let name = body["name"].as_str().unwrap_or("stand-in database");
                let id = fake.database_with_keyspace(token, name, keyspace).await;
                reply(StatusCode::OK, json!({"id": id}))
            }
            _ => astra_error(StatusCode::NOT_FOUND, "no such stand-in route"),
        };
    }

    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    if !shared.registry.lock().unwrap().tokens.contains_key(&token) {
        return astra_error(StatusCode::UNAUTHORIZED, "JWT not valid");
    }
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);

    match (method.as_str(), segments.as_slice()) {
        ("GET", ["v2", "databases"]) => {
            shared.counters.lists.fetch_add(1, Ordering::Relaxed);
            let mut reg = shared.registry.lock().unwrap();
            let mut out = Vec::new();
            for db in reg.databases.values_mut().filter(|d| d.owner == token) {
                // The state machine: a new database is PENDING for a few polls.
                if db.status == "PENDING" {
                    if db.pending_polls == 0 {
                        db.status = "ACTIVE".into();
                    } else {
                        db.pending_polls -= 1;
                    }
                }
                out.push(json!({
                    "id": db.id,
                    "orgId": "org",
                    "ownerId": "owner",
                    "info": {"name": db.name, "keyspace": db.keyspace, "region": "local",
                             "cloudProvider": "GCP", "tier": "serverless"},
                    "status": db.status,
                }));
            }
            reply(StatusCode::OK, Value::Array(out))
        }
        ("POST", ["v2", "databases"]) => {
            shared.counters.creates.fetch_add(1, Ordering::Relaxed);
            let name = body["name"].as_str().unwrap_or("").to_owned();
            let keyspace = body["keyspace"].as_str().unwrap_or("").to_owned();
            if name.is_empty() || keyspace.is_empty() || body["tier"] != "serverless" {
                return astra_error(StatusCode::BAD_REQUEST, "name, keyspace and tier required");
            }
            let id = uuid_like();
            let fake = FakeAstra {
                shared: shared.clone(),
            };
            let db = fake.make_database(&id, &name, &token, &keyspace, "PENDING", PENDING_POLLS);
            // Astra makes a new database's keyspace with it.
            create_keyspace(shared, &keyspace).await;
            shared
                .registry
                .lock()
                .unwrap()
                .databases
                .insert(id.clone(), db);
            Response::builder()
                .status(StatusCode::CREATED)
                .header("location", format!("/v2/databases/{id}"))
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
        ("POST", ["v2", "databases", id, "secureBundleURL"]) => {
            shared.counters.bundle_urls.fetch_add(1, Ordering::Relaxed);
            let mut reg = shared.registry.lock().unwrap();
            match reg.databases.get(*id) {
                Some(db) if db.owner == token && db.status == "ACTIVE" => {
                    let download = format!("dl{}", random_hex());
                    let db_id = db.id.clone();
                    reg.downloads.insert(download.clone(), db_id);
                    reply(
                        StatusCode::OK,
                        json!({
                            "downloadURL": format!("http://{}/bundles/{download}/secure-connect.zip?X-Signature=x", shared.devops_addr),
                            "downloadURLInternal": "https://internal.invalid/",
                        }),
                    )
                }
                Some(db) if db.owner == token => astra_error(
                    StatusCode::CONFLICT,
                    "database is not in a valid state to perform requested action",
                ),
                _ => astra_error(StatusCode::NOT_FOUND, "database not found"),
            }
        }
        ("POST", ["v2", "databases", id, "keyspaces", keyspace]) => {
            shared
                .counters
                .keyspace_creates
                .fetch_add(1, Ordering::Relaxed);
            let owned = matches!(
                shared.registry.lock().unwrap().databases.get(*id),
                Some(db) if db.owner == token && db.status == "ACTIVE"
            );
            if !owned {
                return astra_error(StatusCode::NOT_FOUND, "database not found");
            }
            if keyspace.is_empty()
                || !keyspace
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return astra_error(StatusCode::BAD_REQUEST, "invalid keyspace name");
            }
            create_keyspace(shared, keyspace).await;
            Response::builder()
                .status(StatusCode::CREATED)
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
        _ => astra_error(StatusCode::NOT_FOUND, "no such route"),
    }
}

/// Creates a keyspace on the node as superuser and lets the `token` role use it (what Astra
/// does for a database's keyspaces).
async fn create_keyspace(shared: &Shared, keyspace: &str) {
    let admin = shared.admin().await;
    for cql in [
        format!(
            "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
             {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
        ),
        format!("GRANT ALL PERMISSIONS ON KEYSPACE {keyspace} TO \"token\""),
    ] {
        admin.query_unpaged(cql, ()).await.unwrap();
    }
    admin.await_schema_agreement().await.unwrap();
}

/// The secure connect bundle of one database, as Astra lays it out.
fn bundle_zip(shared: &Shared, db: &Database) -> Vec<u8> {
    let config = json!({
        "host": BUNDLE_HOST,
        "port": shared.metadata_addr.port(),
        "cql_port": shared.sni_addr.port(),
        "keyspace": db.keyspace,
        "localDC": shared.local_dc,
        "caCertLocation": "./ca.crt",
        "keyLocation": "./key",
        "certLocation": "./cert",
    });
    let mut out = std::io::Cursor::new(Vec::new());
    let mut w = zip::ZipWriter::new(&mut out);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in [
        ("config.json", config.to_string().into_bytes()),
        ("ca.crt", shared.ca_pem.clone().into_bytes()),
        ("cert", db.client_cert.clone().into_bytes()),
        ("key", db.client_key.clone().into_bytes()),
        ("cqlshrc", b"[connection]\nhostname = localhost\n".to_vec()),
    ] {
        w.start_file(name, opts).unwrap();
        w.write_all(&data).unwrap();
    }
    w.finish().unwrap();
    out.into_inner()
}
