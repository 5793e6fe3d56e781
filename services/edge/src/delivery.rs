//! Keeps each watched session's view current and hands snapshots to
//! watchers in order.
//!
//! Joining a session: subscribe first (once per session per node), then read
//! the state from auth with the watcher's secret (which also authorizes the
//! watcher). Whatever happened before the subscription is in the read, what
//! happens after arrives as an event; versions order the two. One background
//! task per watched session (not per watcher) applies events, tells watchers
//! `EXPIRED` at the deadline, re-reads after NATS reconnects and every
//! recheck interval, and ends (unsubscribing) when the last watcher leaves.

use std::{sync::Arc, time::Duration};

use rand::Rng;
use time::OffsetDateTime;
use tokio::{
    sync::{watch, Semaphore},
    time::Instant,
};

use crate::{
    auth_client::{AuthClient, AuthError},
    broker::{Broker, SessionEvents},
    domain::{SessionId, Snapshot},
    error::ApiError,
    hub::{Entry, Hub, Membership, Published},
    metrics::Metrics,
};

/// Background re-reads from auth running at once, node-wide. After a NATS
/// reconnect every watched session wants one; the rest wait their turn.
const MAX_CONCURRENT_REREADS: usize = 64;

/// The node's session watching machinery.
#[derive(Clone)]
pub struct Watches {
    hub: Arc<Hub>,
    broker: Broker,
    auth: AuthClient,
    metrics: Arc<Metrics>,
    recheck: Duration,
    rereads: Arc<Semaphore>,
}

impl Watches {
    pub fn new(
        hub: Arc<Hub>,
        broker: Broker,
        auth: AuthClient,
        metrics: Arc<Metrics>,
        recheck: Duration,
    ) -> Self {
        Self {
            hub,
            broker,
            auth,
            metrics,
            recheck,
            rereads: Arc::new(Semaphore::new(MAX_CONCURRENT_REREADS)),
        }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Starts watching `id` for a browser holding `secret`. `since` is the
    /// version the client already has, if it said so.
    pub async fn watch(
        &self,
        id: &SessionId,
        secret: &str,
        since: Option<u64>,
    ) -> Result<Watcher, ApiError> {
        let membership = self.hub.join(id).map_err(|_| ApiError::TooManyWatchers)?;
        let entry = membership.entry.clone();
        {
            let mut subscribed = entry.subscribed.lock().await;
            if !*subscribed {
                let events = self
                    .broker
                    .subscribe(id)
                    .await
                    .map_err(|e| ApiError::Unavailable(e.to_string()))?;
                tokio::spawn(run_session(self.clone(), entry.clone(), events));
                *subscribed = true;
            }
        }
        let snapshot = self.auth.get(id, secret).await?;
        entry.remember_secret(secret);
        entry.offer(snapshot);
        let view = entry.subscribe_view();
        Ok(Watcher {
            _membership: membership,
            view,
            last: None,
            last_seq: 0,
            since,
        })
    }

    /// Passes a snapshot that a request on this node produced (cancel,
    /// redeem, scan...) to local watchers without waiting for the event.
    pub fn observe(&self, snapshot: &Snapshot) {
        if let Some(entry) = self.hub.get(&snapshot.session_id) {
            entry.offer(snapshot.clone());
        }
    }

    /// Reads the session from auth and offers the answer to its watchers.
    async fn reread(&self, entry: &Entry) -> Reread {
        let Some(secret) = entry.secret() else {
            return Reread::Answered;
        };
        let Ok(_permit) = self.rereads.acquire().await else {
            return Reread::Answered;
        };
        self.metrics.recheck();
        match self.auth.get(&entry.id, &secret).await {
            Ok(snapshot) => {
                entry.offer(snapshot);
                Reread::Answered
            }
            Err(AuthError::Unavailable(e)) => {
                tracing::debug!(session = %entry.id, error = %e, "re-read failed; retrying with backoff");
                Reread::Unreachable
            }
            Err(e) => {
                tracing::info!(session = %entry.id, error = %e, "re-read refused");
                Reread::Answered
            }
        }
    }
}

/// What a re-read from auth came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reread {
    /// Auth answered (with the state, or with a refusal): the view is as
    /// current as auth can make it.
    Answered,
    /// Auth could not be reached; the view may be behind.
    Unreachable,
}

