//! The public state of a login session and the ordering rules between states.

use serde::ser::{Serialize, SerializeStruct, Serializer};
use time::{OffsetDateTime, UtcOffset};

use super::{QrCode, SessionId};

/// The states of docs/protocol.md. `REDEEMED`, `DENIED`, `CANCELLED` and
/// `EXPIRED` are final: nothing follows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginState {
    Pending,
    Scanned,
    Confirmed,
    Redeemed,
    Denied,
    Cancelled,
    Expired,
}

impl LoginState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Redeemed | Self::Denied | Self::Cancelled | Self::Expired
        )
    }

    /// The name used in JSON, SSE `event:` lines and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Scanned => "SCANNED",
            Self::Confirmed => "CONFIRMED",
            Self::Redeemed => "REDEEMED",
            Self::Denied => "DENIED",
            Self::Cancelled => "CANCELLED",
            Self::Expired => "EXPIRED",
        }
    }
}

/// Why a session ended DENIED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The phone's user refused.
    User,
    /// The phone's user picked a number the browser did not show.
    WrongMatch,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::WrongMatch => "wrong_match",
        }
    }
}

/// A whole snapshot of a session's public state.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub session_id: SessionId,
    pub state: LoginState,
    /// The key-value revision of the stored state; a locally computed
    /// `EXPIRED` keeps the version of the state it ends.
    pub version: u64,
    pub expires_at: Option<OffsetDateTime>,
    pub updated_at: OffsetDateTime,
    /// The confirming user's name (auth sends it from CONFIRMED on).
    pub user_display_name: Option<String>,
    /// When auth committed the change, for snapshots that came as events;
    /// `None` for reads, local expiry and rotation. Only feeds the
    /// delivery-delay metric.
    pub changed_at: Option<OffsetDateTime>,
    /// While PENDING: the QR code and the epoch it shows.
    pub qr: Option<QrCode>,
    /// While SCANNED: the number the browser shows (number matching).
    pub match_code: Option<u8>,
    pub deny_reason: Option<DenyReason>,
}

impl Snapshot {
    /// The epoch of the QR code this snapshot shows, while PENDING.
    pub fn qr_epoch(&self) -> Option<u64> {
        match self.state {
            LoginState::Pending => self.qr.as_ref().map(|q| q.epoch),
            _ => None,
        }
    }

    /// The QR payload this snapshot shows, while PENDING.
    pub fn qr_payload(&self) -> Option<String> {
        match self.state {
            LoginState::Pending => self.qr.as_ref().map(|q| q.payload(&self.session_id)),
            _ => None,
        }
    }

    /// Whether `self` is news to someone who holds `previous`: a higher
    /// version, a final state after a non-final one (the local `EXPIRED`
    /// keeps the version of the state it ends), or the same PENDING version
    /// with a newer QR payload (rotation writes nothing, so it keeps the
    /// version).
    pub fn is_newer_than(&self, previous: &Snapshot) -> bool {
        self.version > previous.version
            || (self.state.is_final() && !previous.state.is_final())
            || (self.version == previous.version
                && matches!(
                    (self.qr_epoch(), previous.qr_epoch()),
                    (Some(now), Some(held)) if now > held
                ))
    }

    /// Whether `self` is news to a client that says it holds version
    /// `since` and, while PENDING, the QR payload of epoch `qr_epoch`. A
    /// final snapshot is always worth sending: a client that saw it would
    /// have stopped asking. A PENDING snapshot of that version is sent when
    /// its payload is newer than the client's, or when the client did not
    /// say which it holds (a stream resuming: one message, and the client
    /// surely shows the current code).
    pub fn is_news_after(&self, since: u64, qr_epoch: Option<u64>) -> bool {
        self.version > since
            || self.state.is_final()
            || (self.version == since
                && match (self.qr_epoch(), qr_epoch) {
                    (Some(now), Some(held)) => now > held,
                    (Some(_), None) => true,
                    (None, _) => false,
                })
    }

    /// The same PENDING snapshot showing the QR payload of the epoch that
    /// runs at `now`, if that is a later one than this snapshot shows.
    pub fn rotated_at(&self, now: OffsetDateTime) -> Option<Snapshot> {
        let qr = self
            .qr
            .as_ref()
            .filter(|_| self.state == LoginState::Pending)?;
        let epoch = qr.epoch_at(now);
        (epoch > qr.epoch).then(|| Snapshot {
            qr: Some(qr.at_epoch(epoch)),
            changed_at: None,
            ..self.clone()
        })
    }

