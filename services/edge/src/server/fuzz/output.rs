//! Reading what a server wrote back as a sequence of answers, and
//! comparing the front's with hyper's.

use super::NODE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body by status (1xx, 204, 304).
    None,
    Length,
    Chunked,
    /// Until the connection closes.
    Close,
}

#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) framing: Framing,
    close: bool,
    node: bool,
    json: bool,
    body: Vec<u8>,
}

/// Splits a server's output into responses. `Err` when the output is not
/// a well-formed sequence of HTTP/1.1 responses.
pub(super) fn answers(mut out: &[u8]) -> Result<Vec<Answer>, String> {
    let mut all = Vec::new();
    while !out.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let n = match resp.parse(out) {
            Ok(httparse::Status::Complete(n)) => n,
            other => return Err(format!("bad response head ({other:?})")),
        };
        let status = resp.code.ok_or("no status")?;
        let get = |name: &str| {
            resp.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                .collect::<Vec<_>>()
        };
        let length = get("content-length");
        let chunked = get("transfer-encoding")
            .iter()
            .any(|v| v.contains("chunked"));
        let close = get("connection").iter().any(|v| v.contains("close"));
        let node = get("x-edge-node") == [NODE.to_owned()];
        let json = get("content-type")
            .iter()
            .any(|v| v.starts_with("application/json"));
        let rest = &out[n..];
        // An answer to HEAD announces a body it does not send: the next
        // answer follows at once.
        let headless = rest.starts_with(b"HTTP/1.");
        let (framing, body, used) =
            if (100..200).contains(&status) || status == 204 || status == 304 {
                (Framing::None, Vec::new(), 0)
            } else if headless {
                let framing = if chunked {
                    Framing::Chunked
                } else if length.is_empty() {
                    Framing::Close
                } else {
                    Framing::Length
                };
                (framing, Vec::new(), 0)
            } else if chunked {
                let (body, used) = dechunk(rest)?;
                (Framing::Chunked, body, used)
            } else if let Some(len) = length.first() {
                let len: usize = len.trim().parse().map_err(|_| "bad content-length")?;
                // A HEAD answer announces a length it does not send.
                let len = len.min(rest.len());
                (Framing::Length, rest[..len].to_vec(), len)
            } else {
                (Framing::Close, rest.to_vec(), rest.len())
            };
        all.push(Answer {
            status,
            framing,
            close,
            node,
            json,
            body,
        });
        out = &rest[used..];
    }
    Ok(all)
}

fn dechunk(mut data: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let start = data.len();
    let mut body = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("unterminated chunk size")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..line_end]).map_err(|_| "chunk size")?,
            16,
        )
        .map_err(|_| "chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            if !data.starts_with(b"\r\n") {
                return Err("no end of chunked body".into());
            }
            data = &data[2..];
            return Ok((body, start - data.len()));
        }
        if data.len() < size + 2 || &data[size..size + 2] != b"\r\n" {
            return Err("truncated chunk".into());
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Why the front's answer to `pieces` differs from hyper's, if it does.
pub(super) fn compare(front: &[u8], hyper: &[u8]) -> Result<(), String> {
    let ours = answers(front).map_err(|e| format!("front wrote a bad response: {e}"))?;
    let theirs = answers(hyper).map_err(|e| format!("hyper wrote a bad response: {e}"))?;
    for (i, a) in ours.iter().enumerate() {
        let Some(b) = theirs.get(i) else {
            return Err(format!(
                "front answered {} times, hyper {}",
                ours.len(),
                theirs.len()
            ));
        };
        if a.status != b.status || a.framing != b.framing {
            return Err(format!(
                "answer {i}: front {} {:?}, hyper {} {:?}",
                a.status, a.framing, b.status, b.framing
            ));
        }
        if a.status >= 200 && !a.node {
            return Err(format!("answer {i} ({}) lacks X-Edge-Node", a.status));
        }
        if a.status >= 400 && !a.body.is_empty() {
            let json: Option<serde_json::Value> = serde_json::from_slice(&a.body).ok();
            let code = json.as_ref().and_then(|j| j["error"]["code"].as_str());
            if !a.json || code.is_none() {
                return Err(format!("answer {i} ({}) is not a JSON error", a.status));
            }
        }
        // The front's own refusals replace hyper's empty ones; every other
        // answer comes from the same router.
        if b.node && a.body != b.body {
            return Err(format!("answer {i}: bodies differ"));
        }
        if a.close {
            return Ok(());
        }
    }
    if ours.len() != theirs.len() {
        return Err(format!(
            "front answered {} times, hyper {}",
            ours.len(),
            theirs.len()
        ));
    }
    Ok(())
}

/// Bytes for a failure message, long runs of one byte shortened.
pub(super) fn shown(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..].iter().take_while(|&&b| b == bytes[i]).count();
        if run > 16 {
            out.push_str(&format!("{:?}×{run}", bytes[i] as char));
        } else {
            out.push_str(
                &String::from_utf8_lossy(&bytes[i..i + run])
                    .escape_debug()
                    .to_string(),
            );
        }
        i += run;
    }
    out
}

pub(super) fn show(pieces: &[Vec<u8>]) -> String {
    pieces
        .iter()
        .map(|p| shown(p))
        .collect::<Vec<_>>()
        .join(" | ")
}