/// First and longest wait before retrying a failed re-read. Short enough
/// that a session whose events were lost during an outage catches up within
/// seconds of auth coming back, long enough not to hammer a restarting auth.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Re-read bookkeeping of one watched session.
struct Sync {
    /// Events may have been missed (NATS reconnected) and no re-read has
    /// succeeded since. While stale, the edge does not announce a local
    /// EXPIRED: the view might be hiding a confirm that auth already holds.
    stale: bool,
    /// When to try again after a failed re-read.
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl Sync {
    fn new() -> Self {
        Self {
            stale: false,
            retry_at: None,
            backoff: RETRY_MIN,
        }
    }

    fn settle(&mut self, outcome: Reread) {
        match outcome {
            Reread::Answered => {
                self.stale = false;
                self.retry_at = None;
                self.backoff = RETRY_MIN;
            }
            Reread::Unreachable => {
                self.retry_at = Some(Instant::now() + jitter(self.backoff));
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

/// The background work of one watched session; ends when the last watcher
/// leaves (the entry's stop token) and unsubscribes by dropping `events`.
async fn run_session(watches: Watches, entry: Arc<Entry>, mut events: SessionEvents) {
    let mut view = entry.subscribe_view();
    let mut resync = watches.broker.resync_signal();
    resync.mark_unchanged();
    let mut resync_open = true;
    let mut sync = Sync::new();
    let far = Duration::from_secs(86_400 * 365);
    loop {
        let deadline = entry
            .current()
            .filter(|s| !s.state.is_final())
            .and_then(|s| s.expires_at)
            .map(instant_at)
            .unwrap_or_else(|| Instant::now() + far);
        let recheck = sync
            .retry_at
            .unwrap_or_else(|| Instant::now() + jitter(watches.recheck));
        tokio::select! {
            biased;
            _ = entry.stop.cancelled() => break,
            event = events.next(&entry.id) => match event {
                Some(snapshot) => { entry.offer(snapshot); }
                None => {
                    tracing::warn!(session = %entry.id, "NATS subscription closed");
                    break;
                }
            },
            _ = view.changed() => {}
            // Not while stale: the retries below must catch up first.
            _ = tokio::time::sleep_until(deadline), if !sync.stale => {
                // Ask auth before announcing the deadline: a publish lost
                // between auth's write and its publish would otherwise turn
                // a confirmed login into EXPIRED on the screen. Auth answers
                // EXPIRED itself when the deadline really passed.
                let outcome = Box::pin(watches.reread(&entry)).await;
                sync.settle(outcome);
                // Unreachable auth, or clocks a little apart: the edge keeps
                // its promise to announce the deadline on time, unless the
                // NATS link is down (events may be missing; the retries and
                // the re-read after reconnect settle it).
                if outcome == Reread::Unreachable && !watches.broker.is_connected() {
                    sync.stale = true;
                } else if let Some(expired) = entry.current().and_then(|s| s.expired_at(OffsetDateTime::now_utc())) {
                    entry.offer(expired);
                }
            }
            changed = resync.changed(), if resync_open => match changed {
                Ok(()) => {
                    sync.stale = true;
                    let outcome = Box::pin(watches.reread(&entry)).await;
                    sync.settle(outcome);
                }
                // The NATS client is gone (shutdown); periodic rechecks remain.
                Err(_) => resync_open = false,
            },
            // Periodic recheck, or the retry of a failed re-read. Boxed: the
            // gRPC call's future is large and would otherwise be part of
            // every watched session's task.
            _ = tokio::time::sleep_until(recheck) => {
                let outcome = Box::pin(watches.reread(&entry)).await;
                sync.settle(outcome);
            }
        }
    }
}

/// The tokio instant of a wall-clock time (now when it already passed).
fn instant_at(t: OffsetDateTime) -> Instant {
    let left = t - OffsetDateTime::now_utc();
    Instant::now() + left.try_into().unwrap_or(Duration::ZERO)
}

/// `d` scaled by a random factor in [0.8, 1.2), so rechecks of sessions
/// that started together spread out.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.8..1.2))
}

/// One watcher: the session's shared view plus what this client has had.
pub struct Watcher {
    _membership: Membership,
    view: watch::Receiver<Option<Published>>,
    last: Option<Arc<Snapshot>>,
    last_seq: u64,
    since: Option<u64>,
}

impl Watcher {
    /// The newest snapshot if it is news to this client; does not wait.
    pub fn news(&mut self, metrics: &Metrics) -> Option<Arc<Snapshot>> {
        let published = self.view.borrow_and_update().clone()?;
        if self.last_seq > 0 && published.seq > self.last_seq + 1 {
            metrics.coalesced(published.seq - self.last_seq - 1);
        }
        self.last_seq = published.seq;
        let snap = published.snapshot;
        let news = match (&self.last, self.since) {
            (Some(last), _) => snap.is_newer_than(last),
            (None, Some(since)) => snap.is_news_after(since),
            (None, None) => true,
        };
        if news {
            self.last = Some(snap.clone());
            Some(snap)
        } else {
            None
        }
    }

    /// Waits for the next snapshot that is news to this client.
    /// Cancel-safe: nothing is lost if the future is dropped.
    pub async fn next(&mut self, metrics: &Metrics) -> Option<Arc<Snapshot>> {
        loop {
            if let Some(s) = self.news(metrics) {
                return Some(s);
            }
            self.view.changed().await.ok()?;
        }
    }

    /// The newest snapshot whether news or not.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.view.borrow().as_ref().map(|p| p.snapshot.clone())
    }

    /// Whether this client has been sent a final state.
    pub fn finished(&self) -> bool {
        self.last.as_ref().is_some_and(|s| s.state.is_final())
    }

    /// Records that the client told us it has version `since` (WebSocket
    /// resume message), before anything was sent.
    pub fn resume_from(&mut self, since: u64) {
        if self.last.is_none() {
            self.since = Some(since);
        }
    }
}