    /// When this snapshot's QR payload is replaced, while PENDING.
    pub fn next_rotation(&self) -> Option<OffsetDateTime> {
        match self.state {
            LoginState::Pending => self.qr.as_ref().map(QrCode::next_boundary),
            _ => None,
        }
    }

    /// The `EXPIRED` view of a non-final snapshot whose deadline is at or
    /// before `now`; `None` when the snapshot is final or still running.
    pub fn expired_at(&self, now: OffsetDateTime) -> Option<Snapshot> {
        let deadline = self.expires_at?;
        if self.state.is_final() || deadline > now {
            return None;
        }
        Some(Snapshot {
            session_id: self.session_id.clone(),
            state: LoginState::Expired,
            version: self.version,
            expires_at: None,
            updated_at: deadline,
            user_display_name: None,
            changed_at: None,
            qr: None,
            match_code: None,
            deny_reason: None,
        })
    }

    /// The JSON object of docs/protocol.md, with `node` naming this edge.
    pub fn to_json(&self, node: &str) -> serde_json::Value {
        serde_json::to_value(SnapshotJson { snap: self, node }).unwrap_or(serde_json::Value::Null)
    }

    /// The same object as compact JSON text (SSE `data:` and WebSocket).
    pub fn to_json_string(&self, node: &str) -> String {
        serde_json::to_string(&SnapshotJson { snap: self, node }).unwrap_or_default()
    }
}

/// Serializes a snapshot with the node name, without copying it.
pub struct SnapshotJson<'a> {
    pub snap: &'a Snapshot,
    pub node: &'a str,
}

