//! One waiting browser: holds an SSE stream or a WebSocket on an edge,
//! keeps the newest snapshot it was sent, and when its connection ends
//! before a final state, reconnects (to the next edge) and resumes by
//! version: `Last-Event-ID` for SSE, `?since=` for WebSocket.

use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc, Mutex, OnceLock},
    time::Duration,
};

use futures::StreamExt;
use rand::Rng;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{
    self, client::IntoClientRequest, protocol::WebSocketConfig, Message,
};

use crate::{
    api::{self, ApiError, Snapshot},
    http::{self, Conn, HttpError},
    sse::{SseError, SseParser},
    worker::Ctx,
};

/// Small buffers keep an idle client cheap; server messages are tiny.
const WS_READ_BUFFER: usize = 4 * 1024;
const WS_MAX_MESSAGE: usize = 64 * 1024;
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
            id: created.session_id,
            secret: created.browser_secret,
            qr_payload: created.qr_payload,
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

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Sse(#[from] SseError),
    #[error("WebSocket: {0}")]
    Ws(#[from] tungstenite::Error),
    #[error("unexpected message: {0}")]
    Protocol(String),
}

impl WatchError {
    /// A short, low-cardinality description for the reconnect tally.
    fn reason(&self) -> String {
        match self {
            WatchError::Http(HttpError::Connect { source, .. }) => {
                format!("connect: {}", source.kind())
            }
            WatchError::Http(HttpError::Io(e)) => format!("i/o: {}", e.kind()),
            WatchError::Http(HttpError::Closed) => "connection closed".to_owned(),
            WatchError::Http(e) => format!("http: {e}"),
            WatchError::Api(e) => format!("answer: {}", e.code()),
            WatchError::Ws(tungstenite::Error::Io(e)) => format!("WebSocket i/o: {}", e.kind()),
            WatchError::Ws(tungstenite::Error::Protocol(p)) => format!("WebSocket protocol: {p}"),
            WatchError::Ws(e) => format!("WebSocket: {e}"),
            WatchError::Sse(_) | WatchError::Protocol(_) => "protocol".to_owned(),
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            WatchError::Http(_) | WatchError::Ws(_) => true,
            WatchError::Api(e) => e.is_retryable(),
            WatchError::Sse(_) | WatchError::Protocol(_) => false,
        }
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
        let once = async {
            if b.ws {
                ws_once(&ctx, &b, edge).await
            } else {
                sse_once(&ctx, &b, edge).await
            }
        };
        let outcome = tokio::select! {
            _ = ctx.stop.cancelled() => return,
            outcome = once => outcome,
        };
        let reason = match outcome {
            Ok(Ended::Finished) => return,
            Ok(Ended::Early) => "stream ended by the server".to_owned(),
            Err(e) if e.is_retryable() => {
                tracing::debug!(session = %b.id, %edge, error = %e, "watch failed; reconnecting");
                e.reason()
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

async fn sse_once(ctx: &Arc<Ctx>, b: &Arc<Browser>, edge: SocketAddr) -> Result<Ended, WatchError> {
    let mut conn = Conn::new(http::connect(ctx.plan.source_ip, edge).await?);
    let auth = format!("Bearer {}", b.secret);
    let last = b.held_version().map(|v| v.to_string());
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Accept", "text/event-stream"),
    ];
    if let Some(last) = &last {
        headers.push(("Last-Event-ID", last));
    }
    let path = format!("/v1/login-sessions/{}/events", b.id);
    conn.send(&http::encode_request("GET", edge, &path, &headers, None))
        .await?;
    let head = conn.read_head().await?;
    if head.status != 200 {
        let body = conn.read_body(&head).await.unwrap_or_default();
        return Err(api::status_error(head.status, &body).into());
    }
    let mut body = conn.into_body_stream(&head)?;
    let mut parser = SseParser::default();
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        if !body.next(&mut bytes).await? {
            return Ok(Ended::Early);
        }
        for event in parser.feed(&bytes)? {
            let snap: Snapshot = serde_json::from_str(&event.data)
                .map_err(|e| WatchError::Protocol(format!("SSE data: {e}")))?;
            if on_snapshot(ctx, b, snap)? {
                return Ok(Ended::Finished);
            }
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerMessage {
    State { session: Snapshot },
    Error { error: serde_json::Value },
}

async fn ws_once(ctx: &Arc<Ctx>, b: &Arc<Browser>, edge: SocketAddr) -> Result<Ended, WatchError> {
    let stream = http::connect(ctx.plan.source_ip, edge).await?;
    // `since=0` on the first connection: every stored version is news, so
    // the current snapshot comes at once (it proves the watch is live).
    let since = b.held_version().unwrap_or(0);
    let url = format!("ws://{edge}/v1/login-sessions/{}/ws?since={since}", b.id);
    let mut request = url.into_client_request()?;
    let auth = format!("Bearer {}", b.secret)
        .parse()
        .map_err(|_| WatchError::Protocol("browser secret is not a header value".into()))?;
    request
        .headers_mut()
        .insert(::http::header::AUTHORIZATION, auth);
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(WS_MAX_MESSAGE)
        .max_message_size(Some(WS_MAX_MESSAGE))
        .max_frame_size(Some(WS_MAX_MESSAGE));
    let (mut socket, _) =
        match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
            Ok(pair) => pair,
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response.body().clone().unwrap_or_default();
                return Err(api::status_error(status, &body).into());
            }
            Err(e) => return Err(e.into()),
        };
    while let Some(message) = socket.next().await {
        let text = match message? {
            Message::Text(t) => t,
            Message::Close(_) => return Ok(Ended::Early),
            _ => continue,
        };
        match serde_json::from_str::<ServerMessage>(&text) {
            Ok(ServerMessage::State { session }) => {
                if on_snapshot(ctx, b, session)? {
                    return Ok(Ended::Finished);
                }
            }
            Ok(ServerMessage::Error { error }) => {
                return Err(WatchError::Protocol(format!(
                    "server error message: {error}"
                )))
            }
            Err(e) => return Err(WatchError::Protocol(format!("WebSocket message: {e}"))),
        }
    }
    Ok(Ended::Early)
}
