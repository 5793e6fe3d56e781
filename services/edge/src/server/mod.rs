//! The HTTP/1.1 front: accepts connections and reads the request head
//! itself. SSE and WebSocket requests, which become long-lived idle
//! connections, are answered by writing the axum app's response straight to
//! the socket: no hyper connection stays behind them, so an idle stream
//! does not keep hyper's two 8 KiB buffers. Every other request (and any
//! later request on a kept-alive connection) is served by hyper with the
//! bytes already read put back in front.
//!
//! Either way the same axum [`Router`] answers, so routing, admission,
//! errors, headers and metrics are the same on both paths.

mod direct;
mod prefixed;

use std::{io, net::SocketAddr, time::Duration};

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
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use direct::{direct_request, serve_direct};
use prefixed::Prefixed;

/// First allocation for a request head; grown up to [`MAX_HEAD`].
const HEAD_START: usize = 1024;
/// Largest request head accepted (then 431 and close).
const MAX_HEAD: usize = 8 * 1024;
/// Headers parsed per request.
const MAX_HEADERS: usize = 48;
/// A client must send its request head within this time.
const HEAD_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest non-streaming body written on the direct path (error answers).
const MAX_DIRECT_BODY: usize = 64 * 1024;

/// Accepts until `closing` is cancelled; every connection task is tracked
/// by `tracker` and ends (gracefully for hyper) once `closing` fires.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    closing: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        tokio::select! {
            _ = closing.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tracker.spawn(connection(stream, peer, app.clone(), closing.clone()));
                }
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

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    closing: CancellationToken,
) {
    let mut head = Vec::with_capacity(HEAD_START);
    let read = tokio::select! {
        r = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream, &mut head)) => r,
        _ = closing.cancelled() => return,
    };
    let head_len = match read {
        Ok(Ok(Some(n))) => n,
        Ok(Ok(None)) => {
            let _ = stream.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n").await;
            return;
        }
        Ok(Err(_)) | Err(_) => return,
    };
    match direct_request(&head[..head_len], peer) {
        Some(req) => {
            drop(head);
            Box::pin(serve_direct(stream, req, app, closing)).await;
        }
        None => Box::pin(serve_hyper(stream, Bytes::from(head), peer, app, closing)).await,
    }
}

/// Reads until the end of the request head; `Some(len)` of the head, `None`
/// when it is too large, an error when the peer left.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    let mut searched = 0;
    loop {
        if let Some(pos) = buf[searched..].windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(searched + pos + 4));
        }
        searched = buf.len().saturating_sub(3);
        if buf.len() >= MAX_HEAD {
            return Ok(None);
        }
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len().min(MAX_HEAD - buf.len()));
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

async fn serve_hyper(
    stream: TcpStream,
    prefix: Bytes,
    peer: SocketAddr,
    app: Router,
    closing: CancellationToken,
) {
    let io = TokioIo::new(Prefixed {
        prefix,
        inner: stream,
    });
    let service =
        TowerToHyperService::new(app.map_request(move |req: Request<hyper::body::Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        }));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = closing.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
