//! The WebSocket upgrade that `/ws` and `/stomp` share: the handshake
//! check, the `101`, and the takeover of the socket. On a kept-alive
//! connection hyper hands the socket over (`OnUpgrade`); on a fresh one
//! the front server's direct path writes the `101` and hands its socket to
//! the [`Takeover`] it finds in the response's extensions. Either way the
//! socket is the front server's, whose every write has the write deadline
//! (`server/deadline.rs`), and the transport that runs on it is whatever
//! the route put in the takeover: the server knows no transport.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
};

use axum::{
    extract::Request,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::error::ApiError;

/// A socket a transport can run on, whatever carried it.
pub trait SocketIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> SocketIo for T {}

/// The switched socket.
pub type Socket = Box<dyn SocketIo>;

/// A transport running on a switched socket, to its end.
pub type Running = Pin<Box<dyn Future<Output = ()> + Send>>;

type Start = Box<dyn FnOnce(Socket) -> Running + Send>;

/// Carries what runs on the socket from the handler to the front server
/// in the `101` response's extensions.
#[derive(Clone)]
pub struct Takeover(Arc<Mutex<Option<Start>>>);

impl Takeover {
    /// Starts the transport on `socket`, once; `None` if already taken.
    pub fn start(&self, socket: Socket) -> Option<Running> {
        let start = self.0.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        Some(start(socket))
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
pub fn handshake_accept(headers: &HeaderMap) -> Result<String, ApiError> {
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

/// The `101` answering `req` (with `protocol` when a subprotocol was
/// chosen); once the socket is switched, `run` gets it.
pub fn switch<F, Fut>(
    req: &mut Request,
    accept: &str,
    protocol: Option<&'static str>,
    run: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(protocol) = protocol {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol),
        );
    }
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(accept)
            .map_err(|_| ApiError::InvalidArgument("bad Sec-WebSocket-Key".into()))?,
    );
    let start: Start = Box::new(move |socket| Box::pin(run(socket)));
    match req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() {
        // A kept-alive connection served by hyper: hyper hands the socket over.
        Some(on_upgrade) => {
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => start(Box::new(TokioIo::new(upgraded))).await,
                    Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
                }
            });
        }
        // A fresh connection read by the front server: it takes over.
        None => {
            response
                .extensions_mut()
                .insert(Takeover(Arc::new(Mutex::new(Some(start)))));
        }
    }
    Ok(response)
}
