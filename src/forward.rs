//! The pass-through forwarder: any request the route table does not intercept goes to
//! `upstream base + original path + query`, unchanged except for hop-by-hop headers and `Host`.
//!
//! Bodies stream both ways (hyper's bodies are pull-based, so backpressure and client
//! disconnects propagate on their own); upgrades (WebSocket) are tunnelled; failures to reach
//! the upstream become 502/504 in OpenAI's envelope, while the upstream's own error responses
//! pass through untouched.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::{BoxError, ProxyBody};
use crate::error::Error;
use crate::metrics::RouteClass;
use crate::upstream::{ClientBodyError, Upstream};

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus the proxy
/// authentication pair, which belongs to a forward proxy's hop. `TE` is handled separately.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
];
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers in place. With `keep_upgrade`, `Connection: upgrade` and
/// `Upgrade` survive (an upgrade handshake must reach the other side).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none of these: one pass over the names (cheap comparisons of
    // standard headers) spares the ten hashed removals below.
    if !keep_upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Tokens listed in Connection name further hop-by-hop headers; collect them first.
    let mut listed: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        if let Ok(text) = value.to_str() {
            for token in text.split(',') {
                let token = token.trim();
                if token.is_empty() || (keep_upgrade && token.eq_ignore_ascii_case("upgrade")) {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    listed.push(name);
                }
            }
        }
    }
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP.iter() {
        if keep_upgrade && (name == header::CONNECTION || name == header::UPGRADE) {
            continue;
        }
        headers.remove(name);
    }
    headers.remove(PROXY_CONNECTION);
    // TE is hop-by-hop, but "trailers" only says the client accepts trailers; keeping it lets
    // upstream trailers reach a client that asked for them (hyper's h2 code does the same).
    let te_is_trailers = {
        let mut all = headers.get_all(header::TE).iter();
        matches!((all.next(), all.next()), (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    };
    if !te_is_trailers {
        headers.remove(header::TE);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether a raw header name (any case) is one of the hop-by-hop names above, `TE` aside (its
/// callers decide about it): for the HTTP/1 relay, which never builds a `HeaderName`.
pub(crate) fn is_hop_by_hop_name(name: &str) -> bool {
    // No such name is longer than 19 bytes; most header names are, and skip the comparisons.
    name.len() <= 19
        && (PROXY_CONNECTION.as_str().eq_ignore_ascii_case(name)
            || HOP_BY_HOP
                .iter()
                .any(|h| h.as_str().eq_ignore_ascii_case(name)))
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::TE || name == PROXY_CONNECTION || HOP_BY_HOP.contains(name)
}

fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// h2 lets a client split `Cookie` into several fields; HTTP/1.1 allows one, joined by "; "
/// (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// Forwards requests to the upstream over the shared pooled client.
#[derive(Clone)]
pub struct Forwarder {
    upstream: Upstream,
    /// Upgrade tunnels outlive the request that opened them; they are tracked so shutdown
    /// can wait for them (and cancelled when the grace period ends).
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Forwarder {
    pub fn new(upstream: Upstream, tasks: TaskTracker, shutdown: CancellationToken) -> Forwarder {
        Forwarder {
            upstream,
            tasks,
            shutdown,
        }
    }

    /// Forwards one request; never fails (failures become OpenAI-shaped 502/504 answers).
    /// `in_flight` is released when the response body ends.
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        in_flight: InFlight,
    ) -> Response<ProxyBody> {
        let resp = match self.try_forward(req, Some(in_flight)).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        };
        self.upstream
            .metrics()
            .request_done(RouteClass::Forwarded, resp.status().as_u16());
        resp
    }

    /// The upstream this forwarder sends to (shared with the proxy's own calls).
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Forwards a request whose body the proxy has already started reading (a file upload it
    /// turned out not to own: the consumed bytes are replayed before the rest). Metrics and the
    /// in-flight count are left to the caller, whose route class this request belongs to.
    pub async fn forward_request(&self, req: Request<ProxyBody>) -> Response<ProxyBody> {
        match self.try_forward(req, None).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        }
    }

    async fn try_forward<B>(
        &self,
        mut req: Request<B>,
        in_flight: Option<InFlight>,
    ) -> Result<Response<ProxyBody>, Error>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let upgrade = is_upgrade_request(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        parts.uri = self
            .upstream
            .base()
            .forwarded_uri(std::mem::take(&mut parts.uri), self.upstream.client())
            .map_err(|e| Error::invalid(format!("Invalid request target: {e}"), None))?;
        if parts.version == Version::HTTP_2 {
            join_cookies(&mut parts.headers);
        }
        // The upstream leg is always HTTP/1.1 (or h2 by ALPN, which hyper negotiates itself).
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers, upgrade);
        // The Astra headers are credentials for this proxy's store, never for the upstream
        // (an OpenAI-compatible API has no use for a database token).
        parts.headers.remove(crate::tenancy::TOKEN_HEADER);
        parts.headers.remove(crate::tenancy::DATABASE_HEADER);
        // hyper's server already answered any 100-continue towards the client.
        parts.headers.remove(header::EXPECT);
        parts
            .headers
            .insert(header::HOST, self.upstream.base().host.clone());

        let metrics = self.upstream.metrics();
        let body = RelayBody::new(body, metrics.bytes_to_upstream.clone(), None, None)
            .map_err(|e| -> BoxError { Box::new(ClientBodyError(e)) });
        let upstream_req = Request::from_parts(parts, body.boxed_unsync());

        let mut resp = self.upstream.send(upstream_req).await?;

        if let Some(client_upgrade) = client_upgrade
            && resp.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            self.tunnel(client_upgrade, hyper::upgrade::on(&mut resp));
            let (mut parts, mut body) = resp.into_parts();
            body.detach();
            strip_hop_by_hop(&mut parts.headers, true);
            return Ok(Response::from_parts(parts, crate::body::empty()));
        }

        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        // An intermediary sends its own protocol version (RFC 9110 §6.2), not an HTTP/1.0
        // upstream's; hyper then frames a body without a length as chunked for the client.
        parts.version = Version::HTTP_11;
        let body = RelayBody::new(
            body,
            metrics.bytes_to_client.clone(),
            Some(self.upstream.idle_timeout()),
            in_flight,
        );
        Ok(Response::from_parts(parts, body.boxed_unsync()))
    }

    /// Relays bytes both ways between an upgraded client and upstream connection.
    fn tunnel(&self, client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            let (client, upstream) = match tokio::join!(client, upstream) {
                (Ok(c), Ok(u)) => (c, u),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!(error = %e, "upgrade did not complete");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            tokio::select! {
                result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "upgraded connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {}
            }
        });
    }
}

