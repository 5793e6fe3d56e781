//! Where a request comes from: the client's address (X-Forwarded-For,
//! walked from the right through trusted proxies only), the scheme it used
//! (a trusted X-Forwarded-Proto), and the site that sent it (Origin,
//! Sec-Fetch-Site) against the allowlist: the one check against cross-site
//! requests and cross-site WebSockets.

use std::net::{IpAddr, SocketAddr};

use axum::http::{header, HeaderMap};

use crate::{
    config::{CidrList, EdgeConfig},
    error::ApiError,
};

fn trusted(peer: IpAddr, proxies: &CidrList) -> bool {
    proxies.contains(peer)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// One X-Forwarded-For element: `IP`, `IPv4:port`, `[IPv6]` or
/// `[IPv6]:port`. Anything else (`unknown`, an obfuscated identifier,
/// garbage) is `None`.
fn forwarded_hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    text.strip_prefix('[')?
        .strip_suffix(']')?
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The client's address. The peer, unless it is a trusted proxy: then
/// X-Forwarded-For is walked from the right (each trusted proxy appends
/// the address of its own peer), and the answer is the first hop that is
/// not a trusted proxy. A hop that cannot be read ends the walk without
/// being believed: the answer is then the last address a trusted proxy
/// vouched for (the proxy that wrote the unreadable hop), never something
/// further left, which the client may have written itself.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, proxies: &CidrList) -> IpAddr {
    let mut ip = canonical(peer.ip());
    if !trusted(ip, proxies) {
        return ip;
    }
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(value) = value.to_str() else {
            return ip;
        };
        for hop in value.split(',').rev() {
            let Some(hop) = forwarded_hop(hop) else {
                return ip;
            };
            ip = canonical(hop);
            if !trusted(ip, proxies) {
                return ip;
            }
        }
    }
    ip
}

/// Whether the request reached the first proxy over TLS, as told by a
/// trusted peer's `X-Forwarded-Proto`: the last value (the one the peer
/// appended or set), never one further left that a client may have sent.
pub fn forwarded_https(peer: SocketAddr, headers: &HeaderMap, proxies: &CidrList) -> bool {
    trusted(peer.ip(), proxies)
        && headers
            .get_all("x-forwarded-proto")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// The host (lower case) and port of an origin or a `Host` header.
#[derive(Debug, PartialEq, Eq)]
struct Authority<'a> {
    host: std::borrow::Cow<'a, str>,
    port: u16,
}

/// Parses `host[:port]` (or `[v6][:port]`) with the scheme's default port.
fn authority(text: &str, default_port: u16) -> Option<Authority<'_>> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (&text[..v6.len() + 2], port)
    } else {
        let (host, port) = match text.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        };
        let name_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !name_ok {
            return None;
        }
        (host, port)
    };
    let port = match port {
        None => default_port,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse().ok()?
        }
        Some(_) => return None,
    };
    Some(Authority {
        host: if host.bytes().any(|b| b.is_ascii_uppercase()) {
            host.to_ascii_lowercase().into()
        } else {
            host.into()
        },
        port,
    })
}

/// A serialized origin `scheme://host[:port]`: its scheme and authority.
fn origin(text: &str) -> Option<(&'static str, Authority<'_>)> {
    let (scheme, rest) = text.split_once("://")?;
    let (scheme, port) = if scheme.eq_ignore_ascii_case("https") {
        ("https", 443)
    } else if scheme.eq_ignore_ascii_case("http") {
        ("http", 80)
    } else {
        return None;
    };
    Some((scheme, authority(rest, port)?))
}

/// The scheme the browser used: `https` when a trusted proxy says so.
pub fn request_scheme(peer: SocketAddr, headers: &HeaderMap, proxies: &CidrList) -> &'static str {
    if forwarded_https(peer, headers, proxies) {
        "https"
    } else {
        "http"
    }
}

