//! The floor of forwarding with hyper: a reverse proxy with nothing but hyper's HTTP/1 server
//! and client on one single-threaded runtime, plain HTTP upstream, no routing, metrics, logs or
//! header rewriting. It is a measuring stick for `scripts/bench-forward.sh` comparisons, not
//! a product (`scripts/bench-forward.sh cpu` runs it beside the proxy and nginx): what
//! assistants-proxy spends per request above it is the cost of its own
//! layers, and what it spends below nginx is out of reach for any hyper-based proxy.
//!
//! usage: hyper_floor LISTEN UPSTREAM_HOST:PORT [pool|legacy]
//!
//! - `pool` (default): keep-alive connections from `hyper::client::conn::http1`, kept in a
//!   plain list and reused once idle (a connection busy with a body is skipped);
//! - `legacy`: hyper-util's pooled `Client`, as assistants-proxy uses it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::rc::Rc;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

type Pool = Rc<RefCell<Vec<SendRequest<Incoming>>>>;

/// An idle pooled connection, or a new one. Busy ones stay pooled for later; closed ones go.
async fn checkout(pool: &Pool, upstream: &str) -> SendRequest<Incoming> {
    let mut busy = Vec::new();
    let found = loop {
        let Some(s) = pool.borrow_mut().pop() else {
            break None;
        };
        if s.is_ready() {
            break Some(s);
        }
        if !s.is_closed() {
            busy.push(s);
        }
    };
    pool.borrow_mut().extend(busy);
    if let Some(s) = found {
        return s;
    }
    let tcp = TcpStream::connect(upstream).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::task::spawn_local(conn);
    sender
}

async fn forward(
    mut req: Request<Incoming>,
    pool: Pool,
    client: Option<Client<HttpConnector, Incoming>>,
    upstream: Rc<str>,
) -> Result<Response<Incoming>, hyper::Error> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if let Some(client) = client {
        *req.uri_mut() = format!("http://{upstream}{path}").parse().unwrap();
        return Ok(client.request(req).await.unwrap());
    }
    *req.uri_mut() = path.parse().unwrap();
    let mut sender = checkout(&pool, &upstream).await;
    let resp = sender.send_request(req).await?;
    pool.borrow_mut().push(sender);
    Ok(resp)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: hyper_floor LISTEN UPSTREAM_HOST:PORT [pool|legacy]";
    let listen = args.get(1).expect(usage).clone();
    let upstream: Rc<str> = args.get(2).expect(usage).as_str().into();
    let legacy = args.get(3).is_some_and(|a| a == "legacy");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(&listen).await.unwrap();
        let pool: Pool = Rc::new(RefCell::new(Vec::new()));
        let client = legacy.then(|| Client::builder(TokioExecutor::new()).build_http());
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (pool, client, upstream) = (pool.clone(), client.clone(), upstream.clone());
            tokio::task::spawn_local(async move {
                let svc = hyper::service::service_fn(move |req| {
                    forward(req, pool.clone(), client.clone(), upstream.clone())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
