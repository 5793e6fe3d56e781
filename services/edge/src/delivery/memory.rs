//! In-memory doubles of delivery's two seams, for deterministic tests under
//! paused tokio time: a bus whose proofs the test releases, and an auth
//! whose answers, delays and outages the test scripts.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicUsize, Ordering::SeqCst},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use futures::future::BoxFuture;
use tokio::{sync::Notify, time::Instant};

use super::ports::{BusError, BusEvent, EventBus, Inbox, StateReader};
use crate::{
    auth_client::AuthError,
    domain::{SessionId, Snapshot},
};

/// What happened, in order, across the bus and the reader.
pub type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, line: String) {
    log.lock().unwrap().push(line);
}

pub struct MemoryBus {
    log: Log,
    inbox: OnceLock<Arc<dyn Inbox>>,
    subs: Mutex<HashSet<SessionId>>,
    connected: Mutex<bool>,
    /// Reported by `is_clustered`.
    clustered: Mutex<bool>,
    /// When set, proofs wait until [`MemoryBus::prove`].
    hold_proofs: Mutex<bool>,
    proven: Arc<Notify>,
}

impl MemoryBus {
    pub fn new(log: Log) -> Arc<Self> {
        Arc::new(Self {
            log,
            inbox: OnceLock::new(),
            subs: Mutex::new(HashSet::new()),
            connected: Mutex::new(true),
            clustered: Mutex::new(false),
            hold_proofs: Mutex::new(false),
            proven: Arc::new(Notify::new()),
        })
    }

    pub fn attach(&self, inbox: Arc<dyn Inbox>) {
        let _ = self.inbox.set(inbox);
    }

    pub fn hold_proofs(&self, hold: bool) {
        *self.hold_proofs.lock().unwrap() = hold;
    }

    pub fn prove(&self) {
        self.proven.notify_waiters();
    }

    pub fn is_subscribed(&self, id: &SessionId) -> bool {
        self.subs.lock().unwrap().contains(id)
    }

    pub fn subscriptions(&self) -> usize {
        self.subs.lock().unwrap().len()
    }

    /// Delivers an event if the session is subscribed (as NATS would).
    pub fn publish(&self, snapshot: Snapshot, previous: Option<u64>) {
        if self.is_subscribed(&snapshot.session_id) {
            if let Some(inbox) = self.inbox.get() {
                inbox.event(BusEvent { snapshot, previous });
            }
        }
    }

    pub fn set_clustered(&self, clustered: bool) {
        *self.clustered.lock().unwrap() = clustered;
    }

    pub fn set_connected(&self, up: bool) {
        *self.connected.lock().unwrap() = up;
    }

    /// The link came back: interest re-established and proven.
    pub fn resync(&self) {
        self.set_connected(true);
        if let Some(inbox) = self.inbox.get() {
            inbox.resync();
        }
    }
}

impl EventBus for MemoryBus {
    fn subscribe(&self, id: &SessionId) -> BoxFuture<'static, Result<(), BusError>> {
        self.subs.lock().unwrap().insert(id.clone());
        push(&self.log, format!("subscribe {id}"));
        let hold = *self.hold_proofs.lock().unwrap();
        let proven = self.proven.clone();
        let log = self.log.clone();
        let id = id.clone();
        Box::pin(async move {
            if hold {
                proven.notified().await;
            }
            push(&log, format!("proven {id}"));
            Ok(())
        })
    }

    fn unsubscribe(&self, id: &SessionId) {
        self.subs.lock().unwrap().remove(id);
        push(&self.log, format!("unsubscribe {id}"));
    }

    fn is_connected(&self) -> bool {
        *self.connected.lock().unwrap()
    }

    fn is_clustered(&self) -> bool {
        *self.clustered.lock().unwrap()
    }
}

/// Auth as the edge sees it: stored snapshots behind secrets.
pub struct MemoryAuth {
    log: Log,
    sessions: Mutex<HashMap<SessionId, (String, Snapshot)>>,
    pub down: Mutex<bool>,
    pub delay: Mutex<Duration>,
    /// Reads with a wrong secret wait here until released.
    pub hold_wrong: Mutex<bool>,
    pub released: Arc<Notify>,
    pub reads: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub read_times: Mutex<Vec<Instant>>,
}

impl MemoryAuth {
    pub fn new(log: Log) -> Arc<Self> {
        Arc::new(Self {
            log,
            sessions: Mutex::new(HashMap::new()),
            down: Mutex::new(false),
            delay: Mutex::new(Duration::ZERO),
            hold_wrong: Mutex::new(false),
            released: Arc::new(Notify::new()),
            reads: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            read_times: Mutex::new(Vec::new()),
        })
    }

    /// Stores a session's state (a committed write).
    pub fn store(&self, secret: &str, snapshot: Snapshot) {
        self.sessions
            .lock()
            .unwrap()
            .insert(snapshot.session_id.clone(), (secret.to_owned(), snapshot));
    }

    pub fn set_down(&self, down: bool) {
        *self.down.lock().unwrap() = down;
    }

    pub fn reads(&self) -> usize {
        self.reads.load(SeqCst)
    }
}

impl StateReader for Arc<MemoryAuth> {
    fn read(
        &self,
        id: &SessionId,
        secret: &str,
    ) -> BoxFuture<'static, Result<Snapshot, AuthError>> {
        let me = self.clone();
        let id = id.clone();
        let secret = secret.to_owned();
        Box::pin(async move {
            me.reads.fetch_add(1, SeqCst);
            me.read_times.lock().unwrap().push(Instant::now());
            push(&me.log, format!("read {id}"));
            let now = me.in_flight.fetch_add(1, SeqCst) + 1;
            me.max_in_flight.fetch_max(now, SeqCst);
            let delay = *me.delay.lock().unwrap();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let stored = me.sessions.lock().unwrap().get(&id).cloned();
            let right = stored.as_ref().is_some_and(|(s, _)| *s == secret);
            if !right && *me.hold_wrong.lock().unwrap() {
                me.released.notified().await;
            }
            me.in_flight.fetch_sub(1, SeqCst);
            if *me.down.lock().unwrap() {
                return Err(AuthError::Unavailable("down".into()));
            }
            match stored {
                None => Err(AuthError::NotFound("no such session".into())),
                Some((s, snap)) if s == secret => Ok(snap),
                Some(_) => Err(AuthError::PermissionDenied("wrong browser secret".into())),
            }
        })
    }
}
