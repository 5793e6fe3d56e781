//! What every push watch yields ([`Push`]) and how it fails ([`WatchError`]),
//! shared by the SSE, WebSocket, STOMP and gRPC watches; [`AnyWatch`], one
//! of them chosen by [`Transport`] at run time.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use crate::{
    api::{ApiError, LoginState, Snapshot},
    grpc::{self, GrpcWatch},
    http::HttpError,
    sse::{SseError, SseWatch},
    stomp::{StompError, StompOptions, StompWatch},
    ws::WsWatch,
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

/// The edge's push transports that hold a stream open (short and long
/// polling are [`crate::api::Client`] calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Sse,
    Ws,
    Stomp,
    Grpc,
}

impl Transport {
    pub const ALL: [Transport; 4] = [Self::Sse, Self::Ws, Self::Stomp, Self::Grpc];

    /// `sse`, `ws` (or `websocket`), `stomp`, `grpc`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "sse" => Self::Sse,
            "ws" | "websocket" => Self::Ws,
            "stomp" => Self::Stomp,
            "grpc" => Self::Grpc,
            _ => return None,
        })
    }

    /// The name people read (`WebSocket`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sse => "SSE",
            Self::Ws => "WebSocket",
            Self::Stomp => "STOMP",
            Self::Grpc => "gRPC",
        }
    }

    /// The `transport` label of the edge's metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sse => "sse",
            Self::Ws => "websocket",
            Self::Stomp => "stomp",
            Self::Grpc => "grpc",
        }
    }
}

/// Choices of [`AnyWatch::open`] beyond the session and the address.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The source address to bind the connection to.
    pub src: Option<IpAddr>,
    /// The version held (resume: `Last-Event-ID`, `?since=`, STOMP and gRPC
    /// `since`).
    pub since: Option<u64>,
    /// STOMP `heart-beat` (stompjs's 10 s both ways by default).
    pub stomp_heart_beat: (Duration, Duration),
    /// gRPC: a channel to share with other watches; without one, the watch
    /// opens a connection of its own, as a native client holds.
    pub grpc_channel: Option<tonic::transport::Channel>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            src: None,
            since: None,
            stomp_heart_beat: StompOptions::default().heart_beat,
            grpc_channel: None,
        }
    }
}

/// A watch over any stream transport, reduced to "the next push".
pub enum AnyWatch {
    Sse(SseWatch),
    Ws(WsWatch),
    Stomp(Box<StompWatch>),
    Grpc(Box<GrpcWatch>),
}

impl AnyWatch {
    /// Opens a watch of session `id` over `transport` at `addr` (the
    /// edge's or a balancer's HTTP address; for gRPC its gRPC address,
    /// unused when `options` carries a channel).
    pub async fn open(
        transport: Transport,
        addr: SocketAddr,
        id: &str,
        secret: &str,
        options: &WatchOptions,
    ) -> Result<Self, WatchError> {
        let (src, since) = (options.src, options.since);
        Ok(match transport {
            Transport::Sse => Self::Sse(SseWatch::open(addr, src, id, secret, since).await?),
            Transport::Ws => Self::Ws(WsWatch::open(addr, src, id, secret, since, None).await?),
            Transport::Stomp => {
                let stomp = StompOptions {
                    heart_beat: options.stomp_heart_beat,
                    since,
                    origin: None,
                };
                Self::Stomp(Box::new(
                    StompWatch::open(addr, src, id, secret, stomp).await?,
                ))
            }
            Transport::Grpc => {
                let channel = match &options.grpc_channel {
                    Some(channel) => channel.clone(),
                    None => grpc::channel(addr, src).await?,
                };
                Self::Grpc(Box::new(GrpcWatch::open(channel, id, secret, since).await?))
            }
        })
    }

    pub fn transport(&self) -> Transport {
        match self {
            Self::Sse(_) => Transport::Sse,
            Self::Ws(_) => Transport::Ws,
            Self::Stomp(_) => Transport::Stomp,
            Self::Grpc(_) => Transport::Grpc,
        }
    }

    /// The next push (see each transport's `next`).
    pub async fn next(&mut self) -> Result<Push, WatchError> {
        match self {
            Self::Sse(w) => w.next().await,
            Self::Ws(w) => w.next().await,
            Self::Stomp(w) => w.next().await,
            Self::Grpc(w) => w.next().await,
        }
    }

    /// The next snapshot, skipping `retry:` hints; an error when the watch
    /// ends first.
    pub async fn next_snapshot(&mut self) -> Result<Snapshot, WatchError> {
        loop {
            match self.next().await? {
                Push::Snapshot(s) => return Ok(s),
                Push::Retry(_) => continue,
                other => {
                    return Err(WatchError::Protocol(format!(
                        "the {} watch ended: {other:?}",
                        self.transport().name()
                    )))
                }
            }
        }
    }

    /// Reads snapshots until one in state `want` and returns it; an error
    /// when another final state comes first or the watch ends.
    pub async fn until(&mut self, want: LoginState) -> Result<Snapshot, WatchError> {
        loop {
            let s = self.next_snapshot().await?;
            if s.state == want {
                return Ok(s);
            }
            if s.state.is_final() {
                return Err(WatchError::Protocol(format!(
                    "{:?} instead of {want:?}",
                    s.state
                )));
            }
        }
    }
}