/// Decrements the in-flight gauge when the response body finishes or is dropped.
pub struct InFlight(Gauge);

impl InFlight {
    pub fn new(gauge: &Gauge) -> InFlight {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The error a body yields when no frame arrived within the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no data from the upstream for {0:?}")]
pub struct IdleTimeout(Duration);

pin_project! {
    /// A relayed body: counts bytes, enforces an idle timeout between frames (never a total
    /// timeout: a stream may last as long as it keeps producing), and holds the in-flight guard.
    pub struct RelayBody<B> {
        #[pin]
        inner: B,
        bytes: Counter,
        idle: Option<Duration>,
        // Created on the first Pending only: most small bodies never need a timer.
        sleep: Option<Pin<Box<Sleep>>>,
        in_flight: Option<InFlight>,
    }
}

impl<B> RelayBody<B> {
    pub fn new(
        inner: B,
        bytes: Counter,
        idle: Option<Duration>,
        in_flight: Option<InFlight>,
    ) -> RelayBody<B> {
        RelayBody {
            inner,
            bytes,
            idle,
            sleep: None,
            in_flight,
        }
    }
}

impl<B> Body for RelayBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes.inc_by(data.len() as u64);
                }
                if let (Some(sleep), Some(idle)) = (this.sleep.as_mut(), *this.idle) {
                    sleep.as_mut().reset(tokio::time::Instant::now() + idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                this.in_flight.take();
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some(idle) = *this.idle {
                    let sleep = this
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Some(Err(Box::new(IdleTimeout(idle)))));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_rfc9110_hop_headers_and_connection_tokens() {
        let mut h = map(&[
            ("connection", "x-custom, keep-alive"),
            ("connection", "x-other"),
            ("x-custom", "1"),
            ("x-other", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("x-end", "a"),
            ("x-end", "b"),
            ("authorization", "Bearer k"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-end", "authorization"]);
        assert_eq!(h.get_all("x-end").iter().count(), 2);
    }

    #[test]
    fn keeps_te_trailers_and_upgrade_when_asked() {
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["te"], "trailers");

        let mut h = map(&[
            ("connection", "Upgrade, x-hop"),
            ("upgrade", "websocket"),
            ("x-hop", "1"),
            ("sec-websocket-key", "k"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(h.get("x-hop").is_none());
        assert!(h.get("sec-websocket-key").is_some());
    }

    #[test]
    fn joins_h2_cookie_fields() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2")]);
        join_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2");
    }
}
