//! The rotating QR code of a PENDING session, as an edge holds it: the
//! session's payload key and epoch length (from auth, in the event or the
//! read) and the epoch this snapshot shows. The edge computes the payload
//! of that epoch (`qrlogin_proto::qr`, the same code auth checks with) and
//! moves to the next epoch at each boundary from its timer queue; only the
//! current payload is ever written to a browser.

use std::sync::{Arc, Mutex};

use qrlogin_proto::qr as payload;
use time::OffsetDateTime;

use super::SessionId;

/// The QR code of one PENDING snapshot (about 56 bytes, in the snapshot).
#[derive(Clone, PartialEq, Eq)]
pub struct QrCode {
    key: [u8; payload::KEY_BYTES],
    starts_at_ms: i64,
    period_ms: u32,
    /// The payload's base URL, shared by every session with the same one.
    base: Arc<str>,
    /// The epoch this snapshot shows.
    pub epoch: u64,
}

impl std::fmt::Debug for QrCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QrCode")
            .field("key", &"<redacted>")
            .field("epoch", &self.epoch)
            .field("period_ms", &self.period_ms)
            .finish()
    }
}

/// One copy of the base URL for the whole node (every session of a
/// deployment has the same), instead of one string per session.
fn intern(base: &str) -> Arc<str> {
    static LAST: Mutex<Option<Arc<str>>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    match &*last {
        Some(held) if &**held == base => held.clone(),
        _ => {
            let fresh: Arc<str> = Arc::from(base);
            *last = Some(fresh.clone());
            fresh
        }
    }
}

fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

impl QrCode {
    /// From auth's rotation (key, start, period, base) at `now`; `None`
    /// when the rotation is unusable (wrong key length, no period).
    pub fn new(
        key: &[u8],
        starts_at: OffsetDateTime,
        period_ms: u32,
        base: &str,
        now: OffsetDateTime,
    ) -> Option<Self> {
        let key: [u8; payload::KEY_BYTES] = key.try_into().ok()?;
        if period_ms == 0 {
            return None;
        }
        let mut code = Self {
            key,
            starts_at_ms: millis(starts_at),
            period_ms,
            base: intern(base),
            epoch: 0,
        };
        code.epoch = code.epoch_at(now);
        Some(code)
    }

    pub fn epoch_at(&self, now: OffsetDateTime) -> u64 {
        payload::epoch_at(self.starts_at_ms, self.period_ms, millis(now))
    }

    /// When the epoch after this snapshot's begins.
    pub fn next_boundary(&self) -> OffsetDateTime {
        let ms = payload::epoch_start(self.starts_at_ms, self.period_ms, self.epoch + 1);
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// The same code showing `epoch`.
    pub fn at_epoch(&self, epoch: u64) -> Self {
        Self {
            epoch,
            ..self.clone()
        }
    }

    /// The payload of this snapshot's epoch: what the QR image encodes.
    pub fn payload(&self, id: &SessionId) -> String {
        payload::payload(&self.base, id.as_str(), &self.key, self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn id() -> SessionId {
        SessionId::parse("q3Zb0Xz2kT9yLw1sJm5HAA").unwrap()
    }

    #[test]
    fn epochs_boundaries_and_payloads_follow_auth() {
        let start = datetime!(2026-11-26 10:00:00 UTC);
        let c = QrCode::new(&[3; 16], start, 25_000, "http://x", start).unwrap();
        assert_eq!(c.epoch, 0);
        assert_eq!(c.next_boundary(), datetime!(2026-11-26 10:00:25 UTC));
        let later = QrCode::new(
            &[3; 16],
            start,
            25_000,
            "http://x",
            datetime!(2026-11-26 10:00:51 UTC),
        )
        .unwrap();
        assert_eq!(later.epoch, 2);
        assert_eq!(later.next_boundary(), datetime!(2026-11-26 10:01:15 UTC));
        // The payload is the one auth computes for that epoch.
        assert_eq!(
            later.payload(&id()),
            payload::payload("http://x", id().as_str(), &[3; 16], 2)
        );
        assert_ne!(c.payload(&id()), later.payload(&id()));
        assert_eq!(c.at_epoch(2), later);
        assert!(QrCode::new(&[3; 15], start, 25_000, "http://x", start).is_none());
        assert!(QrCode::new(&[3; 16], start, 0, "http://x", start).is_none());
        assert!(!format!("{c:?}").contains('3'), "the key is not printed");
    }

    #[test]
    fn the_base_url_is_shared() {
        let t = datetime!(2026-11-26 10:00:00 UTC);
        let a = QrCode::new(&[1; 16], t, 25_000, "https://login.example", t).unwrap();
        let b = QrCode::new(&[2; 16], t, 25_000, "https://login.example", t).unwrap();
        assert!(Arc::ptr_eq(&a.base, &b.base));
    }
}
