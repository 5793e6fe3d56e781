//! One waiting browser: holds an SSE stream or a WebSocket on an edge,
//! keeps the newest snapshot it was sent, and when its connection ends
//! before a final state, reconnects (to the next edge) and resumes by
//! version: `Last-Event-ID` for SSE, `?since=` for WebSocket.

use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc, Mutex, OnceLock},
    time::Duration,
};

use qrlogin_client::{
    api::{self, Snapshot},
    http::HttpError,
    net::ConnectError,
    watch::{AnyWatch, Push, Transport, WatchError, WatchOptions},
    ws::tungstenite,
};
use rand::Rng;
use tokio::time::Instant;

use crate::worker::Ctx;

/// Reconnect delay: doubles from the first to the last, jittered.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_LAST: Duration = Duration::from_millis(1000);

/// What the worker knows about one browser and its login session.
pub struct Browser {
    pub index: usize,
    pub id: String,
    pub secret: String,
    /// The QR payload of the create answer (on screen until a rotation is
    /// pushed).
    pub qr_payload: String,
    pub ws: bool,
    pub home: usize,
    /// The newest snapshot received over the push transport.
    pub held: Mutex<Option<Snapshot>>,
    pub connected_at: OnceLock<Instant>,
    /// When the phone started writing its confirm (first attempt).
    pub confirm_sent: OnceLock<Instant>,
    /// Whether the confirm needed more than one attempt (its latency is
    /// then not a delivery latency and is left out).
    pub confirm_retried: OnceLock<()>,
    pub confirm_ok_at: OnceLock<Instant>,
    pub confirmed_at: OnceLock<Instant>,
    /// When the browser reached its goal state (or another final one).
    pub done_at: OnceLock<Instant>,
    pub failure: OnceLock<String>,
}

impl Browser {
    pub fn new(index: usize, created: api::Created, ws: bool, home: usize) -> Self {
        Self {
            index,
            qr_payload: created.qr_payload().to_owned(),
            id: created.snapshot.session_id,
            secret: created.browser_secret,
            ws,
            home,
            held: Mutex::new(None),
            connected_at: OnceLock::new(),
            confirm_sent: OnceLock::new(),
            confirm_retried: OnceLock::new(),
            confirm_ok_at: OnceLock::new(),
            confirmed_at: OnceLock::new(),
            done_at: OnceLock::new(),
            failure: OnceLock::new(),
        }
    }

