//! Event payloads on the session subjects, turned into domain snapshots:
//! only a `StoredSession` republished by the server on every write of the
//! KV bucket (contract C1: the version is the `Nats-Sequence` header, the
//! KV revision, and the commit time its `Nats-Time-Stamp`). A message
//! without the republish headers (a bare `LoginEvent`, or a record someone
//! published by hand) is dropped: nothing but the bucket's republish
//! speaks on these subjects, and an edge does not take a state from
//! anyone else, not even from a peer that got onto the subject.

use prost::Message as _;
use qrlogin_proto::events::v1::LoginEvent;

use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::proto::{header, header_u64};
use crate::{
    auth_client::{deny_reason, login_state, match_code, qr_code, timestamp_opt},
    delivery::ports::BusEvent,
    domain::{SessionId, Snapshot},
};

/// The bucket's value (`qrlogin.events.v1.StoredSession`), decoded here
/// without the sealed part's meaning: edges never look at `sealed`.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredSession {
    #[prost(message, optional, tag = "1")]
    event: Option<LoginEvent>,
    #[prost(bytes = "bytes", tag = "2")]
    sealed: bytes::Bytes,
}

/// Decodes an event about `id`; `None` when the message is not a
/// republished record (no `Nats-Sequence` header, or not a
/// `StoredSession`), names another session, or carries no known state.
pub fn decode(id: &SessionId, headers: Option<&[u8]>, payload: &[u8]) -> Option<BusEvent> {
    let headers = headers?;
    let version = header_u64(headers, "Nats-Sequence")?;
    let e = StoredSession::decode(payload).ok()?.event?;
    if e.session_id != id.as_str() {
        return None;
    }
    let state = login_state(e.state)?;
    let previous = header_u64(headers, "Nats-Last-Sequence");
    let changed_at = timestamp_opt(e.changed_at);
    // When the stream stored the write: the commit, on the server's clock.
    let committed_at = commit_time(headers).or(changed_at);
    Some(BusEvent {
        snapshot: Snapshot {
            session_id: id.clone(),
            state,
            version,
            expires_at: if state.is_final() {
                None
            } else {
                timestamp_opt(e.expires_at)
            },
            updated_at: changed_at.unwrap_or_else(OffsetDateTime::now_utc),
            user_display_name: Some(e.user_display_name).filter(|n| !n.is_empty()),
            changed_at: committed_at,
            qr: qr_code(state, e.qr),
            match_code: match_code(state, e.match_code),
            deny_reason: deny_reason(e.deny_reason),
        },
        previous,
    })
}

/// The `Nats-Time-Stamp` header of a republished message (RFC 3339 with
/// nanoseconds, UTC): when the stream stored the original write.
fn commit_time(headers: &[u8]) -> Option<OffsetDateTime> {
    let value = std::str::from_utf8(header(headers, "Nats-Time-Stamp")?).ok()?;
    OffsetDateTime::parse(value, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use qrlogin_proto::events::v1::LoginState as PbState;

    fn event(id: &SessionId) -> LoginEvent {
        LoginEvent {
            session_id: id.to_string(),
            state: PbState::Scanned as i32,
            version: 4,
            expires_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            changed_at: Some(prost_types::Timestamp {
                seconds: 1_799_999_940,
                nanos: 0,
            }),
            user_display_name: "Alice".into(),
            ..Default::default()
        }
    }

    fn stored(e: LoginEvent) -> Vec<u8> {
        StoredSession {
            event: Some(e),
            sealed: bytes::Bytes::new(),
        }
        .encode_to_vec()
    }

    const HEADERS: &[u8] = b"NATS/1.0\r\nNats-Sequence: 4\r\n\r\n";

    /// Finding (#21, 8): a bare `LoginEvent` (what an older auth published,
    /// and what anyone who gets onto the subject can send) was taken as a
    /// state. Only the bucket's republished records are.
    #[test]
    fn bare_events_and_records_without_the_republish_headers_are_refused() {
        let id = SessionId::parse("q3Zb0Xz2kT9yLw1sJm5HAA").unwrap();
        let e = event(&id);
        assert!(decode(&id, None, &e.encode_to_vec()).is_none());
        assert!(decode(&id, Some(HEADERS), &e.encode_to_vec()).is_none());
        assert!(decode(&id, None, &stored(e.clone())).is_none());
        let no_sequence = b"NATS/1.0\r\nNats-Stream: KV_qrlogin_sessions\r\n\r\n";
        assert!(decode(&id, Some(no_sequence), &stored(e.clone())).is_none());
        let s = decode(&id, Some(HEADERS), &stored(e)).unwrap();
        assert_eq!(s.snapshot.version, 4);
        assert_eq!(s.previous, None);
        assert_eq!(s.snapshot.user_display_name.as_deref(), Some("Alice"));
        assert!(s.snapshot.changed_at.is_some());
    }

    #[test]
    fn garbage_other_sessions_and_unknown_states_are_refused() {
        let id = SessionId::parse("q3Zb0Xz2kT9yLw1sJm5HAA").unwrap();
        let e = event(&id);
        assert!(decode(&id, Some(HEADERS), b"\xff\xff not protobuf").is_none());
        let other = LoginEvent {
            session_id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            ..e.clone()
        };
        assert!(decode(&id, Some(HEADERS), &stored(other)).is_none());
        let unspecified = LoginEvent { state: 0, ..e };
        assert!(decode(&id, Some(HEADERS), &stored(unspecified)).is_none());
    }

    #[test]
    fn republished_stored_sessions_take_the_version_from_the_headers() {
        let id = SessionId::parse("q3Zb0Xz2kT9yLw1sJm5HAA").unwrap();
        let stored = StoredSession {
            event: Some(LoginEvent {
                version: 0,
                ..event(&id)
            }),
            sealed: bytes::Bytes::from_static(b"\x01sealed"),
        };
        let headers = b"NATS/1.0\r\nNats-Stream: KV_qrlogin_sessions\r\nNats-Sequence: 17\r\nNats-Time-Stamp: 2027-01-15T08:00:00.123456789Z\r\nNats-Last-Sequence: 11\r\n\r\n";
        let s = decode(&id, Some(headers), &stored.encode_to_vec()).unwrap();
        assert_eq!(s.snapshot.version, 17);
        assert_eq!(s.previous, Some(11));
        // The commit time is the stream's, not auth's `changed_at`; the
        // public `updated_at` stays auth's.
        assert_eq!(
            s.snapshot.changed_at,
            Some(time::macros::datetime!(2027-01-15 08:00:00.123456789 UTC))
        );
        assert_eq!(
            s.snapshot.updated_at,
            time::macros::datetime!(2027-01-15 07:59:00 UTC)
        );
        assert_eq!(s.snapshot.session_id, id);
        // A stored session about another id is refused, not misread.
        let other = SessionId::parse("AAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert!(decode(&other, Some(headers), &stored.encode_to_vec()).is_none());
    }
}
