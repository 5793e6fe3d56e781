//! The decoder against the STOMP 1.2 specification's examples, the frames
//! stompjs sends, and malformed frames.

use super::*;

fn one(bytes: &[u8]) -> Frame {
    match Decoder::default().decode_message(bytes).unwrap().as_slice() {
        [Incoming::Frame(f)] => f.clone(),
        other => panic!("expected one frame, got {other:?}"),
    }
}

fn err(bytes: &[u8]) -> FrameError {
    Decoder::default().decode_message(bytes).unwrap_err()
}

fn small() -> Decoder {
    Decoder::new(Limits {
        max_headers: 3,
        max_header_line: 20,
        max_body: 8,
    })
}

#[test]
fn spec_connect_example() {
    let f = one(b"CONNECT\naccept-version:1.2\nhost:stomp.github.org\n\n\0");
    assert_eq!(f.command, Command::Connect);
    assert_eq!(f.header("accept-version"), Some("1.2"));
    assert_eq!(f.header("host"), Some("stomp.github.org"));
    assert!(f.body.is_empty());
}

#[test]
fn spec_send_example_with_a_body_up_to_nul() {
    let f = one(b"SEND\ndestination:/queue/a\ncontent-type:text/plain\n\nhello queue a\n\0");
    assert_eq!(f.command, Command::Send);
    assert_eq!(f.header("destination"), Some("/queue/a"));
    assert_eq!(&f.body[..], b"hello queue a\n");
}

#[test]
fn spec_subscribe_unsubscribe_ack_and_disconnect_examples() {
    let f = one(b"SUBSCRIBE\nid:0\ndestination:/queue/foo\nack:client\n\n\0");
    assert_eq!(
        (f.command, f.header("id"), f.header("ack")),
        (Command::Subscribe, Some("0"), Some("client"))
    );
    assert_eq!(
        one(b"UNSUBSCRIBE\nid:0\n\n\0").command,
        Command::Unsubscribe
    );
    assert_eq!(
        one(b"ACK\nid:12345\ntransaction:tx1\n\n\0").command,
        Command::Ack
    );
    assert_eq!(one(b"BEGIN\ntransaction:tx1\n\n\0").command, Command::Begin);
    let f = one(b"DISCONNECT\nreceipt:77\n\n\0");
    assert_eq!(
        (f.command, f.header("receipt")),
        (Command::Disconnect, Some("77"))
    );
}

#[test]
fn what_stompjs_sends() {
    // @stomp/stompjs 7: CONNECT with heart-beat, SUBSCRIBE, SEND with
    // content-length, heart-beat EOLs, DISCONNECT with a receipt.
    let d = Decoder::default();
    let got = d
        .decode_message(b"CONNECT\naccept-version:1.2,1.1,1.0\nheart-beat:10000,10000\n\n\0\n")
        .unwrap();
    assert!(matches!(&got[0], Incoming::Frame(f) if f.command == Command::Connect));
    assert_eq!(got[1], Incoming::HeartBeat);
    let f = one(b"SUBSCRIBE\nsince:7\nid:sub-0\ndestination:/topic/login-sessions.abc\n\n\0");
    assert_eq!(f.header("since"), Some("7"));
    let f = one(b"SEND\ndestination:/app/login-sessions.abc.cancel\ncontent-length:0\n\n\0");
    assert!(f.body.is_empty());
    assert_eq!(d.decode_message(b"\n").unwrap(), [Incoming::HeartBeat]);
    // A content-length of 0 (some clients send one on every frame) is no body.
    let f = one(b"SUBSCRIBE\nid:sub-0\ndestination:/topic/x\ncontent-length:0\n\n\0");
    assert_eq!(f.command, Command::Subscribe);
    let f = one(b"DISCONNECT\nreceipt:close-1\ncontent-length:0\n\n\0");
    assert_eq!(f.header("receipt"), Some("close-1"));
}

#[test]
fn crlf_line_ends_and_eols_between_frames() {
    let d = Decoder::default();
    let got = d
        .decode_message(b"\r\n\nSEND\r\ndestination:/a\r\n\r\nbody\0\r\n\nDISCONNECT\n\n\0")
        .unwrap();
    assert_eq!(got.len(), 6);
    assert_eq!(got[0], Incoming::HeartBeat);
    assert_eq!(got[1], Incoming::HeartBeat);
    let Incoming::Frame(send) = &got[2] else {
        panic!()
    };
    assert_eq!(send.header("destination"), Some("/a"));
    assert_eq!(&send.body[..], b"body");
    assert_eq!(got[3], Incoming::HeartBeat);
    assert_eq!(got[4], Incoming::HeartBeat);
    assert!(matches!(&got[5], Incoming::Frame(f) if f.command == Command::Disconnect));
}

