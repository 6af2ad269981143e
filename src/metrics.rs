//! Prometheus metrics served on `/metrics`: requests by route class and status, upstream
//! latency, in-flight requests, bytes each way, and upstream connection reuse.
//!
//! Handles to label-free series are resolved once here, so the forwarding hot path touches
//! only atomics (and one short mutex for the latency histogram).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which path a request took through the proxy.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RouteClass {
    /// Served locally from the store (the Assistants surface).
    Intercepted,
    /// Forwarded byte-for-byte to the upstream.
    Forwarded,
    /// The proxy's own endpoints (`/healthz`, `/readyz`, `/metrics`).
    Own,
}

impl RouteClass {
    const ALL: [RouteClass; 3] = [
        RouteClass::Intercepted,
        RouteClass::Forwarded,
        RouteClass::Own,
    ];

    fn index(self) -> usize {
        match self {
            RouteClass::Intercepted => 0,
            RouteClass::Forwarded => 1,
            RouteClass::Own => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Intercepted => "intercepted",
            RouteClass::Forwarded => "forwarded",
            RouteClass::Own => "own",
        }
    }
}

impl EncodeLabelValue for RouteClass {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    class: RouteClass,
    status: u16,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum Direction {
    /// Bytes of request bodies sent towards the upstream.
    ToUpstream,
    /// Bytes of response bodies sent back to clients.
    ToClient,
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Direction::ToUpstream => "to_upstream",
            Direction::ToClient => "to_client",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: Direction,
}

/// Statuses 100..=599 have a cached counter handle per route class (see `request_counters`).
const STATUS_MIN: usize = 100;
const STATUS_SPAN: usize = 500;

/// All metrics of one server instance. Cloning is cheap (every series is an `Arc`).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    /// The family's counter for each (class, status), found once: `Family::get_or_create`
    /// takes a lock and hashes the labels, which on the forwarding path costs more than the
    /// increment itself.
    request_counters: Arc<[OnceLock<Counter>]>,
    pub in_flight: Gauge,
    pub upstream_latency: Histogram,
    pub bytes_to_upstream: Counter,
    pub bytes_to_client: Counter,
    /// Requests the shared upstream client sent (forwarded and the proxy's own calls).
    pub upstream_requests: Counter,
    /// New TCP connections the upstream client opened; reuse = 1 - connections / requests.
    pub upstream_connections: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("assistants_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route class and HTTP status",
            requests.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Requests whose response has not finished streaming",
            in_flight.clone(),
        );
        // 250 µs .. ~130 s: covers a loopback hop up to a slow non-streamed completion.
        let upstream_latency = Histogram::new(exponential_buckets(0.000_25, 2.0, 20));
        registry.register(
            "upstream_response_head_seconds",
            "Time from sending a request upstream until its response head arrived",
            upstream_latency.clone(),
        );
        let bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "body_bytes",
            "Body bytes relayed, by direction",
            bytes.clone(),
        );
        let bytes_to_upstream = bytes
            .get_or_create(&DirectionLabels {
                direction: Direction::ToUpstream,
            })
            .clone();
        let bytes_to_client = bytes
            .get_or_create(&DirectionLabels {
                direction: Direction::ToClient,
            })
            .clone();
        let upstream_requests = Counter::default();
        registry.register(
            "upstream_requests",
            "Requests sent to the upstream over the pooled client",
            upstream_requests.clone(),
        );
        let upstream_connections = Counter::default();
        registry.register(
            "upstream_connections",
            "Upstream connections opened (the rest of the requests reused pooled connections)",
            upstream_connections.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            requests,
            request_counters: (0..RouteClass::ALL.len() * STATUS_SPAN)
                .map(|_| OnceLock::new())
                .collect(),
            in_flight,
            upstream_latency,
            bytes_to_upstream,
            bytes_to_client,
            upstream_requests,
            upstream_connections,
        }
    }

    pub fn request_done(&self, class: RouteClass, status: u16) {
        let slot = usize::from(status)
            .checked_sub(STATUS_MIN)
            .filter(|i| *i < STATUS_SPAN)
            .and_then(|i| self.request_counters.get(class.index() * STATUS_SPAN + i));
        match slot {
            Some(slot) => slot
                .get_or_init(|| {
                    self.requests
                        .get_or_create(&RequestLabels { class, status })
                        .clone()
                })
                .inc(),
            // hyper only produces 100..=999; anything outside the cached range is rare.
            None => self
                .requests
                .get_or_create(&RequestLabels { class, status })
                .inc(),
        };
    }

    pub fn observe_upstream_head(&self, elapsed: Duration) {
        self.upstream_latency.observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail; an error here would mean a broken encoder.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series() {
        let m = Metrics::new();
        m.request_done(RouteClass::Forwarded, 200);
        m.request_done(RouteClass::Own, 200);
        m.observe_upstream_head(Duration::from_millis(3));
        m.bytes_to_client.inc_by(10);
        let text = m.render();
        assert!(
            text.contains("assistants_proxy_requests_total{class=\"forwarded\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(text.contains("assistants_proxy_in_flight_requests"));
        assert!(text.contains("assistants_proxy_upstream_response_head_seconds_bucket"));
        assert!(text.contains("assistants_proxy_body_bytes_total{direction=\"to_client\"} 10"));
        assert!(text.contains("assistants_proxy_upstream_connections_total"));
    }
}
