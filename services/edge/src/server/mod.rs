//! The HTTP/1.1 front: accepts connections and reads the first request
//! head itself. Requests of the stream routes (`routes::STREAM_ROUTES`:
//! SSE, WebSocket, STOMP), which become long-lived idle connections, are
//! answered by writing the axum app's response straight to
//! the socket: no hyper connection stays behind them, so an idle stream
//! does not keep hyper's two 8 KiB buffers. Every other request (and any
//! later request on a kept-alive connection) is served by hyper with the
//! bytes already read put back in front.
//!
//! Either way the same axum [`Router`] answers, so routing, admission,
//! errors, headers and metrics are the same on both paths, and so are the
//! limits: a head is at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] headers
//! for the head reader and for hyper, every write has a deadline
//! ([`deadline`]), and connections that have not sent a head are counted
//! and capped ([`crate::limits::ClientGate`]).
//!
//! - [`head`]: the first head. [`direct`]: the stream path.
//! - [`hyper_io`]: the socket as hyper sees it. [`answers`]: the front's
//!   own JSON refusals. [`ops`]: the separate operations listener.

mod answers;
pub mod deadline;
mod direct;
mod head;
mod hyper_io;
pub mod ops;

#[cfg(test)]
mod fuzz;

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::ConnectInfo,
    http::Request,
    Router,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use crate::{
    config::{CidrList, EdgeConfig},
    limits::{ClientGate, ClientSlot, Refused},
    metrics::{Metrics, PreHeadGuard},
};
use answers::Answers;
use deadline::{WriteDeadline, WriteLimits};
use direct::{direct_request, serve_direct};
use head::{read_head, Head};
use hyper_io::HyperIo;

/// Largest request head accepted (then 431 and close), on both paths.
pub const MAX_HEAD: usize = 8 * 1024;
/// Headers accepted per request (more: 431), on both paths.
pub const MAX_HEADERS: usize = 48;
/// A client must send its request head within this time (also the longest
/// a kept-alive connection may stay silent between requests).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest non-streaming body written on the direct path (error answers).
const MAX_DIRECT_BODY: usize = 64 * 1024;
/// After a refusal, how long and how much the client may still send before
/// the socket closes (closing with unread input would reset the
/// connection and could destroy the answer before the client reads it).
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: u64 = 64 * 1024;

/// What every connection of the public listener shares.
pub struct Front {
    app: Router,
    closing: CancellationToken,
    tracker: TaskTracker,
    heads: ClientGate,
    trusted: CidrList,
    answers: Arc<Answers>,
    write: Arc<WriteLimits>,
    send_buffer: usize,
    metrics: Arc<Metrics>,
}

impl Front {
    pub fn new(
        app: Router,
        config: &EdgeConfig,
        node: &str,
        metrics: Arc<Metrics>,
        closing: CancellationToken,
        tracker: TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Self {
            app,
            closing,
            tracker,
            heads: ClientGate::new(
                config.max_pre_head_connections,
                config.max_pre_head_per_client,
            ),
            trusted: config.trusted_proxies.clone(),
            answers: Arc::new(Answers::new(node, metrics.clone())),
            write: Arc::new(WriteLimits {
                timeout: config.write_timeout,
                metrics: metrics.clone(),
            }),
            send_buffer: config.socket_send_buffer,
            metrics,
        })
    }

    /// Takes a new connection: refused at once beyond the pre-head caps,
    /// else served on its own tracked task.
    fn accept(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let per_client = !self.trusted.contains(peer.ip());
        match self.heads.try_enter(peer.ip(), per_client) {
            Ok(slot) => {
                let _ = stream.set_nodelay(true);
                if self.send_buffer > 0 {
                    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(self.send_buffer);
                }
                let waiting = (slot, self.metrics.pre_head());
                let stream = WriteDeadline::new(stream, self.write.clone());
                self.tracker
                    .spawn(connection(stream, peer, self.clone(), waiting));
            }
            Err(why) => {
                self.metrics.rejected("too_many_connections");
                if why == Refused::Node {
                    tracing::debug!(%peer, "pre-head cap of the node reached");
                }
                // One attempt that never waits; then the socket closes.
                let _ = stream.try_write(&self.answers.busy);
            }
        }
    }
}

