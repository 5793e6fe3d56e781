//! What auth counts about abuse of the QR protocol, for the operator: each
//! count is also a log line where it happens. The counters are
//! prometheus-client counters (one shared atomic each), registered by
//! [`crate::metrics::AuthMetrics`] as `qrlogin_auth_<name>_total` and read
//! directly by tests.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

#[derive(Debug, Default)]
pub struct Counters {
    /// A confirm picked a number the browser did not show (session DENIED).
    pub wrong_match: Counter,
    /// A second user tried to scan a session that another user scanned.
    pub multi_scan: Counter,
    /// A scan carried a payload that was replaced (past the grace).
    pub qr_replaced: Counter,
    /// A scan carried no payload, a forged one, or another session's.
    pub qr_invalid: Counter,
    /// A redeem of a key-bound session without a valid proof.
    pub proof_refused: Counter,
    /// Scans and confirms refused by the per-user limits.
    pub user_limited: Counter,
}

/// A point-in-time copy, for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub wrong_match: u64,
    pub multi_scan: u64,
    pub qr_replaced: u64,
    pub qr_invalid: u64,
    pub proof_refused: u64,
    pub user_limited: u64,
}

impl Counters {
    pub fn bump(counter: &Counter) {
        counter.inc();
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            wrong_match: self.wrong_match.get(),
            multi_scan: self.multi_scan.get(),
            qr_replaced: self.qr_replaced.get(),
            qr_invalid: self.qr_invalid.get(),
            proof_refused: self.proof_refused.get(),
            user_limited: self.user_limited.get(),
        }
    }

    /// Registers every counter (the registry adds the `qrlogin_auth_`
    /// prefix and the `_total` suffix).
    pub fn register(&self, r: &mut Registry) {
        let all: [(&str, &str, &Counter); 6] = [
            (
                "wrong_match",
                "Confirms that picked a number the browser did not show (the session is DENIED)",
                &self.wrong_match,
            ),
            (
                "multi_scan",
                "Scans of a session that another user had already scanned",
                &self.multi_scan,
            ),
            (
                "qr_replaced",
                "Scans with a QR payload that was replaced (past the grace)",
                &self.qr_replaced,
            ),
            (
                "qr_invalid",
                "Scans with no QR payload, a forged one or another session's",
                &self.qr_invalid,
            ),
            (
                "proof_refused",
                "Redeems of key-bound sessions without a valid proof of the browser's key",
                &self.proof_refused,
            ),
            (
                "user_limited",
                "Scans and confirms refused by the per-user limits",
                &self.user_limited,
            ),
        ];
        for (name, help, counter) in all {
            r.register(name, help, counter.clone());
        }
    }
}
