//! The delivery policy the push transports share: what a client is sent
//! next ([`Push`]) and when it must go ([`Leave`]). A transport only turns
//! pushes into its bytes.
//!
//! - News: a snapshot is pushed when it is news to this client (the
//!   [`Watcher`]'s rule: a higher version, or final after non-final);
//!   skipped intermediate states are coalesced.
//! - A final state ends the delivery: the push after it is
//!   [`Leave::Finished`].
//! - Drain: once the node drains, the next push is [`Leave::Draining`] with
//!   a jittered delay to suggest before reconnecting, so that a node's
//!   clients do not all come back at the same instant. Drain wins over
//!   news that arrives at the same moment: the client resumes elsewhere
//!   with what it has, and nothing is lost (every snapshot is whole).
//! - Keep-alive: with a period set, [`Push::KeepAlive`] comes when nothing
//!   else was pushed for that long (SSE comment, WebSocket ping, STOMP
//!   heart-beat). Each transport picks the period; gRPC leaves it to
//!   HTTP/2 pings.
//! - Held: while held (the WebSocket's resume window, STOMP before
//!   SUBSCRIBE), no snapshot is pushed; drain and keep-alive still are.
//! - Metrics: the open-connections gauge for as long as the delivery lives,
//!   and every pushed snapshot counted with its delay since auth's commit.

use std::{sync::Arc, time::Duration};

use rand::Rng;
use time::OffsetDateTime;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::Watcher;
use crate::{
    domain::Snapshot,
    metrics::{ConnectionGuard, Transport},
    shutdown::DrainListener,
};

/// What a transport writes next.
#[derive(Debug, Clone, PartialEq)]
pub enum Push {
    /// A snapshot that is news to this client.
    Snapshot(Arc<Snapshot>),
    /// Nothing was pushed for a keep-alive period.
    KeepAlive,
    /// The client must go; the transport ends the stream its own way.
    /// Every later call returns the same.
    Leave(Leave),
}

/// Why a delivery ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// A final state was pushed; nothing can follow it.
    Finished,
    /// The node is shutting down: reconnect (through the balancer, to any
    /// other node) after about this long, resuming from the last version.
    Draining { reconnect_after: Duration },
}

/// One client's delivery: its watcher plus the policy above.
pub struct Delivery {
    watcher: Watcher,
    drain: DrainListener,
    keep_alive: Option<Interval>,
    /// The gauge of open connections, and the transport's metrics label.
    open: ConnectionGuard,
    /// Base of the reconnect delay suggested at drain (jittered).
    reconnect_hint: Duration,
    held: bool,
    ended: Option<Leave>,
}

impl Delivery {
    pub(crate) fn new(
        watcher: Watcher,
        drain: DrainListener,
        open: ConnectionGuard,
        reconnect_hint: Duration,
    ) -> Self {
        Self {
            watcher,
            drain,
            keep_alive: None,
            open,
            reconnect_hint,
            held: false,
            ended: None,
        }
    }

    /// Sets (or with `None` stops) the keep-alive period; the first one is
    /// due a whole period from now.
    pub fn keep_alive(&mut self, every: Option<Duration>) {
        self.keep_alive = every.filter(|d| !d.is_zero()).map(|every| {
            let mut interval = tokio::time::interval_at(Instant::now() + every, every);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
    }

    /// Holds snapshots back (true) or lets them flow (false).
    pub fn hold(&mut self, held: bool) {
        self.held = held;
    }

    pub fn is_held(&self) -> bool {
        self.held
    }

    /// The client said it holds version `since` before anything was pushed
    /// (WebSocket `resume`, STOMP `since` on SUBSCRIBE).
    pub fn resume_from(&mut self, since: u64) {
        self.watcher.resume_from(since);
    }

    /// The epoch of the QR payload the client holds (see
    /// [`Watcher::resume_qr`]).
    pub fn resume_qr(&mut self, epoch: u64) {
        self.watcher.resume_qr(epoch);
    }

    /// Starts over as if nothing had been pushed: the next snapshot is the
    /// current one unless the client holds it (`since`). For a new STOMP
    /// subscription on the same connection.
    pub fn rewind(&mut self, since: Option<u64>) {
        self.watcher.rewind(since);
    }

    /// The newest snapshot, news or not (a long poll that times out).
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.watcher.current()
    }

    pub fn transport(&self) -> Transport {
        self.open.transport()
    }

    /// The next push. Cancel-safe: a snapshot is taken from the watcher
    /// only in the branch that returns it.
    pub async fn next_push(&mut self) -> Push {
        if let Some(leave) = self.ended {
            return Push::Leave(leave);
        }
        let metrics = self.open.metrics().clone();
        let push = tokio::select! {
            biased;
            _ = self.drain.started() => {
                let jittered = self.reconnect_hint.mul_f64(rand::rng().random_range(0.5..2.0));
                Push::Leave(Leave::Draining { reconnect_after: jittered })
            }
            news = self.watcher.next(&metrics), if !self.held => match news {
                Some(s) => {
                    metrics.delivered(self.open.transport(), delay(&s));
                    Push::Snapshot(s)
                }
                None => Push::Leave(Leave::Finished),
            },
            _ = tick(&mut self.keep_alive) => Push::KeepAlive,
        };
        match &push {
            Push::Snapshot(s) if s.state.is_final() => self.ended = Some(Leave::Finished),
            Push::Leave(leave) => self.ended = Some(*leave),
            Push::Snapshot(_) | Push::KeepAlive => {
                if let Some(interval) = &mut self.keep_alive {
                    // Anything written keeps the connection alive.
                    interval.reset();
                }
            }
        }
        push
    }
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Time from auth's commit to now, for snapshots that came as events.
pub fn delay(s: &Snapshot) -> Option<Duration> {
    let changed = s.changed_at?;
    (OffsetDateTime::now_utc() - changed).try_into().ok()
}

#[cfg(test)]
#[path = "push_tests.rs"]
pub(crate) mod tests;
