//! The bytes of one stored session: a protobuf `StoredSession` whose
//! `event` is the public snapshot edges read from the republished write, and
//! whose `sealed` part is the whole record, sealed for this session id. Auth
//! trusts only the sealed part; the event is derived from it.

use bytes::Bytes;
use prost::Message as _;

use crate::domain::{SessionId, SessionRecord, UnixMillis};
use crate::sealing::Sealer;
use qrlogin_proto::events::v1 as pb;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a StoredSession: {0}")]
    Decode(String),
    /// Not sealed by auth for this session: forged, tampered, replayed
    /// from another session, or sealed with a key auth no longer holds.
    #[error("the sealed part does not open (forged, tampered, or an unknown record key)")]
    Unsealed,
    #[error("the sealed record names another session")]
    WrongSession,
    #[error("cannot encode the record: {0}")]
    Encode(String),
}

/// The value written to the bucket for `record`.
pub fn encode(record: &SessionRecord, sealer: &Sealer) -> Result<Bytes, RecordError> {
    let private = serde_json::to_vec(record).map_err(|e| RecordError::Encode(e.to_string()))?;
    let sealed = sealer
        .seal(&record.id, &private)
        .map_err(|e| RecordError::Encode(e.to_string()))?;
    let stored = pb::StoredSession {
        event: Some(login_event(record, 0)),
        sealed,
    };
    Ok(Bytes::from(stored.encode_to_vec()))
}

/// The record stored under `id`, from its sealed part only.
pub fn decode(value: &[u8], id: &SessionId, sealer: &Sealer) -> Result<SessionRecord, RecordError> {
    let stored =
        pb::StoredSession::decode(value).map_err(|e| RecordError::Decode(e.to_string()))?;
    let private = sealer
        .open(id.as_str(), &stored.sealed)
        .map_err(|_| RecordError::Unsealed)?;
    let record: SessionRecord =
        serde_json::from_slice(&private).map_err(|e| RecordError::Decode(e.to_string()))?;
    if record.id != id.as_str() {
        return Err(RecordError::WrongSession);
    }
    Ok(record)
}

/// Milliseconds since the epoch as a protobuf timestamp.
pub fn timestamp(ms: UnixMillis) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// The public snapshot of a record: state, deadlines, the display name.
/// Never the secret hash, the browser's IP or user agent, the user's id.
pub fn login_event(record: &SessionRecord, version: u64) -> pb::LoginEvent {
    pb::LoginEvent {
        session_id: record.id.clone(),
        state: proto_state(record.state) as i32,
        version,
        expires_at: record.expires_at.map(timestamp),
        changed_at: Some(timestamp(record.updated_at)),
        user_display_name: record
            .user
            .as_ref()
            .map(|u| u.display_name.clone())
            .unwrap_or_default(),
    }
}

pub fn proto_state(state: crate::domain::LoginState) -> pb::LoginState {
    use crate::domain::LoginState as S;
    match state {
        S::Pending => pb::LoginState::Pending,
        S::Scanned => pb::LoginState::Scanned,
        S::Confirmed => pb::LoginState::Confirmed,
        S::Redeemed => pb::LoginState::Redeemed,
        S::Denied => pb::LoginState::Denied,
        S::Cancelled => pb::LoginState::Cancelled,
        S::Expired => pb::LoginState::Expired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BrowserContext, BrowserSecret, Deadlines, PhoneUser};

    fn record() -> (SessionRecord, SessionId) {
        let id = SessionId::generate();
        let mut r = SessionRecord::new(
            &id,
            &BrowserSecret::generate(),
            BrowserContext {
                ip: "198.51.100.23".into(),
                user_agent: "UniqueAgent/9.9".into(),
                created_at: 1_700_000_000_000,
            },
            1_700_000_000_000,
            &Deadlines::default(),
        );
        r.user = Some(PhoneUser {
            id: "user-4711".into(),
            display_name: "Alice".into(),
        });
        (r, id)
    }

    #[test]
    fn the_stored_value_shows_the_snapshot_and_hides_the_rest() {
        let (r, id) = record();
        let sealer = Sealer::from_key(&[1; 32]);
        let bytes = encode(&r, &sealer).unwrap();
        let raw = String::from_utf8_lossy(&bytes);
        for private in [
            r.secret_sha256.as_str(),
            "198.51.100.23",
            "UniqueAgent",
            "user-4711",
        ] {
            assert!(!raw.contains(private), "{private} in clear");
        }
        let stored = pb::StoredSession::decode(bytes.as_ref()).unwrap();
        let event = stored.event.unwrap();
        assert_eq!(event.session_id, r.id);
        assert_eq!(event.version, 0);
        assert_eq!(event.user_display_name, "Alice");
        assert_eq!(decode(&bytes, &id, &sealer).unwrap(), r);
    }

    #[test]
    fn forged_or_moved_records_are_refused() {
        let (r, id) = record();
        let sealer = Sealer::from_key(&[1; 32]);
        // The public part rewritten: auth reads the sealed part only.
        let mut stored = pb::StoredSession::decode(encode(&r, &sealer).unwrap().as_ref()).unwrap();
        stored.event.as_mut().unwrap().state = pb::LoginState::Confirmed as i32;
        let read = decode(&stored.encode_to_vec(), &id, &sealer).unwrap();
        assert_eq!(read.state, r.state);
        // A sealed part made by someone without the key.
        let forged = pb::StoredSession {
            event: None,
            sealed: Sealer::from_key(&[2; 32]).seal(id.as_str(), b"{}").unwrap(),
        };
        assert!(matches!(
            decode(&forged.encode_to_vec(), &id, &sealer),
            Err(RecordError::Unsealed)
        ));
        // Another session's record copied under this id.
        let (other, _) = record();
        let moved = encode(&other, &sealer).unwrap();
        assert!(decode(&moved, &id, &sealer).is_err());
        // The JSON records of the old format are not accepted.
        let json = serde_json::to_vec(&r).unwrap();
        assert!(decode(&json, &id, &sealer).is_err());
    }
}
