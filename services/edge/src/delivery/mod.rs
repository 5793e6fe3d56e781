//! Keeps each watched session's view current and hands snapshots to
//! watchers in order, with one node-wide dispatcher instead of work per
//! session or per watcher.
//!
//! - Joining ([`Watches::watch`]): a request attaches to the session's hub
//!   entry without taking a watcher slot, subscribes (once per session per
//!   node; the bus proves the interest before it returns), then reads the
//!   state with the request's secret, which authorizes it; only then does
//!   it take one of the session's slots. A later request for a session
//!   already authorized here is checked against that secret locally, in
//!   constant time, and needs no read.
//! - Events ([`ports::Inbox`]): the bus's reader hands each event straight
//!   to the entry (a coalescing `watch` of the newest snapshot). An event
//!   whose `previous` version is ahead of what the entry holds is a gap:
//!   counted, and the session is re-read.
//! - One timer queue ([`timers`]) holds every session's deadline (local
//!   EXPIRED, preceded by a re-read), every re-read retry, and every
//!   PENDING session's next QR rotation: at the boundary the entry gets a
//!   local snapshot (same version, the next payload) without any read or
//!   write, and its watchers are woken as for an event.
//! - One re-read queue with at most [`Settings::max_rereads`] reads in
//!   flight serves deadlines, retries, gaps and the sweep of every session
//!   after the bus reconnects ([`ports::Inbox::resync`]).
//! - The last request leaving a session unsubscribes.
//!
//! Nothing is read periodically: with the server republishing every write
//! (an event exists exactly when a write committed), an event can only be
//! missed while the link to NATS is down or overflowing, and both end in a
//! reconnect and a sweep. The deadline re-read covers a publish lost by an
//! older auth that publishes events itself.

pub mod ports;
pub mod push;
mod rereads;
pub mod timers;
mod watcher;

#[cfg(test)]
mod memory;
#[cfg(test)]
mod tests;

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use rand::Rng;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::{
    auth_client::AuthError,
    domain::{SessionId, Snapshot},
    hub::{Entry, Hub, TooManyWatchers},
    metrics::Metrics,
};
use ports::{BusError, BusEvent, EventBus, Inbox, StateReader};
pub use push::{Delivery, Leave, Push};
use rereads::Rereads;
use timers::Timers;
pub use watcher::Watcher;

/// Why a watch could not start. Mapped to HTTP in [`crate::error`].
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The session already has the maximum of watchers on this node.
    #[error("too many watchers")]
    TooManyWatchers,
    /// Auth refused the read (wrong secret, unknown session...) or could
    /// not be reached.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The event bus refused the subscription.
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl From<TooManyWatchers> for WatchError {
    fn from(_: TooManyWatchers) -> Self {
        Self::TooManyWatchers
    }
}

/// Tuning of the dispatcher.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Authorized watchers of one session on this node.
    pub max_watchers: usize,
    /// Re-reads from auth in flight at once, node-wide. After a reconnect
    /// every watched session wants one; the rest wait their turn in the
    /// queue (one place per session at most).
    pub max_rereads: usize,
    /// First and longest wait before retrying a failed re-read. Short
    /// enough that a session whose events were lost during an outage
    /// catches up within seconds of auth coming back, long enough not to
    /// hammer a restarting auth.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// On a NATS cluster, how long after subscribing (a new watch, or the
    /// sweep after a reconnect) the session is read once more: the server
    /// the edge is connected to proves the interest at once, but the
    /// member whose stream leader publishes the event learns of it a
    /// little later (microseconds when idle; the chaos benchmark saw more
    /// than 5 ms under load, after a member restarted), and an event
    /// published in between is not forwarded. Zero: no such read.
    pub interest_settle: Duration,
}

impl Settings {
    pub fn new(max_watchers: usize) -> Self {
        Self {
            max_watchers,
            max_rereads: 64,
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(5),
            interest_settle: Duration::from_secs(1),
        }
    }
}