/// Whether a browser may act on this node from where it says it is: the
/// check against cross-site requests (CSRF) and cross-site WebSockets.
///
/// - With `Origin`: it must be readable and in `QRLOGIN_ALLOWED_ORIGINS`,
///   or, when that list is empty, the same origin as the request (scheme
///   from the connection or a trusted `X-Forwarded-Proto`, and `Host`).
///   `null` and anything unreadable are refused (fail closed).
/// - Without `Origin`, `Sec-Fetch-Site` (sent by browsers that support
///   it): only `same-origin` and `none` (typed by the user) pass.
/// - With neither, the client is not a browser acting for a page: allowed.
pub fn check_origin(
    peer: SocketAddr,
    headers: &HeaderMap,
    config: &EdgeConfig,
) -> Result<(), ApiError> {
    if let Some(value) = headers.get(header::ORIGIN) {
        let text = value.to_str().map_err(|_| ApiError::OriginNotAllowed)?;
        let (scheme, from) = origin(text.trim()).ok_or(ApiError::OriginNotAllowed)?;
        let allowed = &config.allowed_origins.0;
        let ok = if allowed.is_empty() {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let ours = request_scheme(peer, headers, &config.trusted_proxies);
            let default_port = if ours == "https" { 443 } else { 80 };
            scheme == ours && authority(host.trim(), default_port).is_some_and(|h| h == from)
        } else {
            allowed
                .iter()
                .filter_map(|a| origin(a))
                .any(|(s, a)| s == scheme && a == from)
        };
        return if ok {
            Ok(())
        } else {
            Err(ApiError::OriginNotAllowed)
        };
    }
    match headers.get("sec-fetch-site").map(|v| v.as_bytes()) {
        None | Some(b"same-origin") | Some(b"none") => Ok(()),
        Some(_) => Err(ApiError::OriginNotAllowed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies() -> CidrList {
        CidrList(vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ])
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const PROXY: &str = "127.0.0.1:5000";

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let h = xff(&["203.0.113.9, 198.51.100.7, 10.1.2.3"]);
        let got = client_ip(PROXY.parse().unwrap(), &h, &proxies());
        assert_eq!(got, ip("198.51.100.7"));
        let got = client_ip("192.0.2.1:5000".parse().unwrap(), &h, &proxies());
        assert_eq!(got, ip("192.0.2.1"));
    }

    /// Regression: hops a trusted proxy wrote with a port, or as `unknown`,
    /// were skipped, and the client-written address left of them believed.
    #[test]
    fn forwarded_for_never_skips_a_hop() {
        let peer: SocketAddr = PROXY.parse().unwrap();
        let cases: &[(&[&str], &str)] = &[
            // Port forms are read, not skipped.
            (&["203.0.113.9, 198.51.100.7:4711"], "198.51.100.7"),
            (&["203.0.113.9, [2001:db8::7]:4711"], "2001:db8::7"),
            (&["203.0.113.9, [2001:db8::8]"], "2001:db8::8"),
            (&["203.0.113.9, 2001:db8::9"], "2001:db8::9"),
            (&["203.0.113.9,10.0.0.5:80, 198.51.100.7"], "198.51.100.7"),
            // Trusted hops with ports are walked through.
            (&["198.51.100.7, 10.0.0.5:80"], "198.51.100.7"),
            (&["198.51.100.7, [fd00::5]:80"], "198.51.100.7"),
            // An unreadable hop ends the walk: the last address a trusted
            // proxy vouched for is the answer, never the client's text.
            (&["203.0.113.9, unknown"], "127.0.0.1"),
            (&["203.0.113.9, _hidden"], "127.0.0.1"),
            (&["203.0.113.9, 10.0.0.5, unknown"], "127.0.0.1"),
            (&["203.0.113.9, unknown, 10.0.0.5"], "10.0.0.5"),
            (&["203.0.113.9, , 10.0.0.5"], "10.0.0.5"),
            (&["203.0.113.9, 1.2.3.4:99999"], "127.0.0.1"),
            (&["203.0.113.9, [2001:db8::7]:"], "127.0.0.1"),
            // Several header lines are one list, in order.
            (&["203.0.113.9", "198.51.100.7"], "198.51.100.7"),
            (&["203.0.113.9", "10.0.0.5"], "203.0.113.9"),
            (&["203.0.113.9", "junk"], "127.0.0.1"),
            // Only trusted hops: the leftmost trusted one.
            (&["10.0.0.5, 10.0.0.6"], "10.0.0.5"),
            // IPv4-mapped addresses are IPv4.
            (&["::ffff:198.51.100.7"], "198.51.100.7"),
        ];
        for (values, want) in cases {
            assert_eq!(
                client_ip(peer, &xff(values), &proxies()),
                ip(want),
                "{values:?}"
            );
        }
        // A header that is not text ends the walk too.
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"203.0.113.9, \xff").unwrap(),
        );
        assert_eq!(client_ip(peer, &h, &proxies()), ip("127.0.0.1"));
    }

    /// Regression: the first `X-Forwarded-Proto` value (the one a client can
    /// send) was believed, not the one the trusted proxy appended.
    #[test]
    fn forwarded_proto_is_the_trusted_peers_value() {
        let peer: SocketAddr = PROXY.parse().unwrap();
        let proto = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-forwarded-proto", HeaderValue::from_str(v).unwrap());
            }
            h
        };
        assert!(forwarded_https(peer, &proto(&["https"]), &proxies()));
        assert!(forwarded_https(peer, &proto(&["http, https"]), &proxies()));
        assert!(!forwarded_https(peer, &proto(&["https, http"]), &proxies()));
        assert!(!forwarded_https(
            peer,
            &proto(&["https", "http"]),
            &proxies()
        ));
        assert!(forwarded_https(
            peer,
            &proto(&["http", "HTTPS"]),
            &proxies()
        ));
        assert!(!forwarded_https(
            "192.0.2.1:1".parse().unwrap(),
            &proto(&["https"]),
            &proxies()
        ));
    }

    fn config(allowed: &[&str]) -> EdgeConfig {
        let mut c = EdgeConfig::defaults();
        c.allowed_origins =
            crate::config::OriginList(allowed.iter().map(|s| s.to_string()).collect());
        c
    }

    #[test]
    fn origins_are_checked_fail_closed() {
        let same = config(&[]);
        let listed = config(&["https://login.example", "http://localhost:8080"]);
        // (allowed?, peer is the trusted proxy?, list, Host, Origin, other header)
        type Case<'a> = (
            bool,
            bool,
            &'a EdgeConfig,
            &'a str,
            Option<&'a [u8]>,
            Option<(&'a str, &'a str)>,
        );
        #[rustfmt::skip]
        let cases: &[Case] = &[
            // Same origin: scheme and host, default ports normalised.
            (true, false, &same, "login.example:8080", Some(b"http://login.example:8080"), None),
            (true, false, &same, "Login.Example", Some(b"http://login.example:80"), None),
            (true, false, &same, "[::1]:8080", Some(b"http://[::1]:8080"), None),
            // Regression: the scheme was ignored.
            (false, false, &same, "login.example", Some(b"https://login.example"), None),
            (true, true, &same, "login.example", Some(b"https://login.example"), Some(("x-forwarded-proto", "https"))),
            (false, true, &same, "login.example", Some(b"http://login.example"), Some(("x-forwarded-proto", "https"))),
            (false, false, &same, "login.example", Some(b"http://evil.example"), None),
            (false, false, &same, "login.example", Some(b"http://login.example.evil"), None),
            (false, false, &same, "", Some(b"http://login.example"), None),
            // Regression: a non-ASCII Origin was treated as absent (allowed).
            (false, false, &same, "login.example", Some("http://login.ex\u{e4}mple".as_bytes()), None),
            (false, false, &same, "login.example", Some(b"null"), None),
            (false, false, &same, "login.example", Some(b""), None),
            (false, false, &same, "login.example", Some(b"login.example"), None),
            (false, false, &same, "login.example", Some(b"ftp://login.example"), None),
            (false, false, &same, "login.example", Some(b"http://login.example/"), None),
            (false, false, &same, "login.example", Some(b"http://login.example:x"), None),
            (false, false, &same, "login.example", Some(b"http://user@login.example"), None),
            // An allowlist is exact: scheme, host and port.
            (true, false, &listed, "api.example", Some(b"https://login.example"), None),
            (true, false, &listed, "api.example", Some(b"https://login.example:443"), None),
            (false, false, &listed, "api.example", Some(b"http://login.example"), None),
            (false, false, &listed, "login.example", Some(b"https://api.example"), None),
            (true, false, &listed, "", Some(b"http://LOCALHOST:8080"), None),
            // Without Origin: Sec-Fetch-Site, else a client that is no browser.
            (true, false, &same, "", None, None),
            (true, false, &same, "", None, Some(("sec-fetch-site", "same-origin"))),
            (true, false, &same, "", None, Some(("sec-fetch-site", "none"))),
            (false, false, &same, "", None, Some(("sec-fetch-site", "cross-site"))),
            (false, false, &listed, "", None, Some(("sec-fetch-site", "same-site"))),
        ];
        for (i, &(allowed, via_proxy, config, host, origin, other)) in cases.iter().enumerate() {
            let peer: SocketAddr = if via_proxy { PROXY } else { "192.0.2.1:1" }
                .parse()
                .unwrap();
            let mut h = HeaderMap::new();
            if !host.is_empty() {
                h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            }
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_bytes(o).unwrap());
            }
            if let Some((k, v)) = other {
                h.insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            assert_eq!(check_origin(peer, &h, config).is_ok(), allowed, "case {i}");
        }
    }
}
