//! WebSocket: the handshake headers, Origin and secret are checked and the
//! watch is joined before the `101`; afterwards one task per connection
//! runs the reader and the writer halves in one loop, so both stop
//! together. The socket itself is taken over either by the front server
//! (a fresh connection: [`Handover`]) or through hyper's upgrade (a
//! kept-alive connection); either way it is the front server's socket,
//! whose every write (frames, pings, close, shutdown) has the write
//! deadline (`server/deadline.rs`): a peer that stops reading is dropped
//! within `QRLOGIN_WRITE_TIMEOUT` of a blocked write.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Path, RawQuery, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::{Instant, MissedTickBehavior},
};
use tokio_tungstenite::{
    tungstenite::{
        handshake::derive_accept_key,
        protocol::{frame::coding::CloseCode, CloseFrame, Role, WebSocketConfig},
        Error as WsError, Message,
    },
    WebSocketStream,
};

use super::{extract, origin, AppState};
use crate::{
    delivery::Watcher,
    domain::{SessionId, Snapshot},
    error::ApiError,
    limits::{Admission, AdmissionSlot},
    metrics::Transport,
};

/// Small buffers keep an idle WebSocket cheap; client messages are tiny
/// (`resume`, `cancel`: under 64 bytes; the read buffer grows for a larger
/// frame, up to [`MAX_MESSAGE`]).
const READ_BUFFER: usize = 128;
const MAX_WRITE_BUFFER: usize = 64 * 1024;
const MAX_MESSAGE: usize = 4 * 1024;
/// Without `?since`, how long the server waits for a `resume` first message
/// before it sends the current snapshot.
const RESUME_WINDOW: Duration = Duration::from_millis(200);

const CLOSE_NORMAL: u16 = 1000;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_RESTART: u16 = 1012;

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Resume { since: u64 },
    Cancel,
}

/// Everything checked before the `101`, waiting for the socket.
pub struct Prepared {
    state: AppState,
    id: SessionId,
    secret: String,
    watcher: Watcher,
    since: Option<u64>,
    admission: Option<Admission>,
}

/// Carries a [`Prepared`] connection from the handler to the front server
/// in the `101` response's extensions.
#[derive(Clone)]
pub struct Handover(Arc<Mutex<Option<Prepared>>>);

impl Handover {
    pub fn take(&self) -> Option<Prepared> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The `Sec-WebSocket-Accept` value, if this is a valid upgrade request.
pub(super) fn handshake_accept(headers: &HeaderMap) -> Result<String, ApiError> {
    let bad = |what: &str| ApiError::InvalidArgument(format!("not a WebSocket upgrade: {what}"));
    if !header_has_token(headers, header::UPGRADE, "websocket") {
        return Err(bad("Upgrade: websocket missing"));
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err(bad("Connection: upgrade missing"));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(bad("Sec-WebSocket-Version must be 13"));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| bad("Sec-WebSocket-Key missing"))?;
    // RFC 6455 4.2.1: the base64 encoding of 16 bytes (24 characters).
    let nonce = base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .map_err(|_| bad("Sec-WebSocket-Key is not base64"))?;
    if nonce.len() != 16 {
        return Err(bad("Sec-WebSocket-Key must encode 16 bytes"));
    }
    Ok(derive_accept_key(key.as_bytes()))
}

pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    mut req: Request,
) -> Result<Response, ApiError> {
    let headers = req.headers();
    let id = extract::session_id(&id)?;
    // Fail closed: an unreadable Origin is refused, the same-origin check
    // compares scheme and host (routes/extract.rs).
    origin::check_origin(peer, headers, &state.config)?;
    let since = extract::query_value(query.as_deref(), "since")
        .map(|v| extract::version(v, "since"))
        .transpose()?;
    let accept = handshake_accept(headers)?;
    let secret = extract::browser_secret(headers, &id)?;
    let watcher = state.watches.watch(&id, &secret, since).await?;
    let admission = req
        .extensions()
        .get::<AdmissionSlot>()
        .and_then(AdmissionSlot::take);
    let prepared = Prepared {
        state,
        id,
        secret,
        watcher,
        since,
        admission,
    };
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept)
            .map_err(|_| ApiError::InvalidArgument("bad Sec-WebSocket-Key".into()))?,
    );
    match req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() {
        // A kept-alive connection served by hyper: hyper hands the socket over.
        Some(on_upgrade) => {
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => run(prepared, TokioIo::new(upgraded)).await,
                    Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
                }
            });
        }
        // A fresh connection read by the front server: it takes over.
        None => {
            response
                .extensions_mut()
                .insert(Handover(Arc::new(Mutex::new(Some(prepared)))));
        }
    }
    Ok(response)
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Runs an accepted WebSocket to its end.
pub async fn run<S>(prepared: Prepared, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config())).await;
    let Prepared {
        state,
        id,
        secret,
        watcher,
        since,
        admission,
    } = prepared;
    let _admission = admission;
    let _open = state.metrics.connection(Transport::WebSocket);
    Connection {
        state,
        id,
        secret,
        watcher,
        holding: since.is_none(),
    }
    .run(socket)
    .await;
}

