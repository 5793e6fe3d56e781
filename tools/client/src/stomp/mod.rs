//! STOMP 1.2 over WebSocket, as `@stomp/stompjs` uses the edge's
//! `/v1/login-sessions/{id}/stomp` endpoint: CONNECT with heart-beats,
//! SUBSCRIBE to `/topic/login-sessions.<id>` (with `since` to resume),
//! MESSAGE frames carrying JSON snapshots, SEND to
//! `/app/login-sessions.<id>.cancel`, DISCONNECT with a receipt.
//!
//! The frame code ([`codec`]) is this crate's own, written from the
//! specification, not the edge's; the names below are restated here for the
//! same reason (a test that used the server's constants could not catch a
//! server that changed them).

pub mod codec;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use self::codec::{Received, ServerFrame};
use crate::{
    api::Snapshot,
    watch::{Push, WatchError},
    ws::{self, Handshake, Socket},
};

/// Subprotocols offered, most preferred first.
pub const SUBPROTOCOLS: [&str; 2] = ["v12.stomp", "v11.stomp"];
/// The subscription id this client uses (one subscription per connection).
pub const SUBSCRIPTION_ID: &str = "sub-0";

pub fn topic(id: &str) -> String {
    format!("/topic/login-sessions.{id}")
}

pub fn cancel_destination(id: &str) -> String {
    format!("/app/login-sessions.{id}.cancel")
}

#[derive(Debug, thiserror::Error)]
pub enum StompError {
    #[error("malformed STOMP frame: {0}")]
    Malformed(String),
    /// An ERROR frame: the server closes the connection after it.
    #[error("STOMP ERROR {message}: {body}")]
    Server { message: String, body: String },
    #[error("expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: String },
    #[error("the server chose no STOMP subprotocol")]
    NoSubprotocol,
}

impl StompError {
    fn from_error_frame(frame: &ServerFrame) -> Self {
        StompError::Server {
            message: frame.header("message").unwrap_or_default().to_owned(),
            body: String::from_utf8_lossy(&frame.body).into_owned(),
        }
    }
}

/// Choices of a STOMP watch.
#[derive(Debug, Clone, Copy)]
pub struct StompOptions<'a> {
    /// `heart-beat: cx,cy`: the client sends something at least every `cx`
    /// (zero: never) and wants the server to every `cy` (zero: need not).
    /// stompjs sends `10000,10000`; a load generator saves a timer per
    /// client with `0,<cy>`.
    pub heart_beat: (Duration, Duration),
    pub since: Option<u64>,
    pub origin: Option<&'a str>,
}

impl Default for StompOptions<'_> {
    fn default() -> Self {
        Self {
            heart_beat: (Duration::from_secs(10), Duration::from_secs(10)),
            since: None,
            origin: None,
        }
    }
}

/// An open, subscribed STOMP watch of one session.
pub struct StompWatch {
    socket: Socket,
    session_id: String,
    node: Option<String>,
    version: String,
    server_heart_beat: String,
    /// When the client must send its next heart-beat, if it promised any.
    beat_every: Option<Duration>,
    next_beat: Option<Instant>,
    receipts: u64,
    /// Frames decoded from a message but not yet returned.
    pending: std::collections::VecDeque<ServerFrame>,
}

impl StompWatch {
    /// Upgrades `/v1/login-sessions/{id}/stomp`, sends CONNECT, waits for
    /// CONNECTED and subscribes.
    pub async fn open(
        addr: SocketAddr,
        src: Option<IpAddr>,
        id: &str,
        secret: &str,
        options: StompOptions<'_>,
    ) -> Result<Self, WatchError> {
        let handshake = Handshake {
            origin: options.origin,
            subprotocols: &SUBPROTOCOLS,
        };
        let path = format!("/v1/login-sessions/{id}/stomp");
        let (socket, node, protocol) = ws::connect(addr, src, &path, secret, &handshake).await?;
        if !protocol.is_some_and(|p| SUBPROTOCOLS.contains(&p.as_str())) {
            return Err(StompError::NoSubprotocol.into());
        }
        let (cx, cy) = options.heart_beat;
        let mut watch = Self {
            socket,
            session_id: id.to_owned(),
            node,
            version: String::new(),
            server_heart_beat: String::new(),
            beat_every: None,
            next_beat: None,
            receipts: 0,
            pending: Default::default(),
        };
        let host = addr.to_string();
        let beat = format!("{},{}", cx.as_millis(), cy.as_millis());
        watch
            .send(codec::encode(
                "CONNECT",
                &[
                    ("accept-version", "1.2,1.1"),
                    ("host", &host),
                    ("heart-beat", &beat),
                ],
                b"",
            ))
            .await?;
        let connected = watch.next_frame().await?;
        if connected.command != "CONNECTED" {
            return Err(StompError::Unexpected {
                expected: "CONNECTED",
                got: connected.command,
            }
            .into());
        }
        watch.version = connected.header("version").unwrap_or("1.0").to_owned();
        watch.server_heart_beat = connected.header("heart-beat").unwrap_or("0,0").to_owned();
        watch.beat_every = client_interval(cx, &watch.server_heart_beat)?;
        watch.next_beat = watch.beat_every.map(|d| Instant::now() + d);
        let destination = topic(id);
        let since = options.since.map(|v| v.to_string());
        let mut headers = vec![("id", SUBSCRIPTION_ID), ("destination", &destination)];
        if let Some(since) = &since {
            headers.push(("since", since));
        }
        watch
            .send(codec::encode("SUBSCRIBE", &headers, b""))
            .await?;
        Ok(watch)
    }

    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// The version from CONNECTED (`1.2` or `1.1`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The server's `heart-beat` header from CONNECTED (`sx,sy`).
    pub fn server_heart_beat(&self) -> &str {
        &self.server_heart_beat
    }

