//! The only code that speaks NATS: a subscribe-only core-NATS client of our
//! own. One connection per node; one subscription per watched session
//! (interest-based routing: the node receives only the sessions it
//! watches); the reader hands each message straight to delivery's
//! [`Inbox`], so no queue or channel exists per subscription.
//!
//! - [`proto`]: the protocol parser (bounded lines and payloads).
//! - [`server`]: where and how to connect (URLs, nkey seed, TLS settings),
//!   and the pool of servers a reconnect goes round.
//! - [`conn`]: connecting (INFO, TLS, CONNECT with an nkey signature of the
//!   server's nonce) and reconnecting.
//! - [`link`]: one live connection: reading, writing, pinging.
//! - [`decode`]: the event payloads.
//!
//! What can queue, and its bound: the outgoing buffer holds our own
//! SUB/UNSUB/PING/PONG lines (at most one SUB and one UNSUB per watched
//! session between two writes); subscribers waiting for their proof are
//! one per joining session. Incoming messages are never queued: a reader
//! that falls behind makes the server drop the connection as a slow
//! consumer, and the reconnect re-subscribes and re-reads everything.

mod conn;
mod decode;
mod link;
pub mod proto;
mod server;
mod tls;

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use futures::future::BoxFuture;
use tokio::sync::{oneshot, Notify};

use crate::{
    delivery::ports::{BusError, EventBus, Inbox},
    domain::SessionId,
    metrics::Metrics,
};

/// Longest a subscriber waits for the server's proof (the PONG after its
/// SUB). Past it the watch goes on: if the link is dying, the reconnect
/// re-subscribes and re-reads the session anyway.
const PROOF_TIMEOUT: Duration = Duration::from_secs(2);

/// The default of [`BrokerConfig::ping_interval`] (`QRLOGIN_NATS_PING_INTERVAL`).
/// A frozen server (one that keeps its sockets open and answers nothing)
/// is found two to three intervals after it froze: at 1 s within the
/// interval plus 2 s, and the move and the re-read take milliseconds more.
/// The cost is one PING and one PONG a second on the edge's one
/// connection; a server silent for two intervals is left for another.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("QRLOGIN_NATS_URL: {0}")]
    Url(String),
    #[error("QRLOGIN_NATS_NKEY_SEED_FILE: {0}")]
    Seed(String),
    #[error("NATS TLS: {0}")]
    Tls(String),
}

/// How to reach NATS.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Comma-separated `nats://` or `tls://` URLs (`host:port` alone means
    /// `nats://`). Credentials in URLs are refused: they would be logged.
    pub urls: String,
    pub prefix: String,
    /// Client name sent in CONNECT.
    pub name: String,
    pub nkey_seed_file: Option<PathBuf>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Interval of our PINGs; when two are unanswered at the next one, the
    /// connection ends (see [`DEFAULT_PING_INTERVAL`]).
    pub ping_interval: Duration,
    /// One subscription to `<prefix>.*` instead of one per watched session
    /// (small deployments only: every edge then receives every event).
    pub wildcard: bool,
}

impl BrokerConfig {
    pub fn new(urls: &str, prefix: &str) -> Self {
        Self {
            urls: urls.to_owned(),
            prefix: prefix.to_owned(),
            name: "qrlogin-edge".to_owned(),
            nkey_seed_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            ping_interval: DEFAULT_PING_INTERVAL,
            wildcard: false,
        }
    }
}

/// The edge's NATS client (cheap to clone).
#[derive(Clone)]
pub struct Broker {
    shared: Arc<Shared>,
}

/// Starts the connection once delivery's inbox exists.
pub struct Starter {
    shared: Arc<Shared>,
    settings: server::Settings,
}

struct Shared {
    prefix: String,
    /// `<prefix>.*` is the only subscription (see [`BrokerConfig::wildcard`]).
    wildcard: bool,
    state: Mutex<State>,
    /// Wakes the writer: bytes or proof waiters are pending.
    wake: Notify,
    connected: AtomicBool,
    /// The server announced other members (INFO `connect_urls`).
    clustered: AtomicBool,
    metrics: Arc<Metrics>,
}

