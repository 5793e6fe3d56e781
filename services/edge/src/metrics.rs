//! Prometheus text metrics, hand-rolled: a few atomics per series are all
//! the edge needs, and they cost nothing per connection.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
        Mutex,
    },
    time::Duration,
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

/// Upper bounds (seconds) of the delivery-delay histogram.
const DELAY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The node's metrics registry; one per running edge.
#[derive(Debug, Default)]
pub struct Metrics {
    connections: [AtomicI64; Transport::ALL.len()],
    delivered: [AtomicU64; Transport::ALL.len()],
    delay_buckets: [AtomicU64; DELAY_BUCKETS.len()],
    delay_count: AtomicU64,
    delay_sum_micros: AtomicU64,
    subscriptions: AtomicI64,
    coalesced: AtomicU64,
    undecodable: AtomicU64,
    rechecks: AtomicU64,
    gaps: AtomicU64,
    nats_reconnects: AtomicU64,
    nats_errors: AtomicU64,
    write_timeouts: AtomicU64,
    pre_head: AtomicI64,
    /// Rejections by reason; the reasons are the fixed error codes, so the
    /// map holds at most a dozen entries.
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

/// Counts one connection that has not sent its request head yet.
pub struct PreHeadGuard(std::sync::Arc<Metrics>);

impl Drop for PreHeadGuard {
    fn drop(&mut self) {
        self.0.pre_head.fetch_sub(1, Relaxed);
    }
}

/// Counts one open connection of a transport for as long as it lives.
pub struct ConnectionGuard {
    metrics: std::sync::Arc<Metrics>,
    transport: Transport,
}

impl ConnectionGuard {
    pub fn transport(&self) -> Transport {
        self.transport
    }

    pub fn metrics(&self) -> &std::sync::Arc<Metrics> {
        &self.metrics
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.connections[self.transport.index()].fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    pub fn connection(self: &std::sync::Arc<Self>, transport: Transport) -> ConnectionGuard {
        self.connections[transport.index()].fetch_add(1, Relaxed);
        ConnectionGuard {
            metrics: self.clone(),
            transport,
        }
    }

    pub fn open_connections(&self, transport: Transport) -> i64 {
        self.connections[transport.index()].load(Relaxed)
    }

    /// One snapshot written to a client; `delay` is the time since auth
    /// committed the change, when the snapshot came as an event.
    pub fn delivered(&self, transport: Transport, delay: Option<Duration>) {
        self.delivered[transport.index()].fetch_add(1, Relaxed);
        if let Some(delay) = delay {
            let secs = delay.as_secs_f64();
            for (i, bound) in DELAY_BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    self.delay_buckets[i].fetch_add(1, Relaxed);
                }
            }
            self.delay_count.fetch_add(1, Relaxed);
            self.delay_sum_micros
                .fetch_add(delay.as_micros() as u64, Relaxed);
        }
    }

    pub fn subscription_opened(&self) {
        self.subscriptions.fetch_add(1, Relaxed);
    }

    pub fn subscription_closed(&self) {
        self.subscriptions.fetch_sub(1, Relaxed);
    }

    pub fn coalesced(&self, skipped: u64) {
        if skipped > 0 {
            self.coalesced.fetch_add(skipped, Relaxed);
        }
    }

    pub fn undecodable(&self) {
        self.undecodable.fetch_add(1, Relaxed);
    }

    pub fn recheck(&self) {
        self.rechecks.fetch_add(1, Relaxed);
    }

    pub fn nats_reconnect(&self) {
        self.nats_reconnects.fetch_add(1, Relaxed);
    }

    /// An event said a write before it never reached this node.
    pub fn gap(&self) {
        self.gaps.fetch_add(1, Relaxed);
    }

    /// A protocol error or `-ERR` from the NATS server.
    pub fn nats_error(&self) {
        self.nats_errors.fetch_add(1, Relaxed);
    }

    /// A connection was dropped because a write to it made no progress
    /// within the write timeout (a peer that does not read).
    pub fn write_timeout(&self) {
        self.write_timeouts.fetch_add(1, Relaxed);
    }

    pub fn pre_head(self: &std::sync::Arc<Self>) -> PreHeadGuard {
        self.pre_head.fetch_add(1, Relaxed);
        PreHeadGuard(self.clone())
    }

