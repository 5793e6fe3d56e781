//! What auth counts about abuse of the QR protocol, for the operator: each
//! count is also a log line where it happens. Plain atomics held by the
//! service, so an exporter (Prometheus, issue of metrics) only has to read
//! them: `qrlogin_auth_<name>_total`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Counters {
    /// A confirm picked a number the browser did not show (session DENIED).
    pub wrong_match: AtomicU64,
    /// A second user tried to scan a session that another user scanned.
    pub multi_scan: AtomicU64,
    /// A scan carried a payload that was replaced (past the grace).
    pub qr_replaced: AtomicU64,
    /// A scan carried no payload, a forged one, or another session's.
    pub qr_invalid: AtomicU64,
    /// A redeem of a key-bound session without a valid proof.
    pub proof_refused: AtomicU64,
    /// Scans and confirms refused by the per-user limits.
    pub user_limited: AtomicU64,
}

/// A point-in-time copy, for exporters and tests.
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
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            wrong_match: self.wrong_match.load(Relaxed),
            multi_scan: self.multi_scan.load(Relaxed),
            qr_replaced: self.qr_replaced.load(Relaxed),
            qr_invalid: self.qr_invalid.load(Relaxed),
            proof_refused: self.proof_refused.load(Relaxed),
            user_limited: self.user_limited.load(Relaxed),
        }
    }

    /// `(metric name, value)` pairs in the Prometheus naming of the docs.
    pub fn metrics(&self) -> [(&'static str, u64); 6] {
        let s = self.snapshot();
        [
            ("qrlogin_auth_wrong_match_total", s.wrong_match),
            ("qrlogin_auth_multi_scan_total", s.multi_scan),
            ("qrlogin_auth_qr_replaced_total", s.qr_replaced),
            ("qrlogin_auth_qr_invalid_total", s.qr_invalid),
            ("qrlogin_auth_proof_refused_total", s.proof_refused),
            ("qrlogin_auth_user_limited_total", s.user_limited),
        ]
    }
}