/// Hyper, with the head limits of the head reader, so every later request
/// on a kept-alive connection is bounded like the first.
fn http1() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS);
    builder
}

/// Accepts until the front's `closing` is cancelled; every connection task
/// is tracked and ends (gracefully for hyper) once `closing` fires.
pub async fn serve(listener: TcpListener, front: Arc<Front>) {
    loop {
        tokio::select! {
            _ = front.closing.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => front.accept(stream, peer),
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // instead of spinning; existing connections go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// One phase of a connection (reading the first head, answering through
/// the router, carrying a stream), boxed; it ends with the next phase, if
/// any. A connection holds only its current phase: what an idle stream
/// keeps is what the stream needs, not what reading its head needed.
pub(super) enum Phase {
    Step(Pin<Box<dyn Future<Output = Option<Phase>> + Send>>),
    /// A phase after which the connection is done.
    Last(Pin<Box<dyn Future<Output = ()> + Send>>),
}

impl Phase {
    fn new(phase: impl Future<Output = Option<Phase>> + Send + 'static) -> Self {
        Self::Step(Box::pin(phase))
    }

    /// A phase after which the connection is done.
    pub(super) fn last(phase: impl Future<Output = ()> + Send + 'static) -> Self {
        Self::Last(Box::pin(phase))
    }
}

/// Serves one connection: reads the first head (holding a pre-head slot
/// meanwhile), then the direct path, hyper, or a refusal, one phase after
/// the other.
fn connection<S>(
    stream: S,
    peer: SocketAddr,
    front: Arc<Front>,
    waiting: (ClientSlot, PreHeadGuard),
) -> impl Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let first = Phase::new(first_head(stream, peer, front, waiting));
    async move {
        let mut phase = first;
        loop {
            phase = match phase {
                Phase::Step(current) => match current.await {
                    Some(next) => next,
                    None => return,
                },
                Phase::Last(current) => return current.await,
            };
        }
    }
}

/// Reads the first head within [`HEAD_TIMEOUT`] and answers a refusal
/// itself; otherwise gives the phase that serves the request: the direct
/// path for a stream, hyper for anything else.
async fn first_head<S>(
    mut stream: S,
    peer: SocketAddr,
    front: Arc<Front>,
    waiting: (ClientSlot, PreHeadGuard),
) -> Option<Phase>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut head = Vec::new();
    let read = tokio::select! {
        r = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream, &mut head)) => r,
        _ = front.closing.cancelled() => return None,
    };
    drop(waiting);
    let (answer, code) = match read {
        Ok(Ok(Head::Complete(n))) => {
            return Some(match direct_request(&head[..n], peer) {
                Some(req) => Phase::new(serve_direct(
                    stream,
                    req,
                    front.app.clone(),
                    front.closing.clone(),
                )),
                None => Phase::last(serve_hyper(stream, Bytes::from(head), peer, front)),
            });
        }
        Ok(Ok(Head::TooLarge)) => (&front.answers.too_large, "head_too_large"),
        Ok(Ok(Head::Malformed)) => (&front.answers.malformed, "malformed_request"),
        // The peer left, or sent no whole head in time: nothing to answer.
        Ok(Err(_)) | Err(_) => return None,
    };
    front.metrics.rejected(code);
    refuse(stream, answer).await;
    None
}

/// Writes a refusal, ends the write side, and lets the client finish
/// sending (bounded) so that closing does not reset the answer away.
async fn refuse<S>(mut stream: S, answer: &Bytes)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if stream.write_all(answer).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = tokio::io::sink();
    let _ = tokio::time::timeout(
        LINGER,
        tokio::io::copy(&mut (&mut stream).take(LINGER_BYTES), &mut sink),
    )
    .await;
}

async fn serve_hyper<S>(stream: S, prefix: Bytes, peer: SocketAddr, front: Arc<Front>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(HyperIo::new(prefix, stream, front.answers.clone()));
    let service = TowerToHyperService::new(front.app.clone().map_request(
        move |req: Request<hyper::body::Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        },
    ));
    let conn = http1().serve_connection(io, service).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = front.closing.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
