//! The edge's metrics on the OpenMetrics client (`prometheus-client`): open
//! connections and deliveries by transport, the delay from a commit to the
//! write that pushes it, the NATS link, refusals by reason. One registry
//! per running edge, served as text on the operations port
//! (`QRLOGIN_OPS_LISTEN`), never on the public one.
//!
//! Nothing here costs anything per connection beyond an atomic add: the
//! per-transport series are created once, when the registry is built, and
//! their handles kept in arrays indexed by [`Transport`], so a hot path
//! never looks a label set up. Every label takes its values from a fixed
//! set named here or in `error.rs`, so no client can grow the number of
//! series; series the dashboard and the alerts read exist at zero from the
//! start.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, info::Info},
    registry::Registry,
};

/// The push transports (short polls are counted as requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    ShortPoll,
    LongPoll,
    Sse,
    WebSocket,
    Stomp,
    Grpc,
}

impl Transport {
    pub const ALL: [Transport; 6] = [
        Self::ShortPoll,
        Self::LongPoll,
        Self::Sse,
        Self::WebSocket,
        Self::Stomp,
        Self::Grpc,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::ShortPoll => "short_poll",
            Self::LongPoll => "long_poll",
            Self::Sse => "sse",
            Self::WebSocket => "websocket",
            Self::Stomp => "stomp",
            Self::Grpc => "grpc",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds (seconds) of the delivery-delay histogram: 0.5 ms to 5 s,
/// dense around the 5 ms budget.
const DELAY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Refusal reasons whose series exist from the start (the alerts and the
/// dashboard read them); others appear when first counted.
const REASONS_AT_ZERO: [&str; 6] = [
    "unavailable",
    "over_capacity",
    "rate_limited",
    "too_many_connections",
    "too_many_watchers",
    "draining",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

const N: usize = Transport::ALL.len();

/// The node's metrics registry; one per running edge, shared behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    connections: [Gauge; N],
    delivered: [Counter; N],
    delay: [Histogram; N],
    subscriptions: Gauge,
    coalesced: Counter,
    undecodable: Counter,
    rechecks: Counter,
    gaps: Counter,
    rotations: Counter,
    nats_reconnects: Counter,
    nats_errors: Counter,
    write_timeouts: Counter,
    pre_head: Gauge,
    rejected: Family<ReasonLabels, Counter>,
    ready: Gauge,
    nats_connected: Gauge,
    connections_limit: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts one connection that has not sent its request head yet.
pub struct PreHeadGuard(Arc<Metrics>);

impl Drop for PreHeadGuard {
    fn drop(&mut self) {
        self.0.pre_head.dec();
    }
}

/// Counts one open connection of a transport for as long as it lives.
pub struct ConnectionGuard {
    metrics: Arc<Metrics>,
    transport: Transport,
}

impl ConnectionGuard {
    pub fn transport(&self) -> Transport {
        self.transport
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.connections[self.transport.index()].dec();
    }
}

/// One series per transport of `family`, created now; the handles share
/// the family's values.
fn per_transport<M: Clone, C: prometheus_client::metrics::family::MetricConstructor<M>>(
    family: &Family<TransportLabels, M, C>,
) -> [M; N] {
    std::array::from_fn(|i| {
        family
            .get_or_create(&TransportLabels {
                transport: Transport::ALL[i].label(),
            })
            .clone()
    })
}

fn delay_histogram() -> Histogram {
    Histogram::new(DELAY_BUCKETS)
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("qrlogin_edge");
        r.register(
            "build",
            "The running version (always 1)",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let connections = Family::<TransportLabels, Gauge>::default();
        r.register(
            "connections",
            "Open browser connections by transport",
            connections.clone(),
        );
        let delivered = Family::<TransportLabels, Counter>::default();
        r.register(
            "events_delivered",
            "Snapshots written to clients by transport",
            delivered.clone(),
        );
        let delay = Family::<TransportLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            delay_histogram,
        );
        r.register(
            "delivery_delay_seconds",
            "From the commit of a change (the Nats-Time-Stamp of the republished bucket write) to the write that pushes it to a client, by transport",
            delay.clone(),
        );
        let m = Self {
            connections: per_transport(&connections),
            delivered: per_transport(&delivered),
            delay: per_transport(&delay),
            subscriptions: Gauge::default(),
            coalesced: Counter::default(),
            undecodable: Counter::default(),
            rechecks: Counter::default(),
            gaps: Counter::default(),
            rotations: Counter::default(),
            nats_reconnects: Counter::default(),
            nats_errors: Counter::default(),
            write_timeouts: Counter::default(),
            pre_head: Gauge::default(),
            rejected: Family::default(),
            ready: Gauge::default(),
            nats_connected: Gauge::default(),
            connections_limit: Gauge::default(),
            registry: Registry::default(),
        };
        r.register(
            "nats_subscriptions",
            "NATS subscriptions held (one per watched session)",
            m.subscriptions.clone(),
        );
        r.register(
            "coalesced_updates",
            "Snapshots replaced by a newer one before a watcher took them",
            m.coalesced.clone(),
        );
        r.register(
            "undecodable_events",
            "NATS messages dropped because they are not a republished session record with a known state",
            m.undecodable.clone(),
        );
        r.register(
            "rechecks",
            "Re-reads of watched sessions from auth (after a NATS reconnect, a gap, at a deadline, and their retries)",
            m.rechecks.clone(),
        );
        r.register(
            "event_gaps",
            "Events whose Nats-Last-Sequence was ahead of the version held (a write was missed)",
            m.gaps.clone(),
        );
        r.register(
            "qr_rotations",
            "Watched PENDING sessions moved to their next QR payload (pushed locally, no NATS or auth traffic)",
            m.rotations.clone(),
        );
        r.register(
            "nats_errors",
            "NATS -ERR answers and protocol errors (permission violations included)",
            m.nats_errors.clone(),
        );
        r.register(
            "nats_reconnects",
            "NATS connections re-established",
            m.nats_reconnects.clone(),
        );
        r.register(
            "write_timeouts",
            "Connections dropped because a write made no progress within QRLOGIN_WRITE_TIMEOUT (peers that do not read)",
            m.write_timeouts.clone(),
        );
        r.register(
            "pre_head_connections",
            "Connections that have not sent a complete request head yet",
            m.pre_head.clone(),
        );
        r.register(
            "rejected_requests",
            "Requests answered with an error, by reason (the stable error code)",
            m.rejected.clone(),
        );
        r.register(
            "ready",
            "1 when /readyz would answer 200 (not draining, NATS connected, auth serving), else 0; taken at each scrape",
            m.ready.clone(),
        );
        r.register(
            "nats_connected",
            "1 while the NATS connection is up, else 0; taken at each scrape",
            m.nats_connected.clone(),
        );
        r.register(
            "connections_limit",
            "The most open connections this edge accepts (QRLOGIN_MAX_CONNECTIONS)",
            m.connections_limit.clone(),
        );
        for reason in REASONS_AT_ZERO {
            m.rejected.get_or_create(&ReasonLabels { reason }).get();
        }
        Self { registry: r, ..m }
    }

    pub fn connection(self: &Arc<Self>, transport: Transport) -> ConnectionGuard {
        self.connections[transport.index()].inc();
        ConnectionGuard {
            metrics: self.clone(),
            transport,
        }
    }

    pub fn open_connections(&self, transport: Transport) -> i64 {
        self.connections[transport.index()].get()
    }

    /// One snapshot written to a client; `delay` is the time since the
    /// change committed, when the snapshot came as an event.
    pub fn delivered(&self, transport: Transport, delay: Option<Duration>) {
        self.delivered[transport.index()].inc();
        if let Some(delay) = delay {
            self.delay[transport.index()].observe(delay.as_secs_f64());
        }
    }

    pub fn subscription_opened(&self) {
        self.subscriptions.inc();
    }

    pub fn subscription_closed(&self) {
        self.subscriptions.dec();
    }

    pub fn coalesced(&self, skipped: u64) {
        if skipped > 0 {
            self.coalesced.inc_by(skipped);
        }
    }

    pub fn undecodable(&self) {
        self.undecodable.inc();
    }

    pub fn recheck(&self) {
        self.rechecks.inc();
    }

    pub fn nats_reconnect(&self) {
        self.nats_reconnects.inc();
    }

    /// An event said a write before it never reached this node.
    pub fn gap(&self) {
        self.gaps.inc();
    }

    /// A watched PENDING session moved to its next QR payload.
    pub fn rotated(&self) {
        self.rotations.inc();
    }

    /// A protocol error or `-ERR` from the NATS server.
    pub fn nats_error(&self) {
        self.nats_errors.inc();
    }

    /// A connection was dropped because a write to it made no progress
    /// within the write timeout (a peer that does not read).
    pub fn write_timeout(&self) {
        self.write_timeouts.inc();
    }

    pub fn pre_head(self: &Arc<Self>) -> PreHeadGuard {
        self.pre_head.inc();
        PreHeadGuard(self.clone())
    }

    /// A request answered with the error `reason` (a stable code of
    /// `error.rs`: a fixed set).
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// The node's state as the operations port sees it at a scrape.
    pub fn set_node_state(&self, ready: bool, nats_connected: bool, connections_limit: usize) {
        self.ready.set(i64::from(ready));
        self.nats_connected.set(i64::from(nats_connected));
        self.connections_limit
            .set(i64::try_from(connections_limit).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histogram() {
        let m = Arc::new(Metrics::default());
        let guard = m.connection(Transport::Sse);
        m.delivered(Transport::Sse, Some(Duration::from_micros(1500)));
        m.delivered(Transport::WebSocket, None);
        m.undecodable();
        m.rejected("rate_limited");
        m.write_timeout();
        let pre = m.pre_head();
        let text = m.render();
        assert!(text.contains("qrlogin_edge_write_timeouts_total 1"));
        assert!(text.contains("qrlogin_edge_pre_head_connections 1"));
        drop(pre);
        assert!(text.contains("qrlogin_edge_connections{transport=\"sse\"} 1"));
        assert!(text.contains("qrlogin_edge_events_delivered_total{transport=\"sse\"} 1"));
        assert!(text.contains("qrlogin_edge_events_delivered_total{transport=\"websocket\"} 1"));
        assert!(text.contains(
            "qrlogin_edge_delivery_delay_seconds_bucket{le=\"0.001\",transport=\"sse\"} 0"
        ));
        assert!(text.contains(
            "qrlogin_edge_delivery_delay_seconds_bucket{le=\"0.002\",transport=\"sse\"} 1"
        ));
        // A delivery without a commit time counts, but is not a delay.
        assert!(
            text.contains("qrlogin_edge_delivery_delay_seconds_count{transport=\"websocket\"} 0")
        );
        assert!(text.contains("qrlogin_edge_undecodable_events_total 1"));
        assert!(text.contains("qrlogin_edge_rejected_requests_total{reason=\"rate_limited\"} 1"));
        assert!(text.contains("qrlogin_edge_rejected_requests_total{reason=\"unavailable\"} 0"));
        assert!(text.ends_with("# EOF\n"));
        // The client ends every help text with a full stop of its own.
        assert!(!text.contains("..\n"), "{text}");
        drop(guard);
        assert!(m
            .render()
            .contains("qrlogin_edge_connections{transport=\"sse\"} 0"));
    }

    #[test]
    fn every_transport_has_its_series_before_the_first_event() {
        let text = Metrics::default().render();
        for t in Transport::ALL {
            let l = t.label();
            assert!(text.contains(&format!("qrlogin_edge_connections{{transport=\"{l}\"}} 0")));
            assert!(text.contains(&format!(
                "qrlogin_edge_events_delivered_total{{transport=\"{l}\"}} 0"
            )));
            assert!(text.contains(&format!(
                "qrlogin_edge_delivery_delay_seconds_count{{transport=\"{l}\"}} 0"
            )));
        }
    }

    #[test]
    fn node_state_is_what_the_last_scrape_saw() {
        let m = Metrics::default();
        m.set_node_state(true, true, 18_000);
        let text = m.render();
        assert!(text.contains("qrlogin_edge_ready 1"));
        assert!(text.contains("qrlogin_edge_nats_connected 1"));
        assert!(text.contains("qrlogin_edge_connections_limit 18000"));
        m.set_node_state(false, false, 18_000);
        let text = m.render();
        assert!(text.contains("qrlogin_edge_ready 0"));
        assert!(text.contains("qrlogin_edge_nats_connected 0"));
    }
}
