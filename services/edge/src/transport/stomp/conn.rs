//! One STOMP 1.2 connection over an accepted WebSocket, from CONNECT to
//! the close: client frames become requests (subscribe, cancel,
//! disconnect), pushes become frames (MESSAGE, heart-beats, ERROR at
//! drain). The browser secret and the session were checked at the upgrade;
//! this file speaks only STOMP.
//!
//! - Before CONNECT (or STOMP) nothing else is accepted. CONNECTED carries
//!   the negotiated version and heart-beats; the server sends an EOL when
//!   it has nothing else to send, and a client that promised heart-beats
//!   and is silent for twice its interval is dropped. Without client
//!   heart-beats, WebSocket pings and `QRLOGIN_IDLE_TIMEOUT` find dead peers
//!   as on `/ws`.
//! - One subscription at a time, to `/topic/login-sessions.<id>` of this
//!   connection's session; `since` resumes. A MESSAGE carries each snapshot
//!   (JSON body, `content-length`, a message-id unique on the connection).
//! - SEND to `/app/login-sessions.<id>.cancel` cancels; the CANCELLED
//!   snapshot follows as a MESSAGE.
//! - Any frame with `receipt` gets a RECEIPT once done (DISCONNECT too).
//! - Anything else gets an ERROR, and the connection is closed, as the
//!   specification requires.
//! - A final state is sent, then the socket closes (1000); a drain sends an
//!   ERROR with `retry-after-ms`, then closes with 1012.

use std::{sync::Arc, time::Duration};

use futures::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::Instant,
};
use tokio_tungstenite::{
    tungstenite::{
        protocol::{frame::coding::CloseCode, CloseFrame, Role, WebSocketConfig},
        Error as WsError, Message,
    },
    WebSocketStream,
};

use super::{
    encode::{self, ServerFrame},
    frame::{Command, Decoder, Frame, Incoming, Limits},
    negotiate::{negotiate, ServerHeartBeat},
    session_of_cancel, topic, StompSettings, SINCE_HEADER,
};
use crate::{
    delivery::{Delivery, Leave, Push},
    domain::{SessionId, Snapshot},
    error::ApiError,
    limits::Admission,
    sessions::Sessions,
};

/// Client frames are small (CONNECT, SUBSCRIBE, an empty SEND): the read
/// buffer starts small and grows up to [`MAX_MESSAGE`].
const READ_BUFFER: usize = 128;
const MAX_WRITE_BUFFER: usize = 64 * 1024;
/// Largest WebSocket message (one or more frames) a client may send; the
/// frame decoder's own limits ([`Limits::default`]) apply inside it.
pub const MAX_MESSAGE: usize = 8 * 1024;

const CLOSE_NORMAL: u16 = 1000;
const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_RESTART: u16 = 1012;

/// What every STOMP connection of this node shares.
pub struct Endpoint {
    pub sessions: Sessions,
    pub node: String,
    pub settings: StompSettings,
    /// WebSocket pings and the idle limit, for clients without heart-beats.
    pub ws: crate::transport::ws::WsSettings,
}

/// A connection checked at the upgrade, waiting for its socket.
pub struct Prepared {
    pub endpoint: Arc<Endpoint>,
    pub id: SessionId,
    pub secret: String,
    /// Joined before the `101`; held until SUBSCRIBE.
    pub delivery: Delivery,
    pub admission: Option<Admission>,
}

/// The WebSocket settings of a STOMP socket: small buffers, bounded messages.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Runs an accepted STOMP WebSocket to its end.
pub async fn run<S>(prepared: Prepared, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(websocket_config())).await;
    let Prepared {
        endpoint,
        id,
        secret,
        mut delivery,
        admission,
    } = prepared;
    let _admission = admission;
    delivery.hold(true);
    delivery.keep_alive(Some(endpoint.ws.ping));
    let silence = endpoint.ws.idle_timeout;
    Connection {
        endpoint,
        id,
        secret: secret.into(),
        delivery,
        connected: false,
        server_beats: false,
        silence,
        subscription: None,
        messages: 0,
    }
    .run(socket)
    .await;
}

