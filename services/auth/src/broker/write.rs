//! Writing a session: one compare-and-swap publish, retried through
//! transient failures with one `Nats-Msg-Id` for all its attempts (see
//! [`Broker::update`]), and how a retry learns that an earlier attempt
//! committed.

use async_nats::jetstream;
use async_nats::HeaderMap;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use super::retry::Attempt;
use super::{
    is_full, record, retry, unavailable, Broker, BrokerError, ReadFrom,
    EXPECTED_LAST_SUBJECT_SEQUENCE, MSG_ID,
};
use crate::domain::{SessionId, SessionRecord};
use crate::telemetry;

impl Broker {
    /// A JetStream publish to the key's subject, expecting the key's last
    /// revision to be `revision` (0: the key must not exist), retried as
    /// [`update`](Self::update) says. Headers set here ride along to the
    /// republished event.
    pub(super) async fn write(
        &self,
        record: &SessionRecord,
        revision: u64,
        deadline: tokio::time::Instant,
    ) -> Result<u64, BrokerError> {
        let value = record::encode(record, &self.sealer, &self.public_base)?;
        let span = self.span("kv.put", "producer");
        let mut headers = HeaderMap::new();
        headers.insert(
            EXPECTED_LAST_SUBJECT_SEQUENCE,
            revision.to_string().as_str(),
        );
        // One id per logical write, for all of its attempts and no other.
        headers.insert(MSG_ID, crate::domain::SessionId::generate().as_str());
        // The event NATS republishes from this write continues this span.
        span.in_scope(|| telemetry::inject_current(&mut telemetry::NatsHeaders(&mut headers)));
        let subject = format!("{}{}", self.key_prefix, record.id);
        let started = Instant::now();
        let mut backoff = retry::Backoff::until(deadline);
        // Whether an earlier attempt may have committed.
        let mut uncertain = false;
        let ack = loop {
            let attempt = self
                .publish_once(&subject, &headers, &value, backoff.limit(!uncertain))
                .instrument(span.clone())
                .await;
            let error = match attempt {
                Ok(sequence) => break Ok(sequence),
                Err(Attempt::Refused(BrokerError::Conflict)) if uncertain => {
                    break self.committed_before(record, deadline).await;
                }
                Err(Attempt::Refused(e)) => break Err(e),
                Err(Attempt::Failed(error)) => error,
            };
            uncertain = true;
            if !backoff.wait().await {
                break Err(BrokerError::Unavailable(format!("write: {error}")));
            }
            self.metrics.kv_retry("write");
            tracing::debug!(session_id = %record.id, %error, "session write failed; retrying");
        };
        let result = match &ack {
            Ok(_) => "committed",
            Err(BrokerError::Conflict) => "conflict",
            Err(BrokerError::Full) => "full",
            Err(_) => "error",
        };
        self.metrics.kv_write(result, started.elapsed());
        span.record("messaging.kv.result", result);
        ack
    }

    /// One attempt of a write, waiting at most `limit` (besides the
    /// request timeout) for its ack.
    async fn publish_once(
        &self,
        subject: &str,
        headers: &HeaderMap,
        value: &bytes::Bytes,
        limit: Option<Duration>,
    ) -> Result<u64, Attempt> {
        let sent = self
            .js
            .publish_with_headers(subject.to_owned(), headers.clone(), value.clone())
            .await
            .map_err(|e| Attempt::Failed(e.to_string()))?;
        let ack = match retry::within(limit, async { sent.await }).await {
            Ok(ack) => ack,
            Err(_) => return Err(Attempt::Failed("no ack by the call's deadline".into())),
        };
        match ack {
            Ok(ack) => {
                #[cfg(any(test, feature = "testing"))]
                if self.take_lost_ack() {
                    return Err(Attempt::Failed("ack dropped by a test".into()));
                }
                Ok(ack.sequence)
            }
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                Err(Attempt::Refused(BrokerError::Conflict))
            }
            Err(e) if is_full(&e) => Err(Attempt::Refused(BrokerError::Full)),
            Err(e) if retry::publish_is_retryable(&e) => Err(Attempt::Failed(e.to_string())),
            Err(e) => Err(Attempt::Refused(unavailable(e))),
        }
    }

    /// After a retried write was refused as a conflict: the revision at
    /// which the key holds exactly `record` (an earlier attempt committed),
    /// else `Conflict`.
    async fn committed_before(
        &self,
        record: &SessionRecord,
        deadline: tokio::time::Instant,
    ) -> Result<u64, BrokerError> {
        let id = SessionId::parse(&record.id).map_err(|e| unavailable(e.to_string()))?;
        match self.load_from(&id, ReadFrom::Leader, deadline).await? {
            Some((stored, revision)) if stored == *record => {
                tracing::info!(session_id = %record.id, revision, "a retried write had committed at its first attempt");
                Ok(revision)
            }
            _ => Err(BrokerError::Conflict),
        }
    }

    #[cfg(any(test, feature = "testing"))]
    fn take_lost_ack(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.lose_acks
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}