#[test]
fn escapes_are_undone_except_in_connect() {
    let f = one(b"SEND\ndestination:/a\\cb\nx\\\\y:1\\n2\\r3\n\n\0");
    assert_eq!(f.header("destination"), Some("/a:b"));
    assert_eq!(f.header("x\\y"), Some("1\n2\r3"));
    // CONNECT keeps backslashes and colons as they are (STOMP 1.0).
    let f = one(b"CONNECT\nlogin:a\\cb\npasscode:x:y\n\n\0");
    assert_eq!(f.header("login"), Some("a\\cb"));
    assert_eq!(f.header("passcode"), Some("x:y"));
    // STOMP, the 1.2 spelling of CONNECT, is escaped.
    let f = one(b"STOMP\nlogin:a\\cb\n\n\0");
    assert_eq!(f.header("login"), Some("a:b"));
}

#[test]
fn undefined_escapes_are_errors() {
    assert_eq!(
        err(b"SEND\ndestination:/a\\tb\n\n\0"),
        FrameError::BadEscape('t')
    );
    assert_eq!(
        err(b"SEND\ndestination:/a\\\n\n\0"),
        FrameError::UnfinishedEscape
    );
    assert_eq!(err(b"SEND\nde\\xst:/a\n\n\0"), FrameError::BadEscape('x'));
}

#[test]
fn repeated_headers_keep_every_entry_and_the_first_wins() {
    let f = one(b"SEND\ndestination:/first\ndestination:/second\n\n\0");
    assert_eq!(f.header("destination"), Some("/first"));
    assert_eq!(f.headers.len(), 2);
    // Also for content-length: the first one frames the body.
    let f = one(b"SEND\ncontent-length:2\ncontent-length:5\n\nab\0");
    assert_eq!(&f.body[..], b"ab");
}

#[test]
fn content_length_bodies_may_hold_nul() {
    let f = one(b"SEND\ndestination:/a\ncontent-length:5\n\na\0b\0c\0");
    assert_eq!(&f.body[..], b"a\0b\0c");
    let f = one(b"SEND\ncontent-length:0\n\n\0");
    assert!(f.body.is_empty());
}

#[test]
fn wrong_content_length_is_an_error() {
    // Too short: the byte after the declared body is not NUL.
    assert_eq!(
        err(b"SEND\ncontent-length:3\n\nhello\0"),
        FrameError::ContentLengthMismatch(3)
    );
    // Too long: the message ends first.
    assert_eq!(
        err(b"SEND\ncontent-length:9\n\nhello\0"),
        FrameError::Truncated
    );
    for bad in ["-1", "abc", "", "1e3", "0x10"] {
        let frame = format!("SEND\ncontent-length:{bad}\n\n\0");
        assert_eq!(
            err(frame.as_bytes()),
            FrameError::BadContentLength(bad.to_owned())
        );
    }
}

#[test]
fn truncated_frames_wait_in_a_stream_and_fail_in_a_message() {
    let whole: &[u8] = b"SEND\ndestination:/a\ncontent-length:3\n\nabc\0";
    let d = Decoder::default();
    for cut in 1..whole.len() {
        assert_eq!(
            d.decode_message(&whole[..cut]),
            Err(FrameError::Truncated),
            "cut {cut}"
        );
        // In a stream the same prefix just needs more bytes, then decodes.
        let mut buf = BytesMut::from(&whole[..cut]);
        assert_eq!(d.decode(&mut buf), Ok(None), "cut {cut}");
        buf.extend_from_slice(&whole[cut..]);
        assert!(matches!(d.decode(&mut buf), Ok(Some(Incoming::Frame(_)))));
        assert!(buf.is_empty());
    }
}

#[test]
fn missing_nul_is_truncated() {
    assert_eq!(err(b"SEND\ndestination:/a\n\nbody"), FrameError::Truncated);
    assert_eq!(err(b"DISCONNECT\n\n"), FrameError::Truncated);
}

#[test]
fn unknown_and_server_commands_are_refused() {
    assert_eq!(
        err(b"HELLO\n\n\0"),
        FrameError::UnknownCommand("HELLO".into())
    );
    assert_eq!(
        err(b"send\n\n\0"),
        FrameError::UnknownCommand("send".into()),
        "commands are case-sensitive"
    );
    assert_eq!(
        err(b"MESSAGE\n\n\0"),
        FrameError::ServerCommand(Command::Message)
    );
    assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n"), FrameError::CommandTooLong);
    // A server-side decoder (for tests and clients) reads them.
    assert!(Decoder::any_command(Limits::default())
        .decode_message(b"RECEIPT\nreceipt-id:1\n\n\0")
        .is_ok());
}

