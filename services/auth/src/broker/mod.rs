//! The service's NATS code: the session bucket (JetStream key-value,
//! every write a compare-and-swap on the key's revision), its stream's
//! republish rule (NATS publishes every write on the session's subject),
//! the counters of the cluster-wide limits ([`limits`]), and the
//! connection's credentials. Each read and write is timed
//! ([`AuthMetrics`]); with tracing on, a write carries the W3C trace context
//! in its headers, which the republished event keeps.

use async_nats::jetstream::{self, kv, stream};
use async_nats::HeaderMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use crate::config::{AuthConfig, KvStorage};
use crate::domain::{SessionId, SessionRecord};
use crate::metrics::AuthMetrics;
use crate::sealing::Sealer;
use crate::telemetry;

mod access;
pub mod limits;
mod record;
pub use access::{AccessError, NatsAccess, NkeySeed};
pub use record::{login_event, proto_state, qr_rotation, timestamp, RecordError};

/// Largest record we store; real ones are well under 1 KiB.
const MAX_VALUE_SIZE: i32 = 8 * 1024;
/// The JetStream header that makes a publish a compare-and-swap.
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The detail is for logs; clients get a fixed text (see grpc.rs).
    #[error("NATS unavailable: {0}")]
    Unavailable(String),
    /// The key's revision moved since we read it: someone else won the race.
    #[error("the session changed concurrently")]
    Conflict,
    #[error("stored record refused: {0}")]
    Corrupt(#[from] RecordError),
    /// The bucket reached QRLOGIN_KV_MAX_BYTES (or the account its limits).
    #[error("the session bucket is full")]
    Full,
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
    pub max_bytes: u64,
    /// The create counters' bucket and window (see [`limits`]).
    pub limits_bucket: String,
    pub limits_window: Duration,
    /// The QR payload's base URL, written into PENDING events.
    pub public_base: String,
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
            max_bytes: c.kv_max_bytes,
            limits_bucket: c.limits_bucket.clone(),
            limits_window: c.create_limit_window.max(c.protocol.user_limit_window),
            public_base: c.public_base().to_owned(),
        }
    }

    /// Every write of the bucket, published again by the server on
    /// `<prefix>.<session_id>`.
    pub fn republish(&self) -> stream::Republish {
        stream::Republish {
            source: format!("$KV.{}.>", self.bucket),
            destination: format!("{}.>", self.subject_prefix),
            headers_only: false,
        }
    }

    fn kv_config(&self) -> kv::Config {
        kv::Config {
            bucket: self.bucket.clone(),
            description: "qrlogin login sessions".into(),
            history: 1,
            max_age: self.retention,
            max_value_size: MAX_VALUE_SIZE,
            storage: match self.storage {
                KvStorage::File => jetstream::stream::StorageType::File,
                KvStorage::Memory => jetstream::stream::StorageType::Memory,
            },
            num_replicas: self.replicas,
            republish: Some(self.republish()),
            max_bytes: i64::try_from(self.max_bytes).unwrap_or(i64::MAX),
            ..Default::default()
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
    js: jetstream::Context,
    kv: kv::Store,
    limits: limits::Counters,
    /// `$KV.<bucket>.`: a session's key subject is this plus its id.
    key_prefix: String,
    sealer: Arc<Sealer>,
    metrics: Arc<AuthMetrics>,
    /// The bucket's name, for span attributes.
    bucket: String,
    public_base: String,
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

impl Broker {
    /// Connects, opens (or creates) the bucket and makes sure its stream
    /// republishes every write. `on_link` hears every later disconnect and
    /// reconnect.
    pub async fn connect(
        settings: &BrokerSettings,
        sealer: Arc<Sealer>,
        metrics: Arc<AuthMetrics>,
        on_link: impl Fn(LinkState) + Send + Sync + 'static,
    ) -> Result<Self, BrokerError> {
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
            .map_err(unavailable)?;
        let mut js = jetstream::new(client);
        js.set_timeout(Duration::from_secs(3));
        let kv = open_bucket(&js, settings).await?;
        let limits = limits::Counters::open(&js, settings).await?;
        Ok(Self {
            js,
            kv,
            limits,
            key_prefix: format!("$KV.{}.", settings.bucket),
            sealer,
            metrics,
            bucket: settings.bucket.clone(),
            public_base: settings.public_base.clone(),
        })
    }

    /// Reads a session and its revision; `None` when absent or removed.
    pub async fn load(&self, id: &SessionId) -> Result<Option<(SessionRecord, u64)>, BrokerError> {
        let started = Instant::now();
        let entry = self
            .kv
            .entry(id.as_str())
            .instrument(self.span("kv.get", "client"))
            .await;
        self.metrics.kv_read(started.elapsed());
        let entry = entry.map_err(unavailable)?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let record = record::decode(&e.value, id, &self.sealer)?;
                Ok(Some((record, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Stores a new session; fails with `Conflict` if the id exists (a
    /// 128-bit collision).
    pub async fn create(&self, record: &SessionRecord) -> Result<u64, BrokerError> {
        self.write(record, 0).await
    }

    /// Writes `record` only if the key is still at `revision`.
    pub async fn update(&self, record: &SessionRecord, revision: u64) -> Result<u64, BrokerError> {
        self.write(record, revision).await
    }

    /// A JetStream publish to the key's subject, expecting the key's last
    /// revision to be `revision` (0: the key must not exist). Headers set
    /// here ride along to the republished event.
    async fn write(&self, record: &SessionRecord, revision: u64) -> Result<u64, BrokerError> {
        let value = record::encode(record, &self.sealer, &self.public_base)?;
        let span = self.span("kv.put", "producer");
        let mut headers = HeaderMap::new();
        headers.insert(
            EXPECTED_LAST_SUBJECT_SEQUENCE,
            revision.to_string().as_str(),
        );
        // The event NATS republishes from this write continues this span.
        span.in_scope(|| telemetry::inject_current(&mut telemetry::NatsHeaders(&mut headers)));
        let subject = format!("{}{}", self.key_prefix, record.id);
        let started = Instant::now();
        let ack = async {
            self.js
                .publish_with_headers(subject, headers, value)
                .await
                .map_err(unavailable)?
                .await
                .map_err(|e| {
                    if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence {
                        BrokerError::Conflict
                    } else if is_full(&e) {
                        BrokerError::Full
                    } else {
                        unavailable(e)
                    }
                })
        }
        .instrument(span.clone())
        .await;
        let result = match &ack {
            Ok(_) => "committed",
            Err(BrokerError::Conflict) => "conflict",
            Err(BrokerError::Full) => "full",
            Err(_) => "error",
        };
        self.metrics.kv_write(result, started.elapsed());
        span.record("messaging.kv.result", result);
        ack.map(|ack| ack.sequence)
    }

    /// A span of one bucket operation; disabled when tracing is off.
    fn span(&self, name: &'static str, kind: &'static str) -> tracing::Span {
        if !telemetry::enabled() {
            return tracing::Span::none();
        }
        tracing::info_span!(
            "kv",
            otel.name = name,
            otel.kind = kind,
            messaging.system = "nats",
            messaging.destination.name = %self.bucket,
            messaging.kv.result = tracing::field::Empty,
        )
    }

    /// The create counters shared by every auth replica.
    pub fn limits(&self) -> &limits::Counters {
        &self.limits
    }
}

/// Whether a refused write means "no room": the stream's `max_bytes` (its
/// discard policy is New, so a full bucket refuses writes instead of
/// dropping old sessions) or the account's JetStream limits.
fn is_full(e: &jetstream::context::PublishError) -> bool {
    use jetstream::ErrorCode;
    let Some(api) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<jetstream::Error>())
    else {
        return false;
    };
    let text = api.to_string();
    api.error_code() == ErrorCode::ACCOUNT_RESOURCES_EXCEEDED
        || (api.error_code() == ErrorCode::STREAM_STORE_FAILED
            && (text.contains("maximum bytes") || text.contains("maximum messages")))
}

/// Opens the bucket, creating it with the republish rule, or adding the rule
/// to a bucket made before it existed.
async fn open_bucket(
    js: &jetstream::Context,
    settings: &BrokerSettings,
) -> Result<kv::Store, BrokerError> {
    let want = settings.kv_config();
    ensure_bucket(js, want, |config| {
        let republish = settings.republish();
        if config.republish.as_ref() != Some(&republish) {
            if let Some(old) = &config.republish {
                tracing::warn!(
                    from = %old.destination,
                    to = %republish.destination,
                    "the session bucket republished elsewhere; every auth and edge must use the same QRLOGIN_SUBJECT_PREFIX"
                );
            }
            config.republish = Some(republish);
        }
        config.max_bytes = i64::try_from(settings.max_bytes).unwrap_or(i64::MAX);
    })
    .await
}

/// Opens the bucket `want.bucket`, creating it from `want` if missing; an
/// existing one whose stream differs from what `adjust` makes of its
/// configuration is updated (and the change logged).
async fn ensure_bucket(
    js: &jetstream::Context,
    want: kv::Config,
    adjust: impl Fn(&mut stream::Config),
) -> Result<kv::Store, BrokerError> {
    let stream_name = format!("KV_{}", want.bucket);
    let bucket = want.bucket.clone();
    match js.get_stream(&stream_name).await {
        Ok(existing) => {
            let mut config = existing.cached_info().config.clone();
            adjust(&mut config);
            if config != existing.cached_info().config {
                js.update_stream(&config).await.map_err(unavailable)?;
                tracing::info!(%bucket, "bucket configuration updated (republish, size or age)");
            }
        }
        Err(_) => {
            if let Err(create) = js.create_key_value(want).await {
                // Another auth instance may have created it a moment ago.
                if js.get_stream(&stream_name).await.is_err() {
                    return Err(unavailable(create));
                }
            }
        }
    }
    js.get_key_value(bucket.as_str()).await.map_err(unavailable)
}
