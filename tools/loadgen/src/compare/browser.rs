//! One waiting browser of the comparison, for any transport: creates its
//! session through a balancer, watches it (short poll, long poll, SSE,
//! WebSocket, STOMP or the gRPC stream) until CONFIRMED, and notes when it
//! first saw the session and when it saw CONFIRMED. A broken watch is
//! reopened (at most [`REOPENS`] times) with the version it holds.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use qrlogin_client::{
    api::{Client, LoginState, Snapshot},
    watch::{AnyWatch, Push, Transport, WatchError, WatchOptions},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Reopens of a broken watch before the browser gives up.
const REOPENS: u32 = 3;
/// How long a long poll asks the edge to hold it (the edge's default most).
const LONG_POLL_HOLD: Duration = Duration::from_secs(25);

/// How a browser waits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    ShortPoll(Duration),
    LongPoll,
    /// SSE, WebSocket, STOMP or the gRPC stream.
    Stream(Transport),
}

impl Kind {
    pub fn parse(text: &str) -> Option<Kind> {
        Some(match text {
            "short-poll-1s" => Kind::ShortPoll(Duration::from_secs(1)),
            "short-poll-2s" => Kind::ShortPoll(Duration::from_secs(2)),
            "long-poll" => Kind::LongPoll,
            other => Kind::Stream(Transport::parse(other)?),
        })
    }
}

/// What the browsers of one run share: where to go and the tallies.
pub struct Shared {
    pub kind: Kind,
    pub balancers: Vec<SocketAddr>,
    pub grpc_balancers: Vec<SocketAddr>,
    /// Creates go through these (one per balancer, not bound to `src`, so
    /// their bytes are not counted with the watches').
    pub creators: Vec<Client>,
    pub src: Option<IpAddr>,
    pub stop: CancellationToken,
    pub ready: AtomicUsize,
    pub delivered: AtomicUsize,
    /// HTTP requests and gRPC calls the browsers started.
    pub requests: AtomicU64,
    pub reopens: AtomicU64,
    pub errors: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Browsers that gave up.
    pub failed: AtomicUsize,
}

impl Shared {
    pub fn error(&self, text: String) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(text)
            .or_default() += 1;
    }
}

