//! Which store failures are worth another attempt, and the wait between
//! attempts. A NATS cluster refuses or loses requests for a few seconds
//! when a member dies, freezes or is upgraded, or when the bucket's stream
//! elects a new leader; every such failure is transient. What nats-server
//! 2.15 answers then:
//!
//! - no responders (async-nats: "no stream found for given subject"): the
//!   stream has no leader listening on the subject yet;
//! - JetStream API errors 10008 "JetStream system temporarily
//!   unavailable", 10009 "JetStream cluster can not handle request" (not
//!   the leader), 10118/10194 "stream is offline", and 10158 "duplicate
//!   message id is in process" (our own earlier attempt, proposed but not
//!   yet applied);
//! - no answer at all (a frozen member, or a dead one before the client
//!   notices): the request times out.
//!
//! A refused compare-and-swap (wrong last sequence), a full bucket and a
//! record that does not open are answers, not failures: never retried here.

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::kv::{EntryError, EntryErrorKind};
use async_nats::jetstream::ErrorCode;

use super::BrokerError;
use rand::Rng as _;
use std::time::Duration;
use tokio::time::Instant;

/// First wait between attempts; doubled after each, up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(25);
/// Longest wait between attempts: a leader election takes a second or two.
const MAX_WAIT: Duration = Duration::from_millis(400);

/// The JetStream API errors of a cluster in transition (see the module doc).
const TRANSIENT_CODES: [ErrorCode; 5] = [
    ErrorCode::CLUSTER_NOT_AVAILABLE,
    ErrorCode::CLUSTER_NOT_LEADER,
    ErrorCode::STREAM_OFFLINE,
    ErrorCode::STREAM_OFFLINE_REASON,
    ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT,
];

fn is_transient_code(code: ErrorCode) -> bool {
    TRANSIENT_CODES.contains(&code)
}

/// Whether a failed publish (a write) may succeed if sent again.
pub fn publish_is_retryable(e: &PublishError) -> bool {
    match e.kind() {
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::StreamNotFound
        | PublishErrorKind::MaxAckPending => true,
        PublishErrorKind::Other => api_code(e).is_some_and(is_transient_code),
        PublishErrorKind::WrongLastSequence
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::MaxPayloadExceeded => false,
    }
}

/// Whether a failed read may succeed if sent again: a read changes
/// nothing, so anything but a malformed key is worth another attempt.
pub fn read_is_retryable(e: &EntryError) -> bool {
    match e.kind() {
        EntryErrorKind::InvalidKey => false,
        EntryErrorKind::TimedOut | EntryErrorKind::Other => true,
    }
}

/// The JetStream API error code inside a publish error, if it carries one.
pub fn api_code(e: &PublishError) -> Option<ErrorCode> {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
        .map(|api| api.error_code())
}

/// `future`, cut off after `limit` if there is one.
pub async fn within<F: std::future::Future>(
    limit: Option<Duration>,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, future).await,
        None => Ok(future.await),
    }
}

/// How one attempt of a read or write ended, when it did not succeed.
pub enum Attempt {
    /// An answer: retrying would not change it.
    Refused(BrokerError),
    /// A transient failure (the text is for the log); a write that failed
    /// so may have committed.
    Failed(String),
}

/// Jittered exponential waits until a deadline.
pub struct Backoff {
    next: Duration,
    deadline: Instant,
}

impl Backoff {
    pub fn until(deadline: Instant) -> Self {
        Self {
            next: FIRST_WAIT,
            deadline,
        }
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// How long an attempt may take: the first is bounded by the request
    /// timeout alone (every call gets one try, however short its
    /// deadline), a retry also by the time left.
    pub fn limit(&self, first: bool) -> Option<Duration> {
        (!first).then(|| self.remaining())
    }

    /// Waits before the next attempt: between half and all of the current
    /// step (jitter spreads the retries of many calls over the election),
    /// the step doubling each time. False, without waiting, when the wait
    /// would leave no time for another attempt.
    pub async fn wait(&mut self) -> bool {
        let step = self.next;
        self.next = (self.next * 2).min(MAX_WAIT);
        let wait = rand::rng().random_range(step / 2..=step);
        if wait + MIN_ATTEMPT >= self.remaining() {
            return false;
        }
        tokio::time::sleep(wait).await;
        true
    }
}

/// Shortest time worth another attempt (a round trip to a live member
/// takes a millisecond; one that commits, a few).
const MIN_ATTEMPT: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::context::PublishError;

    fn api_error(code: u64, status: u16) -> PublishError {
        let json = format!(
            r#"{{"code": {status}, "err_code": {code}, "description": "from the server"}}"#
        );
        let api: async_nats::jetstream::Error = serde_json::from_str(&json).unwrap();
        PublishError::with_source(PublishErrorKind::Other, api)
    }

    #[test]
    fn transient_failures_are_retried_and_answers_are_not() {
        for kind in [
            PublishErrorKind::TimedOut,
            PublishErrorKind::BrokenPipe,
            PublishErrorKind::StreamNotFound,
        ] {
            assert!(publish_is_retryable(&PublishError::new(kind)), "{kind:?}");
        }
        for (code, status) in [(10008, 503), (10009, 500), (10118, 500), (10158, 409)] {
            assert!(
                publish_is_retryable(&api_error(code, status)),
                "error code {code}"
            );
        }
        assert!(!publish_is_retryable(&PublishError::new(
            PublishErrorKind::WrongLastSequence
        )));
        // Account limits, a full stream, a stream that does not match.
        for (code, status) in [(10002, 400), (10077, 503), (10060, 400)] {
            assert!(
                !publish_is_retryable(&api_error(code, status)),
                "error code {code}"
            );
        }
        assert!(!publish_is_retryable(&PublishError::new(
            PublishErrorKind::Other
        )));
        assert!(read_is_retryable(&EntryError::new(
            EntryErrorKind::TimedOut
        )));
        assert!(read_is_retryable(&EntryError::new(EntryErrorKind::Other)));
        assert!(!read_is_retryable(&EntryError::new(
            EntryErrorKind::InvalidKey
        )));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_with_jitter_and_stops_before_the_deadline() {
        let started = Instant::now();
        let mut backoff = Backoff::until(started + Duration::from_secs(2));
        let mut waits = Vec::new();
        let mut last = started;
        while backoff.wait().await {
            waits.push(last.elapsed());
            last = Instant::now();
        }
        assert!(waits.len() >= 5, "{waits:?}");
        assert!(waits[0] <= FIRST_WAIT && waits[0] >= FIRST_WAIT / 2);
        assert!(waits.iter().all(|w| *w <= MAX_WAIT), "{waits:?}");
        assert!(Instant::now() < started + Duration::from_secs(2));
        assert!(Instant::now() + MIN_ATTEMPT + MAX_WAIT >= started + Duration::from_secs(2));
    }
}
