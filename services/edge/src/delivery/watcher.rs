//! One watcher: the session's shared view plus what this client has had.

use std::sync::Arc;

use super::Membership;
use crate::{domain::Snapshot, hub::Entry, metrics::Metrics};

pub struct Watcher {
    membership: Membership,
    last: Option<Arc<Snapshot>>,
    last_seq: u64,
    since: Option<u64>,
    /// The epoch of the QR payload the client says it holds (long polls).
    qr_epoch: Option<u64>,
}

impl Watcher {
    pub(super) fn new(membership: Membership, since: Option<u64>) -> Self {
        Self {
            membership,
            last: None,
            last_seq: 0,
            since,
            qr_epoch: None,
        }
    }

    fn entry(&self) -> &Entry {
        self.membership.entry()
    }

    /// The newest snapshot if it is news to this client; does not wait.
    pub fn news(&mut self, metrics: &Metrics) -> Option<Arc<Snapshot>> {
        let published = self.entry().published()?;
        if published.seq == self.last_seq {
            return None;
        }
        if self.last_seq > 0 && published.seq > self.last_seq + 1 {
            metrics.coalesced(published.seq - self.last_seq - 1);
        }
        self.last_seq = published.seq;
        let snap = published.snapshot;
        let news = match (&self.last, self.since) {
            (Some(last), _) => snap.is_newer_than(last),
            (None, Some(since)) => snap.is_news_after(since, self.qr_epoch),
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
            // Registered before looking, so a change in between still wakes.
            let entry = self.membership.entry.clone();
            let notified = entry.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(s) = self.news(metrics) {
                return Some(s);
            }
            notified.await;
        }
    }

    /// The newest snapshot whether news or not.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.entry().current()
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

    /// Records which QR payload (its epoch) the client holds along with
    /// `since`, before anything was sent: a PENDING snapshot of that
    /// version is then news only once its payload is newer. Without it a
    /// resuming client is sent the current PENDING snapshot once (long
    /// polls say it, or they would be answered at once every time).
    pub fn resume_qr(&mut self, epoch: u64) {
        if self.last.is_none() {
            self.qr_epoch = Some(epoch);
        }
    }

    /// Forgets what was sent: the next snapshot is the current one unless
    /// the client holds it (`since`). For a client that starts over on the
    /// same connection (a new STOMP subscription).
    pub fn rewind(&mut self, since: Option<u64>) {
        self.last = None;
        self.last_seq = 0;
        self.since = since;
        self.qr_epoch = None;
    }
}
