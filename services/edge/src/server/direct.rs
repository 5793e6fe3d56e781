//! The direct path: a bodiless `GET` of a stream (`routes::STREAM_ROUTES`)
//! is answered by running the router and writing its response to the
//! socket ourselves, chunked for SSE, or as `101` followed by whatever the
//! route's [`Takeover`] runs on the socket (WebSocket, STOMP). Every write
//! goes through the connection's write deadline.

use std::{io, net::SocketAddr, pin::Pin};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::ConnectInfo,
    http::{header, HeaderName, HeaderValue, Request, StatusCode},
    Router,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{Phase, MAX_DIRECT_BODY, MAX_HEADERS};
use crate::{routes, transport::upgrade::Takeover};

/// The request, when it is one the direct path serves: a bodiless `GET` of
/// a stream route.
pub(super) fn direct_request(head: &[u8], peer: SocketAddr) -> Option<Request<Body>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    // `head` is exactly the head: whatever follows it is not parsed here.
    if parsed.parse(head) != Ok(httparse::Status::Complete(head.len())) {
        return None;
    }
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return None;
    }
    let path = parsed.path?;
    if !routes::is_stream(path.split('?').next()?) {
        return None;
    }
    let mut req = Request::builder().method("GET").uri(path);
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            // A body on these GETs is not supported on the direct path.
            return None;
        }
        req = req.header(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    let mut req = req.body(Body::empty()).ok()?;
    req.extensions_mut().insert(ConnectInfo(peer));
    Some(req)
}

/// Runs the router for a stream request and writes the head; gives the
/// phase that carries the connection on: the event stream, or the
/// transport the route's takeover runs on the switched socket. (A phase of its own, so that what an idle stream keeps is
/// only what the stream needs, not the router call and the head writer.)
pub(super) async fn serve_direct<S>(
    mut stream: S,
    req: Request<Body>,
    app: Router,
    closing: CancellationToken,
) -> Option<Phase>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(response) = Box::pin(app.oneshot(req)).await;
    let (mut parts, body) = response.into_parts();
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        let takeover = parts.extensions.remove::<Takeover>()?;
        write_head(&mut stream, parts.status, &parts.headers, None, false)
            .await
            .ok()?;
        return takeover.start(Box::new(stream)).map(Phase::Last);
    }
    let streaming = parts.status == StatusCode::OK
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !streaming {
        let bytes = axum::body::to_bytes(body, MAX_DIRECT_BODY)
            .await
            .unwrap_or_default();
        if write_head(
            &mut stream,
            parts.status,
            &parts.headers,
            Some(bytes.len()),
            true,
        )
        .await
        .is_ok()
        {
            let _ = stream.write_all(&bytes).await;
        }
        let _ = stream.shutdown().await;
        return None;
    }
    write_head(&mut stream, parts.status, &parts.headers, None, true)
        .await
        .ok()?;
    Some(Phase::last(async move {
        pump_chunked(&mut stream, body, &closing).await;
        let _ = stream.shutdown().await;
    }))
}

/// Writes body frames as chunks until the body ends, the client leaves
/// (read end closed), a write misses its deadline, or the node closes.
async fn pump_chunked<S>(stream: &mut S, mut body: Body, closing: &CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut probe = [0u8; 16];
    loop {
        tokio::select! {
            biased;
            _ = closing.cancelled() => return,
            next = frame(&mut body) => match next {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    // One write per chunk: size line, data, CRLF.
                    let mut chunk = Vec::with_capacity(data.len() + 12);
                    chunk.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    chunk.extend_from_slice(&data);
                    chunk.extend_from_slice(b"\r\n");
                    if stream.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                Some(Err(_)) => return,
                None => {
                    let _ = stream.write_all(b"0\r\n\r\n").await;
                    return;
                }
            },
            read = stream.read(&mut probe) => match read {
                // The client closed or reset: stop (dropping the watch).
                Ok(0) | Err(_) => return,
                // Anything a client sends on an event stream is ignored.
                Ok(_) => {}
            },
        }
    }
}

async fn write_head(
    stream: &mut (impl AsyncWrite + Unpin),
    status: StatusCode,
    headers: &axum::http::HeaderMap,
    content_length: Option<usize>,
    close: bool,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in headers {
        // Framing is this writer's business, not the app's.
        let framing = name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || (name == header::CONNECTION && !upgrade);
        if framing {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match content_length {
        Some(n) => out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        None if !upgrade => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        None => {}
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    stream.write_all(&out).await
}

/// Polls a body for its next frame.
async fn frame(body: &mut Body) -> Option<Result<http_body::Frame<Bytes>, axum::Error>> {
    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[test]
    fn only_bodiless_gets_of_streams_take_the_direct_path() {
        let sse = b"GET /v1/login-sessions/q3Zb0Xz2kT9yLw1sJm5HAA/events HTTP/1.1\r\nHost: a\r\nLast-Event-ID: 4\r\n\r\n";
        let req = direct_request(sse, peer()).unwrap();
        assert_eq!(req.headers()["last-event-id"], "4");
        assert!(req.extensions().get::<ConnectInfo<SocketAddr>>().is_some());
        let ws =
            b"GET /v1/login-sessions/q3Zb0Xz2kT9yLw1sJm5HAA/ws?since=3 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            direct_request(ws, peer()).unwrap().uri().query(),
            Some("since=3")
        );
        let stomp =
            b"GET /v1/login-sessions/q3Zb0Xz2kT9yLw1sJm5HAA/stomp HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(direct_request(stomp, peer()).is_some());
        for other in [
            &b"GET /v1/login-sessions/q3Zb0Xz2kT9yLw1sJm5HAA HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"POST /v1/login-sessions/q3Zb0Xz2kT9yLw1sJm5HAA/events HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /v1/login-sessions/q3Zb0Xz2kT9yLw1sJm5HAA/events HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\n\r\n",
            b"GET /v1/login-sessions/q3Zb0Xz2kT9yLw1sJm5HAA/qr.svg HTTP/1.1\r\n\r\n",
            b"GET /v1/login-sessions//events HTTP/1.1\r\n\r\n",
            b"GET /v1/login-sessions/x/events HTTP/1.0\r\n\r\n",
        ] {
            assert!(direct_request(other, peer()).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }

    #[tokio::test]
    async fn the_head_has_one_framing_header() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("71"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.insert("x-edge-node", HeaderValue::from_static("edge-1"));
        let mut out = Vec::new();
        write_head(
            &mut out,
            StatusCode::SERVICE_UNAVAILABLE,
            &headers,
            Some(71),
            true,
        )
        .await
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 503 Service Unavailable\r\nx-edge-node: edge-1\r\ncontent-length: 71\r\nconnection: close\r\n\r\n"
        );
        let mut out = Vec::new();
        write_head(
            &mut out,
            StatusCode::OK,
            &axum::http::HeaderMap::new(),
            None,
            true,
        )
        .await
        .unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("transfer-encoding: chunked\r\n"));
    }
}
