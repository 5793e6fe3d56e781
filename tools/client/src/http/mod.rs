//! A minimal HTTP/1.1 client over a plain `TcpStream`: requests, whole
//! responses, streamed bodies, and a small keep-alive pool.
//!
//! Why not a full client: an idle SSE watcher should cost one socket and a
//! few hundred bytes, and the load generator must bind every socket to a
//! chosen loopback source address before connecting (so that no
//! source/destination pair runs out of ephemeral ports). The client speaks
//! only what the edge answers: `Content-Length` bodies, chunked bodies and
//! close-delimited bodies.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Mutex,
};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::{connect, ConnectError, Stream};

mod framing;
use framing::Framing;
pub use framing::{parse_head, Chunked, Head};

/// Largest response head accepted; the edge's heads are a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;
/// Largest non-streaming response body accepted (a create answer with its
/// QR SVG is about 10 KiB).
const MAX_BODY: usize = 1024 * 1024;
/// Initial read buffer of a connection: enough for one SSE event.
const READ_CHUNK: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed before a complete response")]
    Closed,
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

impl HttpError {
    /// Whether a request on a reused keep-alive connection failed because
    /// the server had already closed it (then one retry on a fresh
    /// connection is safe: nothing was processed).
    pub fn is_stale(&self) -> bool {
        match self {
            HttpError::Closed => true,
            HttpError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// One HTTP/1.1 connection: requests go out one at a time.
pub struct Conn {
    stream: Stream,
    buf: BytesMut,
    /// Whether a response completed on this connection (then it is reused
    /// and may have been closed by the server in the meantime).
    reused: bool,
}

/// A whole response.
#[derive(Debug)]
pub struct Response {
    pub head: Head,
    pub body: Vec<u8>,
}

/// Writes a request; `host` names the server for the `Host` header.
pub fn encode_request(
    method: &str,
    host: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        out.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if let Some(body) = body {
        bytes.extend_from_slice(body);
    }
    bytes
}

impl Conn {
    pub fn new(stream: Stream) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            reused: false,
        }
    }

    pub async fn send(&mut self, request: &[u8]) -> Result<(), HttpError> {
        self.stream.write_all(request).await?;
        Ok(())
    }

    /// Reads more bytes into the buffer; false at end of stream.
    async fn fill(&mut self) -> Result<bool, HttpError> {
        if self.buf.capacity() - self.buf.len() < 256 {
            self.buf.reserve(READ_CHUNK);
        }
        Ok(self.stream.read_buf(&mut self.buf).await? > 0)
    }

    pub async fn read_head(&mut self) -> Result<Head, HttpError> {
        loop {
            if let Some(head) = parse_head(&mut self.buf)? {
                if head.status == 100 {
                    continue;
                }
                return Ok(head);
            }
            if !self.fill().await? {
                return Err(HttpError::Closed);
            }
        }
    }

    /// Reads the whole body of a response whose head was just read.
    pub async fn read_body(&mut self, head: &Head) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        match head.framing()? {
            Framing::Length(n) => {
                if n > MAX_BODY {
                    return Err(HttpError::TooLarge(MAX_BODY));
                }
                while self.buf.len() < n {
                    if !self.fill().await? {
                        return Err(HttpError::Closed);
                    }
                }
                body.extend_from_slice(&self.buf[..n]);
                self.buf.advance(n);
            }
            Framing::Chunked(mut chunked) => loop {
                if chunked.decode(&mut self.buf, &mut body)? {
                    break;
                }
                if body.len() > MAX_BODY {
                    return Err(HttpError::TooLarge(MAX_BODY));
                }
                if !self.fill().await? {
                    return Err(HttpError::Closed);
                }
            },
            Framing::UntilClose => loop {
                body.extend_from_slice(&self.buf);
                self.buf.clear();
                if body.len() > MAX_BODY {
                    return Err(HttpError::TooLarge(MAX_BODY));
                }
                if !self.fill().await? {
                    break;
                }
            },
        }
        Ok(body)
    }

