//! The public state of a login session and the ordering rules between states.

use serde::ser::{Serialize, SerializeStruct, Serializer};
use time::{OffsetDateTime, UtcOffset};

use super::SessionId;

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
    pub user_display_name: Option<String>,
    /// When auth committed the change, for snapshots that came as events;
    /// `None` for reads and local expiry. Only feeds the delivery-delay metric.
    pub changed_at: Option<OffsetDateTime>,
}

impl Snapshot {
    /// Whether `self` is news to someone who holds `previous`: a higher
    /// version, or a final state after a non-final one (the local `EXPIRED`
    /// keeps the version of the state it ends).
    pub fn is_newer_than(&self, previous: &Snapshot) -> bool {
        self.version > previous.version || (self.state.is_final() && !previous.state.is_final())
    }

    /// Whether `self` is news to a client that says it holds version `since`.
    /// A final snapshot is always worth sending: a client that saw it would
    /// have stopped asking.
    pub fn is_news_after(&self, since: u64) -> bool {
        self.version > since || self.state.is_final()
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
            user_display_name: self.user_display_name.clone(),
            changed_at: None,
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
        let mut out = serializer.serialize_struct("Snapshot", 7)?;
        out.serialize_field("session_id", s.session_id.as_str())?;
        out.serialize_field("state", s.state.as_str())?;
        out.serialize_field("version", &s.version)?;
        out.serialize_field("expires_at", &s.expires_at.map(format_timestamp))?;
        out.serialize_field("updated_at", &format_timestamp(s.updated_at))?;
        out.serialize_field("user_display_name", &s.user_display_name)?;
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
        }
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
        assert!(snap(LoginState::Scanned, 4).is_news_after(3));
        assert!(!snap(LoginState::Scanned, 4).is_news_after(4));
        assert!(snap(LoginState::Expired, 4).is_news_after(4));
    }

    #[test]
    fn json_matches_the_protocol_shape() {
        let mut s = snap(LoginState::Scanned, 7);
        s.user_display_name = Some("Alice".into());
        let v = s.to_json("edge-1");
        assert_eq!(
            v,
            serde_json::json!({
                "session_id": "q3Zb0Xz2kT9yLw1sJm5HAA",
                "state": "SCANNED",
                "version": 7,
                "expires_at": "2026-11-26T10:00:00.000Z",
                "updated_at": "2026-11-26T09:59:00.500Z",
                "user_display_name": "Alice",
                "node": "edge-1"
            })
        );
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
