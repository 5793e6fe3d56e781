//! Auth's own metrics, on the OpenMetrics client (`prometheus-client`):
//! what happened to each transition, how often compare-and-swap lost a race
//! or gave up, how long the bucket takes to read and to write, why callers
//! were refused. One registry per running service; served as text on the
//! operations port (see [`crate::ops`]), never on the gRPC port.
//!
//! Every label takes its values from a fixed set named here or in the code
//! that counts, so no caller input can grow the number of series. Series a
//! dashboard or alert relies on are created at zero when the registry is
//! built, so that a query finds them before the first event.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, info::Info},
    registry::Registry,
};
use std::sync::Arc;
use std::time::Duration;

use crate::counters::Counters;

/// Upper bounds (seconds) of the latency histograms: 0.25 ms to 4 s.
const LATENCY_BUCKETS: [f64; 15] = [
    0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0,
    2.0, 4.0,
];

/// The actions whose series exist from the start.
const ACTIONS: [&str; 7] = [
    "create", "scan", "confirm", "deny", "cancel", "redeem", "expire",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub action: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The service's metrics; cheap to share behind an `Arc`.
pub struct AuthMetrics {
    registry: Registry,
    transitions: Family<TransitionLabels, Counter>,
    cas_retries: Family<ActionLabels, Counter>,
    cas_aborts: Family<ActionLabels, Counter>,
    kv_read: Histogram,
    kv_write: Family<ResultLabels, Histogram, fn() -> Histogram>,
    kv_retries: Family<OpLabels, Counter>,
    user_token_failures: Family<ReasonLabels, Counter>,
    create_limited: Counter,
    service_token_refusals: Family<ReasonLabels, Counter>,
    calls: Family<CallLabels, Counter>,
    call_duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    admission_refusals: Family<ReasonLabels, Counter>,
    nats_connected: Gauge,
    nats_reconnects: Counter,
    qr: Arc<Counters>,
}

impl std::fmt::Debug for AuthMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthMetrics")
    }
}

