//! The gRPC watch stream `qrlogin.watch.v1.LoginWatch/WatchLoginSession`
//! (proto/qrlogin/watch/v1/watch.proto) that edges serve on their gRPC port:
//! a channel over a socket bound to a chosen source address (one HTTP/2
//! connection carries many watches), the browser secret as
//! `authorization: Bearer` metadata, `since` to resume, messages turned
//! into the same [`Snapshot`] the other transports give.

use std::net::{IpAddr, SocketAddr};

use hyper_util::rt::TokioIo;
use qrlogin_proto::{
    events::v1::DenyReason,
    watch::v1::{login_watch_client::LoginWatchClient, LoginSession, WatchLoginSessionRequest},
};
use tonic::transport::{Channel, Endpoint};

use crate::{
    api::{LoginState, Snapshot},
    watch::{Push, WatchError},
};

/// A channel to the edge's gRPC port at `addr`, its connection bound to
/// `src` when given. Clone it to share the connection between watches.
pub async fn channel(addr: SocketAddr, src: Option<IpAddr>) -> Result<Channel, WatchError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| WatchError::Protocol(format!("gRPC endpoint: {e}")))?;
    let connector = tower::service_fn(move |_: http::Uri| async move {
        crate::net::connect(src, addr)
            .await
            .map(TokioIo::new)
            .map_err(std::io::Error::other)
    });
    Ok(endpoint.connect_with_connector(connector).await?)
}

/// An open gRPC watch of one session.
pub struct GrpcWatch {
    stream: tonic::Streaming<LoginSession>,
}

impl GrpcWatch {
    /// Calls `WatchLoginSession`; a refusal (bad secret, unknown session,
    /// draining node) comes back as [`WatchError::Grpc`] with its code.
    pub async fn open(
        channel: Channel,
        id: &str,
        secret: &str,
        since: Option<u64>,
    ) -> Result<Self, WatchError> {
        let mut request = tonic::Request::new(WatchLoginSessionRequest {
            session_id: id.to_owned(),
            since,
        });
        let bearer = format!("Bearer {secret}")
            .parse()
            .map_err(|_| WatchError::Protocol("the secret is not a metadata value".into()))?;
        request.metadata_mut().insert("authorization", bearer);
        let stream = LoginWatchClient::new(channel)
            .watch_login_session(request)
            .await?
            .into_inner();
        Ok(Self { stream })
    }

    /// The next snapshot; [`Push::End`] when the server ended the stream
    /// with OK (after a final state). Any other end is an error status
    /// (UNAVAILABLE while the node drains: reconnect with `since`).
    pub async fn next(&mut self) -> Result<Push, WatchError> {
        match self.stream.message().await? {
            Some(message) => Ok(Push::Snapshot(snapshot(message)?)),
            None => Ok(Push::End),
        }
    }
}

/// The JSON snapshot's shape from a `LoginSession` message.
pub fn snapshot(m: LoginSession) -> Result<Snapshot, WatchError> {
    let state = m.state();
    let deny_reason = match m.deny_reason() {
        DenyReason::Unspecified => None,
        DenyReason::User => Some("user".into()),
        DenyReason::WrongMatch => Some("wrong_match".into()),
    };
    let state = LoginState::parse(state.as_str_name())
        .ok_or_else(|| WatchError::Protocol(format!("state {}", state.as_str_name())))?;
    let updated_at = m
        .updated_at
        .map(|t| t.to_string())
        .ok_or_else(|| WatchError::Protocol("a LoginSession without updated_at".into()))?;
    Ok(Snapshot {
        session_id: m.session_id,
        state,
        version: m.version,
        expires_at: m.expires_at.map(|t| t.to_string()),
        updated_at,
        user_display_name: Some(m.user_display_name).filter(|n| !n.is_empty()),
        deny_reason,
        qr_payload: Some(m.qr_payload).filter(|p| !p.is_empty()),
        match_code: Some(m.match_code).filter(|c| *c != 0),
        poll_interval_ms: None,
        node: Some(m.node).filter(|n| !n.is_empty()),
    })
}

#[cfg(test)]
#[path = "grpc_tests.rs"]
mod tests;