/// What handling a frame leads to.
enum Next {
    Continue,
    /// Close with this WebSocket code (an ERROR or RECEIPT was sent first
    /// when one was due).
    Close(u16, &'static str),
}

struct Connection {
    endpoint: Arc<Endpoint>,
    id: SessionId,
    secret: Box<str>,
    delivery: Delivery,
    connected: bool,
    /// The server promised heart-beats (EOLs); else keep-alives are pings.
    server_beats: bool,
    /// A client silent this long is dropped.
    silence: Duration,
    /// The active subscription's id.
    subscription: Option<Box<str>>,
    /// MESSAGE frames sent (their message-ids).
    messages: u64,
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

fn text(frame: &ServerFrame) -> Message {
    Message::text(String::from_utf8_lossy(&frame.to_bytes()).into_owned())
}

impl Connection {
    /// One task and one socket: the select reads, and its branches write
    /// once the read is no longer polled (as on `/ws`).
    async fn run<S>(mut self, mut socket: WebSocketStream<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut heard = Instant::now();
        let decoder = Decoder::new(Limits::default());
        let ending = loop {
            tokio::select! {
                incoming = socket.next() => {
                    heard = Instant::now();
                    let bytes = match incoming {
                        None | Some(Ok(Message::Close(_))) => break None,
                        Some(Err(WsError::Capacity(_))) => {
                            let error = encode::error(
                                "frame too large",
                                &format!("a WebSocket message may hold at most {MAX_MESSAGE} bytes"),
                                None,
                            );
                            let _ = socket.send(text(&error)).await;
                            break Some((CLOSE_TOO_BIG, "frame too large"));
                        }
                        Some(Err(_)) => break None,
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                        Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                        Some(Ok(Message::Binary(b))) => b.to_vec(),
                    };
                    let next = match decoder.decode_message(&bytes) {
                        Ok(items) => {
                            let mut next = Next::Continue;
                            for item in items {
                                let Incoming::Frame(frame) = item else { continue };
                                // Boxed: a cancel holds a gRPC call's large future.
                                next = Box::pin(self.frame(frame, &mut socket)).await;
                                if matches!(next, Next::Close(..)) {
                                    break;
                                }
                            }
                            next
                        }
                        Err(e) => self.refuse(&mut socket, "malformed frame", &e.to_string(), None).await,
                    };
                    if let Next::Close(code, reason) = next {
                        break Some((code, reason));
                    }
                }
                push = self.delivery.next_push() => match push {
                    Push::Snapshot(s) => {
                        if socket.send(self.message(&s)).await.is_err() {
                            break None;
                        }
                    }
                    Push::KeepAlive => {
                        if heard.elapsed() >= self.silence {
                            tracing::debug!(session = %self.id, "dropping a silent STOMP client");
                            let error = encode::error(
                                "heart-beat timeout",
                                "nothing received within twice the promised heart-beat interval",
                                None,
                            );
                            let _ = socket.send(text(&error)).await;
                            break Some((CLOSE_PROTOCOL, "heart-beat timeout"));
                        }
                        let beat = if self.server_beats {
                            Message::text("\n")
                        } else {
                            Message::Ping(Default::default())
                        };
                        if socket.send(beat).await.is_err() {
                            break None;
                        }
                    }
                    Push::Leave(Leave::Finished) => break Some((CLOSE_NORMAL, "final state")),
                    Push::Leave(Leave::Draining { reconnect_after }) => {
                        let ms = reconnect_after.as_millis().max(1).to_string();
                        let mut error = encode::error(
                            "draining",
                            "this node is shutting down; reconnect (to any node) and subscribe with since",
                            None,
                        );
                        error = error.with_header("retry-after-ms", ms);
                        let _ = socket.send(text(&error)).await;
                        break Some((CLOSE_RESTART, "draining"));
                    }
                },
            }
        };
        if let Some((code, reason)) = ending {
            let _ = socket.send(close(code, reason)).await;
        }
        let _ = SinkExt::close(&mut socket).await;
    }

    fn message(&mut self, s: &Arc<Snapshot>) -> Message {
        self.messages += 1;
        let subscription = self.subscription.as_deref().unwrap_or_default();
        let json = s.to_json_string(&self.endpoint.node).into_bytes();
        text(&encode::message(
            subscription,
            self.messages,
            &topic(self.id.as_str()),
            json,
        ))
    }

    /// Sends ERROR (answering `receipt` when the frame had one); the
    /// connection closes after it.
    async fn refuse<S>(
        &self,
        socket: &mut WebSocketStream<S>,
        message: &str,
        detail: &str,
        receipt: Option<&str>,
    ) -> Next
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        tracing::debug!(session = %self.id, message, detail, "STOMP frame refused");
        let _ = socket
            .send(text(&encode::error(message, detail, receipt)))
            .await;
        Next::Close(CLOSE_PROTOCOL, "STOMP error")
    }