    async fn send(&mut self, bytes: Vec<u8>) -> Result<(), WatchError> {
        let text = String::from_utf8(bytes)
            .map_err(|_| WatchError::Protocol("a STOMP frame is not UTF-8".into()))?;
        self.socket.send(Message::text(text)).await?;
        if let Some(every) = self.beat_every {
            self.next_beat = Some(Instant::now() + every);
        }
        Ok(())
    }

    /// The next frame from the server (heart-beats skipped, the client's
    /// own heart-beats sent on time). An ERROR frame is returned as an error.
    async fn next_frame(&mut self) -> Result<ServerFrame, WatchError> {
        match self.next_received().await? {
            Ok(frame) => Ok(frame),
            Err(push) => Err(WatchError::Protocol(format!("connection ended: {push:?}"))),
        }
    }

    /// A frame, or how the connection ended.
    async fn next_received(&mut self) -> Result<Result<ServerFrame, Push>, WatchError> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                if frame.command == "ERROR" {
                    return Err(StompError::from_error_frame(&frame).into());
                }
                return Ok(Ok(frame));
            }
            let beat = self.next_beat;
            let message = tokio::select! {
                m = self.socket.next() => m,
                _ = sleep_until(beat) => {
                    self.socket.send(Message::text("\n")).await?;
                    self.next_beat = self.beat_every.map(|d| Instant::now() + d);
                    continue;
                }
            };
            let bytes = match message {
                None => return Ok(Err(Push::End)),
                Some(m) => match m? {
                    Message::Text(t) => t.as_bytes().to_vec(),
                    Message::Binary(b) => b.to_vec(),
                    Message::Close(frame) => {
                        return Ok(Err(Push::Closed(frame.map(|f| f.code.into()))))
                    }
                    _ => continue,
                },
            };
            for received in codec::decode(&bytes)? {
                if let Received::Frame(f) = received {
                    self.pending.push_back(f);
                }
            }
        }
    }

    /// The next snapshot (from a MESSAGE of this subscription), or how the
    /// connection ended.
    pub async fn next(&mut self) -> Result<Push, WatchError> {
        loop {
            let frame = match self.next_received().await? {
                Ok(frame) => frame,
                Err(end) => return Ok(end),
            };
            match frame.command.as_str() {
                "MESSAGE" => {
                    if frame.header("subscription") != Some(SUBSCRIPTION_ID) {
                        return Err(WatchError::Protocol(format!(
                            "MESSAGE for subscription {:?}",
                            frame.header("subscription")
                        )));
                    }
                    let snapshot: Snapshot = serde_json::from_slice(&frame.body)
                        .map_err(|e| WatchError::Protocol(format!("MESSAGE body: {e}")))?;
                    if snapshot.session_id != self.session_id {
                        return Err(WatchError::Protocol(format!(
                            "snapshot of {} on the watch of {}",
                            snapshot.session_id, self.session_id
                        )));
                    }
                    return Ok(Push::Snapshot(snapshot));
                }
                // A receipt nobody waits for (e.g. of a cancel).
                "RECEIPT" => continue,
                other => {
                    return Err(StompError::Unexpected {
                        expected: "MESSAGE",
                        got: other.to_owned(),
                    }
                    .into())
                }
            }
        }
    }

    fn next_receipt_id(&mut self) -> String {
        self.receipts += 1;
        format!("r-{}", self.receipts)
    }

    /// SEND to the cancel destination; the CANCELLED snapshot follows as a
    /// MESSAGE.
    pub async fn cancel(&mut self) -> Result<(), WatchError> {
        let destination = cancel_destination(&self.session_id);
        self.send(codec::encode(
            "SEND",
            &[("destination", &destination), ("content-length", "0")],
            b"",
        ))
        .await
    }

    /// DISCONNECT with a receipt, wait for the RECEIPT (snapshots that
    /// arrive first are returned), then close the WebSocket.
    pub async fn disconnect(mut self) -> Result<Vec<Snapshot>, WatchError> {
        let receipt = self.next_receipt_id();
        self.send(codec::encode("DISCONNECT", &[("receipt", &receipt)], b""))
            .await?;
        let mut before = Vec::new();
        loop {
            let frame = self.next_frame().await?;
            match frame.command.as_str() {
                "RECEIPT" if frame.header("receipt-id") == Some(receipt.as_str()) => break,
                "MESSAGE" => {
                    if let Ok(s) = serde_json::from_slice(&frame.body) {
                        before.push(s);
                    }
                }
                _ => {}
            }
        }
        let _ = self.socket.close(None).await;
        Ok(before)
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How often the client must send: the larger of its `cx` and the server's
/// `sy`, none when either is zero (the specification's rule).
fn client_interval(cx: Duration, server_header: &str) -> Result<Option<Duration>, WatchError> {
    let sy = server_header
        .split_once(',')
        .and_then(|(_, y)| y.trim().parse::<u64>().ok())
        .ok_or_else(|| StompError::Malformed(format!("CONNECTED heart-beat {server_header:?}")))?;
    let cx = cx.as_millis() as u64;
    Ok((cx != 0 && sy != 0).then(|| Duration::from_millis(cx.max(sy))))
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
