//! Encoding the frames a STOMP server sends: CONNECTED, MESSAGE, RECEIPT and
//! ERROR, with STOMP 1.2 header escaping (none in CONNECTED) and a
//! `content-length` on every frame with a body.

use super::{frame::Command, negotiate::Negotiated, MESSAGE_CONTENT_TYPE};

/// A server frame, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    command: Command,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl ServerFrame {
    fn new(command: Command) -> Self {
        debug_assert!(!command.is_client());
        Self {
            command,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self = self
            .header("content-type", content_type)
            .header("content-length", body.len().to_string());
        self.body = body;
        self
    }

    /// Adds a header (escaped like the others when the frame escapes).
    pub fn with_header(self, name: &'static str, value: impl Into<String>) -> Self {
        self.header(name, value)
    }

    pub fn command(&self) -> Command {
        self.command
    }

    /// Appends the frame's bytes (ending in NUL) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.command.as_str().as_bytes());
        out.push(b'\n');
        for (name, value) in &self.headers {
            if self.command.escapes_headers() {
                escape_into(name, out);
                out.push(b':');
                escape_into(value, out);
            } else {
                // CONNECTED cannot escape; an EOL in a value would end the
                // header, so it is replaced (values here are our own).
                out.extend_from_slice(name.as_bytes());
                out.push(b':');
                out.extend(value.bytes().map(|b| match b {
                    b'\r' | b'\n' => b' ',
                    b => b,
                }));
            }
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out.push(0);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.body.len());
        self.encode_into(&mut out);
        out
    }
}

/// STOMP 1.2 escaping of one header name or value.
pub fn escape_into(text: &str, out: &mut Vec<u8>) {
    for b in text.bytes() {
        match b {
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b':' => out.extend_from_slice(b"\\c"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b => out.push(b),
        }
    }
}

/// CONNECTED with the negotiated version and the server's heart-beat
/// header (`<sx>,<sy>` in milliseconds, see [`Negotiated`]).
pub fn connected(negotiated: &Negotiated, server: &str) -> ServerFrame {
    ServerFrame::new(Command::Connected)
        .header("version", negotiated.version.as_str())
        .header("heart-beat", negotiated.server_header())
        .header("server", server)
}

/// MESSAGE carrying one JSON snapshot to subscription `subscription`.
/// `message_id` must be unique on the connection (a counter is enough).
pub fn message(
    subscription: &str,
    message_id: u64,
    destination: &str,
    json: Vec<u8>,
) -> ServerFrame {
    ServerFrame::new(Command::Message)
        .header("subscription", subscription)
        .header("message-id", message_id.to_string())
        .header("destination", destination)
        .body(MESSAGE_CONTENT_TYPE, json)
}

/// RECEIPT for a client frame that carried `receipt: <receipt_id>`.
pub fn receipt(receipt_id: &str) -> ServerFrame {
    ServerFrame::new(Command::Receipt).header("receipt-id", receipt_id)
}

/// ERROR with a short `message` header and a plain-text body; `receipt_id`
/// when the offending frame asked for a receipt. The connection must be
/// closed after it.
pub fn error(message: &str, detail: &str, receipt_id: Option<&str>) -> ServerFrame {
    let mut frame = ServerFrame::new(Command::Error);
    if let Some(id) = receipt_id {
        frame = frame.header("receipt-id", id);
    }
    frame
        .header("message", message)
        .body("text/plain", detail.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::transport::stomp::{
        frame::{Decoder, Frame, Incoming, Limits},
        negotiate::{negotiate, ServerHeartBeat, Version},
    };

    fn decode(bytes: &[u8]) -> Frame {
        match Decoder::any_command(Limits::default())
            .decode_message(bytes)
            .unwrap()
            .as_slice()
        {
            [Incoming::Frame(f)] => f.clone(),
            other => panic!("expected one frame, got {other:?}"),
        }
    }

    #[test]
    fn message_matches_the_specification_layout() {
        let json = br#"{"state":"SCANNED","version":7}"#.to_vec();
        let frame = message("sub-0", 1, "/topic/login-sessions.abc", json.clone());
        let text = String::from_utf8(frame.to_bytes()).unwrap();
        assert_eq!(
            text,
            "MESSAGE\nsubscription:sub-0\nmessage-id:1\ndestination:/topic/login-sessions.abc\n\
             content-type:application/json\ncontent-length:31\n\n\
             {\"state\":\"SCANNED\",\"version\":7}\0"
        );
        let back = decode(text.as_bytes());
        assert_eq!(back.command, Command::Message);
        assert_eq!(back.header("content-length"), Some("31"));
        assert_eq!(back.body, Bytes::from(json));
    }

    #[test]
    fn headers_are_escaped_and_read_back() {
        let frame = error("bad\nframe: x\\y", "details\0with nul", Some("r:1"));
        let bytes = frame.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("message:bad\\nframe\\c x\\\\y\n"), "{text}");
        assert!(text.contains("receipt-id:r\\c1\n"), "{text}");
        let back = decode(&bytes);
        assert_eq!(back.header("message"), Some("bad\nframe: x\\y"));
        assert_eq!(back.header("receipt-id"), Some("r:1"));
        assert_eq!(back.header("content-type"), Some("text/plain"));
        // content-length lets the body hold a NUL.
        assert_eq!(&back.body[..], b"details\0with nul");
    }

    #[test]
    fn receipt_is_bare() {
        assert_eq!(receipt("77").to_bytes(), b"RECEIPT\nreceipt-id:77\n\n\0");
    }

    #[test]
    fn connected_is_not_escaped_and_carries_the_negotiation() {
        let n = negotiate(
            Some("1.1,1.2"),
            Some("10000,10000"),
            ServerHeartBeat {
                send_every: Duration::from_secs(15),
                expect_every: Duration::from_secs(20),
            },
        )
        .unwrap();
        let bytes = connected(&n, "qrlogin/edge-1:a\nb").to_bytes();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "CONNECTED\nversion:1.2\nheart-beat:15000,20000\nserver:qrlogin/edge-1:a b\n\n\0"
        );
        let back = decode(&bytes);
        assert_eq!(back.header("server"), Some("qrlogin/edge-1:a b"));
        assert_eq!(n.version, Version::V1_2);
    }
}