impl Default for AuthMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("qrlogin_auth");
        let m = Self {
            transitions: Family::default(),
            cas_retries: Family::default(),
            cas_aborts: Family::default(),
            kv_read: latency(),
            kv_write: Family::new_with_constructor(latency),
            kv_retries: Family::default(),
            user_token_failures: Family::default(),
            create_limited: Counter::default(),
            service_token_refusals: Family::default(),
            calls: Family::default(),
            call_duration: Family::new_with_constructor(latency),
            in_flight: Gauge::default(),
            admission_refusals: Family::default(),
            nats_connected: Gauge::default(),
            nats_reconnects: Counter::default(),
            qr: Arc::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "build",
            "The running version (always 1)",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        r.register(
            "transitions",
            "Session operations by action (create, scan, confirm, deny, cancel, redeem, expire) and outcome (written, unchanged, or why not)",
            m.transitions.clone(),
        );
        r.register(
            "cas_retries",
            "Compare-and-swap writes that lost a race and were retried after a re-read",
            m.cas_retries.clone(),
        );
        r.register(
            "cas_aborts",
            "Transitions given up after losing the race 8 times in a row (answered ABORTED)",
            m.cas_aborts.clone(),
        );
        r.register(
            "kv_read_duration_seconds",
            "Reading one session from the bucket",
            m.kv_read.clone(),
        );
        r.register(
            "kv_write_duration_seconds",
            "Writing one session: the JetStream publish until its acknowledgement, by result (committed, conflict, full, error). NATS republishes a committed write as the session's event",
            m.kv_write.clone(),
        );
        r.register(
            "kv_retries",
            "Session reads and writes attempted again after a transient failure (timeout, no responders, leader election), by op (read, write)",
            m.kv_retries.clone(),
        );
        r.register(
            "user_token_failures",
            "Phone calls refused for their user token, by reason (missing, malformed, expired, invalid, keys_unavailable)",
            m.user_token_failures.clone(),
        );
        r.register(
            "create_limited",
            "Creates refused by the per-network create limit (QRLOGIN_CREATE_LIMIT)",
            m.create_limited.clone(),
        );
        r.register(
            "service_token_refusals",
            "Calls refused for their service token, by reason (missing, invalid)",
            m.service_token_refusals.clone(),
        );
        r.register(
            "calls",
            "AuthService calls answered, by method and gRPC code",
            m.calls.clone(),
        );
        r.register(
            "call_duration_seconds",
            "AuthService calls from arrival to answer, by method",
            m.call_duration.clone(),
        );
        r.register(
            "calls_in_flight",
            "AuthService calls in progress (QRLOGIN_MAX_CONCURRENT_REQUESTS bounds it)",
            m.in_flight.clone(),
        );
        r.register(
            "admission_refusals",
            "AuthService calls refused before or stopped during their work, by reason (over_capacity, timeout)",
            m.admission_refusals.clone(),
        );
        r.register(
            "nats_connected",
            "1 while the NATS connection is up and the session bucket open, else 0",
            m.nats_connected.clone(),
        );
        r.register(
            "nats_reconnects",
            "NATS connections re-established after a loss",
            m.nats_reconnects.clone(),
        );
        m.qr.register(r);
        for outcome in ["rate_limited", "storage_full", "unavailable"] {
            m.transitions
                .get_or_create(&TransitionLabels {
                    action: "create",
                    outcome,
                })
                .get();
        }
        for action in ACTIONS {
            m.cas_retries.get_or_create(&ActionLabels { action }).get();
            m.cas_aborts.get_or_create(&ActionLabels { action }).get();
            m.transitions
                .get_or_create(&TransitionLabels {
                    action,
                    outcome: "written",
                })
                .get();
        }
        for reason in [
            "missing",
            "malformed",
            "expired",
            "invalid",
            "keys_unavailable",
        ] {
            m.user_token_failures
                .get_or_create(&ReasonLabels { reason })
                .get();
        }
        for reason in ["missing", "invalid"] {
            m.service_token_refusals
                .get_or_create(&ReasonLabels { reason })
                .get();
        }
        for reason in ["over_capacity", "timeout"] {
            m.admission_refusals
                .get_or_create(&ReasonLabels { reason })
                .get();
        }
        for result in ["committed", "conflict", "full", "error"] {
            let _ = m.kv_write.get_or_create(&ResultLabels { result });
        }
        for op in ["read", "write"] {
            m.kv_retries.get_or_create(&OpLabels { op }).get();
        }
        Self { registry, ..m }
    }

    /// The QR protocol's abuse counters (registered here, bumped by the
    /// service).
    pub fn qr_counters(&self) -> Arc<Counters> {
        self.qr.clone()
    }

    /// The OpenMetrics text of every series.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn transition(&self, action: &'static str, outcome: &'static str) {
        self.transitions
            .get_or_create(&TransitionLabels { action, outcome })
            .inc();
    }

    pub fn cas_retry(&self, action: &'static str) {
        self.cas_retries
            .get_or_create(&ActionLabels { action })
            .inc();
    }

    pub fn cas_abort(&self, action: &'static str) {
        self.cas_aborts
            .get_or_create(&ActionLabels { action })
            .inc();
    }

    pub fn kv_read(&self, took: Duration) {
        self.kv_read.observe(took.as_secs_f64());
    }

    pub fn kv_write(&self, result: &'static str, took: Duration) {
        self.kv_write
            .get_or_create(&ResultLabels { result })
            .observe(took.as_secs_f64());
    }

    /// A session read or write about to be attempted again.
    pub fn kv_retry(&self, op: &'static str) {
        self.kv_retries.get_or_create(&OpLabels { op }).inc();
    }

    pub fn user_token_failure(&self, reason: &'static str) {
        self.user_token_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn create_limited(&self) {
        self.create_limited.inc();
    }

    pub fn service_token_refused(&self, reason: &'static str) {
        self.service_token_refusals
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// One AuthService call answered with `code` after `took`.
    pub fn call(&self, method: &'static str, code: &'static str, took: Duration) {
        self.calls.get_or_create(&CallLabels { method, code }).inc();
        self.call_duration
            .get_or_create(&MethodLabels { method })
            .observe(took.as_secs_f64());
    }

    /// Counts a call in progress until the guard drops.
    pub fn in_flight(self: &std::sync::Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(self.clone())
    }

    pub fn admission_refused(&self, reason: &'static str) {
        self.admission_refusals
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// The NATS link (and bucket) is usable, or not; `reconnected` when it
    /// came back after a loss.
    pub fn nats_link(&self, up: bool) {
        let was = self.nats_connected.set(i64::from(up));
        if up && was == 0 {
            self.nats_reconnects.inc();
        }
    }

    /// The first connection is not a reconnect.
    pub fn nats_first_connect(&self) {
        self.nats_connected.set(1);
    }
}

/// One AuthService call in progress.
pub struct InFlight(std::sync::Arc<AuthMetrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_exist_at_zero_and_count_once_used() {
        let m = std::sync::Arc::new(AuthMetrics::new());
        let text = m.render();
        for series in [
            "qrlogin_auth_cas_aborts_total{action=\"confirm\"} 0",
            "qrlogin_auth_transitions_total{action=\"scan\",outcome=\"written\"} 0",
            "qrlogin_auth_user_token_failures_total{reason=\"expired\"} 0",
            "qrlogin_auth_create_limited_total 0",
            "qrlogin_auth_nats_connected 0",
            "qrlogin_auth_build_info{version=",
            "qrlogin_auth_kv_write_duration_seconds_count{result=\"committed\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
        m.transition("confirm", "refused");
        m.kv_write("committed", Duration::from_micros(700));
        m.call("ConfirmLoginSession", "OK", Duration::from_millis(3));
        let guard = m.in_flight();
        m.nats_first_connect();
        m.nats_link(false);
        m.nats_link(true);
        let text = m.render();
        assert!(text
            .contains("qrlogin_auth_transitions_total{action=\"confirm\",outcome=\"refused\"} 1"));
        assert!(text.contains(
            "qrlogin_auth_kv_write_duration_seconds_bucket{le=\"0.001\",result=\"committed\"} 1"
        ));
        assert!(
            text.contains("qrlogin_auth_calls_total{method=\"ConfirmLoginSession\",code=\"OK\"} 1")
        );
        assert!(text.contains("qrlogin_auth_calls_in_flight 1"));
        assert!(text.contains("qrlogin_auth_nats_reconnects_total 1"));
        drop(guard);
        assert!(m.render().contains("qrlogin_auth_calls_in_flight 0"));
        assert!(m.render().ends_with("# EOF\n"));
        // The client ends every help text with a full stop of its own.
        assert!(!text.contains("..\n"), "{text}");
    }
}
