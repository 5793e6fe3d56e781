//! STOMP 1.2 frames from the client's side, written from the specification
//! (https://stomp.github.io/stomp-specification-1.2.html) apart from the
//! edge's codec, so that tests do not check the server with its own parser:
//! encoding client frames, decoding server frames.

use super::StompError;

/// A frame received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    pub command: String,
    /// Header entries in order, unescaped (except in CONNECTED).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ServerFrame {
    /// The first entry named `name` (repeated headers: the first wins).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What one WebSocket message held, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    HeartBeat,
    Frame(ServerFrame),
}

/// Encodes a client frame. Header names and values are escaped except in
/// CONNECT; a non-empty body gets a `content-length`.
pub fn encode(command: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let escape = command != "CONNECT";
    let mut out = Vec::with_capacity(64 + body.len());
    out.extend_from_slice(command.as_bytes());
    out.push(b'\n');
    let put = |text: &str, out: &mut Vec<u8>| {
        for c in text.bytes() {
            match c {
                b'\\' if escape => out.extend_from_slice(b"\\\\"),
                b'\n' if escape => out.extend_from_slice(b"\\n"),
                b'\r' if escape => out.extend_from_slice(b"\\r"),
                b':' if escape => out.extend_from_slice(b"\\c"),
                c => out.push(c),
            }
        }
    };
    for (name, value) in headers {
        put(name, &mut out);
        out.push(b':');
        put(value, &mut out);
        out.push(b'\n');
    }
    if !body.is_empty() {
        out.extend_from_slice(format!("content-length:{}\n", body.len()).as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out.push(0);
    out
}

fn unescape(text: &str) -> Result<String, StompError> {
    let mut out = String::with_capacity(text.len());
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            out.push(match c {
                'n' => '\n',
                'r' => '\r',
                'c' => ':',
                '\\' => '\\',
                other => return Err(StompError::Malformed(format!("undefined escape \\{other}"))),
            });
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    if escaped {
        return Err(StompError::Malformed("header ends inside an escape".into()));
    }
    Ok(out)
}

/// Decodes every heart-beat and frame of one WebSocket message; a message
/// that ends inside a frame is an error.
pub fn decode(message: &[u8]) -> Result<Vec<Received>, StompError> {
    let malformed = |what: &str| StompError::Malformed(what.to_owned());
    let mut out = Vec::new();
    let mut rest = message;
    loop {
        // EOLs between frames are heart-beats.
        while let Some(r) = rest
            .strip_prefix(b"\r\n")
            .or_else(|| rest.strip_prefix(b"\n"))
        {
            out.push(Received::HeartBeat);
            rest = r;
        }
        if rest.is_empty() {
            return Ok(out);
        }
        // The head ends with an empty line: "\n\n" or "\n\r\n".
        let head_end = (0..rest.len())
            .find_map(|i| {
                if rest[i..].starts_with(b"\n\n") {
                    Some((i, i + 2))
                } else if rest[i..].starts_with(b"\n\r\n") {
                    Some((i, i + 3))
                } else {
                    None
                }
            })
            .ok_or_else(|| malformed("frame head without an empty line"))?;
        let head = std::str::from_utf8(&rest[..head_end.0])
            .map_err(|_| malformed("frame head is not UTF-8"))?;
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let command = lines.next().unwrap_or_default().to_owned();
        if !matches!(
            command.as_str(),
            "CONNECTED" | "MESSAGE" | "RECEIPT" | "ERROR"
        ) {
            return Err(StompError::Malformed(format!(
                "{command:?} is not a server frame"
            )));
        }
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| StompError::Malformed(format!("header line {line:?}")))?;
            if command == "CONNECTED" {
                headers.push((name.to_owned(), value.to_owned()));
            } else {
                headers.push((unescape(name)?, unescape(value)?));
            }
        }
        let after = &rest[head_end.1..];
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| {
                v.parse::<usize>()
                    .map_err(|_| StompError::Malformed(format!("content-length {v:?}")))
            })
            .transpose()?;
        let body_end = match length {
            Some(n) => {
                if after.len() <= n || after[n] != 0 {
                    return Err(malformed("body does not end with NUL at content-length"));
                }
                n
            }
            None => after
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| malformed("frame without its NUL"))?,
        };
        out.push(Received::Frame(ServerFrame {
            command,
            headers,
            body: after[..body_end].to_vec(),
        }));
        rest = &after[body_end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(message: &[u8]) -> ServerFrame {
        match decode(message).unwrap().as_slice() {
            [Received::Frame(f)] => f.clone(),
            other => panic!("expected one frame, got {other:?}"),
        }
    }

    #[test]
    fn connect_is_not_escaped_and_others_are() {
        assert_eq!(
            encode(
                "CONNECT",
                &[("accept-version", "1.2,1.1"), ("host", "a:1")],
                b""
            ),
            b"CONNECT\naccept-version:1.2,1.1\nhost:a:1\n\n\0"
        );
        assert_eq!(
            encode("SUBSCRIBE", &[("id", "s:0"), ("x", "a\\b\nc\r")], b""),
            b"SUBSCRIBE\nid:s\\c0\nx:a\\\\b\\nc\\r\n\n\0"
        );
        assert_eq!(
            encode("SEND", &[("destination", "/app/x")], b"hi"),
            b"SEND\ndestination:/app/x\ncontent-length:2\n\nhi\0"
        );
    }

    #[test]
    fn spec_connected_message_receipt_and_error() {
        let f = frame(b"CONNECTED\nversion:1.2\nheart-beat:15000,20000\nserver:qrlogin\n\n\0");
        assert_eq!(f.command, "CONNECTED");
        assert_eq!(f.header("heart-beat"), Some("15000,20000"));
        let f = frame(b"MESSAGE\nsubscription:0\nmessage-id:007\ndestination:/queue/a\ncontent-type:text/plain\n\nhello queue a\0");
        assert_eq!(f.header("message-id"), Some("007"));
        assert_eq!(f.body, b"hello queue a");
        let f = frame(b"RECEIPT\nreceipt-id:message-12345\n\n\0");
        assert_eq!(f.header("receipt-id"), Some("message-12345"));
        let f = frame(b"ERROR\nreceipt-id:r\\c1\ncontent-type:text/plain\ncontent-length:5\nmessage:malformed frame received\n\na\0b\nc\0");
        assert_eq!(f.header("receipt-id"), Some("r:1"));
        assert_eq!(f.header("message"), Some("malformed frame received"));
        assert_eq!(f.body, b"a\0b\nc");
    }

    #[test]
    fn heart_beats_crlf_and_several_frames_in_one_message() {
        let got = decode(b"\n\r\nRECEIPT\r\nreceipt-id:1\r\n\r\n\0\nRECEIPT\nreceipt-id:2\n\n\0")
            .unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(got[0], Received::HeartBeat);
        assert_eq!(got[1], Received::HeartBeat);
        assert!(matches!(&got[2], Received::Frame(f) if f.header("receipt-id") == Some("1")));
        assert_eq!(got[3], Received::HeartBeat);
        assert!(matches!(&got[4], Received::Frame(f) if f.header("receipt-id") == Some("2")));
        assert_eq!(decode(b"\n").unwrap(), [Received::HeartBeat]);
    }

    #[test]
    fn connected_keeps_backslashes_and_repeats_keep_the_first() {
        let f = frame(b"CONNECTED\nversion:1.2\nserver:a\\cb\nversion:1.1\n\n\0");
        assert_eq!(f.header("server"), Some("a\\cb"));
        assert_eq!(f.header("version"), Some("1.2"));
    }

    #[test]
    fn malformed_server_frames() {
        for bad in [
            &b"MESSAGE\nsubscription:0\n\nno nul"[..],
            b"MESSAGE\nsubscription:0",
            b"MESSAGE\ncontent-length:9\n\nshort\0",
            b"MESSAGE\ncontent-length:2\n\nlonger\0",
            b"MESSAGE\ncontent-length:x\n\n\0",
            b"MESSAGE\nbad\\tescape:1\n\n\0",
            b"MESSAGE\nno colon\n\n\0",
            b"SEND\ndestination:/a\n\n\0",
            b"HELLO\n\n\0",
        ] {
            assert!(
                matches!(decode(bad), Err(StompError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