/// A subscriber waiting for the PONG that proves its SUB.
struct Waiter {
    subject: String,
    tx: oneshot::Sender<Result<(), BusError>>,
}

/// The waiters of one PING sent; PONGs come back in order.
#[derive(Default)]
struct Group {
    waiters: Vec<Waiter>,
    /// This PING follows the re-subscription after a (re)connect: its PONG
    /// starts the re-read of every watched session.
    resync: bool,
    /// Our own keep-alive PING.
    keepalive: bool,
}

#[derive(Default)]
struct State {
    /// Interest: every watched session and its subscription id.
    subs: HashMap<SessionId, u64>,
    next_sid: u64,
    /// A connection is up and has been sent every SUB.
    live: bool,
    out: Vec<u8>,
    /// Waiters whose SUB is in `out`; the writer sends one PING for them.
    waiting: Vec<Waiter>,
    groups: VecDeque<Group>,
    /// Subjects the server refused since the last PONG.
    denied: Vec<String>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subject(&self, id: &SessionId) -> String {
        format!("{}.{}", self.prefix, id)
    }
}

impl Broker {
    /// Checks the configuration and builds the client; nothing connects
    /// until [`Starter::start`].
    pub fn new(
        config: &BrokerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, Starter), BrokerError> {
        let settings = server::Settings::from_config(config)?;
        let shared = Arc::new(Shared {
            prefix: config.prefix.clone(),
            wildcard: config.wildcard,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            connected: AtomicBool::new(false),
            clustered: AtomicBool::new(false),
            metrics,
        });
        Ok((
            Self {
                shared: shared.clone(),
            },
            Starter { shared, settings },
        ))
    }

    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Relaxed)
    }

    /// Sessions with interest registered.
    pub fn subscriptions(&self) -> usize {
        self.shared.lock().subs.len()
    }
}

impl Starter {
    /// Connects in the background (retrying until NATS is there) and keeps
    /// the connection; events go to `inbox`.
    pub fn start(self, inbox: Arc<dyn Inbox>) {
        tokio::spawn(conn::run(self.shared, self.settings, inbox));
    }
}

impl EventBus for Broker {
    fn subscribe(&self, id: &SessionId) -> BoxFuture<'static, Result<(), BusError>> {
        let shared = &self.shared;
        if shared.wildcard {
            // The one subscription was proven at connect; a join racing a
            // reconnect is re-read by the resync that follows it.
            return Box::pin(std::future::ready(Ok(())));
        }
        let subject = shared.subject(id);
        let mut st = shared.lock();
        let sid = match st.subs.get(id) {
            Some(sid) => *sid,
            None => {
                st.next_sid += 1;
                let sid = st.next_sid;
                st.subs.insert(id.clone(), sid);
                shared.metrics.subscription_opened();
                sid
            }
        };
        if !st.live {
            // Sent with every other SUB when the connection is up; the
            // resync that follows re-reads this session too.
            return Box::pin(std::future::ready(Ok(())));
        }
        let (tx, rx) = oneshot::channel();
        link::write_sub(&mut st.out, &subject, sid);
        st.waiting.push(Waiter { subject, tx });
        drop(st);
        shared.wake.notify_one();
        Box::pin(async move {
            match tokio::time::timeout(PROOF_TIMEOUT, rx).await {
                Ok(Ok(result)) => result,
                // The connection ended first, or the server is slow: the
                // reconnect re-subscribes and re-reads.
                Ok(Err(_)) | Err(_) => Ok(()),
            }
        })
    }

    fn unsubscribe(&self, id: &SessionId) {
        let shared = &self.shared;
        if shared.wildcard {
            return;
        }
        let mut st = shared.lock();
        let Some(sid) = st.subs.remove(id) else {
            return;
        };
        shared.metrics.subscription_closed();
        if st.live {
            st.out
                .extend_from_slice(format!("UNSUB {sid}\r\n").as_bytes());
            drop(st);
            shared.wake.notify_one();
        }
    }

    fn is_connected(&self) -> bool {
        Broker::is_connected(self)
    }

    fn is_clustered(&self) -> bool {
        self.shared.clustered.load(Relaxed)
    }
}
