//! Server-Sent Events parsing: bytes in, whole events out.
//!
//! Follows the parts of the SSE format the edge uses (`id:`, `event:`,
//! `data:`, `retry:`, comment lines), with LF or CRLF line ends, and keeps
//! only an unfinished line between reads, so an idle stream holds no more
//! than its socket buffer.

/// One dispatched event.
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
    /// Feeds bytes; returns the events they complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
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
                    events.push(SseEvent {
                        id: self.id.take(),
                        event: self.event.take(),
                        data,
                    });
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
        Ok(events)
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
                    SseEvent {
                        id: Some("7".into()),
                        event: Some("SCANNED".into()),
                        data: "{\"a\":1}".into()
                    },
                    SseEvent {
                        id: Some("8".into()),
                        event: Some("CONFIRMED".into()),
                        data: "x\ny".into()
                    },
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn retry_and_comments_dispatch_nothing() {
        let mut p = SseParser::default();
        assert!(p.feed(b"retry: 100\n\n: heartbeat\n\n").unwrap().is_empty());
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
