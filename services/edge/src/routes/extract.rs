//! Reading requests: session ids, secrets and cookies, query values, JSON
//! bodies, the user agent. Everything here answers bad input with an
//! [`ApiError`]. Where a request comes from is `origin.rs`'s.

use std::time::Duration;

use axum::{
    body::Bytes,
    extract::rejection::BytesRejection,
    http::{header, HeaderMap, StatusCode},
};
use serde::de::DeserializeOwned;

use crate::{domain::SessionId, error::ApiError};

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

/// Name of the browser-secret cookie of session `id`. With `Secure` it
/// carries the `__Secure-` prefix (a browser accepts such a cookie only
/// from a secure origin and only with `Secure`); `__Host-` would also pin
/// it to `Path=/`, and this cookie is scoped to its session's path.
pub fn secret_cookie_name(id: &SessionId, secure: bool) -> String {
    if secure {
        format!("__Secure-qrl_bs_{id}")
    } else {
        format!("qrl_bs_{id}")
    }
}

/// Name of the login cookie set by redeem: `__Host-qrl_session` with
/// `Secure` (`Path=/`, no `Domain`: the browser keeps it to this host).
pub fn login_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-qrl_session"
    } else {
        "qrl_session"
    }
}

/// The value of cookie `name`, if the request carries a non-empty one.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v)
}

/// The browser secret of session `id`: cookie `__Secure-qrl_bs_<id>` or
/// `qrl_bs_<id>`, else `Authorization: Bearer`. Never taken from the URL.
pub fn browser_secret(headers: &HeaderMap, id: &SessionId) -> Result<String, ApiError> {
    cookie_value(headers, &secret_cookie_name(id, true))
        .or_else(|| cookie_value(headers, &secret_cookie_name(id, false)))
        .or_else(|| bearer(headers))
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::Unauthenticated(
                "the browser secret of this login session is missing (cookie or Authorization: Bearer)"
                    .into(),
            )
        })
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

/// Whether the request says its body is JSON (`application/json`, with
/// or without parameters).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// Decodes an optional JSON body: empty means `T::default()`. A non-empty
/// body must say `Content-Type: application/json` (a form or `text/plain`
/// is what a cross-site page can send without asking first).
pub fn json_body<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
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
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidArgument(format!("bad JSON body: {e}")))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, on `path`, kept for
/// `max_age` (whole seconds; a browser forgets it afterwards instead of
/// collecting one stale cookie per login).
pub fn cookie(name: &str, value: &str, path: &str, secure: bool, max_age: Duration) -> String {
    let secure = if secure { "; Secure" } else { "" };
    let max_age = max_age.as_secs();
    format!("{name}={value}; HttpOnly; SameSite=Strict; Path={path}; Max-Age={max_age}{secure}")
}

/// Characters that change how text around them is displayed without being
/// visible themselves: Unicode format characters (general category Cf,
/// among them the bidirectional overrides U+202A–U+202E and isolates
/// U+2066–U+2069) and the line and paragraph separators.
fn is_invisible_format(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891
        | 0x08E2 | 0x180E | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x2064
        | 0x2066..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD
        | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0001
        | 0xE0020..=0xE007F)
}

/// The User-Agent as the phone will show it: control and format characters
/// removed (a U+202E in it would make the phone show text reversed), cut
/// to at most 512 bytes on a character boundary.
pub fn user_agent(headers: &HeaderMap) -> String {
    let raw = headers
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .unwrap_or_default();
    let mut ua = String::with_capacity(raw.len().min(512));
    for c in raw
        .chars()
        .filter(|&c| !c.is_control() && !is_invisible_format(c))
    {
        if ua.len() + c.len_utf8() > 512 {
            break;
        }
        ua.push(c);
    }
    ua
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
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
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Secure-qrl_bs_q3Zb0Xz2kT9yLw1sJm5HAA=s3cure"),
        );
        assert_eq!(browser_secret(&h, &id).unwrap(), "s3cure");
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        assert_eq!(browser_secret(&h, &id).unwrap(), "tok");
    }

    #[test]
    fn cookies_carry_max_age_and_prefixes() {
        let id = SessionId::parse("q3Zb0Xz2kT9yLw1sJm5HAA").unwrap();
        assert_eq!(
            secret_cookie_name(&id, false),
            "qrl_bs_q3Zb0Xz2kT9yLw1sJm5HAA"
        );
        assert_eq!(
            secret_cookie_name(&id, true),
            "__Secure-qrl_bs_q3Zb0Xz2kT9yLw1sJm5HAA"
        );
        assert_eq!(login_cookie_name(true), "__Host-qrl_session");
        assert_eq!(
            cookie("n", "v", "/", true, Duration::from_millis(300_900)),
            "n=v; HttpOnly; SameSite=Strict; Path=/; Max-Age=300; Secure"
        );
    }

    #[test]
    fn json_bodies_must_say_so() {
        let json = headers(&[("content-type", b"application/json; charset=utf-8")]);
        let form = headers(&[("content-type", b"application/x-www-form-urlencoded")]);
        let body = || Ok(Bytes::from_static(b"{}"));
        let parsed: Result<serde_json::Value, _> = json_body(&json, body(), 64);
        assert!(parsed.is_ok());
        let refused: Result<serde_json::Value, _> = json_body(&form, body(), 64);
        assert!(matches!(refused, Err(ApiError::UnsupportedMediaType)));
        let refused: Result<serde_json::Value, _> = json_body(&HeaderMap::new(), body(), 64);
        assert!(matches!(refused, Err(ApiError::UnsupportedMediaType)));
        // An empty body needs no type.
        let empty: Result<serde_json::Value, _> =
            json_body(&form, Ok(Bytes::from_static(b" ")), 64);
        assert!(empty.is_ok());
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

    /// Regression: bidirectional overrides and other format characters
    /// reached the phone, which could show "exe.cod" for "doc.exe".
    #[test]
    fn user_agent_loses_format_and_control_characters() {
        let mut h = HeaderMap::new();
        let ua = "Mozilla/5.0 \u{202E}exe.cod\u{202C} \u{2066}x\u{2069}\u{200B}\u{FEFF}\u{E0041}\u{00AD}\u{85}\u{2028}end";
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_bytes(ua.as_bytes()).unwrap(),
        );
        assert_eq!(user_agent(&h), "Mozilla/5.0 exe.cod xend");
    }
}
