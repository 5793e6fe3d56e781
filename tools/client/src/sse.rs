//! Server-Sent Events: a parser (bytes in, whole events out) and a watch of
//! one session over `GET /v1/login-sessions/{id}/events`, resumable with
//! `Last-Event-ID`.
//!
//! The parser follows the parts of the SSE format the edge uses (`id:`,
//! `event:`, `data:`, `retry:`, comment lines), with LF or CRLF line ends,
//! and keeps only an unfinished line between reads, so an idle watch holds
//! no more than its socket and a 1 KiB read buffer.

use std::net::{IpAddr, SocketAddr};

use crate::{
    api::{self, Snapshot},
    http::{self, BodyStream, Conn},
    watch::{Push, WatchError},
};

/// One dispatched event, or a `retry:` field on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    Event(SseEvent),
    /// The reconnection delay the server asks for, in milliseconds.
    Retry(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Longest line accepted; snapshots are a few hundred bytes.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SseError {
    #[error("SSE line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("SSE line is not UTF-8")]
    NotUtf8,
}

#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the events and `retry:` values they complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseItem>, SseError> {
        let mut items = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() >= MAX_LINE {
                    return Err(SseError::LineTooLong);
                }
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = std::mem::take(&mut self.line);
            let line = String::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    items.push(SseItem::Event(SseEvent {
                        id: self.id.take(),
                        event: self.event.take(),
                        data,
                    }));
                }
                self.id = None;
                self.event = None;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "id" => self.id = Some(value.to_owned()),
                "event" => self.event = Some(value.to_owned()),
                "retry" => {
                    if let Ok(ms) = value.parse() {
                        items.push(SseItem::Retry(ms));
                    }
                }
                "data" => match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                },
                _ => {}
            }
        }
        if self.line.capacity() > 1024 && self.line.is_empty() {
            self.line = Vec::new();
        }
        Ok(items)
    }
}

/// An open SSE watch of one session.
pub struct SseWatch {
    body: BodyStream,
    parser: SseParser,
    /// Items parsed but not yet returned.
    ready: std::collections::VecDeque<SseItem>,
    /// The edge that answered (`X-Edge-Node`).
    node: Option<String>,
}

impl SseWatch {
    /// Opens `GET /v1/login-sessions/{id}/events` on `addr` (from `src`),
    /// with `Last-Event-ID: <since>` when resuming.
    pub async fn open(
        addr: SocketAddr,
        src: Option<IpAddr>,
        id: &str,
        secret: &str,
        since: Option<u64>,
    ) -> Result<Self, WatchError> {
        let mut conn = Conn::new(
            crate::net::connect(src, addr)
                .await
                .map_err(http::HttpError::from)?,
        );
        let auth = format!("Bearer {secret}");
        let last = since.map(|v| v.to_string());
        let mut headers = vec![
            ("Authorization", auth.as_str()),
            ("Accept", "text/event-stream"),
        ];
        if let Some(last) = &last {
            headers.push(("Last-Event-ID", last));
        }
        let path = format!("/v1/login-sessions/{id}/events");
        conn.send(&http::encode_request("GET", addr, &path, &headers, None))
            .await?;
        let head = conn.read_head().await?;
        if head.status != 200 {
            let body = conn.read_body(&head).await.unwrap_or_default();
            return Err(api::status_error(head.status, &body).into());
        }
        let node = head.header("x-edge-node").map(str::to_owned);
        Ok(Self {
            body: conn.into_body_stream(&head)?,
            parser: SseParser::default(),
            ready: Default::default(),
            node,
        })
    }

    /// The edge that holds this watch.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// The next snapshot or `retry:`; [`Push::End`] when the server ended
    /// the stream (after a final state, or to send the client elsewhere).
    pub async fn next(&mut self) -> Result<Push, WatchError> {
        let mut bytes = Vec::new();
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Ok(match item {
                    SseItem::Retry(ms) => Push::Retry(ms),
                    SseItem::Event(e) => {
                        let snapshot: Snapshot = serde_json::from_str(&e.data)
                            .map_err(|e| WatchError::Protocol(format!("SSE data: {e}")))?;
                        Push::Snapshot(snapshot)
                    }
                });
            }
            bytes.clear();
            if !self.body.next(&mut bytes).await? {
                return Ok(Push::End);
            }
            self.ready.extend(self.parser.feed(&bytes)?);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "retry: 2000\n\nid: 7\nevent: SCANNED\ndata: {\"a\":1}\n\n: heartbeat\n\nid: 8\r\nevent: CONFIRMED\r\ndata: x\r\ndata: y\r\n\r\n";

    #[test]
    fn events_come_out_whole_whatever_the_splits() {
        for split in 0..STREAM.len() {
            let mut p = SseParser::default();
            let mut got = p.feed(&STREAM.as_bytes()[..split]).unwrap();
            got.extend(p.feed(&STREAM.as_bytes()[split..]).unwrap());
            assert_eq!(
                got,
                vec![
                    SseItem::Retry(2000),
                    SseItem::Event(SseEvent {
                        id: Some("7".into()),
                        event: Some("SCANNED".into()),
                        data: "{\"a\":1}".into()
                    }),
                    SseItem::Event(SseEvent {
                        id: Some("8".into()),
                        event: Some("CONFIRMED".into()),
                        data: "x\ny".into()
                    }),
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn comments_dispatch_nothing() {
        let mut p = SseParser::default();
        assert!(p.feed(b": heartbeat\n\n").unwrap().is_empty());
    }

    #[test]
    fn endless_line_is_refused() {
        let mut p = SseParser::default();
        assert!(matches!(
            p.feed(&vec![b'a'; MAX_LINE + 1]),
            Err(SseError::LineTooLong)
        ));
    }
}
