//! Reading the first request head of a connection. The head ends where
//! httparse says it does (`Complete(n)`), so a bare-LF head is answered at
//! once like hyper would, and the decision (complete, too large, malformed)
//! is httparse's with hyper's limits, taken at the same moments as hyper
//! takes it (after the first read, then whenever an end of head may have
//! arrived): the same bytes get the same answer on either path
//! (`server/fuzz.rs` checks it).

use std::{
    io,
    mem::MaybeUninit,
    pin::Pin,
    task::{ready, Poll},
};

use tokio::io::{AsyncRead, ReadBuf};

use super::{MAX_HEAD, MAX_HEADERS};

/// What the first bytes of a connection came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Head {
    /// A complete head of this many bytes (more may follow in the buffer).
    Complete(usize),
    /// Over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] headers: 431.
    TooLarge,
    /// Not an HTTP/1.x request head: 400.
    Malformed,
}

/// What `buf` holds so far: `None` while the head is incomplete.
pub(super) fn parse(buf: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => Some(Head::Complete(n)),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => Some(Head::TooLarge),
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => Some(Head::TooLarge),
        Err(_) => Some(Head::Malformed),
    }
}

/// Whether the bytes after `prev_len` may end a head (`\r\n\r\n`,
/// `\n\n`, `\n\r\n`): hyper's scan (`is_complete_fast` in hyper's
/// `proto/h1/role.rs`) before it parses a partial head again. Parsing only
/// then keeps a head dripped byte by byte linear, and makes a malformed
/// line in an unfinished head wait for its end, as it does in hyper.
fn may_be_complete(buf: &[u8], prev_len: usize) -> bool {
    let bytes = &buf[prev_len.saturating_sub(3)..];
    bytes.iter().enumerate().any(|(i, &b)| {
        let after = &bytes[i + 1..];
        (b == b'\r' && after.starts_with(b"\n\r\n"))
            || (b == b'\n' && (after.starts_with(b"\n") || after.starts_with(b"\r\n")))
    })
}

/// Reads until the head is complete, too large or malformed. Reads at most
/// [`MAX_HEAD`] bytes; the bytes after the head (a body, a pipelined
/// request) stay in `buf`. An error when the peer left first.
///
/// Each read may take up to the whole remaining limit at once, as hyper's
/// reads do (so the first parse sees what hyper's would), into a buffer on
/// the thread's stack; `buf` keeps only the bytes that came, so a
/// connection does not hold (or churn through) 8 KiB for a 300-byte head.
pub(super) async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> io::Result<Head> {
    loop {
        let prev_len = buf.len();
        let room = MAX_HEAD - prev_len;
        let n = std::future::poll_fn(|cx| {
            let mut space = [MaybeUninit::<u8>::uninit(); MAX_HEAD];
            let mut read = ReadBuf::uninit(&mut space[..room]);
            ready!(Pin::new(&mut *stream).poll_read(cx, &mut read))?;
            buf.extend_from_slice(read.filled());
            Poll::Ready(Ok::<_, io::Error>(read.filled().len()))
        })
        .await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if prev_len == 0 || may_be_complete(buf, prev_len) {
            if let Some(head) = parse(buf) {
                return Ok(head);
            }
        } else if buf.len() >= MAX_HEAD {
            return Ok(Head::TooLarge);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_end_where_httparse_says() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest"),
            Some(Head::Complete(27))
        );
        // Regression: a bare-LF head waited for the 15 s header timeout.
        assert_eq!(
            parse(b"GET / HTTP/1.1\nHost: a\n\n"),
            Some(Head::Complete(24))
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n"),
            Some(Head::Malformed)
        );
        assert_eq!(
            parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n"),
            Some(Head::Malformed)
        );
        let many: String = (0..49).map(|i| format!("h{i}: v\r\n")).collect();
        assert_eq!(
            parse(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Some(Head::TooLarge)
        );
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse(&long.as_bytes()[..MAX_HEAD]), Some(Head::TooLarge));
    }

    #[tokio::test]
    async fn reads_at_most_the_limit_and_keeps_what_follows() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        tokio::io::AsyncWriteExt::write_all(
            &mut client,
            b"POST /x HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody",
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            read_head(&mut server, &mut buf).await.unwrap(),
            Head::Complete(39)
        );
        assert_eq!(&buf[39..], b"body");
        tokio::io::AsyncWriteExt::write_all(&mut client, &vec![b'a'; 3 * MAX_HEAD])
            .await
            .unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            read_head(&mut server, &mut buf).await.unwrap(),
            Head::TooLarge
        );
        assert_eq!(buf.len(), MAX_HEAD);
    }
}
