//! WebSocket: the handshake every WebSocket transport shares (a socket bound
//! to a chosen source address, the browser secret in `Authorization`, small
//! buffers) and the JSON watch of `GET /v1/login-sessions/{id}/ws`
//! (`since` resume, `{"type":"cancel"}`).

use std::net::{IpAddr, SocketAddr};

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{
        self, client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig, Message,
    },
    WebSocketStream,
};

use crate::{
    api::{self, Snapshot},
    http::HttpError,
    watch::{Push, WatchError},
};

/// Small buffers keep an idle client cheap; server messages are tiny.
const READ_BUFFER: usize = 4 * 1024;
/// Largest message accepted (a snapshot is a few hundred bytes).
pub const MAX_MESSAGE: usize = 64 * 1024;

pub type Socket = WebSocketStream<TcpStream>;

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
/// edge's error code.
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
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    let header = |v: String| {
        HeaderValue::from_str(&v)
            .map_err(|_| WatchError::Protocol(format!("not a header value: {v:?}")))
    };
    let headers = request.headers_mut();
    headers.insert("authorization", header(format!("Bearer {secret}"))?);
    if let Some(origin) = handshake.origin {
        headers.insert("origin", header(origin.to_owned())?);
    }
    if !handshake.subprotocols.is_empty() {
        headers.insert(
            "sec-websocket-protocol",
            header(handshake.subprotocols.join(", "))?,
        );
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_MESSAGE)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
        Ok((socket, response)) => {
            let text = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            Ok((socket, text("x-edge-node"), text("sec-websocket-protocol")))
        }
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.body().clone().unwrap_or_default();
            Err(api::status_error(status, &body).into())
        }
        Err(e) => Err(e.into()),
    }
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
