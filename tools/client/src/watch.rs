//! What every push watch yields ([`Push`]) and how it fails ([`WatchError`]),
//! shared by the SSE, WebSocket, STOMP and gRPC watches.

use crate::{
    api::{ApiError, Snapshot},
    http::HttpError,
    sse::SseError,
    stomp::StompError,
};

/// The next thing a watch received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// A snapshot of the session (not filtered: compare with
    /// [`Snapshot::is_newer_than`] to drop repeats).
    Snapshot(Snapshot),
    /// SSE `retry:`: the delay in milliseconds the server asks a client to
    /// wait before reconnecting (sent while a node drains).
    Retry(u64),
    /// The WebSocket was closed by the server with this code (1000 after a
    /// final state, 1012 while the node drains: reconnect elsewhere).
    Closed(Option<u16>),
    /// The stream ended without a close code (SSE end, gRPC end, a dropped
    /// connection that ended cleanly).
    End,
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
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error(transparent)]
    Stomp(#[from] StompError),
    #[error("gRPC: {0}")]
    Grpc(#[from] tonic::Status),
    #[error("gRPC connection: {0}")]
    GrpcConnect(#[from] tonic::transport::Error),
    /// An error message the server sent on an open stream.
    #[error("server error {code}: {message}")]
    Server { code: String, message: String },
    #[error("unexpected message: {0}")]
    Protocol(String),
}

impl WatchError {
    /// Worth reconnecting (possibly to another edge): the network, or an
    /// answer that says the node cannot serve now.
    pub fn is_retryable(&self) -> bool {
        use tonic::Code;
        match self {
            WatchError::Http(_) | WatchError::Ws(_) | WatchError::GrpcConnect(_) => true,
            WatchError::Api(e) => e.is_retryable(),
            WatchError::Grpc(s) => matches!(
                s.code(),
                Code::Unavailable | Code::ResourceExhausted | Code::Aborted
            ),
            WatchError::Sse(_)
            | WatchError::Stomp(_)
            | WatchError::Server { .. }
            | WatchError::Protocol(_) => false,
        }
    }
}
