//! The NATS client protocol as the edge reads it: an incremental parser of
//! the server's operations (INFO, MSG, HMSG, PING, PONG, +OK, -ERR) over a
//! read buffer, with a bound on the control line and on payloads checked
//! before any payload is buffered.

use bytes::{Buf, Bytes, BytesMut};

/// Longest control line accepted (an INFO with many `connect_urls` fits).
pub const MAX_CONTROL_LINE: usize = 16 * 1024;

/// One operation from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Info(Bytes),
    Msg {
        subject: Bytes,
        sid: u64,
        /// The header block of an HMSG (`NATS/1.0\r\n...\r\n\r\n`).
        headers: Option<Bytes>,
        payload: Bytes,
    },
    Ping,
    Pong,
    Ok,
    Err(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("protocol line longer than {MAX_CONTROL_LINE} bytes")]
    LineTooLong,
    #[error("message of {size} bytes over the limit of {limit}")]
    TooBig { size: usize, limit: usize },
    #[error("malformed protocol line: {0}")]
    Malformed(String),
}

fn malformed(line: &[u8]) -> ParseError {
    let text = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
    ParseError::Malformed(text)
}

/// Takes the next complete operation off the front of `buf`; `Ok(None)`
/// when more bytes are needed (nothing is consumed then).
pub fn parse(buf: &mut BytesMut, max_payload: usize) -> Result<Option<Op>, ParseError> {
    let Some(nl) = memchr(b'\n', &buf[..buf.len().min(MAX_CONTROL_LINE + 1)]) else {
        if buf.len() > MAX_CONTROL_LINE {
            return Err(ParseError::LineTooLong);
        }
        return Ok(None);
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let line = &buf[..line_end];
    let (verb, rest) = split_verb(line);
    let op = match verb.to_ascii_uppercase().as_slice() {
        b"MSG" | b"HMSG" => {
            let with_headers = verb.len() == 4;
            let args: Vec<&[u8]> = rest
                .split(|b| *b == b' ' || *b == b'\t')
                .filter(|a| !a.is_empty())
                .collect();
            let (subject, sid, header_len, total) = match (with_headers, args.as_slice()) {
                (false, [s, sid, n] | [s, sid, _, n]) => (*s, number(sid)?, 0, number(n)?),
                (true, [s, sid, h, n] | [s, sid, _, h, n]) => {
                    (*s, number(sid)?, number(h)?, number(n)?)
                }
                _ => return Err(malformed(line)),
            };
            let (sid, header_len, total) = (sid, header_len as usize, total as usize);
            if header_len > total {
                return Err(malformed(line));
            }
            if total > max_payload {
                return Err(ParseError::TooBig {
                    size: total,
                    limit: max_payload,
                });
            }
            let start = nl + 1;
            if buf.len() < start + total + 2 {
                buf.reserve(start + total + 2 - buf.len());
                return Ok(None);
            }
            if &buf[start + total..start + total + 2] != b"\r\n" {
                return Err(ParseError::Malformed("message not followed by CRLF".into()));
            }
            let subject = Bytes::copy_from_slice(subject);
            buf.advance(start);
            let mut body = buf.split_to(total).freeze();
            buf.advance(2);
            let headers = with_headers.then(|| body.split_to(header_len));
            return Ok(Some(Op::Msg {
                subject,
                sid,
                headers,
                payload: body,
            }));
        }
        b"PING" => Op::Ping,
        b"PONG" => Op::Pong,
        b"+OK" => Op::Ok,
        b"-ERR" => {
            let text = String::from_utf8_lossy(rest)
                .trim()
                .trim_matches('\'')
                .to_owned();
            Op::Err(text)
        }
        b"INFO" => Op::Info(Bytes::copy_from_slice(rest)),
        _ => return Err(malformed(line)),
    };
    buf.advance(nl + 1);
    Ok(Some(op))
}

fn split_verb(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[]),
    }
}

fn number(text: &[u8]) -> Result<u64, ParseError> {
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return Err(malformed(text));
    }
    Ok(text.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|b| *b == needle)
}