    async fn frame<S>(&mut self, frame: Frame, socket: &mut WebSocketStream<S>) -> Next
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let receipt = frame.header("receipt").map(str::to_owned);
        let receipt = receipt.as_deref();
        if !self.connected && !matches!(frame.command, Command::Connect | Command::Stomp) {
            return self
                .refuse(
                    socket,
                    "not connected",
                    &format!(
                        "the first frame must be CONNECT or STOMP, not {}",
                        frame.command
                    ),
                    receipt,
                )
                .await;
        }
        let outcome = match frame.command {
            Command::Connect | Command::Stomp => self.connect(&frame, socket).await,
            Command::Subscribe => self.subscribe(&frame),
            Command::Unsubscribe => self.unsubscribe(&frame),
            Command::Send => self.send(&frame).await,
            Command::Disconnect => {
                if let Some(r) = receipt {
                    let _ = socket.send(text(&encode::receipt(r))).await;
                }
                return Next::Close(CLOSE_NORMAL, "disconnected");
            }
            other => Err((
                "unsupported frame",
                format!(
                    "{other} is not supported here (subscriptions use ack:auto, no transactions)"
                ),
            )),
        };
        match outcome {
            Ok(()) => {
                if let Some(r) = receipt {
                    if socket.send(text(&encode::receipt(r))).await.is_err() {
                        return Next::Close(CLOSE_NORMAL, "gone");
                    }
                }
                Next::Continue
            }
            Err((message, detail)) => self.refuse(socket, message, &detail, receipt).await,
        }
    }

    async fn connect<S>(
        &mut self,
        frame: &Frame,
        socket: &mut WebSocketStream<S>,
    ) -> Result<(), (&'static str, String)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if self.connected {
            return Err(("already connected", "CONNECT was already sent".into()));
        }
        let every = self.endpoint.settings.heart_beat;
        let offer = ServerHeartBeat {
            send_every: every,
            expect_every: every,
        };
        let n = negotiate(
            frame.header("accept-version"),
            frame.header("heart-beat"),
            offer,
        )
        .map_err(|e| ("bad CONNECT", e.to_string()))?;
        let server = format!("qrlogin/{}", env!("CARGO_PKG_VERSION"));
        if socket
            .send(text(&encode::connected(&n, &server)))
            .await
            .is_err()
        {
            return Err(("gone", String::new()));
        }
        self.connected = true;
        self.server_beats = n.server_sends_every.is_some();
        self.silence = n
            .client_sends_every
            .map_or(self.endpoint.ws.idle_timeout, |c| c * 2);
        let ping = self.endpoint.ws.ping;
        let period = [n.server_sends_every, n.client_sends_every]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(ping);
        self.delivery.keep_alive(Some(period));
        Ok(())
    }

    fn subscribe(&mut self, frame: &Frame) -> Result<(), (&'static str, String)> {
        let id = frame
            .header("id")
            .filter(|i| !i.is_empty())
            .ok_or(("bad SUBSCRIBE", "SUBSCRIBE needs an id header".to_owned()))?;
        let destination = frame.header("destination").unwrap_or_default();
        let own = topic(self.id.as_str());
        if destination != own {
            return Err((
                "no such destination",
                format!("this connection may subscribe only to {own}"),
            ));
        }
        if self.subscription.is_some() {
            return Err((
                "already subscribed",
                "one subscription per connection; UNSUBSCRIBE first".into(),
            ));
        }
        if let Some(ack) = frame.header("ack") {
            if ack != "auto" {
                return Err(("unsupported ack mode", format!("ack:{ack}; only ack:auto")));
            }
        }
        let since = frame
            .header(SINCE_HEADER)
            .map(|v| v.trim().parse::<u64>())
            .transpose()
            .map_err(|_| ("bad SUBSCRIBE", "since must be a version number".to_owned()))?;
        self.subscription = Some(id.into());
        self.delivery.rewind(since);
        self.delivery.hold(false);
        Ok(())
    }

    fn unsubscribe(&mut self, frame: &Frame) -> Result<(), (&'static str, String)> {
        match (&self.subscription, frame.header("id")) {
            (Some(current), Some(id)) if **current == *id => {
                self.subscription = None;
                self.delivery.hold(true);
                Ok(())
            }
            _ => Err((
                "no such subscription",
                "UNSUBSCRIBE names the id of the active subscription".into(),
            )),
        }
    }

    /// SEND: only the cancel of this connection's own session.
    async fn send(&mut self, frame: &Frame) -> Result<(), (&'static str, String)> {
        let destination = frame.header("destination").unwrap_or_default();
        if session_of_cancel(destination) != Some(self.id.as_str()) {
            return Err((
                "no such destination",
                format!(
                    "SEND goes only to {}",
                    super::cancel_destination(self.id.as_str())
                ),
            ));
        }
        match self.endpoint.sessions.cancel(&self.id, &self.secret).await {
            // The CANCELLED snapshot reaches the subscription as a MESSAGE.
            Ok(_) => Ok(()),
            Err(e) => {
                let e = ApiError::from(e);
                Err(("cancel refused", format!("{}: {e}", e.code())))
            }
        }
    }
}
