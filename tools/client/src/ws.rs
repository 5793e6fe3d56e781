//! WebSocket: the handshake every WebSocket transport shares (a socket bound
//! to a chosen source address, the browser secret in `Authorization`, the
//! upgrade over this crate's HTTP client, small buffers) and the JSON watch of `GET /v1/login-sessions/{id}/ws`
//! (`since` resume, `{"type":"cancel"}`).

use std::net::{IpAddr, SocketAddr};

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio_tungstenite::{
    tungstenite::{
        handshake::{client::generate_key, derive_accept_key},
        protocol::{Role, WebSocketConfig},
        Message,
    },
    WebSocketStream,
};

use crate::{
    api::{self, Snapshot},
    http::{self, Conn, HttpError},
    watch::{Push, WatchError},
};

/// Small buffers keep an idle client cheap; server messages are tiny.
const READ_BUFFER: usize = 4 * 1024;
/// Largest message accepted (a snapshot is a few hundred bytes).
pub const MAX_MESSAGE: usize = 64 * 1024;

pub use tokio_tungstenite::tungstenite;

pub type Socket = WebSocketStream<crate::net::Stream>;

/// What to send in the handshake besides the secret.
#[derive(Debug, Default, Clone)]
pub struct Handshake<'a> {
    /// `Origin`, checked by the edge against its allowlist.
    pub origin: Option<&'a str>,
    /// `Sec-WebSocket-Protocol` offers, most preferred first.
    pub subprotocols: &'a [&'a str],
}

/// Connects to `ws://<addr><path>` from `src` with the browser secret.
/// Returns the socket and the response's `X-Edge-Node` and chosen
/// subprotocol. A refused upgrade comes back as [`WatchError::Api`] with the
/// edge's error code: the handshake is this crate's own HTTP exchange, so
/// the refusal's whole body is read (a WebSocket library returns only what
/// arrived with the head).
pub async fn connect(
    addr: SocketAddr,
    src: Option<IpAddr>,
    path: &str,
    secret: &str,
    handshake: &Handshake<'_>,
) -> Result<(Socket, Option<String>, Option<String>), WatchError> {
    let stream = crate::net::connect(src, addr)
        .await
        .map_err(HttpError::from)?;
    let mut conn = Conn::new(stream);
    let key = generate_key();
    let auth = format!("Bearer {secret}");
    let offers = handshake.subprotocols.join(", ");
    let mut headers = vec![
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", key.as_str()),
        ("Authorization", auth.as_str()),
    ];
    if let Some(origin) = handshake.origin {
        headers.push(("Origin", origin));
    }
    if !offers.is_empty() {
        headers.push(("Sec-WebSocket-Protocol", offers.as_str()));
    }
    conn.send(&http::encode_request("GET", addr, path, &headers, None))
        .await?;
    let head = conn.read_head().await?;
    if head.status != 101 {
        let body = conn.read_body(&head).await.unwrap_or_default();
        return Err(api::status_error(head.status, &body).into());
    }
    let accept = derive_accept_key(key.as_bytes());
    if head.header("sec-websocket-accept") != Some(accept.as_str()) {
        return Err(WatchError::Protocol(
            "the upgrade answer has a wrong Sec-WebSocket-Accept".into(),
        ));
    }
    let node = head.header("x-edge-node").map(str::to_owned);
    let protocol = head.header("sec-websocket-protocol").map(str::to_owned);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_MESSAGE)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let (stream, leftover) = conn.into_parts();
    let socket =
        WebSocketStream::from_partially_read(stream, leftover, Role::Client, Some(config)).await;
    Ok((socket, node, protocol))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerMessage {
    State { session: Snapshot },
    Error { error: ErrorDetail },
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// An open WebSocket watch of one session.
pub struct WsWatch {
    socket: Socket,
    node: Option<String>,
}

impl WsWatch {
    /// Opens `/v1/login-sessions/{id}/ws[?since=V]` on `addr` from `src`.
    pub async fn open(
        addr: SocketAddr,
        src: Option<IpAddr>,
        id: &str,
        secret: &str,
        since: Option<u64>,
        origin: Option<&str>,
    ) -> Result<Self, WatchError> {
        let mut path = format!("/v1/login-sessions/{id}/ws");
        if let Some(v) = since {
            path.push_str(&format!("?since={v}"));
        }
        let handshake = Handshake {
            origin,
            subprotocols: &[],
        };
        let (socket, node, _) = connect(addr, src, &path, secret, &handshake).await?;
        Ok(Self { socket, node })
    }

    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// The next snapshot; [`Push::Closed`] with the server's close code.
    /// Pings are answered while reading.
    pub async fn next(&mut self) -> Result<Push, WatchError> {
        while let Some(message) = self.socket.next().await {
            let text = match message? {
                Message::Text(t) => t,
                Message::Close(frame) => return Ok(Push::Closed(frame.map(|f| f.code.into()))),
                _ => continue,
            };
            return match serde_json::from_str::<ServerMessage>(&text) {
                Ok(ServerMessage::State { session }) => Ok(Push::Snapshot(session)),
                Ok(ServerMessage::Error { error }) => Err(WatchError::Server {
                    code: error.code,
                    message: error.message,
                }),
                Err(e) => Err(WatchError::Protocol(format!("WebSocket message: {e}"))),
            };
        }
        Ok(Push::End)
    }

    /// Sends `{"type":"cancel"}`: the edge cancels the session, and the
    /// CANCELLED snapshot follows on this socket.
    pub async fn cancel(&mut self) -> Result<(), WatchError> {
        self.socket
            .send(Message::text(r#"{"type":"cancel"}"#))
            .await?;
        Ok(())
    }

    /// Closes the socket (code 1000).
    pub async fn close(mut self) -> Result<(), WatchError> {
        self.socket.close(None).await?;
        Ok(())
    }
}
