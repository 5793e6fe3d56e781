//! The service's NATS code: the session bucket (JetStream key-value,
//! every write a compare-and-swap on the key's revision), its stream's
//! republish rule (NATS publishes every write on the session's subject),
//! the counters of the cluster-wide limits ([`limits`]), and the
//! connection's credentials. Each read and write is timed
//! ([`AuthMetrics`]); with tracing on, a write carries the W3C trace context
//! in its headers, which the republished event keeps.
//!
//! On a NATS cluster the connection knows every configured member and moves
//! to another when one dies, freezes (client pings) or enters lame duck
//! mode. Reads and writes are retried through transient failures until the
//! caller's deadline ([`retry`]); a write carries a `Nats-Msg-Id` that is
//! the same for all attempts of that write and never used for another, so
//! a retry of a write that committed is not stored twice (see
//! [`Broker::update`] for what a retry answers then).

use async_nats::jetstream::{self, kv, stream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use crate::config::{AuthConfig, KvStorage};
use crate::domain::{SessionId, SessionRecord};
use crate::metrics::AuthMetrics;
use crate::sealing::Sealer;
use crate::telemetry;

mod access;
mod connection;
pub mod limits;
mod record;
pub mod retry;
mod write;
pub use access::{AccessError, NatsAccess, NkeySeed};
pub use connection::CLIENT_NAME;
pub use record::{login_event, proto_state, qr_rotation, timestamp, RecordError};
use retry::Attempt;

/// Largest record we store; real ones are well under 1 KiB.
const MAX_VALUE_SIZE: i32 = 8 * 1024;
/// The JetStream header that makes a publish a compare-and-swap.
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
/// The JetStream header of de-duplication: a second message with the same
/// id within the stream's duplicate window is acknowledged, not stored.
const MSG_ID: &str = "Nats-Msg-Id";
/// Longest wait for the answers of bucket creation and update at start.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The detail is for logs; clients get a fixed text (see grpc.rs).
    /// Transient failures become this only once retrying them ran out of
    /// time.
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
    /// Every configured member (QRLOGIN_NATS_URL).
    pub servers: Vec<async_nats::ServerAddr>,
    /// Client ping interval (QRLOGIN_NATS_PING_INTERVAL).
    pub ping_interval: Duration,
    /// One JetStream request's timeout (QRLOGIN_NATS_REQUEST_TIMEOUT).
    pub request_timeout: Duration,
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
    /// `c` must have passed `validate` (its server list parses).
    pub fn from_config(c: &AuthConfig, access: NatsAccess) -> Self {
        Self {
            servers: c.nats_servers().unwrap_or_default(),
            ping_interval: c.store.nats_ping_interval,
            request_timeout: c.store.nats_request_timeout,
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

/// Which replica answers a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// Any replica (JetStream direct get): spreads the reads, but a replica
    /// may not have applied a write that just committed (most visibly
    /// while members fail and the others catch up).
    AnyReplica,
    /// The stream's leader (the stream's message API): what the next
    /// compare-and-swap is checked against.
    Leader,
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
    /// Test hook: acknowledgements to drop after their write committed.
    #[cfg(any(test, feature = "testing"))]
    lose_acks: Arc<std::sync::atomic::AtomicUsize>,
    /// Moves off a member in lame duck mode; holds a client handle, so it
    /// is stopped with the broker.
    lame_duck: tokio::task::JoinHandle<()>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.lame_duck.abort();
    }
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
        let (client, lame_duck) = connection::connect(settings, on_link).await?;
        let opened = async {
            // Creating or updating a replicated bucket takes longer than a
            // read or write may; the store's operations then use their own
            // context, with the request timeout.
            let mut setup = jetstream::new(client.clone());
            setup.set_timeout(SETUP_TIMEOUT);
            open_bucket(&setup, settings).await?;
            let limits = limits::Counters::open(&setup, settings).await?;
            let mut js = jetstream::new(client.clone());
            js.set_timeout(settings.request_timeout);
            let kv = js
                .get_key_value(settings.bucket.as_str())
                .await
                .map_err(unavailable)?;
            let limits = limits.reopen(&js).await?;
            Ok::<_, BrokerError>((js, kv, limits))
        }
        .await;
        let (js, kv, limits) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                // Let the connection close: the caller tries again anew.
                lame_duck.abort();
                return Err(e);
            }
        };
        Ok(Self {
            lame_duck,
            js,
            kv,
            limits,
            key_prefix: format!("$KV.{}.", settings.bucket),
            sealer,
            metrics,
            bucket: settings.bucket.clone(),
            public_base: settings.public_base.clone(),
            #[cfg(any(test, feature = "testing"))]
            lose_acks: Arc::default(),
        })
    }

    /// Test hook: the next `n` writes commit but their acknowledgement is
    /// dropped, as when a member dies between the two; the write's retry
    /// path then runs. The counter goes down as acks are dropped.
    #[cfg(any(test, feature = "testing"))]
    pub fn lose_acks(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.lose_acks.clone()
    }

    /// Reads a session and its revision from the stream's leader; `None`
    /// when absent or removed. Transient failures are retried until
    /// `deadline`. A snapshot must not be older than a write already
    /// acknowledged: an edge subscribes to the session's subject and then
    /// reads, and a replica that has not applied a committed write (one
    /// just thawed or restarted, still catching up) would answer an older
    /// state, or none for a session just created, while the event that
    /// carried the newer one went out before the subscription.
    pub async fn load(
        &self,
        id: &SessionId,
        deadline: tokio::time::Instant,
    ) -> Result<Option<(SessionRecord, u64)>, BrokerError> {
        self.load_from(id, ReadFrom::Leader, deadline).await
    }

    /// Reads a session as [`load`](Self::load) does, from `from`.
    pub async fn load_from(
        &self,
        id: &SessionId,
        from: ReadFrom,
        deadline: tokio::time::Instant,
    ) -> Result<Option<(SessionRecord, u64)>, BrokerError> {
        let mut backoff = retry::Backoff::until(deadline);
        let mut first = true;
        let stored = loop {
            let started = Instant::now();
            let attempt = retry::within(
                backoff.limit(std::mem::take(&mut first)),
                self.read_once(id, from)
                    .instrument(self.span("kv.get", "client")),
            )
            .await;
            self.metrics.kv_read(started.elapsed());
            let error = match attempt {
                Ok(Ok(stored)) => break stored,
                Ok(Err(Attempt::Refused(e))) => return Err(e),
                Ok(Err(Attempt::Failed(error))) => error,
                Err(_) => "timed out at the call's deadline".to_owned(),
            };
            if !backoff.wait().await {
                return Err(BrokerError::Unavailable(format!("read: {error}")));
            }
            self.metrics.kv_retry("read");
            tracing::debug!(session_id = %id, %error, "session read failed; retrying");
        };
        match stored {
            Some((value, revision)) => {
                let record = record::decode(&value, id, &self.sealer)?;
                Ok(Some((record, revision)))
            }
            None => Ok(None),
        }
    }

    /// One attempt of a read: the stored value and its revision, `None`
    /// for a key never written or removed.
    async fn read_once(
        &self,
        id: &SessionId,
        from: ReadFrom,
    ) -> Result<Option<(bytes::Bytes, u64)>, Attempt> {
        match from {
            ReadFrom::AnyReplica => match self.kv.entry(id.as_str()).await {
                Ok(Some(e)) if e.operation == kv::Operation::Put => Ok(Some((e.value, e.revision))),
                Ok(_) => Ok(None),
                Err(e) if retry::read_is_retryable(&e) => Err(Attempt::Failed(e.to_string())),
                Err(e) => Err(Attempt::Refused(unavailable(e))),
            },
            ReadFrom::Leader => {
                use jetstream::stream::LastRawMessageErrorKind as Kind;
                let subject = format!("{}{}", self.key_prefix, id);
                match self
                    .kv
                    .stream
                    .get_last_raw_message_by_subject(&subject)
                    .await
                {
                    // A delete or purge marker carries KV-Operation.
                    Ok(m) if m.headers.get("KV-Operation").is_some() => Ok(None),
                    Ok(m) => Ok(Some((m.payload, m.sequence))),
                    Err(e) if e.kind() == Kind::NoMessageFound => Ok(None),
                    Err(e) if e.kind() == Kind::InvalidSubject => {
                        Err(Attempt::Refused(unavailable(e)))
                    }
                    Err(e) => Err(Attempt::Failed(e.to_string())),
                }
            }
        }
    }

    /// Stores a new session; fails with `Conflict` if the id exists (a
    /// 128-bit collision). Retried like [`update`](Self::update).
    pub async fn create(
        &self,
        record: &SessionRecord,
        deadline: tokio::time::Instant,
    ) -> Result<u64, BrokerError> {
        self.write(record, 0, deadline).await
    }

    /// Writes `record` only if the key is still at `revision`, and returns
    /// the key's new revision. Transient failures are retried until
    /// `deadline`, every attempt with the same `Nats-Msg-Id`. When an
    /// earlier attempt committed but its acknowledgement was lost, the
    /// retry learns it one of two ways: on a replicated bucket the
    /// duplicate check comes first (nats-server checks the message id
    /// before the expected sequence when it proposes a clustered write) and
    /// acknowledges with the original revision; on one replica the expected
    /// sequence is checked first and refuses, so the key is read again, and
    /// if it holds exactly this record, that is the answer. Otherwise
    /// `Conflict`: the caller reads again and decides anew (the domain
    /// answers a repeat of a committed action without a write).
    pub async fn update(
        &self,
        record: &SessionRecord,
        revision: u64,
        deadline: tokio::time::Instant,
    ) -> Result<u64, BrokerError> {
        self.write(record, revision, deadline).await
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