struct Connection {
    state: AppState,
    id: SessionId,
    secret: String,
    watcher: Watcher,
    /// Still inside the resume window: no snapshot sent yet.
    holding: bool,
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

impl Connection {
    /// One task and one socket: the select below reads, and its branches
    /// write once the read is no longer polled (no split halves, whose
    /// shared lock costs about 340 bytes per connection).
    async fn run<S>(mut self, mut sink: WebSocketStream<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let state = self.state.clone();
        let mut drain = state.drain.listener();
        let period = state.config.ws_ping;
        let mut ping = tokio::time::interval_at(Instant::now() + period, period);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let hold_until = Instant::now() + RESUME_WINDOW;
        let mut heard = Instant::now();
        let mut first = true;
        loop {
            tokio::select! {
                biased;
                _ = drain.started() => {
                    let _ = sink.send(close(CLOSE_RESTART, "draining")).await;
                    break;
                }
                incoming = sink.next() => {
                    heard = Instant::now();
                    let text = match incoming {
                        None | Some(Ok(Message::Close(_))) => break,
                        Some(Err(WsError::Capacity(_))) => {
                            let _ = sink.send(close(CLOSE_TOO_BIG, "message too big")).await;
                            break;
                        }
                        Some(Err(_)) => break,
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                        Some(Ok(Message::Binary(_))) => None,
                        Some(Ok(Message::Text(t))) => Some(t),
                    };
                    let was_first = std::mem::replace(&mut first, false);
                    self.holding = false;
                    match text.and_then(|t| serde_json::from_str::<ClientMessage>(&t).ok()) {
                        Some(ClientMessage::Resume { since }) if was_first => self.watcher.resume_from(since),
                        Some(ClientMessage::Cancel) => {
                            // Boxed: the gRPC call's future is large and would
                            // otherwise sit in every idle connection's task.
                            if !Box::pin(self.cancel(&mut sink)).await {
                                break;
                            }
                        }
                        _ => {
                            let _ = sink.send(close(CLOSE_POLICY, "bad message")).await;
                            break;
                        }
                    }
                }
                _ = tokio::time::sleep_until(hold_until), if self.holding => self.holding = false,
                news = self.watcher.next(&state.metrics), if !self.holding => {
                    let Some(s) = news else { break };
                    if sink.send(state_message(&s, &state.node)).await.is_err() {
                        break;
                    }
                    state.metrics.delivered(Transport::WebSocket, super::sse::delay(&s));
                    if s.state.is_final() {
                        let _ = sink.send(close(CLOSE_NORMAL, "final state")).await;
                        break;
                    }
                }
                _ = ping.tick() => {
                    if heard.elapsed() >= state.config.idle_timeout {
                        tracing::debug!(session = %self.id, "dropping idle WebSocket");
                        break;
                    }
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = SinkExt::close(&mut sink).await;
    }

    /// Cancels the session; the resulting `CANCELLED` reaches this socket
    /// through the watch like any other change. Returns false when the
    /// socket is gone.
    async fn cancel<S>(&mut self, sink: &mut WebSocketStream<S>) -> bool
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match self.state.auth.cancel(&self.id, &self.secret).await {
            Ok(snapshot) => {
                self.state.watches.observe(&snapshot);
                true
            }
            Err(e) => {
                let e = ApiError::from(e);
                let msg = serde_json::json!({ "type": "error", "error": e.body()["error"] });
                sink.send(Message::text(msg.to_string())).await.is_ok()
            }
        }
    }
}

fn state_message(s: &Arc<Snapshot>, node: &str) -> Message {
    Message::text(format!(
        "{{\"type\":\"state\",\"session\":{}}}",
        s.to_json_string(node)
    ))
}
