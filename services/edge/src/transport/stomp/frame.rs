//! Decoding STOMP 1.2 frames that clients send, with every size bounded
//! before it is buffered (https://stomp.github.io/stomp-specification-1.2.html,
//! "STOMP Frames" and "Augmented BNF").
//!
//! A frame is a command line, header lines, an empty line, a body and a NUL.
//! Lines end with LF or CRLF. Header names and values are UTF-8 and escaped
//! (`\r`, `\n`, `\c`, `\\`; any other escape is an error) except in CONNECT,
//! where STOMP 1.0 compatibility forbids escaping. A repeated header keeps
//! every entry, and [`Frame::header`] answers with the first one, as the
//! specification says. A body is either exactly `content-length` bytes (it
//! may then hold NULs) followed by a NUL, or everything up to the first NUL.
//! EOLs between frames are heart-beats.

use bytes::{Buf, Bytes, BytesMut};

pub use super::command::Command;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: Command,
    /// Every header entry in order, unescaped; repeated names are kept.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Frame {
    /// The value of the first entry named `name` (the specification: "only
    /// the first header entry SHOULD be used").
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What came next on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// An EOL between frames: a client heart-beat.
    HeartBeat,
    Frame(Frame),
}

/// Bounds on what one frame may hold. Checked while bytes arrive, so a
/// client can never make the decoder buffer more than about
/// `max_headers * max_header_line + max_body` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Header entries per frame.
    pub max_headers: usize,
    /// Bytes in one header line, escapes included, EOL excluded.
    pub max_header_line: usize,
    /// Bytes in a body (declared by `content-length` or found before the NUL).
    pub max_body: usize,
}

impl Default for Limits {
    /// Enough for every frame stompjs sends to qrlogin (CONNECT with a few
    /// headers, SUBSCRIBE, an empty SEND, DISCONNECT) with room to spare.
    fn default() -> Self {
        Self {
            max_headers: 32,
            max_header_line: 1024,
            max_body: 4096,
        }
    }
}

/// Longest command line: "UNSUBSCRIBE" and "DISCONNECT" plus a CR.
const MAX_COMMAND_LINE: usize = 12;

/// Why a frame was refused. The texts name the limit or the rule, so the
/// ERROR frame that carries them tells a client exactly what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("{0} is a server frame; a client may not send it")]
    ServerCommand(Command),
    #[error("header line without a colon: {0:?}")]
    HeaderWithoutColon(String),
    #[error("undefined escape sequence \\{0} in a header")]
    BadEscape(char),
    #[error("a header ends in an unfinished escape sequence")]
    UnfinishedEscape,
    #[error("carriage return inside a line (only CRLF ends a line)")]
    StrayCarriageReturn,
    #[error("header or command is not UTF-8")]
    NotUtf8,
    #[error("more than {limit} headers in one frame")]
    TooManyHeaders { limit: usize },
    #[error("a header line is longer than {limit} bytes")]
    HeaderLineTooLong { limit: usize },
    #[error("command line longer than {MAX_COMMAND_LINE} bytes")]
    CommandTooLong,
    #[error("body of {size} bytes is larger than the limit of {limit} bytes")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("body without content-length is larger than the limit of {limit} bytes")]
    UnterminatedBodyTooLarge { limit: usize },
    #[error("content-length {0:?} is not a number of bytes")]
    BadContentLength(String),
    #[error("the body is not followed by NUL where content-length {0} ends it")]
    ContentLengthMismatch(usize),
    #[error("{0} frames may not have a body")]
    UnexpectedBody(Command),
    #[error("the message ends inside a frame")]
    Truncated,
}

/// Decodes client frames from a byte stream or from WebSocket messages.
#[derive(Debug, Clone)]
pub struct Decoder {
    limits: Limits,
    /// Accept server commands too (tests decode what the encoder wrote).
    any_command: bool,
}

