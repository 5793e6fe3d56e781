//! The publisher: one `POST /publish/` to Pushpin's handler per event,
//! at most `connections` at once. Pushpin answers each publish with
//! `Connection: close`, so every publish is a new TCP connection; the
//! event's timestamp is taken once that connection is up, just before the
//! request is written, so connection setup is not counted as delivery time.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Semaphore,
};

use crate::{proto::Stamp, stats::unix_ns};

pub struct Publisher {
    addr: SocketAddr,
    permits: Arc<Semaphore>,
}

/// What one publish cost.
pub struct Published {
    pub request_bytes: usize,
    pub response_bytes: usize,
    /// From writing the request to reading the whole response.
    pub answer_us: u64,
}

/// Longest answer read from the handler.
const MAX_RESPONSE: usize = 16 * 1024;
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

impl Publisher {
    pub fn new(addr: SocketAddr, connections: usize) -> Self {
        Self {
            addr,
            permits: Arc::new(Semaphore::new(connections.max(1))),
        }
    }

    /// Publishes the stamped event of `channel` for `round` as an SSE event
    /// (`event: state`, `data: <stamp JSON>`) in the `http-stream` format.
    pub async fn publish(&self, channel: &str, round: u32) -> Result<Published, String> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| "closed".to_owned())?;
        tokio::time::timeout(PUBLISH_TIMEOUT, self.exchange(channel, round))
            .await
            .unwrap_or_else(|_| Err("publish timeout".to_owned()))
    }

    async fn exchange(&self, channel: &str, round: u32) -> Result<Published, String> {
        let mut stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("publish connect: {}", e.kind()))?;
        stream.set_nodelay(true).ok();
        let t = unix_ns();
        let stamp = serde_json::to_string(&Stamp {
            s: channel.to_owned(),
            r: round,
            t,
        })
        .map_err(|e| e.to_string())?;
        let content = format!("event: state\ndata: {stamp}\n\n");
        let body = serde_json::json!({
            "items": [{"channel": channel, "formats": {"http-stream": {"content": content}}}]
        })
        .to_string();
        let request = format!(
            "POST /publish/ HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("publish write: {}", e.kind()))?;
        let mut response = Vec::with_capacity(256);
        let mut buf = [0u8; 1024];
        loop {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("publish read: {}", e.kind()))?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if complete(&response) || response.len() > MAX_RESPONSE {
                break;
            }
        }
        let answer_us = unix_ns().saturating_sub(t) / 1000;
        if !response.starts_with(b"HTTP/1.1 200") && !response.starts_with(b"HTTP/1.0 200") {
            let line = response.split(|b| *b == b'\r').next().unwrap_or_default();
            return Err(format!(
                "publish answered {}",
                String::from_utf8_lossy(line)
            ));
        }
        Ok(Published {
            request_bytes: request.len(),
            response_bytes: response.len(),
            answer_us,
        })
    }
}

/// Whether `r` holds a whole response (head and `Content-Length` body).
fn complete(r: &[u8]) -> bool {
    let Some(end) = r.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&r[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(n) => r.len() >= end + 4 + n,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::complete;

    #[test]
    fn a_response_is_complete_with_its_body() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nPublished\n";
        assert!(complete(r));
        assert!(!complete(&r[..r.len() - 1]));
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n"));
    }
}