/// The wall clock that deadlines are compared with.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    System,
    /// Wall time that advances with tokio's clock (paused in tests).
    #[allow(dead_code)]
    Tokio {
        wall: OffsetDateTime,
        at: Instant,
    },
}

impl Clock {
    pub fn now(&self) -> OffsetDateTime {
        match self {
            Self::System => OffsetDateTime::now_utc(),
            Self::Tokio { wall, at } => *wall + (Instant::now() - *at),
        }
    }

    /// The tokio instant of a wall-clock time (now when it already passed).
    fn instant_at(&self, t: OffsetDateTime) -> Instant {
        let left = t - self.now();
        Instant::now() + left.try_into().unwrap_or(Duration::ZERO)
    }
}

/// The node's session watching machinery (cheap to clone).
#[derive(Clone)]
pub struct Watches {
    core: Arc<Core>,
}

struct Core {
    hub: Hub,
    bus: Arc<dyn EventBus>,
    reader: Arc<dyn StateReader>,
    metrics: Arc<Metrics>,
    clock: Clock,
    timers: Arc<Timers>,
    rereads: Rereads,
    settings: Settings,
}

impl Watches {
    /// Builds the dispatcher and starts its timer task (needs a runtime).
    pub fn new(
        bus: Arc<dyn EventBus>,
        reader: Arc<dyn StateReader>,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Self {
        Self::with_clock(bus, reader, metrics, settings, Clock::System)
    }

    pub fn with_clock(
        bus: Arc<dyn EventBus>,
        reader: Arc<dyn StateReader>,
        metrics: Arc<Metrics>,
        settings: Settings,
        clock: Clock,
    ) -> Self {
        let timers = Arc::new(Timers::default());
        let core = Arc::new(Core {
            hub: Hub::new(settings.max_watchers, settings.retry_min),
            bus,
            reader,
            metrics,
            clock,
            timers: timers.clone(),
            rereads: Rereads::default(),
            settings,
        });
        tokio::spawn(run_timers(timers, Arc::downgrade(&core)));
        Self { core }
    }

    /// What the bus pushes events into.
    pub fn inbox(&self) -> Arc<dyn Inbox> {
        Arc::new(WatchesInbox(Arc::downgrade(&self.core)))
    }

    pub fn hub(&self) -> &Hub {
        &self.core.hub
    }

    /// Starts watching `id` for a browser holding `secret`. `since` is the
    /// version the client already has, if it said so. The request counts
    /// as a watcher only once the secret is known to be right.
    pub async fn watch(
        &self,
        id: &SessionId,
        secret: &str,
        since: Option<u64>,
    ) -> Result<Watcher, WatchError> {
        let core = &self.core;
        let attached = Attached::new(core, id);
        let entry = attached.entry.clone();
        match entry.secret_matches(secret) {
            Some(true) => {}
            Some(false) => {
                return Err(WatchError::Auth(AuthError::PermissionDenied(
                    "wrong browser secret".into(),
                )))
            }
            None => {
                // Subscribe first, then read: whatever happened before the
                // subscription is in the read, whatever happens after
                // arrives as an event; versions order the two.
                entry
                    .subscribed
                    .get_or_try_init(|| core.bus.subscribe(id))
                    .await?;
                let snapshot = core.reader.read(id, secret).await?;
                entry.remember_secret(secret);
                core.owe_settle_read(&entry);
                if !core.offer(&entry, snapshot) {
                    core.schedule(&entry);
                }
            }
        }
        Ok(Watcher::new(attached.promote()?, since))
    }

    /// Whether events currently flow from the bus (NATS connected).
    pub fn is_connected(&self) -> bool {
        self.core.bus.is_connected()
    }

    /// Passes a snapshot that a request on this node produced (cancel,
    /// redeem, scan...) to local watchers without waiting for the event.
    pub fn observe(&self, snapshot: &Snapshot) {
        if let Some(entry) = self.core.hub.get(&snapshot.session_id) {
            self.core.offer(&entry, snapshot.clone());
        }
    }
}

/// A request attached to an entry, not (yet) a watcher.
struct Attached {
    core: Arc<Core>,
    entry: Arc<Entry>,
    promoted: bool,
}

impl Attached {
    fn new(core: &Arc<Core>, id: &SessionId) -> Self {
        let (entry, _) = core.hub.attach(id);
        Self {
            core: core.clone(),
            entry,
            promoted: false,
        }
    }