    /// Sends a request and reads its whole response.
    pub async fn exchange(&mut self, request: &[u8]) -> Result<Response, HttpError> {
        self.send(request).await?;
        let head = self.read_head().await?;
        let body = self.read_body(&head).await?;
        self.reused = true;
        Ok(Response { head, body })
    }

    /// The socket and the bytes read past the last response head (the
    /// first bytes of the next protocol after a `101`).
    pub fn into_parts(self) -> (Stream, Vec<u8>) {
        (self.stream, self.buf.to_vec())
    }

    /// Turns the connection into a stream of body bytes (SSE).
    pub fn into_body_stream(self, head: &Head) -> Result<BodyStream, HttpError> {
        Ok(BodyStream {
            framing: head.framing()?,
            conn: self,
        })
    }
}

/// The body of a streaming response, read piece by piece.
pub struct BodyStream {
    conn: Conn,
    framing: Framing,
}

impl BodyStream {
    /// Appends the next decoded bytes to `out`; false when the body ended.
    pub async fn next(&mut self, out: &mut Vec<u8>) -> Result<bool, HttpError> {
        loop {
            let before = out.len();
            match &mut self.framing {
                Framing::Chunked(c) => {
                    if c.decode(&mut self.conn.buf, out)? {
                        return Ok(out.len() > before);
                    }
                }
                Framing::Length(n) => {
                    let take = (*n).min(self.conn.buf.len());
                    out.extend_from_slice(&self.conn.buf[..take]);
                    self.conn.buf.advance(take);
                    *n -= take;
                    if *n == 0 {
                        return Ok(out.len() > before);
                    }
                }
                Framing::UntilClose => {
                    out.extend_from_slice(&self.conn.buf);
                    self.conn.buf.clear();
                }
            }
            if out.len() > before {
                return Ok(true);
            }
            if !self.conn.fill().await? {
                return match self.framing {
                    Framing::UntilClose => Ok(false),
                    _ => Err(HttpError::Closed),
                };
            }
        }
    }
}

/// Keep-alive connections to one server, reused by short requests.
pub struct Pool {
    addr: SocketAddr,
    src: Option<IpAddr>,
    /// Idle connections; at most `max_idle`, extra ones are closed.
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
}

impl Pool {
    pub fn new(addr: SocketAddr, src: Option<IpAddr>, max_idle: usize) -> Self {
        Self {
            addr,
            src,
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn src(&self) -> Option<IpAddr> {
        self.src
    }

    fn take_idle(&self) -> Option<Conn> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn give_back(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    /// One request with a whole response. `on_send` runs right before the
    /// request bytes are written (the latency clock starts there).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        on_send: impl Fn(),
    ) -> Result<Response, HttpError> {
        let request = encode_request(method, self.addr, path, headers, body);
        if let Some(mut conn) = self.take_idle() {
            on_send();
            match conn.exchange(&request).await {
                Ok(response) => {
                    if response.head.keeps_alive() {
                        self.give_back(conn);
                    }
                    return Ok(response);
                }
                Err(e) if conn.reused && e.is_stale() => {}
                Err(e) => return Err(e),
            }
        }
        let mut conn = Conn::new(connect(self.src, self.addr).await?);
        on_send();
        let response = conn.exchange(&request).await?;
        if response.head.keeps_alive() {
            self.give_back(conn);
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_has_host_length_and_body() {
        let addr: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        let req = encode_request(
            "POST",
            addr,
            "/v1/login-sessions",
            &[("Authorization", "Bearer x")],
            Some(b"{}"),
        );
        let text = String::from_utf8(req).unwrap();
        assert!(text.starts_with("POST /v1/login-sessions HTTP/1.1\r\nHost: 127.0.0.1:8081\r\n"));
        assert!(text.contains("Authorization: Bearer x\r\n"));
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"));
    }
}
