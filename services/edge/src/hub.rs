//! Which local watchers watch which session. Knows nothing of NATS or
//! gRPC: an entry is a shared, coalescing view of one session (only the
//! newest snapshot, and one `Notify` that wakes its watchers), the counts of
//! requests attached to it and of authorized watchers among them, and the
//! re-read bookkeeping that delivery keeps for it.
//!
//! An entry lives while anything is attached: a request that is still
//! being authorized holds it (so the subscription made for it stays) but
//! takes no watcher slot; only an authorized watcher counts against the
//! per-session limit.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU32, Ordering::Relaxed},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use subtle::ConstantTimeEq;
use tokio::{sync::Notify, time::Instant};

use crate::domain::{SessionId, Snapshot};

/// The newest snapshot of a session and how many times the view changed,
/// so a watcher can tell how many updates it skipped (coalesced).
#[derive(Debug, Clone)]
pub struct Published {
    pub snapshot: Arc<Snapshot>,
    pub seq: u64,
}

/// Re-read bookkeeping of one watched session (owned by delivery).
#[derive(Debug)]
pub struct SyncState {
    /// Events may have been missed (the bus reconnected) and no re-read has
    /// succeeded since. While stale, no local EXPIRED is announced: the
    /// view might be hiding a confirm that auth already holds.
    pub stale: bool,
    /// The next retry of a failed re-read, if one is owed.
    pub retry_at: Option<Instant>,
    /// One more re-read owed once the interest has reached every server of
    /// a NATS cluster (see `EventBus::is_clustered`).
    pub settle_at: Option<Instant>,
    /// Wait before the next retry after this one fails.
    pub backoff: Duration,
    /// The entry's place in the node's timer queue, if it has one.
    pub timer: Option<(Instant, u64)>,
    /// In the node's re-read queue right now.
    pub queued: bool,
}

/// One watched session on this node.
pub struct Entry {
    pub id: SessionId,
    /// The newest snapshot. A `tokio::sync::watch` would do the same but
    /// costs about 370 bytes per session (it keeps eight `Notify`s);
    /// this is a lock and one `Notify`.
    view: Mutex<Option<Published>>,
    /// Woken (all waiters) when the view changes.
    pub changed: Notify,
    /// The browser secret that auth accepted for this session, kept only in
    /// memory so re-reads can authenticate and later watchers can be
    /// checked locally. Never logged.
    secret: OnceLock<Box<str>>,
    /// Set once the bus proved the subscription; initialized by the first
    /// request that needs it, the others wait for it.
    pub subscribed: tokio::sync::OnceCell<()>,
    /// Requests attached (being authorized, or watching); changed only
    /// under the hub's lock.
    attached: AtomicU32,
    /// Authorized watchers among them; changed only under the hub's lock.
    watchers: AtomicU32,
    pub sync: Mutex<SyncState>,
}

impl Entry {
    fn new(id: SessionId, backoff: Duration) -> Self {
        Self {
            id,
            view: Mutex::new(None),
            changed: Notify::new(),
            secret: OnceLock::new(),
            subscribed: tokio::sync::OnceCell::new(),
            attached: 0.into(),
            watchers: 0.into(),
            sync: Mutex::new(SyncState {
                stale: false,
                retry_at: None,
                settle_at: None,
                backoff,
                timer: None,
                queued: false,
            }),
        }
    }

    /// Offers a snapshot; it replaces the view only when it is news
    /// (docs/protocol.md: higher version, or final after non-final).
    /// Returns whether it did.
    pub fn offer(&self, snapshot: Snapshot) -> bool {
        {
            let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
            let news = match &*view {
                None => true,
                Some(p) => snapshot.is_newer_than(&p.snapshot),
            };
            if !news {
                return false;
            }
            let seq = view.as_ref().map_or(1, |p| p.seq + 1);
            *view = Some(Published {
                snapshot: Arc::new(snapshot),
                seq,
            });
        }
        self.changed.notify_waiters();
        true
    }

    /// The view as it is now.
    pub fn published(&self) -> Option<Published> {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.published().map(|p| p.snapshot)
    }

    /// Keeps the first secret auth accepted; later ones are the same.
    pub fn remember_secret(&self, secret: &str) {
        let _ = self.secret.set(secret.into());
    }

    pub fn secret(&self) -> Option<&str> {
        self.secret.get().map(|s| &**s)
    }

    /// Compares `secret` with the one auth accepted, in constant time;
    /// `None` when none was accepted yet.
    pub fn secret_matches(&self, secret: &str) -> Option<bool> {
        let known = self.secret.get()?;
        Some(bool::from(known.as_bytes().ct_eq(secret.as_bytes())))
    }

    /// Whether any request is still attached (the entry is in the hub).
    pub fn is_attached(&self) -> bool {
        self.attached.load(Relaxed) > 0
    }

