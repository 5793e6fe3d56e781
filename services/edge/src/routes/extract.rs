//! Reading requests: session ids, secrets, client addresses, query values,
//! JSON bodies. Everything here answers bad input with an [`ApiError`].

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::rejection::BytesRejection,
    http::{header, HeaderMap, StatusCode},
};
use serde::de::DeserializeOwned;

use crate::{config::CidrList, domain::SessionId, error::ApiError};

pub fn session_id(text: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(text).map_err(|e| ApiError::InvalidArgument(e.to_string()))
}

/// The `Bearer` value of the Authorization header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The browser secret of session `id`: cookie `qrl_bs_<id>`, else
/// `Authorization: Bearer`. Never taken from the URL.
pub fn browser_secret(headers: &HeaderMap, id: &SessionId) -> Result<String, ApiError> {
    let name = format!("qrl_bs_{id}");
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                if k == name && !v.is_empty() {
                    return Ok(v.to_owned());
                }
            }
        }
    }
    bearer(headers).map(str::to_owned).ok_or_else(|| {
        ApiError::Unauthenticated(
            "the browser secret of this login session is missing (cookie or Authorization: Bearer)"
                .into(),
        )
    })
}

fn trusted(peer: IpAddr, proxies: &CidrList) -> bool {
    let peer = canonical(peer);
    proxies.0.iter().any(|net| net.contains(&peer))
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the
/// nearest X-Forwarded-For hop that is not itself a trusted proxy.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, proxies: &CidrList) -> IpAddr {
    let mut ip = canonical(peer.ip());
    if !trusted(ip, proxies) {
        return ip;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse::<IpAddr>().ok())
        .collect();
    for hop in hops.into_iter().rev() {
        ip = canonical(hop);
        if !trusted(ip, proxies) {
            break;
        }
    }
    ip
}

/// Whether the request reached the first proxy over TLS, as told by a
/// trusted proxy's `X-Forwarded-Proto`.
pub fn forwarded_https(peer: SocketAddr, headers: &HeaderMap, proxies: &CidrList) -> bool {
    trusted(peer.ip(), proxies)
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// One value of a raw query string (no percent-decoding: every value the
/// API takes is a number or a duration).
pub fn query_value<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// A version number given as `since` or `Last-Event-ID`.
pub fn version(text: &str, what: &str) -> Result<u64, ApiError> {
    text.trim()
        .parse()
        .map_err(|_| ApiError::InvalidArgument(format!("{what} must be a version number")))
}

/// `wait` as `25`, `25s` or `2500ms`.
pub fn wait(text: &str) -> Result<Duration, ApiError> {
    let bad = || ApiError::InvalidArgument("wait must look like 25, 25s or 2500ms".into());
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse().map(Duration::from_millis).map_err(|_| bad());
    }
    let secs = text.strip_suffix('s').unwrap_or(text);
    secs.parse().map(Duration::from_secs).map_err(|_| bad())
}

/// Decodes an optional JSON body: empty means `T::default()`.
pub fn json_body<T: DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, ApiError> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::InvalidArgument(r.body_text())
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidArgument(format!("bad JSON body: {e}")))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, on `path`.
pub fn cookie(name: &str, value: &str, path: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; HttpOnly; SameSite=Strict; Path={path}{secure}")
}

/// The User-Agent, cut to at most 512 bytes on a character boundary.
pub fn user_agent(headers: &HeaderMap) -> String {
    let ua = headers
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let mut end = ua.len().min(512);
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    ua[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies() -> CidrList {
        CidrList(vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ])
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.1.2.3"),
        );
        let ip = client_ip("127.0.0.1:5000".parse().unwrap(), &h, &proxies());
        assert_eq!(ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        let ip = client_ip("192.0.2.1:5000".parse().unwrap(), &h, &proxies());
        assert_eq!(ip, "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn secret_comes_from_cookie_or_bearer() {
        let id = SessionId::parse("q3Zb0Xz2kT9yLw1sJm5HAA").unwrap();
        let mut h = HeaderMap::new();
        assert!(matches!(
            browser_secret(&h, &id),
            Err(ApiError::Unauthenticated(_))
        ));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; qrl_bs_q3Zb0Xz2kT9yLw1sJm5HAA=s3cret"),
        );
        assert_eq!(browser_secret(&h, &id).unwrap(), "s3cret");
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        assert_eq!(browser_secret(&h, &id).unwrap(), "tok");
    }

    #[test]
    fn wait_and_since_parse_or_refuse() {
        assert_eq!(wait("25").unwrap(), Duration::from_secs(25));
        assert_eq!(wait("25s").unwrap(), Duration::from_secs(25));
        assert_eq!(wait("2500ms").unwrap(), Duration::from_millis(2500));
        assert!(wait("soon").is_err());
        assert!(version("-1", "since").is_err());
        assert_eq!(query_value(Some("since=7&wait=2s"), "wait"), Some("2s"));
        assert_eq!(query_value(Some("since=7"), "wait"), None);
    }

    #[test]
    fn user_agent_is_cut_on_a_char_boundary() {
        let mut h = HeaderMap::new();
        let long = "é".repeat(400);
        h.insert(header::USER_AGENT, HeaderValue::from_str(&long).unwrap());
        let ua = user_agent(&h);
        assert!(ua.len() <= 512 && ua.len() >= 510);
    }
}
