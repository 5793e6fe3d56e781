//! Connections accepted on the gRPC port, each holding one of
//! `QRLOGIN_GRPC_MAX_CONNECTIONS` permits for as long as it is open. At the
//! cap a new connection is closed at once (a client retries, a balancer
//! picks another node); an accept error (out of file descriptors) backs
//! off briefly instead of spinning. Every write has the front server's
//! write deadline (`server/deadline.rs`), so a client that stops reading
//! (HTTP/2 flow control aside, a full socket buffer) is dropped within
//! `QRLOGIN_WRITE_TIMEOUT` like an HTTP one.

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
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::{
    metrics::Metrics,
    server::deadline::{WriteDeadline, WriteLimits},
};

/// An accepted connection and its permit.
pub struct Counted {
    stream: WriteDeadline<TcpStream>,
    _permit: OwnedSemaphorePermit,
}

/// The accepted connections of `listener`, at most `max` open at once.
pub fn counted(
    listener: TcpListener,
    max: usize,
    metrics: Arc<Metrics>,
    limits: Arc<WriteLimits>,
) -> impl Stream<Item = io::Result<Counted>> + Send + 'static {
    let permits = Arc::new(Semaphore::new(max));
    futures::stream::unfold(
        (listener, permits, metrics, limits),
        |(listener, permits, metrics, limits)| async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        let Ok(permit) = permits.clone().try_acquire_owned() else {
                            tracing::debug!(%peer, "gRPC connection refused: at QRLOGIN_GRPC_MAX_CONNECTIONS");
                            metrics.rejected("over_capacity");
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let counted = Counted {
                            stream: WriteDeadline::new(stream, limits.clone()),
                            _permit: permit,
                        };
                        return Some((Ok(counted), (listener, permits, metrics, limits)));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "gRPC accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        },
    )
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.get_ref().connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
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