    fn promote(mut self) -> Result<Membership, TooManyWatchers> {
        self.core.hub.promote(&self.entry)?;
        self.promoted = true;
        Ok(Membership {
            core: self.core.clone(),
            entry: self.entry.clone(),
        })
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if !self.promoted {
            self.core.release(&self.entry, false);
        }
    }
}

/// One authorized watcher's place; leaving happens on drop.
pub struct Membership {
    core: Arc<Core>,
    entry: Arc<Entry>,
}

impl Membership {
    fn entry(&self) -> &Entry {
        &self.entry
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.core.release(&self.entry, true);
    }
}

impl Core {
    fn release(&self, entry: &Arc<Entry>, watcher: bool) {
        self.hub.release(entry, watcher, |e| {
            // Under the hub's lock: a new entry for the same id subscribes
            // only after this unsubscribe.
            self.bus.unsubscribe(&e.id);
            let mut sync = e.lock_sync();
            self.timers.cancel(&mut sync.timer);
        });
    }

    /// Offers a snapshot to an entry and, when it changed the view,
    /// reschedules the entry's deadline.
    fn offer(&self, entry: &Arc<Entry>, snapshot: Snapshot) -> bool {
        let changed = entry.offer(snapshot);
        if changed {
            self.schedule(entry);
        }
        changed
    }

