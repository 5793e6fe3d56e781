//! The only file that speaks NATS: the connection, one subscription per
//! watched session, decoding of `LoginEvent`, and connection events turned
//! into a "re-read everything" signal.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use prost::Message as _;
use qrlogin_proto::events::v1::LoginEvent;
use tokio::sync::watch;

use crate::{
    auth_client::{login_state, timestamp_opt},
    config::EdgeConfig,
    domain::{SessionId, Snapshot},
    metrics::Metrics,
};

/// Messages a session's subscription may hold before NATS counts the node as
/// a slow consumer and drops the overflow. Events are whole snapshots, so
/// only the newest matters; a drop is repaired by the re-read that the
/// slow-consumer event triggers.
const SUBSCRIPTION_CAPACITY: usize = 16;

/// Longest a subscribe waits for the server to acknowledge the SUB.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No URL in the text: URLs end up in logs.
    #[error("cannot reach NATS: {0}")]
    Connect(async_nats::ConnectError),
    #[error("NATS subscribe failed: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error("{var}: cannot read {path}: {source}")]
    ReadFile {
        var: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("QRLOGIN_NATS_NKEY_SEED_FILE: {path} does not hold an nkey user seed (SU...)")]
    BadSeed { path: String },
}

/// The edge's NATS credentials and TLS files, read and checked before the
/// edge binds; the seed is never printed.
#[derive(Clone, Default)]
pub struct NatsAccess {
    seed: Option<String>,
    ca_file: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for NatsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAccess")
            .field("seed", &self.seed.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .finish()
    }
}

fn readable(var: &'static str, path: &Path) -> Result<PathBuf, BrokerError> {
    std::fs::File::open(path).map_err(|source| BrokerError::ReadFile {
        var,
        path: path.display().to_string(),
        source,
    })?;
    Ok(path.to_owned())
}

impl NatsAccess {
    pub fn load(c: &EdgeConfig) -> Result<Self, BrokerError> {
        let seed = match &c.nats_nkey_seed_file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| BrokerError::ReadFile {
                        var: "QRLOGIN_NATS_NKEY_SEED_FILE",
                        path: path.display().to_string(),
                        source,
                    })?;
                let seed = text.trim().to_owned();
                // The server only ever sees a signature; a malformed seed
                // would fail on every connect, so refuse it at start.
                if !seed.starts_with("SU") || nkeys::KeyPair::from_seed(&seed).is_err() {
                    return Err(BrokerError::BadSeed {
                        path: path.display().to_string(),
                    });
                }
                Some(seed)
            }
            None => None,
        };
        let ca_file = c
            .nats_tls_ca_file
            .as_deref()
            .map(|p| readable("QRLOGIN_NATS_TLS_CA_FILE", p))
            .transpose()?;
        let client_cert = match (&c.nats_tls_cert_file, &c.nats_tls_key_file) {
            (Some(cert), Some(key)) => Some((
                readable("QRLOGIN_NATS_TLS_CERT_FILE", cert)?,
                readable("QRLOGIN_NATS_TLS_KEY_FILE", key)?,
            )),
            _ => None,
        };
        Ok(Self {
            seed,
            ca_file,
            client_cert,
        })
    }

    pub fn has_credentials(&self) -> bool {
        self.seed.is_some()
    }

    /// Connection options carrying the credentials and TLS settings.
    pub fn options(&self) -> async_nats::ConnectOptions {
        let mut options = async_nats::ConnectOptions::new();
        if let Some(seed) = &self.seed {
            options = options.nkey(seed.clone());
        }
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.client_cert {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        options
    }
}

/// A connected NATS client for the edge.
#[derive(Clone)]
pub struct Broker {
    client: async_nats::Client,
    prefix: Arc<str>,
    resync: watch::Receiver<u64>,
    metrics: Arc<Metrics>,
}

/// The events of one session, decoded; ends when the subscription does.
/// Dropping it unsubscribes.
pub struct SessionEvents {
    subscriber: async_nats::Subscriber,
    metrics: Arc<Metrics>,
}