    pub fn held(&self) -> Option<Snapshot> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The QR payload on screen now: the newest one pushed (the edge
    /// rotates it every `QRLOGIN_QR_ROTATION` without a new version), else
    /// the one of the create answer. The phone scans this.
    pub fn qr_on_screen(&self) -> String {
        self.held()
            .and_then(|s| s.qr_payload)
            .unwrap_or_else(|| self.qr_payload.clone())
    }

    fn held_version(&self) -> Option<u64> {
        self.held().map(|s| s.version)
    }
}

/// A short, low-cardinality description of why a watch ended, for the
/// reconnect tally.
fn reason(e: &WatchError) -> String {
    match e {
        WatchError::Http(HttpError::Connect(ConnectError { source, .. })) => {
            format!("connect: {}", source.kind())
        }
        WatchError::Http(HttpError::Io(e)) => format!("i/o: {}", e.kind()),
        WatchError::Http(HttpError::Closed) => "connection closed".to_owned(),
        WatchError::Http(e) => format!("http: {e}"),
        WatchError::Api(e) => format!("answer: {}", e.code()),
        WatchError::Ws(tungstenite::Error::Io(e)) => format!("WebSocket i/o: {}", e.kind()),
        WatchError::Ws(tungstenite::Error::Protocol(p)) => format!("WebSocket protocol: {p}"),
        WatchError::Ws(e) => format!("WebSocket: {e}"),
        WatchError::Server { code, .. } => format!("server error: {code}"),
        _ => "protocol".to_owned(),
    }
}

/// How one connection ended without an error.
enum Ended {
    /// The browser has what it waited for; stop.
    Finished,
    /// The server ended the stream early (a drain, a restart): reconnect.
    Early,
}

/// Watches until the browser is finished, a fatal error, or the stop signal.
pub async fn run(ctx: Arc<Ctx>, b: Arc<Browser>) {
    let edges = &ctx.plan.watch_edges;
    let mut attempt = 0usize;
    let mut failures = 0u32;
    loop {
        let edge = edges[(b.home + attempt) % edges.len()];
        let delivered_before = b.held_version();
        let once = watch_once(&ctx, &b, edge);
        let outcome = tokio::select! {
            _ = ctx.stop.cancelled() => return,
            outcome = once => outcome,
        };
        let reason = match outcome {
            Ok(Ended::Finished) => return,
            Ok(Ended::Early) => "stream ended by the server".to_owned(),
            Err(e) if e.is_retryable() => {
                tracing::debug!(session = %b.id, %edge, error = %e, "watch failed; reconnecting");
                reason(&e)
            }
            Err(e) => {
                tracing::warn!(session = %b.id, %edge, error = %e, "watch refused");
                let _ = b.failure.set(format!("watch: {e}"));
                return;
            }
        };
        ctx.counters.reconnect_reason(reason);
        if b.held_version() != delivered_before {
            failures = 0;
        }
        failures += 1;
        attempt += 1;
        let backoff = BACKOFF_FIRST
            .saturating_mul(1 << failures.min(4))
            .min(BACKOFF_LAST)
            .mul_f64(rand::rng().random_range(0.5..1.0));
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

/// Takes a snapshot from the push transport; true when the browser is done.
fn on_snapshot(ctx: &Arc<Ctx>, b: &Arc<Browser>, snap: Snapshot) -> Result<bool, WatchError> {
    if snap.session_id != b.id {
        return Err(WatchError::Protocol(format!(
            "snapshot of session {} on the stream of {}",
            snap.session_id, b.id
        )));
    }
    let now = Instant::now();
    {
        let mut held = b.held.lock().unwrap_or_else(|p| p.into_inner());
        if !snap.is_newer_than(held.as_ref()) {
            return Ok(false);
        }
        *held = Some(snap.clone());
    }
    if b.connected_at.set(now).is_ok() {
        ctx.counters.connected.fetch_add(1, Ordering::Relaxed);
    }
    let done = if snap.state == api::LoginState::Confirmed {
        if b.confirmed_at.set(now).is_ok() && ctx.plan.redeem {
            tokio::spawn(crate::phone::redeem(ctx.clone(), b.clone()));
        }
        !ctx.plan.redeem
    } else {
        snap.state.is_final()
    };
    if done && b.done_at.set(now).is_ok() {
        ctx.counters.done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(done)
}

/// One connection over the browser's transport, resuming from the version
/// held: `Last-Event-ID` for SSE, `?since=` for WebSocket (`since=0` on the
/// first connection: every stored version is news, so the current snapshot
/// comes at once and proves the watch is live).
async fn watch_once(
    ctx: &Arc<Ctx>,
    b: &Arc<Browser>,
    edge: SocketAddr,
) -> Result<Ended, WatchError> {
    let held = b.held_version();
    let (transport, since) = if b.ws {
        (Transport::Ws, Some(held.unwrap_or(0)))
    } else {
        (Transport::Sse, held)
    };
    let options = WatchOptions {
        src: ctx.plan.source_ip,
        since,
        ..WatchOptions::default()
    };
    let mut watch = AnyWatch::open(transport, edge, &b.id, &b.secret, &options).await?;
    loop {
        match watch.next().await? {
            Push::Snapshot(snap) => {
                if on_snapshot(ctx, b, snap)? {
                    return Ok(Ended::Finished);
                }
            }
            // The edge asks for a delay only while it drains, and then ends
            // the stream; the reconnect backoff covers it.
            Push::Retry(_) => {}
            Push::Closed(_) | Push::End => return Ok(Ended::Early),
        }
    }
}
