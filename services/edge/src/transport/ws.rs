//! WebSocket: pushes as JSON text messages (`{"type":"state","session":…}`),
//! keep-alives as pings, the end as a close frame (1000 after a final
//! state, 1012 at drain, 1008 for a bad message, 1009 for a big one);
//! client messages `resume` (first message only) and `cancel`. When to
//! push what is `delivery::push`'s; the upgrade is `upgrade.rs`'s.
//!
//! One task and one socket per connection: the select reads, and its
//! branches write once the read is no longer polled, so reader and writer
//! stop together.

use std::{sync::Arc, time::Duration};

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_tungstenite::{
    tungstenite::{
        protocol::{frame::coding::CloseCode, CloseFrame, Role, WebSocketConfig},
        Error as WsError, Message,
    },
    WebSocketStream,
};

use super::upgrade::Socket;
use crate::{
    config::{duration, invalid, ConfigError},
    delivery::{Delivery, Leave, Push},
    domain::{SessionId, Snapshot},
    error::ApiError,
    limits::Admission,
    sessions::Sessions,
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

/// Settings of WebSocket sockets, STOMP's too (docs/configuration.md,
/// "edge").
#[derive(Debug, Clone, clap::Args)]
pub struct WsSettings {
    /// Interval of WebSocket pings.
    #[arg(id = "ws-ping", long = "ws-ping", env = "QRLOGIN_WS_PING", default_value = "20s", value_parser = duration)]
    pub ping: Duration,
    /// A socket from which nothing was heard for this long is dropped.
    #[arg(id = "idle-timeout", long = "idle-timeout", env = "QRLOGIN_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub idle_timeout: Duration,
}

impl WsSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ping.is_zero() {
            return Err(invalid("QRLOGIN_WS_PING", "must be greater than zero"));
        }
        if self.idle_timeout <= self.ping {
            return Err(invalid(
                "QRLOGIN_IDLE_TIMEOUT",
                "must be longer than QRLOGIN_WS_PING",
            ));
        }
        Ok(())
    }
}

/// What every WebSocket of this node shares: its settings, the node name
/// the snapshots carry, and the sessions (for `cancel`).
pub struct Endpoint {
    pub sessions: Sessions,
    pub node: String,
    pub settings: WsSettings,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Resume { since: u64 },
    Cancel,
}

/// A connection checked at the upgrade, waiting for its socket.
pub struct Prepared {
    pub endpoint: Arc<Endpoint>,
    pub id: SessionId,
    pub secret: String,
    /// Joined before the `101`.
    pub delivery: Delivery,
    /// `?since` was given: no resume window.
    pub resumed: bool,
    pub admission: Option<Admission>,
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
pub async fn run(prepared: Prepared, socket: Socket) {
    let socket = WebSocketStream::from_raw_socket(socket, Role::Server, Some(config())).await;
    let Prepared {
        endpoint,
        id,
        secret,
        mut delivery,
        resumed,
        admission,
    } = prepared;
    let _admission = admission;
    delivery.keep_alive(Some(endpoint.settings.ping));
    delivery.hold(!resumed);
    Connection {
        endpoint,
        id,
        secret,
        delivery,
    }
    .run(socket)
    .await;
}

struct Connection {
    endpoint: Arc<Endpoint>,
    id: SessionId,
    secret: String,
    delivery: Delivery,
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
    async fn run(mut self, mut sink: WebSocketStream<Socket>) {
        let hold_until = Instant::now() + RESUME_WINDOW;
        let mut heard = Instant::now();
        let mut first = true;
        let ending = loop {
            tokio::select! {
                biased;
                push = self.delivery.next_push() => match push {
                    Push::Snapshot(s) => {
                        if sink.send(state_message(&s, &self.endpoint.node)).await.is_err() {
                            break None;
                        }
                    }
                    Push::KeepAlive => {
                        if heard.elapsed() >= self.endpoint.settings.idle_timeout {
                            tracing::debug!(session = %self.id, "dropping idle WebSocket");
                            break None;
                        }
                        if sink.send(Message::Ping(Default::default())).await.is_err() {
                            break None;
                        }
                    }
                    Push::Leave(Leave::Finished) => break Some((CLOSE_NORMAL, "final state")),
                    Push::Leave(Leave::Draining { .. }) => break Some((CLOSE_RESTART, "draining")),
                },
                incoming = sink.next() => {
                    heard = Instant::now();
                    let text = match incoming {
                        None | Some(Ok(Message::Close(_))) => break None,
                        Some(Err(WsError::Capacity(_))) => break Some((CLOSE_TOO_BIG, "message too big")),
                        Some(Err(_)) => break None,
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                        Some(Ok(Message::Binary(_))) => None,
                        Some(Ok(Message::Text(t))) => Some(t),
                    };
                    let was_first = std::mem::replace(&mut first, false);
                    self.delivery.hold(false);
                    match text.and_then(|t| serde_json::from_str::<ClientMessage>(&t).ok()) {
                        Some(ClientMessage::Resume { since }) if was_first => self.delivery.resume_from(since),
                        Some(ClientMessage::Cancel) => {
                            // Boxed: the gRPC call's future is large and would
                            // otherwise sit in every idle connection's task.
                            if !Box::pin(self.cancel(&mut sink)).await {
                                break None;
                            }
                        }
                        _ => break Some((CLOSE_POLICY, "bad message")),
                    }
                }
                _ = tokio::time::sleep_until(hold_until), if self.delivery.is_held() => self.delivery.hold(false),
            }
        };
        if let Some((code, reason)) = ending {
            let _ = sink.send(close(code, reason)).await;
        }
        let _ = SinkExt::close(&mut sink).await;
    }

    /// Cancels the session; the resulting `CANCELLED` reaches this socket
    /// through the watch like any other change. Returns false when the
    /// socket is gone.
    async fn cancel(&mut self, sink: &mut WebSocketStream<Socket>) -> bool {
        match self.endpoint.sessions.cancel(&self.id, &self.secret).await {
            Ok(_) => true,
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
