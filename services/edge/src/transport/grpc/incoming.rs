//! Connections accepted on the gRPC port, each holding a slot of
//! `QRLOGIN_GRPC_MAX_CONNECTIONS` and of its client's
//! `QRLOGIN_GRPC_MAX_CONNECTIONS_PER_CLIENT` (trusted proxies exempt) for
//! as long as it is open. Beyond either cap a new connection is closed at
//! once (a client retries, a balancer picks another node); an accept error
//! (out of file descriptors) backs off briefly instead of spinning. Every
//! write has the front server's write deadline (`server/deadline.rs`), so a
//! client that stops reading (HTTP/2 flow control aside, a full socket
//! buffer) is dropped within `QRLOGIN_WRITE_TIMEOUT` like an HTTP one; every
//! read that would wait checks the connection's handshake and idle
//! deadlines ([`super::idle`]).

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tonic::transport::server::Connected;

use super::{
    idle::{ConnInfo, Deadlines, Streams},
    GrpcContext, GrpcSettings,
};
use crate::{
    limits::{ClientGate, ClientSlot, Refused},
    server::deadline::WriteDeadline,
};

/// An accepted connection: the socket, its deadlines, and its slot.
pub struct Counted {
    stream: WriteDeadline<TcpStream>,
    deadlines: Deadlines,
    streams: Arc<Streams>,
    _slot: ClientSlot,
}

/// The accepted connections of `listener`, within the caps of `settings`.
pub fn counted(
    listener: TcpListener,
    settings: &GrpcSettings,
    context: &GrpcContext,
) -> impl Stream<Item = io::Result<Counted>> + Send + 'static {
    let gate = ClientGate::new(
        settings.max_connections,
        settings.max_connections_per_client,
    );
    let accept = Accept {
        settings: settings.clone(),
        context: context.clone(),
        gate,
    };
    futures::stream::unfold((listener, accept), |(listener, accept)| async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    if let Some(counted) = accept.admit(stream, peer) {
                        return Some((Ok(counted), (listener, accept)));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// What the accept loop needs.
struct Accept {
    settings: GrpcSettings,
    context: GrpcContext,
    gate: ClientGate,
}

impl Accept {
    /// The connection, or `None` (and it is closed) beyond a cap.
    fn admit(&self, stream: TcpStream, peer: std::net::SocketAddr) -> Option<Counted> {
        let per_client = !self.context.trusted_proxies.contains(peer.ip());
        let slot = match self.gate.try_enter(peer.ip(), per_client) {
            Ok(slot) => slot,
            Err(why) => {
                let (reason, limit) = match why {
                    Refused::Node => ("over_capacity", "QRLOGIN_GRPC_MAX_CONNECTIONS"),
                    Refused::Client => (
                        "too_many_connections",
                        "QRLOGIN_GRPC_MAX_CONNECTIONS_PER_CLIENT",
                    ),
                };
                tracing::debug!(%peer, limit, "gRPC connection refused");
                self.context.metrics.rejected(reason);
                return None;
            }
        };
        let _ = stream.set_nodelay(true);
        let streams = Arc::new(Streams::default());
        Some(Counted {
            stream: WriteDeadline::new(stream, self.context.write_limits.clone()),
            deadlines: Deadlines::new(
                streams.clone(),
                self.settings.handshake_timeout,
                self.settings.idle_timeout,
            ),
            streams,
            _slot: slot,
        })
    }
}

impl Connected for Counted {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            streams: self.streams.clone(),
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut me.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                me.deadlines.read(buf.filled().len() - before);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => me.deadlines.poll_expired(cx).map(Err),
        }
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
