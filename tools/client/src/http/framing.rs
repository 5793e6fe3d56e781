//! Reading HTTP/1.1 responses: the status line and headers, and how the
//! body is delimited (`Content-Length`, chunked, or until the close).

use bytes::{Buf, BytesMut};

use super::{HttpError, MAX_HEAD};

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

    pub(super) fn framing(&self) -> Result<Framing, HttpError> {
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
pub(super) enum Framing {
    Length(usize),
    Chunked(Chunked),
    UntilClose,
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
}