impl Serialize for SnapshotJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let s = self.snap;
        let mut out = serializer.serialize_struct("Snapshot", 10)?;
        out.serialize_field("session_id", s.session_id.as_str())?;
        out.serialize_field("state", s.state.as_str())?;
        out.serialize_field("version", &s.version)?;
        out.serialize_field("expires_at", &s.expires_at.map(format_timestamp))?;
        out.serialize_field("updated_at", &format_timestamp(s.updated_at))?;
        out.serialize_field("user_display_name", &s.user_display_name)?;
        out.serialize_field("qr_payload", &s.qr_payload())?;
        out.serialize_field("match_code", &s.match_code)?;
        out.serialize_field("deny_reason", &s.deny_reason.map(DenyReason::as_str))?;
        out.serialize_field("node", self.node)?;
        out.end()
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-26T10:00:00.000Z`.
pub fn format_timestamp(t: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.to_offset(UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn snap(state: LoginState, version: u64) -> Snapshot {
        Snapshot {
            session_id: SessionId::parse("q3Zb0Xz2kT9yLw1sJm5HAA").unwrap(),
            state,
            version,
            expires_at: Some(datetime!(2026-11-26 10:00:00 UTC)),
            updated_at: datetime!(2026-11-26 09:59:00.5 UTC),
            user_display_name: None,
            changed_at: None,
            qr: None,
            match_code: None,
            deny_reason: None,
        }
    }

    fn pending_with_qr(version: u64, now: OffsetDateTime) -> Snapshot {
        let start = datetime!(2026-11-26 09:58:00 UTC);
        Snapshot {
            qr: QrCode::new(&[5; 16], start, 25_000, "http://x", now),
            ..snap(LoginState::Pending, version)
        }
    }

    #[test]
    fn a_rotated_pending_snapshot_is_news_with_the_same_version() {
        let t0 = datetime!(2026-11-26 09:58:10 UTC);
        let a = pending_with_qr(3, t0);
        assert_eq!(a.qr_epoch(), Some(0));
        assert_eq!(a.next_rotation(), Some(datetime!(2026-11-26 09:58:25 UTC)));
        assert!(a.rotated_at(datetime!(2026-11-26 09:58:24 UTC)).is_none());
        let b = a.rotated_at(datetime!(2026-11-26 09:58:26 UTC)).unwrap();
        assert_eq!((b.version, b.qr_epoch()), (3, Some(1)));
        assert_ne!(a.qr_payload(), b.qr_payload());
        assert!(b.is_newer_than(&a));
        assert!(!a.is_newer_than(&b), "an older payload is not news");
        assert!(!b.is_newer_than(&b));
        // The scan (a higher version) replaces any payload, and is not
        // replaced by a late rotation.
        let scanned = snap(LoginState::Scanned, 4);
        assert!(scanned.is_newer_than(&b));
        assert!(!b.is_newer_than(&scanned));
        assert_eq!(scanned.qr_payload(), None);
        // Resuming at version 3: news unless the client holds this payload.
        assert!(b.is_news_after(3, None), "a stream resuming gets the code");
        assert!(b.is_news_after(3, Some(0)));
        assert!(!b.is_news_after(3, Some(1)));
        assert!(!snap(LoginState::Scanned, 4).is_news_after(4, None));
        // Expiry drops the code.
        let expired = b.expired_at(datetime!(2026-11-26 10:00:01 UTC)).unwrap();
        assert_eq!(expired.qr_payload(), None);
    }

    #[test]
    fn higher_version_is_newer_and_same_version_is_not() {
        let a = snap(LoginState::Pending, 3);
        assert!(snap(LoginState::Scanned, 4).is_newer_than(&a));
        assert!(!snap(LoginState::Pending, 3).is_newer_than(&a));
        assert!(!snap(LoginState::Pending, 2).is_newer_than(&a));
    }

    #[test]
    fn local_expiry_with_same_version_is_newer_once() {
        let a = snap(LoginState::Scanned, 5);
        let expired = a.expired_at(datetime!(2026-11-26 10:00:01 UTC)).unwrap();
        assert_eq!(expired.state, LoginState::Expired);
        assert_eq!(expired.version, 5);
        assert_eq!(expired.expires_at, None);
        assert!(expired.is_newer_than(&a));
        assert!(!expired.is_newer_than(&expired));
        // The stored EXPIRED that auth writes later has a higher version; a
        // watcher that already has the local one still gets it only once.
        let stored = snap(LoginState::Expired, 6);
        assert!(stored.is_newer_than(&expired));
    }

    #[test]
    fn no_local_expiry_before_the_deadline_or_in_final_states() {
        let a = snap(LoginState::Pending, 1);
        assert!(a.expired_at(datetime!(2026-11-26 09:59:59 UTC)).is_none());
        let done = snap(LoginState::Redeemed, 9);
        assert!(done
            .expired_at(datetime!(2026-11-26 11:00:00 UTC))
            .is_none());
    }

    #[test]
    fn since_rule_sends_newer_and_final_snapshots() {
        assert!(snap(LoginState::Scanned, 4).is_news_after(3, None));
        assert!(!snap(LoginState::Scanned, 4).is_news_after(4, None));
        assert!(snap(LoginState::Expired, 4).is_news_after(4, None));
    }

    #[test]
    fn json_matches_the_protocol_shape() {
        let mut s = snap(LoginState::Scanned, 7);
        s.match_code = Some(42);
        let v = s.to_json("edge-1");
        assert_eq!(
            v,
            serde_json::json!({
                "session_id": "q3Zb0Xz2kT9yLw1sJm5HAA",
                "state": "SCANNED",
                "version": 7,
                "expires_at": "2026-11-26T10:00:00.000Z",
                "updated_at": "2026-11-26T09:59:00.500Z",
                "user_display_name": null,
                "qr_payload": null,
                "match_code": 42,
                "deny_reason": null,
                "node": "edge-1"
            })
        );
        let pending = pending_with_qr(2, datetime!(2026-11-26 09:58:00 UTC));
        let v = pending.to_json("edge-1");
        assert_eq!(v["qr_payload"], pending.qr_payload().unwrap());
        assert!(v["qr_payload"]
            .as_str()
            .unwrap()
            .starts_with("http://x/m/q3Zb0Xz2kT9yLw1sJm5HAA#0."));
        let denied = Snapshot {
            deny_reason: Some(DenyReason::WrongMatch),
            expires_at: None,
            ..snap(LoginState::Denied, 9)
        };
        assert_eq!(denied.to_json("n")["deny_reason"], "wrong_match");
        let done = snap(LoginState::Cancelled, 8);
        let v = Snapshot {
            expires_at: None,
            ..done
        }
        .to_json("n");
        assert!(v["expires_at"].is_null());
        assert!(v["user_display_name"].is_null());
    }
}