    pub fn rejected(&self, reason: &'static str) {
        let mut map = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(reason).or_default() += 1;
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP qrlogin_edge_connections Open browser connections by transport."
        );
        let _ = writeln!(out, "# TYPE qrlogin_edge_connections gauge");
        for t in Transport::ALL {
            let _ = writeln!(
                out,
                "qrlogin_edge_connections{{transport=\"{}\"}} {}",
                t.label(),
                self.open_connections(t)
            );
        }
        let _ = writeln!(
            out,
            "# HELP qrlogin_edge_events_delivered_total Snapshots written to clients by transport."
        );
        let _ = writeln!(out, "# TYPE qrlogin_edge_events_delivered_total counter");
        for t in Transport::ALL {
            let _ = writeln!(
                out,
                "qrlogin_edge_events_delivered_total{{transport=\"{}\"}} {}",
                t.label(),
                self.delivered[t.index()].load(Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP qrlogin_edge_delivery_delay_seconds From the event's changed_at to the write to a client.");
        let _ = writeln!(out, "# TYPE qrlogin_edge_delivery_delay_seconds histogram");
        for (i, bound) in DELAY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "qrlogin_edge_delivery_delay_seconds_bucket{{le=\"{bound}\"}} {}",
                self.delay_buckets[i].load(Relaxed)
            );
        }
        let count = self.delay_count.load(Relaxed);
        let _ = writeln!(
            out,
            "qrlogin_edge_delivery_delay_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "qrlogin_edge_delivery_delay_seconds_sum {}",
            self.delay_sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "qrlogin_edge_delivery_delay_seconds_count {count}");
        let simple: [(&str, &str, &str, i64); 9] = [
            (
                "qrlogin_edge_nats_subscriptions",
                "gauge",
                "NATS subscriptions held (one per watched session).",
                self.subscriptions.load(Relaxed),
            ),
            (
                "qrlogin_edge_coalesced_updates_total",
                "counter",
                "Snapshots replaced by a newer one before a watcher took them.",
                self.coalesced.load(Relaxed) as i64,
            ),
            (
                "qrlogin_edge_undecodable_events_total",
                "counter",
                "NATS messages dropped because they are not a LoginEvent.",
                self.undecodable.load(Relaxed) as i64,
            ),
            (
                "qrlogin_edge_rechecks_total",
                "counter",
                "Re-reads of watched sessions from auth (after a NATS reconnect, a gap, at a deadline, and their retries).",
                self.rechecks.load(Relaxed) as i64,
            ),
            (
                "qrlogin_edge_event_gaps_total",
                "counter",
                "Events whose Nats-Last-Sequence was ahead of the version held (a write was missed).",
                self.gaps.load(Relaxed) as i64,
            ),
            (
                "qrlogin_edge_nats_errors_total",
                "counter",
                "NATS -ERR answers and protocol errors (permission violations included).",
                self.nats_errors.load(Relaxed) as i64,
            ),
            (
                "qrlogin_edge_nats_reconnects_total",
                "counter",
                "NATS connections re-established.",
                self.nats_reconnects.load(Relaxed) as i64,
            ),
            (
                "qrlogin_edge_write_timeouts_total",
                "counter",
                "Connections dropped because a write made no progress within QRLOGIN_WRITE_TIMEOUT (peers that do not read).",
                self.write_timeouts.load(Relaxed) as i64,
            ),
            (
                "qrlogin_edge_pre_head_connections",
                "gauge",
                "Connections that have not sent a complete request head yet.",
                self.pre_head.load(Relaxed),
            ),
        ];
        for (name, kind, help, value) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let _ = writeln!(out, "# HELP qrlogin_edge_rejected_requests_total Requests answered with an error, by reason.");
        let _ = writeln!(out, "# TYPE qrlogin_edge_rejected_requests_total counter");
        let map = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        for (reason, n) in map.iter() {
            let _ = writeln!(
                out,
                "qrlogin_edge_rejected_requests_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histogram() {
        let m = std::sync::Arc::new(Metrics::default());
        let guard = m.connection(Transport::Sse);
        m.delivered(Transport::Sse, Some(Duration::from_micros(1500)));
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
        assert!(text.contains("qrlogin_edge_delivery_delay_seconds_bucket{le=\"0.001\"} 0"));
        assert!(text.contains("qrlogin_edge_delivery_delay_seconds_bucket{le=\"0.002\"} 1"));
        assert!(text.contains("qrlogin_edge_undecodable_events_total 1"));
        assert!(text.contains("qrlogin_edge_rejected_requests_total{reason=\"rate_limited\"} 1"));
        drop(guard);
        assert!(m
            .render()
            .contains("qrlogin_edge_connections{transport=\"sse\"} 0"));
    }
}