impl Decoder {
    /// A decoder of client frames.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            any_command: false,
        }
    }

    /// A decoder that also accepts server frames (for reading back what the
    /// encoder wrote, and for clients).
    pub fn any_command(limits: Limits) -> Self {
        Self {
            limits,
            any_command: true,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes the next heart-beat or whole frame from the front of `buf`.
    /// `Ok(None)`: more bytes are needed (and what is there is within the
    /// limits).
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Incoming>, FrameError> {
        if buf.first() == Some(&b'\n') {
            buf.advance(1);
            return Ok(Some(Incoming::HeartBeat));
        }
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            return Ok(Some(Incoming::HeartBeat));
        }
        if buf.as_ref() == b"\r" {
            return Ok(None);
        }
        match self.parse(buf)? {
            Some((frame, used)) => {
                buf.advance(used);
                Ok(Some(Incoming::Frame(frame)))
            }
            None => Ok(None),
        }
    }

    /// Decodes one WebSocket message, which must hold whole frames and
    /// heart-beats only (stompjs never splits a frame unless told to).
    pub fn decode_message(&self, message: &[u8]) -> Result<Vec<Incoming>, FrameError> {
        let mut buf = BytesMut::from(message);
        let mut out = Vec::new();
        while !buf.is_empty() {
            match self.decode(&mut buf)? {
                Some(incoming) => out.push(incoming),
                None => return Err(FrameError::Truncated),
            }
        }
        Ok(out)
    }

    /// Parses a frame at the start of `input`; returns it and the bytes used.
    fn parse(&self, input: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let mut pos = 0;
        let Some(line) =
            next_line(input, &mut pos, MAX_COMMAND_LINE).map_err(|_| FrameError::CommandTooLong)?
        else {
            return Ok(None);
        };
        let command = Command::parse(line).ok_or_else(|| {
            FrameError::UnknownCommand(String::from_utf8_lossy(line).into_owned())
        })?;
        if !command.is_client() && !self.any_command {
            return Err(FrameError::ServerCommand(command));
        }
        let mut headers = Vec::new();
        loop {
            let limit = self.limits.max_header_line;
            let Some(line) = next_line(input, &mut pos, limit)
                .map_err(|_| FrameError::HeaderLineTooLong { limit })?
            else {
                return Ok(None);
            };
            if line.is_empty() {
                break;
            }
            if headers.len() == self.limits.max_headers {
                return Err(FrameError::TooManyHeaders {
                    limit: self.limits.max_headers,
                });
            }
            headers.push(parse_header(line, command.escapes_headers())?);
        }
        let declared = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| parse_length(v))
            .transpose()?;
        let rest = &input[pos..];
        let (body, used) = match declared {
            Some(size) => {
                if size > self.limits.max_body {
                    return Err(FrameError::BodyTooLarge {
                        size,
                        limit: self.limits.max_body,
                    });
                }
                if rest.len() <= size {
                    return Ok(None);
                }
                if rest[size] != 0 {
                    return Err(FrameError::ContentLengthMismatch(size));
                }
                (&rest[..size], size + 1)
            }
            None => match rest.iter().position(|&b| b == 0) {
                Some(end) if end > self.limits.max_body => {
                    return Err(FrameError::UnterminatedBodyTooLarge {
                        limit: self.limits.max_body,
                    })
                }
                Some(end) => (&rest[..end], end + 1),
                None if rest.len() > self.limits.max_body => {
                    return Err(FrameError::UnterminatedBodyTooLarge {
                        limit: self.limits.max_body,
                    })
                }
                None => return Ok(None),
            },
        };
        if !body.is_empty() && !command.allows_body() {
            return Err(FrameError::UnexpectedBody(command));
        }
        let frame = Frame {
            command,
            headers,
            body: Bytes::copy_from_slice(body),
        };
        Ok(Some((frame, pos + used)))
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// The line starting at `*pos` without its EOL (LF or CRLF), moving `*pos`
/// past it. `Ok(None)`: no EOL yet. `Err(())`: longer than `limit`.
fn next_line<'a>(input: &'a [u8], pos: &mut usize, limit: usize) -> Result<Option<&'a [u8]>, ()> {
    let rest = &input[*pos..];
    let window = &rest[..rest.len().min(limit + 2)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if rest.len() > limit + 1 {
            Err(())
        } else {
            Ok(None)
        };
    };
    let line = match rest[..lf].strip_suffix(b"\r") {
        Some(line) => line,
        None => &rest[..lf],
    };
    if line.len() > limit {
        return Err(());
    }
    *pos += lf + 1;
    Ok(Some(line))
}

fn parse_header(line: &[u8], escaped: bool) -> Result<(String, String), FrameError> {
    if line.contains(&b'\r') {
        return Err(FrameError::StrayCarriageReturn);
    }
    let text = std::str::from_utf8(line).map_err(|_| FrameError::NotUtf8)?;
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| FrameError::HeaderWithoutColon(text.to_owned()))?;
    if !escaped {
        return Ok((name.to_owned(), value.to_owned()));
    }
    Ok((unescape(name)?, unescape(value)?))
}

/// Undoes the STOMP 1.2 header escaping; undefined escapes are errors.
pub fn unescape(text: &str) -> Result<String, FrameError> {
    if !text.contains('\\') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('\\') => out.push('\\'),
            Some(other) => return Err(FrameError::BadEscape(other)),
            None => return Err(FrameError::UnfinishedEscape),
        }
    }
    Ok(out)
}

fn parse_length(text: &str) -> Result<usize, FrameError> {
    let bad = || FrameError::BadContentLength(text.to_owned());
    let digits = text.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    // Anything too long for usize is above every limit anyway.
    Ok(digits.parse().unwrap_or(usize::MAX))
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
