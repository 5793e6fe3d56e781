//! The only module that speaks NATS: the session bucket (JetStream key-value,
//! every write a compare-and-swap on the key's revision), the per-session
//! event subject, and the connection's credentials.

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use prost::Message as _;
use std::time::Duration;

use crate::config::{AuthConfig, KvStorage};

mod access;
use crate::domain::{SessionId, SessionRecord, UnixMillis};
pub use access::{AccessError, NatsAccess, NkeySeed};
use qrlogin_proto::events::v1 as pb;

/// Largest record we store; real ones are well under 1 KiB.
const MAX_VALUE_SIZE: i32 = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("NATS unavailable: {0}")]
    Unavailable(String),
    /// The key's revision moved since we read it: someone else won the race.
    #[error("the session changed concurrently")]
    Conflict,
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

/// Where and how to keep sessions.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub nats_url: String,
    pub access: NatsAccess,
    pub bucket: String,
    pub replicas: usize,
    pub storage: KvStorage,
    pub retention: Duration,
    pub subject_prefix: String,
}

impl BrokerSettings {
    pub fn from_config(c: &AuthConfig, access: NatsAccess) -> Self {
        Self {
            nats_url: c.nats_url.clone(),
            access,
            bucket: c.kv_bucket.clone(),
            replicas: c.kv_replicas,
            storage: c.kv_storage,
            retention: c.session_retention,
            subject_prefix: c.subject_prefix.clone(),
        }
    }
}

/// Connection state changes the service reports through its health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Up,
    Down,
}

pub struct Broker {
    client: async_nats::Client,
    kv: kv::Store,
    subject_prefix: String,
}

impl Broker {
    /// Connects and opens (or creates) the bucket. `on_link` hears every later
    /// disconnect and reconnect.
    pub async fn connect(
        settings: &BrokerSettings,
        on_link: impl Fn(LinkState) + Send + Sync + 'static,
    ) -> Result<Self, BrokerError> {
        let unavailable = |e: &dyn std::fmt::Display| BrokerError::Unavailable(e.to_string());
        let client = settings
            .access
            .options()
            .name("qrlogin-auth")
            .connection_timeout(Duration::from_secs(3))
            .event_callback(move |event| {
                let state = match event {
                    async_nats::Event::Connected => Some(LinkState::Up),
                    async_nats::Event::Disconnected => Some(LinkState::Down),
                    _ => None,
                };
                if let Some(state) = state {
                    on_link(state);
                }
                async {}
            })
            .connect(settings.nats_url.as_str())
            .await
            .map_err(|e| unavailable(&e))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(3));
        let config = kv::Config {
            bucket: settings.bucket.clone(),
            description: "qrlogin login sessions".into(),
            history: 1,
            max_age: settings.retention,
            max_value_size: MAX_VALUE_SIZE,
            storage: match settings.storage {
                KvStorage::File => jetstream::stream::StorageType::File,
                KvStorage::Memory => jetstream::stream::StorageType::Memory,
            },
            num_replicas: settings.replicas,
            ..Default::default()
        };
        let kv = match js.get_key_value(settings.bucket.as_str()).await {
            Ok(kv) => kv,
            Err(_) => match js.create_key_value(config).await {
                Ok(kv) => kv,
                // Another auth instance may have created it a moment ago.
                Err(create_err) => js
                    .get_key_value(settings.bucket.as_str())
                    .await
                    .map_err(|_| unavailable(&create_err))?,
            },
        };
        Ok(Self {
            client,
            kv,
            subject_prefix: settings.subject_prefix.clone(),
        })
    }

    pub fn subject(&self, id: &str) -> String {
        format!("{}.{}", self.subject_prefix, id)
    }

    /// Reads a session and its revision; `None` when absent or removed.
    pub async fn load(&self, id: &SessionId) -> Result<Option<(SessionRecord, u64)>, BrokerError> {
        let entry = self
            .kv
            .entry(id.as_str())
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let record: SessionRecord = serde_json::from_slice(&e.value)
                    .map_err(|err| BrokerError::Corrupt(err.to_string()))?;
                Ok(Some((record, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Stores a new session; fails if the id exists (a 128-bit collision).
    pub async fn create(&self, record: &SessionRecord) -> Result<u64, BrokerError> {
        let value = encode_record(record)?;
        self.kv
            .create(record.id.as_str(), value)
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => BrokerError::Conflict,
                _ => BrokerError::Unavailable(e.to_string()),
            })
    }

    /// Writes `record` only if the key is still at `revision`.
    pub async fn update(&self, record: &SessionRecord, revision: u64) -> Result<u64, BrokerError> {
        let value = encode_record(record)?;
        self.kv
            .update(record.id.as_str(), value, revision)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => BrokerError::Conflict,
                _ => BrokerError::Unavailable(e.to_string()),
            })
    }

    /// Publishes the public snapshot of `record` at `revision`.
    pub async fn publish(&self, record: &SessionRecord, revision: u64) -> Result<(), BrokerError> {
        let event = login_event(record, revision);
        self.client
            .publish(self.subject(&record.id), Bytes::from(event.encode_to_vec()))
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))
    }
}

fn encode_record(record: &SessionRecord) -> Result<Bytes, BrokerError> {
    serde_json::to_vec(record)
        .map(Bytes::from)
        .map_err(|e| BrokerError::Corrupt(e.to_string()))
}

/// Milliseconds since the epoch as a protobuf timestamp.
pub fn timestamp(ms: UnixMillis) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// The event for one stored state: public fields only, never the secret hash.
pub fn login_event(record: &SessionRecord, revision: u64) -> pb::LoginEvent {
    pb::LoginEvent {
        session_id: record.id.clone(),
        state: proto_state(record.state) as i32,
        version: revision,
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
