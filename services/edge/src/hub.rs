//! Which local watchers watch which session. Knows nothing of NATS or
//! gRPC: an entry is a shared, coalescing view of one session (a
//! `tokio::sync::watch` holding only the newest snapshot), a watcher count,
//! and a stop token that ends the session's background work when the last
//! watcher leaves.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::domain::{SessionId, Snapshot};

/// The newest snapshot of a session and how many times the view changed,
/// so a watcher can tell how many updates it skipped (coalesced).
#[derive(Debug, Clone)]
pub struct Published {
    pub snapshot: Arc<Snapshot>,
    pub seq: u64,
}

/// One watched session on this node.
pub struct Entry {
    pub id: SessionId,
    view: watch::Sender<Option<Published>>,
    /// One browser secret that auth accepted for this session, kept only in
    /// memory so background re-reads can authenticate. Never logged.
    secret: Mutex<Option<String>>,
    /// Serializes the first subscription; `true` once it is in place.
    pub subscribed: tokio::sync::Mutex<bool>,
    /// Cancelled when the last watcher leaves.
    pub stop: CancellationToken,
    /// Watchers; changed only under the hub's lock.
    watchers: std::sync::atomic::AtomicUsize,
}

impl Entry {
    fn new(id: SessionId) -> Self {
        Self {
            id,
            view: watch::Sender::new(None),
            secret: Mutex::new(None),
            subscribed: tokio::sync::Mutex::new(false),
            stop: CancellationToken::new(),
            watchers: 0.into(),
        }
    }

    /// Offers a snapshot; it replaces the view only when it is news
    /// (docs/protocol.md: higher version, or final after non-final).
    /// Returns whether it did.
    pub fn offer(&self, snapshot: Snapshot) -> bool {
        self.view.send_if_modified(|view| {
            let news = match view {
                None => true,
                Some(p) => snapshot.is_newer_than(&p.snapshot),
            };
            if news {
                let seq = view.as_ref().map_or(1, |p| p.seq + 1);
                *view = Some(Published {
                    snapshot: Arc::new(snapshot),
                    seq,
                });
            }
            news
        })
    }

    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.view.borrow().as_ref().map(|p| p.snapshot.clone())
    }

    pub fn subscribe_view(&self) -> watch::Receiver<Option<Published>> {
        self.view.subscribe()
    }

    /// Keeps the first secret auth accepted; later ones are not needed.
    pub fn remember_secret(&self, secret: &str) {
        let mut slot = self.secret.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(secret.to_owned());
        }
    }

    pub fn secret(&self) -> Option<String> {
        self.secret
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Refused join: the session already has the maximum of watchers here.
#[derive(Debug, thiserror::Error)]
#[error("too many watchers")]
pub struct TooManyWatchers;

/// The registry of watched sessions on this node.
pub struct Hub {
    sessions: Mutex<HashMap<SessionId, Arc<Entry>>>,
    max_watchers: usize,
}

/// Membership of one watcher; leaving happens on drop.
pub struct Membership {
    hub: Arc<Hub>,
    pub entry: Arc<Entry>,
}

impl Hub {
    pub fn new(max_watchers: usize) -> Arc<Self> {
        Arc::new(Self {
            sessions: Mutex::new(HashMap::new()),
            max_watchers,
        })
    }

    /// Adds a watcher of `id`, creating the entry if it is the first.
    pub fn join(self: &Arc<Self>, id: &SessionId) -> Result<Membership, TooManyWatchers> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let entry = sessions
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Entry::new(id.clone())))
            .clone();
        if entry.watchers.load(Relaxed) >= self.max_watchers {
            return Err(TooManyWatchers);
        }
        entry.watchers.fetch_add(1, Relaxed);
        Ok(Membership {
            hub: self.clone(),
            entry,
        })
    }

    /// The entry of a session watched here, if any.
    pub fn get(&self, id: &SessionId) -> Option<Arc<Entry>> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn leave(&self, entry: &Arc<Entry>) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if entry.watchers.fetch_sub(1, Relaxed) == 1 {
            // Only remove our own entry: a newer one for the same id may
            // exist if this one was already replaced.
            if sessions
                .get(&entry.id)
                .is_some_and(|e| Arc::ptr_eq(e, entry))
            {
                sessions.remove(&entry.id);
            }
            entry.stop.cancel();
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.leave(&self.entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::LoginState;
    use time::OffsetDateTime;

    fn snap(version: u64, state: LoginState) -> Snapshot {
        Snapshot {
            session_id: SessionId::parse("q3Zb0Xz2kT9yLw1sJm5HAA").unwrap(),
            state,
            version,
            expires_at: None,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            user_display_name: None,
            changed_at: None,
        }
    }

    #[test]
    fn last_leaver_removes_the_entry_and_stops_it() {
        let hub = Hub::new(2);
        let id = SessionId::parse("q3Zb0Xz2kT9yLw1sJm5HAA").unwrap();
        let a = hub.join(&id).unwrap();
        let b = hub.join(&id).unwrap();
        assert!(hub.join(&id).is_err(), "third watcher over the limit of 2");
        assert!(Arc::ptr_eq(&a.entry, &b.entry));
        let stop = a.entry.stop.clone();
        drop(a);
        assert_eq!(hub.len(), 1);
        assert!(!stop.is_cancelled());
        drop(b);
        assert!(hub.is_empty());
        assert!(stop.is_cancelled());
    }

    #[test]
    fn the_view_keeps_only_news_and_counts_changes() {
        let hub = Hub::new(8);
        let id = SessionId::parse("q3Zb0Xz2kT9yLw1sJm5HAA").unwrap();
        let m = hub.join(&id).unwrap();
        assert!(m.entry.offer(snap(3, LoginState::Pending)));
        assert!(
            !m.entry.offer(snap(3, LoginState::Pending)),
            "same version twice"
        );
        assert!(
            !m.entry.offer(snap(2, LoginState::Pending)),
            "older version"
        );
        assert!(m.entry.offer(snap(5, LoginState::Confirmed)));
        assert!(
            m.entry.offer(snap(5, LoginState::Expired)),
            "local expiry keeps the version"
        );
        let rx = m.entry.subscribe_view();
        let p = rx.borrow().clone().unwrap();
        assert_eq!(p.seq, 3);
        assert_eq!(p.snapshot.state, LoginState::Expired);
    }
}
