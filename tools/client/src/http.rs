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
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::net::{connect, ConnectError};

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

/// A parsed status line and headers (names lower-cased).
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn framing(&self) -> Result<Framing, HttpError> {
        let chunked = self
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            return Ok(Framing::Chunked(Chunked::default()));
        }
        match self.header("content-length") {
            Some(v) => v
                .trim()
                .parse()
                .map(Framing::Length)
                .map_err(|_| HttpError::Malformed(format!("content-length {v:?}"))),
            None if self.status == 204 || self.status == 304 => Ok(Framing::Length(0)),
            None => Ok(Framing::UntilClose),
        }
    }

    pub fn keeps_alive(&self) -> bool {
        !self
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Parses a response head from the front of `buf`, if complete.
pub fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, HttpError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(HttpError::TooLarge(MAX_HEAD));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end])
        .map_err(|_| HttpError::Malformed("head is not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!("status line {status_line:?}")));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpError::Malformed(format!("status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| HttpError::Malformed(format!("header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    buf.advance(end + 4);
    Ok(Some(Head { status, headers }))
}

/// Decodes `Transfer-Encoding: chunked` incrementally.
#[derive(Debug, Default)]
pub struct Chunked {
    /// Bytes left in the current chunk's data, then its CRLF.
    left: usize,
    in_data: bool,
    done: bool,
}

impl Chunked {
    /// Moves decoded data from `input` to `out`; returns true once the last
    /// chunk was seen. Leaves incomplete framing in `input`.
    pub fn decode(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) -> Result<bool, HttpError> {
        loop {
            if self.done {
                return Ok(true);
            }
            if self.in_data {
                if self.left > 0 {
                    let n = self.left.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input.advance(n);
                    self.left -= n;
                    if self.left > 0 {
                        return Ok(false);
                    }
                }
                if input.len() < 2 {
                    return Ok(false);
                }
                if &input[..2] != b"\r\n" {
                    return Err(HttpError::Malformed("chunk not followed by CRLF".into()));
                }
                input.advance(2);
                self.in_data = false;
                continue;
            }
            let Some(end) = input.windows(2).position(|w| w == b"\r\n") else {
                if input.len() > 64 {
                    return Err(HttpError::Malformed("chunk size line too long".into()));
                }
                return Ok(false);
            };
            let line = std::str::from_utf8(&input[..end])
                .map_err(|_| HttpError::Malformed("chunk size is not UTF-8".into()))?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| HttpError::Malformed(format!("chunk size {line:?}")))?;
            if size == 0 {
                // The last chunk; trailers (none from the edge) end with CRLF.
                if input.len() < end + 4 {
                    return Ok(false);
                }
                input.advance(end + 4);
                self.done = true;
                return Ok(true);
            }
            input.advance(end + 2);
            self.left = size;
            self.in_data = true;
        }
    }
}

#[derive(Debug)]
enum Framing {
    Length(usize),
    Chunked(Chunked),
    UntilClose,
}

/// One HTTP/1.1 connection: requests go out one at a time.
pub struct Conn {
    stream: TcpStream,
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
    pub fn new(stream: TcpStream) -> Self {
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
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
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
    fn head_is_parsed_and_consumed() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Edge-Node: e1\r\n\r\n{}"[..],
        );
        let head = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(head.status, 201);
        assert_eq!(head.header("x-edge-node"), Some("e1"));
        assert_eq!(&buf[..], b"{}");
        assert!(matches!(head.framing().unwrap(), Framing::Length(2)));
    }

    #[test]
    fn incomplete_and_bad_heads() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nA: b\r\n"[..]);
        assert!(parse_head(&mut buf).unwrap().is_none());
        let mut buf = BytesMut::from(&b"SSH-2.0-x\r\n\r\n"[..]);
        assert!(matches!(parse_head(&mut buf), Err(HttpError::Malformed(_))));
        let mut buf = BytesMut::from(vec![b'a'; MAX_HEAD + 1].as_slice());
        assert!(matches!(parse_head(&mut buf), Err(HttpError::TooLarge(_))));
    }

    #[test]
    fn chunked_body_decodes_across_arbitrary_splits() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for split in 1..wire.len() {
            let mut decoder = Chunked::default();
            let mut input = BytesMut::new();
            let mut out = Vec::new();
            input.extend_from_slice(&wire[..split]);
            let early = decoder.decode(&mut input, &mut out).unwrap();
            assert!(!early || split == wire.len());
            input.extend_from_slice(&wire[split..]);
            assert!(
                decoder.decode(&mut input, &mut out).unwrap(),
                "split {split}"
            );
            assert_eq!(out, b"hello, world");
            assert!(input.is_empty());
        }
    }

    #[test]
    fn chunked_rejects_garbage() {
        let mut d = Chunked::default();
        let mut input = BytesMut::from(&b"zz\r\n"[..]);
        assert!(d.decode(&mut input, &mut Vec::new()).is_err());
        let mut d = Chunked::default();
        let mut input = BytesMut::from(&b"2\r\nabXY"[..]);
        assert!(d.decode(&mut input, &mut Vec::new()).is_err());
    }

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
