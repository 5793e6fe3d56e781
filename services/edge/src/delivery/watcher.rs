//! One watcher: the session's shared view plus what this client has had.

use std::sync::Arc;

use tokio::sync::watch;

use super::Membership;
use crate::{domain::Snapshot, hub::Published, metrics::Metrics};

pub struct Watcher {
    _membership: Membership,
    view: watch::Receiver<Option<Published>>,
    last: Option<Arc<Snapshot>>,
    last_seq: u64,
    since: Option<u64>,
}

impl Watcher {
    pub(super) fn new(membership: Membership, since: Option<u64>) -> Self {
        let view = membership.entry().subscribe_view();
        Self {
            _membership: membership,
            view,
            last: None,
            last_seq: 0,
            since,
        }
    }

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
