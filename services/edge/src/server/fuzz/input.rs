//! The fuzz cases: generated requests, clean or broken, sometimes
//! mutated, cut into the pieces the client delivers one read at a time.

use rand::{rngs::StdRng, Rng};

use crate::server::MAX_HEAD;

/// One generated request: a valid one when `clean`, else plausible but
/// often broken.
fn request(rng: &mut StdRng, clean: bool) -> Vec<u8> {
    let pick = |rng: &mut StdRng, items: &[&'static str]| items[rng.random_range(0..items.len())];
    let method = if clean {
        pick(rng, &["GET", "GET", "GET", "POST", "DELETE", "PUT", "HEAD"])
    } else {
        pick(
            rng,
            &["GET", "POST", "DELETE", "OPTIONS", "get", "G=T", "PATCH"],
        )
    };
    let mut path = pick(
        rng,
        &[
            "/v1/login-sessions/q3Zb0Xz2kT9yLw1sJm5HAA/events",
            "/v1/login-sessions/q3Zb0Xz2kT9yLw1sJm5HAA/events?since=3",
            "/v1/login-sessions/q3Zb0Xz2kT9yLw1sJm5HAA/ws",
            "/v1/login-sessions/q3Zb0Xz2kT9yLw1sJm5HAA",
            "/v1/login-sessions//events",
            "/v1/login-sessions",
            "/nope",
            "/",
            "*",
            "/%zz/events",
            "/v1/login-sessions/a b/events",
            "http://edge/v1/login-sessions/x/events",
            "/v1/login-sessions/x/events#frag",
        ],
    )
    .to_owned();
    if clean && path.contains(' ') {
        path = "/v1/login-sessions/q3Zb0Xz2kT9yLw1sJm5HAA/events".into();
    }
    if rng.random_bool(0.05) {
        path.push_str(&"a".repeat(rng.random_range(1..MAX_HEAD + 200)));
    }
    let version = if clean {
        pick(rng, &["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0"])
    } else {
        pick(
            rng,
            &[
                "HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "HTTP/1", "http/1.1",
            ],
        )
    };
    let eol = |rng: &mut StdRng| if rng.random_bool(0.85) { "\r\n" } else { "\n" };
    let mut text = String::new();
    if rng.random_bool(0.05) {
        text.push_str(eol(rng));
    }
    text.push_str(&format!("{method} {path} {version}{}", eol(rng)));
    let mut body = Vec::new();
    let headers = rng.random_range(0..8) + if rng.random_bool(0.05) { 45 } else { 0 };
    for i in 0..headers {
        let kind = if clean {
            *[0, 1, 2, 3, 4, 6, 7, 8, 10, 12, 14, 15]
                .get(rng.random_range(0..12))
                .unwrap()
        } else {
            rng.random_range(0..16)
        };
        let line = match kind {
            0 => "Host: edge".to_owned(),
            1 => "Connection: close".to_owned(),
            2 => "Connection: keep-alive".to_owned(),
            3 => "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".to_owned(),
            4 => {
                let n = rng.random_range(0..40);
                body = vec![b'{'; n];
                format!("Content-Length: {}", n + rng.random_range(0..2))
            }
            5 => "Content-Length: abc".to_owned(),
            6 => {
                body = b"3\r\n{}x\r\n0\r\n\r\n".to_vec();
                "Transfer-Encoding: chunked".to_owned()
            }
            7 => "Last-Event-ID: 4".to_owned(),
            8 => format!("X-Long: {}", "v".repeat(rng.random_range(100..5000))),
            9 => "Bad Header: x".to_owned(),
            10 => "X-Obs: caf\u{e9}".to_owned(),
            11 => " folded".to_owned(),
            12 => "Expect: 100-continue".to_owned(),
            13 => "NoColon".to_owned(),
            _ => format!("X-H{i}: {}", rng.random_range(0..1000)),
        };
        for part in line.split("\r\n") {
            text.push_str(part);
            text.push_str(eol(rng));
        }
    }
    text.push_str(eol(rng));
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// Some requests in a row, then mutated now and then, then cut into pieces.
pub(super) fn case(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let clean = rng.random_bool(0.6);
    let mut bytes = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        bytes.extend(request(rng, clean));
    }
    for _ in 0..if clean { 0 } else { rng.random_range(0..4) } {
        if bytes.is_empty() || rng.random_bool(0.5) {
            continue;
        }
        let at = rng.random_range(0..bytes.len());
        match rng.random_range(0..5) {
            0 => bytes[at] = rng.random(),
            1 => bytes.insert(at, rng.random()),
            2 => {
                let end = (at + rng.random_range(1..16)).min(bytes.len());
                bytes.drain(at..end);
            }
            3 => bytes.truncate(at),
            _ => bytes.insert(
                at,
                *[b'\n', b'\r', 0u8, b' ', b':']
                    .get(rng.random_range(0..5))
                    .unwrap(),
            ),
        }
    }
    if rng.random_bool(0.03) {
        bytes = (0..rng.random_range(1..200))
            .map(|_| rng.random())
            .collect();
    }
    let mut pieces = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let n = match rng.random_range(0..4) {
            0 => 1,
            1 => rng.random_range(1..=16),
            _ => rng.random_range(1..=rest.len()),
        }
        .min(rest.len());
        pieces.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    pieces
}