    pub fn watchers(&self) -> usize {
        self.watchers.load(Relaxed) as usize
    }

    pub fn lock_sync(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(|p| p.into_inner())
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
    first_backoff: Duration,
}

impl Hub {
    /// `first_backoff`: the first wait before retrying a failed re-read.
    pub fn new(max_watchers: usize, first_backoff: Duration) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            max_watchers,
            first_backoff,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Arc<Entry>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attaches a request to `id`, creating the entry if it is the first;
    /// takes no watcher slot. Returns the entry and whether it is new.
    pub fn attach(&self, id: &SessionId) -> (Arc<Entry>, bool) {
        let mut sessions = self.lock();
        let mut created = false;
        let entry = sessions
            .entry(id.clone())
            .or_insert_with(|| {
                created = true;
                Arc::new(Entry::new(id.clone(), self.first_backoff))
            })
            .clone();
        entry.attached.fetch_add(1, Relaxed);
        (entry, created)
    }

    /// Turns an attached request into a watcher, if the session has a slot.
    pub fn promote(&self, entry: &Entry) -> Result<(), TooManyWatchers> {
        let _sessions = self.lock();
        if entry.watchers.load(Relaxed) as usize >= self.max_watchers {
            return Err(TooManyWatchers);
        }
        entry.watchers.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Detaches a request (a watcher when `watcher`). When it was the last,
    /// the entry leaves the registry and `on_last` runs, still under the
    /// registry's lock, so that whatever it undoes (the subscription) is
    /// undone before a new entry for the same id can be made.
    pub fn release(&self, entry: &Arc<Entry>, watcher: bool, on_last: impl FnOnce(&Entry)) {
        let mut sessions = self.lock();
        if watcher {
            entry.watchers.fetch_sub(1, Relaxed);
        }
        if entry.attached.fetch_sub(1, Relaxed) == 1 {
            if sessions
                .get(&entry.id)
                .is_some_and(|e| Arc::ptr_eq(e, entry))
            {
                sessions.remove(&entry.id);
            }
            on_last(entry);
        }
    }

    /// The entry of a session watched here, if any.
    pub fn get(&self, id: &SessionId) -> Option<Arc<Entry>> {
        self.lock().get(id).cloned()
    }

    /// Every entry (for a re-read sweep).
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.lock().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::LoginState;
    use time::OffsetDateTime;

    fn id() -> SessionId {
        SessionId::parse("q3Zb0Xz2kT9yLw1sJm5HAA").unwrap()
    }

    fn snap(version: u64, state: LoginState) -> Snapshot {
        Snapshot {
            session_id: id(),
            state,
            version,
            expires_at: None,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            user_display_name: None,
            changed_at: None,
            qr: None,
            match_code: None,
            deny_reason: None,
        }
    }

    #[test]
    fn only_promoted_requests_take_slots_and_the_last_one_out_removes_the_entry() {
        let hub = Hub::new(1, Duration::from_millis(250));
        let (a, created) = hub.attach(&id());
        assert!(created);
        let (b, created) = hub.attach(&id());
        assert!(!created);
        assert!(Arc::ptr_eq(&a, &b));
        hub.promote(&a).unwrap();
        assert!(
            hub.promote(&b).is_err(),
            "second watcher over the limit of 1"
        );
        let mut last = 0;
        hub.release(&b, false, |_| last += 1);
        assert_eq!((hub.len(), last), (1, 0));
        hub.release(&a, true, |_| last += 1);
        assert!(hub.is_empty());
        assert_eq!(last, 1);
    }

    #[test]
    fn the_view_keeps_only_news_and_counts_changes() {
        let hub = Hub::new(8, Duration::from_millis(250));
        let (e, _) = hub.attach(&id());
        assert!(e.offer(snap(3, LoginState::Pending)));
        assert!(!e.offer(snap(3, LoginState::Pending)), "same version twice");
        assert!(!e.offer(snap(2, LoginState::Pending)), "older version");
        assert!(e.offer(snap(5, LoginState::Confirmed)));
        assert!(
            e.offer(snap(5, LoginState::Expired)),
            "local expiry keeps the version"
        );
        let p = e.published().unwrap();
        assert_eq!(p.seq, 3);
        assert_eq!(p.snapshot.state, LoginState::Expired);
    }

    #[test]
    fn secrets_compare_only_after_one_was_accepted() {
        let hub = Hub::new(8, Duration::from_millis(250));
        let (e, _) = hub.attach(&id());
        assert_eq!(e.secret_matches("s3cret"), None);
        e.remember_secret("s3cret");
        e.remember_secret("other");
        assert_eq!(e.secret_matches("s3cret"), Some(true));
        assert_eq!(e.secret_matches("s3crex"), Some(false));
        assert_eq!(e.secret_matches(""), Some(false));
    }
}