/// The value of header `name` (case-insensitive) in an HMSG header block.
pub fn header<'a>(block: &'a [u8], name: &str) -> Option<&'a [u8]> {
    block
        .split(|b| *b == b'\n')
        .skip(1) // NATS/1.0 [status]
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|b| *b == b':')?;
            Some((&line[..colon], &line[colon + 1..]))
        })
        .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v.trim_ascii())
}

/// A header value as a number.
pub fn header_u64(block: &[u8], name: &str) -> Option<u64> {
    number(header(block, name)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\n\
        PING\r\n\
        MSG qrlogin.session.q3Zb0Xz2kT9yLw1sJm5HAA 7 5\r\nhello\r\n\
        +OK\r\n\
        HMSG qrlogin.session.q3Zb0Xz2kT9yLw1sJm5HAA 7 _INBOX.x 54 57\r\nNATS/1.0\r\nNats-Sequence: 12\r\nNats-Last-Sequence: 9\r\n\r\nabc\r\n\
        MSG a.b 1 reply.to 0\r\n\r\n\
        PONG\r\n\
        -ERR 'Permissions Violation for Subscription to \"x.y\"'\r\n";

    fn all(stream: &[u8], chunks: &[usize]) -> Vec<Op> {
        let mut buf = BytesMut::new();
        let mut ops = Vec::new();
        let mut at = 0;
        for &end in chunks.iter().chain(std::iter::once(&stream.len())) {
            buf.extend_from_slice(&stream[at..end]);
            at = end;
            while let Some(op) = parse(&mut buf, 1 << 20).unwrap() {
                ops.push(op);
            }
        }
        assert!(buf.is_empty());
        ops
    }

    #[test]
    fn parses_every_operation() {
        let ops = all(STREAM, &[]);
        assert_eq!(ops.len(), 8);
        assert_eq!(ops[1], Op::Ping);
        match &ops[2] {
            Op::Msg {
                subject,
                sid,
                headers,
                payload,
            } => {
                assert_eq!(&subject[..], b"qrlogin.session.q3Zb0Xz2kT9yLw1sJm5HAA");
                assert_eq!(*sid, 7);
                assert!(headers.is_none());
                assert_eq!(&payload[..], b"hello");
            }
            other => panic!("{other:?}"),
        }
        match &ops[4] {
            Op::Msg {
                headers: Some(h),
                payload,
                ..
            } => {
                assert_eq!(header_u64(h, "nats-sequence"), Some(12));
                assert_eq!(header_u64(h, "Nats-Last-Sequence"), Some(9));
                assert_eq!(header(h, "missing"), None);
                assert_eq!(&payload[..], b"abc");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&ops[5], Op::Msg { payload, .. } if payload.is_empty()));
        assert_eq!(
            ops[7],
            Op::Err("Permissions Violation for Subscription to \"x.y\"".into())
        );
    }

    #[test]
    fn a_split_at_every_byte_boundary_parses_the_same() {
        let whole = all(STREAM, &[]);
        for cut in 1..STREAM.len() {
            assert_eq!(all(STREAM, &[cut]), whole, "split at {cut}");
        }
        let every: Vec<usize> = (1..STREAM.len()).collect();
        assert_eq!(all(STREAM, &every), whole, "one byte at a time");
    }

    #[test]
    fn oversize_payloads_are_refused_before_they_are_buffered() {
        let mut buf = BytesMut::from(&b"MSG a.b 1 2000000\r\nxx"[..]);
        assert_eq!(
            parse(&mut buf, 1 << 20),
            Err(ParseError::TooBig {
                size: 2_000_000,
                limit: 1 << 20
            })
        );
        let mut buf = BytesMut::from(&b"HMSG a.b 1 10 2000000\r\n"[..]);
        assert!(matches!(
            parse(&mut buf, 1 << 20),
            Err(ParseError::TooBig { .. })
        ));
        let mut long = BytesMut::from(&vec![b'A'; MAX_CONTROL_LINE + 1][..]);
        assert_eq!(parse(&mut long, 1 << 20), Err(ParseError::LineTooLong));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            &b"FOO bar\r\n"[..],
            b"MSG a.b x 3\r\nabc\r\n",
            b"MSG a.b 1\r\n",
            b"HMSG a.b 1 9 3\r\nabc\r\n",
            b"MSG a.b 1 3\r\nabcd\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(
                parse(&mut buf, 1 << 20).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