#[test]
fn malformed_header_lines() {
    assert_eq!(
        err(b"SEND\nno-colon\n\n\0"),
        FrameError::HeaderWithoutColon("no-colon".into())
    );
    assert_eq!(err(b"SEND\na:b\rc\n\n\0"), FrameError::StrayCarriageReturn);
    assert_eq!(err(b"SEND\na:\xff\xfe\n\n\0"), FrameError::NotUtf8);
    // An empty value and a value with colons are fine (split at the first).
    let f = one(b"SEND\nempty:\nurl:http\\c//x\n\n\0");
    assert_eq!(f.header("empty"), Some(""));
    assert_eq!(f.header("url"), Some("http://x"));
}

#[test]
fn bodies_only_where_allowed() {
    assert_eq!(
        err(b"SUBSCRIBE\nid:0\n\nhello\0"),
        FrameError::UnexpectedBody(Command::Subscribe)
    );
    assert_eq!(
        err(b"DISCONNECT\ncontent-length:1\n\nx\0"),
        FrameError::UnexpectedBody(Command::Disconnect)
    );
}

#[test]
fn header_count_cap() {
    let d = small();
    assert!(d.decode_message(b"SEND\na:1\nb:2\nc:3\n\n\0").is_ok());
    assert_eq!(
        d.decode_message(b"SEND\na:1\nb:2\nc:3\nd:4\n\n\0"),
        Err(FrameError::TooManyHeaders { limit: 3 })
    );
    // Refused as soon as the fourth header line is complete, before the rest.
    let mut buf = BytesMut::from(&b"SEND\na:1\nb:2\nc:3\nd:4\n"[..]);
    assert_eq!(
        d.decode(&mut buf),
        Err(FrameError::TooManyHeaders { limit: 3 })
    );
}

#[test]
fn header_line_cap_counts_raw_bytes_and_ignores_the_eol() {
    let d = small();
    let exact = format!("SEND\n{}\r\n\n\0", "a:".to_owned() + &"x".repeat(18));
    assert!(d.decode_message(exact.as_bytes()).is_ok());
    let over = format!("SEND\n{}\n\n\0", "a:".to_owned() + &"x".repeat(19));
    assert_eq!(
        d.decode_message(over.as_bytes()),
        Err(FrameError::HeaderLineTooLong { limit: 20 })
    );
    // An endless line is refused without waiting for its end.
    let mut buf = BytesMut::from(format!("SEND\na:{}", "x".repeat(40)).as_bytes());
    assert_eq!(
        d.decode(&mut buf),
        Err(FrameError::HeaderLineTooLong { limit: 20 })
    );
}

#[test]
fn body_cap_with_and_without_content_length() {
    let d = small();
    assert!(d
        .decode_message(b"SEND\ncontent-length:8\n\n12345678\0")
        .is_ok());
    assert!(d.decode_message(b"SEND\n\n12345678\0").is_ok());
    // Declared too large: refused from the header alone.
    let mut buf = BytesMut::from(&b"SEND\ncontent-length:9\n\n"[..]);
    assert_eq!(
        d.decode(&mut buf),
        Err(FrameError::BodyTooLarge { size: 9, limit: 8 })
    );
    let mut buf = BytesMut::from(&b"SEND\ncontent-length:99999999999999999999999\n\n"[..]);
    assert!(matches!(
        Decoder::default().decode(&mut buf),
        Err(FrameError::BodyTooLarge { limit: 4096, .. })
    ));
    // No content-length: refused once more than the cap arrived without a NUL.
    let mut buf = BytesMut::from(&b"SEND\n\n123456789"[..]);
    assert_eq!(
        d.decode(&mut buf),
        Err(FrameError::UnterminatedBodyTooLarge { limit: 8 })
    );
    assert_eq!(
        d.decode_message(b"SEND\n\n123456789\0"),
        Err(FrameError::UnterminatedBodyTooLarge { limit: 8 })
    );
}

#[test]
fn errors_name_the_limit() {
    assert_eq!(
        FrameError::BodyTooLarge { size: 9, limit: 8 }.to_string(),
        "body of 9 bytes is larger than the limit of 8 bytes"
    );
    assert_eq!(
        FrameError::TooManyHeaders { limit: 3 }.to_string(),
        "more than 3 headers in one frame"
    );
    assert_eq!(
        FrameError::HeaderLineTooLong { limit: 20 }.to_string(),
        "a header line is longer than 20 bytes"
    );
}

#[test]
fn frames_decode_whatever_the_split_points() {
    let stream: &[u8] = b"CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0\nSUBSCRIBE\r\nid:s\r\ndestination:/topic/x\r\n\r\n\0SEND\ncontent-length:3\n\na\0b\0\n";
    let d = Decoder::default();
    let expected = d.decode_message(stream).unwrap();
    assert_eq!(expected.len(), 5);
    for split in 0..stream.len() {
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for part in [&stream[..split], &stream[split..]] {
            buf.extend_from_slice(part);
            while let Some(incoming) = d.decode(&mut buf).unwrap() {
                got.push(incoming);
            }
        }
        assert_eq!(got, expected, "split at {split}");
    }
}