/// One browser's session and timestamps.
#[derive(Default)]
pub struct Slot {
    pub id: OnceLock<String>,
    /// The QR payload on screen: the create answer's, then the newest one
    /// pushed (rotations keep the version). The phone scans it.
    pub qr: Mutex<String>,
    /// The number the browser shows once SCANNED (the phone picks it).
    pub match_code: OnceLock<u32>,
    /// The edge that answered its first snapshot.
    pub node: OnceLock<Option<String>>,
    pub confirm_sent: OnceLock<Instant>,
    pub confirmed_at: OnceLock<Instant>,
    /// A connect slot, given back at the first snapshot (or the end).
    pub permit: Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

impl Slot {
    /// The QR payload on screen now.
    pub fn qr_on_screen(&self) -> String {
        self.qr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn show_qr(&self, payload: &str) {
        *self.qr.lock().unwrap_or_else(|p| p.into_inner()) = payload.to_owned();
    }

    fn release(&self) {
        self.permit.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Runs browser `i` until CONFIRMED, a give-up, or the stop signal.
pub async fn run(sh: Arc<Shared>, slot: Arc<Slot>, i: usize) {
    let outcome = tokio::select! {
        _ = sh.stop.cancelled() => {
            slot.release();
            return;
        }
        outcome = watch(&sh, &slot, i) => outcome,
    };
    slot.release();
    if let Err(e) = outcome {
        sh.failed.fetch_add(1, Ordering::Relaxed);
        sh.error(format!(
            "browser: {}",
            e.to_string().chars().take(160).collect::<String>()
        ));
    }
}

/// Longest a phone waits for its browser to show the number to pick.
const MATCH_CODE_WAIT: Duration = Duration::from_secs(20);

/// The number the browser of `slot` was pushed after the scan (bounded).
pub async fn match_code(slot: &Slot) -> anyhow::Result<u32> {
    let deadline = Instant::now() + MATCH_CODE_WAIT;
    loop {
        if let Some(code) = slot.match_code.get() {
            return Ok(*code);
        }
        if Instant::now() > deadline {
            anyhow::bail!("the browser was not shown a number within {MATCH_CODE_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Takes a snapshot; true when it is CONFIRMED (or another final state).
fn seen(sh: &Shared, slot: &Slot, held: &mut Option<Snapshot>, s: Snapshot) -> bool {
    if !s.is_newer_than(held.as_ref()) {
        return false;
    }
    if slot.node.set(s.node.clone()).is_ok() {
        sh.ready.fetch_add(1, Ordering::Relaxed);
        slot.release();
    }
    let state = s.state;
    if let (LoginState::Pending, Some(payload)) = (state, &s.qr_payload) {
        slot.show_qr(payload);
    }
    if let (LoginState::Scanned, Some(code)) = (state, s.match_code) {
        let _ = slot.match_code.set(code);
    }
    *held = Some(s);
    if state == LoginState::Confirmed {
        if slot.confirmed_at.set(Instant::now()).is_ok() {
            sh.delivered.fetch_add(1, Ordering::Relaxed);
        }
        return true;
    }
    if state.is_final() {
        sh.error(format!("final state {state:?} instead of CONFIRMED"));
        return true;
    }
    false
}

async fn watch(sh: &Shared, slot: &Slot, i: usize) -> anyhow::Result<()> {
    let balancer = sh.balancers[i % sh.balancers.len()];
    // One keep-alive connection per browser for its polls, as a tab holds.
    let client = Client::new(balancer, sh.src, 1);
    sh.requests.fetch_add(1, Ordering::Relaxed);
    let created = sh.creators[i % sh.creators.len()].create().await?;
    let (id, secret) = (created.id().to_owned(), created.browser_secret.clone());
    let _ = slot.id.set(id.clone());
    slot.show_qr(created.qr_payload());
    // What a first long poll says it holds: nothing (`since=0`), so it is
    // answered at once, like a stream's first snapshot.
    let mut nothing = created.snapshot.clone();
    nothing.version = 0;
    nothing.qr_payload = None;
    let mut held: Option<Snapshot> = None;
    let mut failures = 0u32;
    loop {
        let result: Result<bool, WatchError> = match sh.kind {
            Kind::ShortPoll(every) => {
                sh.requests.fetch_add(1, Ordering::Relaxed);
                match client.get(&id, &secret).await {
                    Ok(s) => {
                        let done = seen(sh, slot, &mut held, s);
                        if !done {
                            tokio::time::sleep(every).await;
                        }
                        Ok(done)
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Kind::LongPoll => {
                sh.requests.fetch_add(1, Ordering::Relaxed);
                // The first poll answers at once (since=0): it proves the
                // session is readable, like a stream's first snapshot.
                client
                    .long_poll(
                        &id,
                        &secret,
                        held.as_ref().unwrap_or(&nothing),
                        LONG_POLL_HOLD,
                    )
                    .await
                    .map(|s| seen(sh, slot, &mut held, s))
                    .map_err(WatchError::from)
            }
            Kind::Stream(transport) => {
                stream(sh, slot, i, transport, &id, &secret, &mut held).await
            }
        };
        match result {
            Ok(true) => return Ok(()),
            Ok(false) => continue,
            Err(e) if failures < REOPENS => {
                failures += 1;
                sh.reopens.fetch_add(1, Ordering::Relaxed);
                sh.error(format!("reopened after: {}", short(&e)));
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One stream connection until CONFIRMED (`Ok(true)`) or its end.
async fn stream(
    sh: &Shared,
    slot: &Slot,
    i: usize,
    transport: Transport,
    id: &str,
    secret: &str,
    held: &mut Option<Snapshot>,
) -> Result<bool, WatchError> {
    // STOMP keeps stompjs's default heart-beat (10 s both ways), a
    // browser's cost; a gRPC watch has its own connection, as a browser
    // holds.
    let options = WatchOptions {
        src: sh.src,
        since: held.as_ref().map(|s| s.version),
        ..WatchOptions::default()
    };
    let addr = match transport {
        Transport::Grpc => sh.grpc_balancers[i % sh.grpc_balancers.len()],
        _ => sh.balancers[i % sh.balancers.len()],
    };
    sh.requests.fetch_add(1, Ordering::Relaxed);
    let mut w = AnyWatch::open(transport, addr, id, secret, &options).await?;
    loop {
        match w.next().await? {
            Push::Snapshot(s) => {
                if seen(sh, slot, held, s) {
                    return Ok(true);
                }
            }
            Push::Retry(_) => continue,
            Push::Closed(code) => {
                return Err(WatchError::Protocol(format!(
                    "closed by the server: {code:?}"
                )))
            }
            Push::End => return Err(WatchError::Protocol("stream ended".into())),
        }
    }
}

/// A low-cardinality description of a watch error for the tally.
fn short(e: &WatchError) -> String {
    let text = e.to_string();
    text.split(" from ")
        .next()
        .unwrap_or(&text)
        .chars()
        .take(120)
        .collect()
}