    /// Puts the entry's next due time in the timer queue: a pending retry,
    /// else the deadline of its current state or its next QR rotation,
    /// whichever comes first (not while stale or queued: the re-read owed
    /// decides first).
    fn schedule(&self, entry: &Arc<Entry>) {
        let mut sync = entry.lock_sync();
        let due = match sync.retry_at {
            Some(at) => Some(at),
            None if sync.stale || sync.queued => None,
            None => {
                let current = entry.current().filter(|s| !s.state.is_final());
                let due = current
                    .as_ref()
                    .and_then(|s| match (s.expires_at, s.next_rotation()) {
                        (Some(deadline), Some(rotation)) => Some(deadline.min(rotation)),
                        (deadline, rotation) => deadline.or(rotation),
                    })
                    .map(|t| self.clock.instant_at(t));
                // A final state needs no settle read: nothing comes after it.
                match (due, sync.settle_at.filter(|_| current.is_some())) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        };
        let sync = &mut *sync;
        self.timers.set(entry, &mut sync.timer, due);
    }

    fn on_event(self: &Arc<Self>, event: BusEvent) {
        let Some(entry) = self.hub.get(&event.snapshot.session_id) else {
            return;
        };
        let held = entry.current().map(|s| s.version);
        if let (Some(previous), Some(held)) = (event.previous, held) {
            if previous > held {
                self.metrics.gap();
                tracing::debug!(session = %entry.id, previous, held, "missed a write; re-reading");
                self.enqueue(&entry);
            }
        }
        self.offer(&entry, event.snapshot);
    }

    fn on_resync(self: &Arc<Self>) {
        let entries = self.core_entries();
        tracing::info!(sessions = entries.len(), "re-reading every watched session");
        for entry in entries {
            entry.lock_sync().stale = true;
            self.owe_settle_read(&entry);
            self.enqueue(&entry);
        }
    }

    /// On a NATS cluster, owes `entry` one more read once its interest has
    /// had time to reach every member (`Settings::interest_settle`); the
    /// caller schedules.
    fn owe_settle_read(&self, entry: &Entry) {
        if self.settings.interest_settle.is_zero() || !self.bus.is_clustered() {
            return;
        }
        entry.lock_sync().settle_at = Some(Instant::now() + self.settings.interest_settle);
    }

    fn core_entries(&self) -> Vec<Arc<Entry>> {
        self.hub.entries()
    }

    fn on_timer(self: &Arc<Self>, key: timers::TimerKey, entry: Arc<Entry>) {
        let read = {
            let mut sync = entry.lock_sync();
            if sync.timer != Some(key) {
                return;
            }
            sync.timer = None;
            let retry = sync.retry_at.take().is_some();
            let settle = sync.settle_at.is_some_and(|at| at <= Instant::now());
            if settle {
                sync.settle_at = None;
            }
            retry || settle
        };
        if !read && self.rotate(&entry) {
            return;
        }
        self.enqueue(&entry);
    }

    /// Before the deadline, a due timer is a QR rotation: the entry gets
    /// the same snapshot with the payload of the epoch that runs now (a
    /// local snapshot: nothing is read or written). Returns false when
    /// the deadline is due instead (the re-read then settles it).
    fn rotate(&self, entry: &Arc<Entry>) -> bool {
        let Some(current) = entry.current() else {
            return false;
        };
        let now = self.clock.now();
        if current.state.is_final() || current.expires_at.is_some_and(|d| d <= now) {
            return false;
        }
        match current.rotated_at(now) {
            Some(rotated) => {
                self.metrics.rotated();
                if !self.offer(entry, rotated) {
                    self.schedule(entry);
                }
            }
            // Woken a moment early: wait for the boundary.
            None => self.schedule(entry),
        }
        true
    }

    /// What a re-read settles: the view, the retry schedule, and the
    /// deadline.
    fn settle(&self, entry: &Arc<Entry>, outcome: Reread) {
        let expired = entry.current().and_then(|s| s.expired_at(self.clock.now()));
        let announce = {
            let mut sync = entry.lock_sync();
            match outcome {
                Reread::Answered => {
                    sync.stale = false;
                    sync.retry_at = None;
                    sync.backoff = self.settings.retry_min;
                }
                Reread::Unreachable => {
                    sync.retry_at = Some(Instant::now() + jitter(sync.backoff));
                    sync.backoff = (sync.backoff * 2).min(self.settings.retry_max);
                }
            }
            match (&expired, outcome) {
                (None, _) => false,
                // Auth answered and the deadline passed by our clock (auth
                // says EXPIRED itself when it agrees; clocks a little apart
                // otherwise): announce it.
                (Some(_), Reread::Answered) => true,
                // Auth unreachable: keep the promise to announce the
                // deadline on time unless events may be missing (the link
                // is down, or a sweep is owed); the retries settle it then.
                (Some(_), Reread::Unreachable) => {
                    if !self.bus.is_connected() {
                        sync.stale = true;
                    }
                    !sync.stale
                }
            }
        };
        if announce {
            if let Some(expired) = expired {
                entry.offer(expired);
            }
        }
        self.schedule(entry);
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

/// `d` scaled by a random factor in [0.8, 1.2), so retries of sessions
/// that failed together spread out.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.8..1.2))
}

async fn run_timers(timers: Arc<Timers>, core: Weak<Core>) {
    loop {
        let due = timers.next_due().await;
        let Some(core) = core.upgrade() else { return };
        for (key, entry) in due {
            core.on_timer(key, entry);
        }
    }
}

/// The bus's way into the dispatcher; holds it weakly so a dropped
/// `Watches` is not kept alive by the bus.
struct WatchesInbox(Weak<Core>);

impl Inbox for WatchesInbox {
    fn event(&self, event: BusEvent) {
        if let Some(core) = self.0.upgrade() {
            core.on_event(event);
        }
    }

    fn resync(&self) {
        if let Some(core) = self.0.upgrade() {
            core.on_resync();
        }
    }
}
