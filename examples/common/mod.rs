//! What the load-generating examples share: one keep-alive HTTP/1 connection per client.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A client's end of one HTTP/1 connection.
pub type Conn = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Opens a connection to `url`'s host and port (Nagle off: requests are small and timed) and
/// drives it on a task of its own.
pub async fn connect(url: &hyper::Uri) -> Conn {
    let addr = format!("{}:{}", url.host().unwrap(), url.port_u16().unwrap_or(80));
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Waits for every worker and joins what they measured: their samples, and their error count.
pub async fn gather<T>(workers: Vec<tokio::task::JoinHandle<(Vec<T>, u64)>>) -> (Vec<T>, u64) {
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (samples, e) = w.await.unwrap();
        all.extend(samples);
        errors += e;
    }
    (all, errors)
}