impl Broker {
    /// Connects (in the background if NATS is not up yet: the edge starts,
    /// stays unready, and connects when NATS appears).
    pub async fn connect(
        url: &str,
        prefix: &str,
        access: &NatsAccess,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BrokerError> {
        // Bumped after every (re)connection and slow-consumer report: every
        // watched session re-reads its state from auth when it changes.
        let (resync_tx, resync) = watch::channel(0u64);
        let cb_metrics = metrics.clone();
        let options = access
            .options()
            .name("qrlogin-edge")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .event_callback(move |event| {
                let resync_tx = resync_tx.clone();
                let metrics = cb_metrics.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("NATS connected");
                            metrics.nats_reconnect();
                            resync_tx.send_modify(|n| *n += 1);
                        }
                        async_nats::Event::SlowConsumer(sid) => {
                            tracing::warn!(sid, "NATS slow consumer; re-reading watched sessions");
                            resync_tx.send_modify(|n| *n += 1);
                        }
                        async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                        other => tracing::info!(event = %other, "NATS event"),
                    }
                }
            });
        let client = options.connect(url).await.map_err(BrokerError::Connect)?;
        Ok(Self {
            client,
            prefix: prefix.into(),
            resync,
            metrics,
        })
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// A receiver that changes whenever watched sessions must be re-read.
    pub fn resync_signal(&self) -> watch::Receiver<u64> {
        self.resync.clone()
    }

    /// Subscribes to `<prefix>.<session_id>`.
    pub async fn subscribe(&self, id: &SessionId) -> Result<SessionEvents, BrokerError> {
        let subject = format!("{}.{}", self.prefix, id);
        let subscriber = self.client.subscribe(subject).await?;
        // The SUB reaches the server before any later request on this
        // connection; flushing makes sure it is there before we read state.
        // Bounded, because a flush waits for the server while disconnected;
        // then the subscription is re-sent on reconnect and the resync
        // signal makes every session re-read its state anyway.
        if self.is_connected() {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, self.client.flush()).await;
        }
        self.metrics.subscription_opened();
        Ok(SessionEvents {
            subscriber,
            metrics: self.metrics.clone(),
        })
    }
}

impl SessionEvents {
    /// The next decodable event about this session; `None` when the
    /// subscription closed. Undecodable payloads are dropped and counted.
    pub async fn next(&mut self, id: &SessionId) -> Option<Snapshot> {
        loop {
            let msg = self.subscriber.next().await?;
            match decode(&msg.payload, id) {
                Some(s) => return Some(s),
                None => {
                    self.metrics.undecodable();
                    tracing::warn!(session = %id, bytes = msg.payload.len(), "dropped undecodable event");
                }
            }
        }
    }
}

impl Drop for SessionEvents {
    fn drop(&mut self) {
        self.metrics.subscription_closed();
    }
}

/// Decodes a `LoginEvent` about `id`; `None` when the bytes are not one, name
/// another session, or carry no known state.
fn decode(payload: &[u8], id: &SessionId) -> Option<Snapshot> {
    let e = LoginEvent::decode(payload).ok()?;
    if e.session_id != id.as_str() {
        return None;
    }
    let state = login_state(e.state)?;
    let changed_at = timestamp_opt(e.changed_at);
    Some(Snapshot {
        session_id: id.clone(),
        state,
        version: e.version,
        expires_at: if state.is_final() {
            None
        } else {
            timestamp_opt(e.expires_at)
        },
        updated_at: changed_at.unwrap_or_else(time::OffsetDateTime::now_utc),
        user_display_name: Some(e.user_display_name).filter(|n| !n.is_empty()),
        changed_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use qrlogin_proto::events::v1::LoginState as PbState;

    #[test]
    fn decodes_events_and_refuses_garbage_or_other_sessions() {
        let id = SessionId::parse("q3Zb0Xz2kT9yLw1sJm5HAA").unwrap();
        let event = LoginEvent {
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
        };
        let s = decode(&event.encode_to_vec(), &id).unwrap();
        assert_eq!(s.version, 4);
        assert_eq!(s.user_display_name.as_deref(), Some("Alice"));
        assert!(s.changed_at.is_some());
        assert!(decode(b"\xff\xff not protobuf", &id).is_none());
        let other = LoginEvent {
            session_id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            ..event.clone()
        };
        assert!(decode(&other.encode_to_vec(), &id).is_none());
        let unspecified = LoginEvent { state: 0, ..event };
        assert!(decode(&unspecified.encode_to_vec(), &id).is_none());
    }
}
