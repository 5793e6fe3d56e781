//! What guards the browser routes: where a request comes from (Origin,
//! Sec-Fetch-Site, WebSocket handshake), what it sends (Content-Type),
//! what the edge answers with (cookies, headers), and what the phone is
//! shown about the browser (its address and user agent).

use reqwest::{header, Method, StatusCode};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Error as WsError};

use crate::helpers::*;

/// Regression: create, cancel and redeem accepted any Origin, so any site
/// could drive them from a visitor's browser (the secret cookie is
/// SameSite=Strict, but a create needs no cookie and the WebSocket check
/// was the only one).
#[tokio::test]
async fn browser_routes_refuse_other_sites() {
    let cluster = Cluster::start().await;
    let edge = &cluster.edge1;
    let own = format!("http://{}", edge.addr);
    let create = |origin: Option<&str>, fetch_site: Option<&str>| {
        let mut r = cluster
            .http
            .post(edge.url("/v1/login-sessions"))
            .json(&serde_json::json!({}));
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o);
        }
        if let Some(s) = fetch_site {
            r = r.header("sec-fetch-site", s);
        }
        r.send()
    };
    let forbidden = (StatusCode::FORBIDDEN, "origin_not_allowed".to_owned());
    assert_eq!(
        error_code(create(Some("https://evil.example"), None).await.unwrap()).await,
        forbidden
    );
    assert_eq!(
        error_code(create(Some("null"), None).await.unwrap()).await,
        forbidden
    );
    // Same host, other scheme: another origin.
    let https_own = format!("https://{}", edge.addr);
    assert_eq!(
        error_code(create(Some(&https_own), None).await.unwrap()).await,
        forbidden
    );
    assert_eq!(
        error_code(create(None, Some("cross-site")).await.unwrap()).await,
        forbidden
    );
    assert_eq!(
        create(Some(&own), Some("same-origin"))
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        create(None, Some("same-origin")).await.unwrap().status(),
        StatusCode::CREATED
    );
    // No Origin and no Sec-Fetch-Site: not a browser acting for a page.
    assert_eq!(
        create(None, None).await.unwrap().status(),
        StatusCode::CREATED
    );

    let created = cluster.create(edge).await;
    for (method, suffix) in [(Method::DELETE, ""), (Method::POST, "/redeem")] {
        let r = cluster
            .browser(method.clone(), edge, &created, suffix)
            .header(header::ORIGIN, "https://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r).await, forbidden, "{method} {suffix}");
    }
    let r = cluster
        .browser(Method::DELETE, edge, &created, "")
        .header(header::ORIGIN, &own)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let m = edge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "qrlogin_edge_rejected_requests_total{reason=\"origin_not_allowed\"}"
        ),
        6.0
    );
}

/// Regression: a JSON body was read whatever its Content-Type, so a plain
/// HTML form (text/plain, no preflight) could post one.
#[tokio::test]
async fn json_bodies_need_the_json_content_type() {
    let cluster = Cluster::start().await;
    let post = |content_type: &'static str, body: &'static str| {
        cluster
            .http
            .post(cluster.edge1.url("/v1/login-sessions"))
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
    };
    let r = post("text/plain", "{}").await.unwrap();
    assert_eq!(
        error_code(r).await,
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type".into()
        )
    );
    let r = post("application/x-www-form-urlencoded", "{}")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        post("application/json; charset=utf-8", "{}")
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    // No body at all needs no type.
    let r = cluster
        .http
        .post(cluster.edge1.url("/v1/login-sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

fn cookie_attrs(set_cookie: &str) -> (String, Vec<String>) {
    let mut parts = set_cookie.split("; ");
    let name = parts.next().unwrap().split_once('=').unwrap().0.to_owned();
    (name, parts.map(str::to_owned).collect())
}

/// Regression: cookies had no Max-Age (one stale cookie per QR refresh)
/// and no `__Host-`/`__Secure-` prefix when Secure.
#[tokio::test]
async fn cookies_expire_and_carry_prefixes_when_secure() {
    let cluster = Cluster::start().await;
    let edge = &cluster.edge1;
    // Plain HTTP: plain names.
    let created = cluster.create(edge).await;
    let (name, attrs) = cookie_attrs(&created.cookie);
    assert_eq!(name, format!("qrl_bs_{}", created.id));
    assert!(attrs.contains(&"Max-Age=300".to_owned()), "{attrs:?}");
    assert!(attrs.contains(&format!("Path=/v1/login-sessions/{}", created.id)));
    assert!(!attrs.contains(&"Secure".to_owned()));
    // Behind a trusted proxy that terminated TLS: prefixed names.
    let r = cluster
        .http
        .post(edge.url("/v1/login-sessions"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    let (name, attrs) = cookie_attrs(r.headers()[header::SET_COOKIE].to_str().unwrap());
    let json: serde_json::Value = r.json().await.unwrap();
    let id = json["session_id"].as_str().unwrap().to_owned();
    let secret = json["browser_secret"].as_str().unwrap().to_owned();
    assert_eq!(name, format!("__Secure-qrl_bs_{id}"));
    assert!(attrs.contains(&"Secure".to_owned()) && attrs.contains(&"Max-Age=300".to_owned()));
    // The edge reads the prefixed name.
    let r = cluster
        .http
        .get(edge.url(&format!("/v1/login-sessions/{id}")))
        .header(header::COOKIE, format!("__Secure-qrl_bs_{id}={secret}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Redeem: the login cookie lives as long as the token.
    let phone = |action| cluster.phone(&cluster.edge2, &id, action);
    assert_eq!(phone("scan").await.status(), StatusCode::OK);
    assert_eq!(phone("confirm").await.status(), StatusCode::OK);
    let r = cluster
        .http
        .post(edge.url(&format!("/v1/login-sessions/{id}/redeem")))
        .header(header::COOKIE, format!("__Secure-qrl_bs_{id}={secret}"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let (name, attrs) = cookie_attrs(r.headers()[header::SET_COOKIE].to_str().unwrap());
    assert_eq!(name, "__Host-qrl_session");
    assert!(attrs.contains(&"Path=/".to_owned()) && attrs.contains(&"Secure".to_owned()));
    let body: serde_json::Value = r.json().await.unwrap();
    let expires = time::OffsetDateTime::parse(
        body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = (expires - time::OffsetDateTime::now_utc()).whole_seconds();
    let max_age: i64 = attrs
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        max_age > 0 && (max_age - left).abs() <= 5,
        "Max-Age {max_age}, token left {left} s"
    );
}

/// Regression: no CSP (no frame-ancestors), no nosniff, no Referrer-Policy
/// on the pages.
#[tokio::test]
async fn pages_and_api_answers_carry_security_headers() {
    let web = tempfile::tempdir().unwrap();
    std::fs::write(web.path().join("index.html"), "<h1>login</h1>").unwrap();
    std::fs::write(web.path().join("phone.html"), "<h1>phone</h1>").unwrap();
    std::fs::write(web.path().join("app.js"), "export {}").unwrap();
    let dir = web.path().to_owned();
    let cluster = Cluster::start_with(|_| {}, move |c| c.web_dir = dir.clone()).await;
    for path in ["/", "/app.js", "/m/q3Zb0Xz2kT9yLw1sJm5HAA"] {
        let r = cluster
            .http
            .get(cluster.edge1.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers();
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer", "{path}");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{path}");
    }
    // API answers: nosniff and no-store (errors too); streams keep no-cache.
    let created = cluster.create(&cluster.edge1).await;
    for r in [
        cluster
            .browser(Method::GET, &cluster.edge1, &created, "")
            .send()
            .await
            .unwrap(),
        cluster
            .http
            .get(cluster.edge1.url("/v1/login-sessions/nope"))
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    }
    let url = cluster
        .edge1
        .url(&format!("/v1/login-sessions/{}/events", created.id));
    // SseClient::open checks Cache-Control: no-cache.
    assert!(SseClient::open(&cluster.http, &url, &created, None)
        .await
        .unwrap()
        .is_ok());
}

/// Regression: a trusted proxy's `IP:port` or `unknown` hop was skipped and
/// the address left of it (written by the client) shown on the phone; and
/// bidi controls in the user agent reached the phone.
#[tokio::test]
async fn the_phone_sees_the_address_and_agent_a_trusted_proxy_vouched_for() {
    let cluster = &Cluster::start().await;
    let shown = |xff: &'static str, ua: &'static str| async move {
        let r = cluster
            .http
            .post(cluster.edge1.url("/v1/login-sessions"))
            .header("x-forwarded-for", xff)
            .header(header::USER_AGENT, ua)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let json: serde_json::Value = r.json().await.unwrap();
        let id = json["session_id"].as_str().unwrap().to_owned();
        let r = cluster.phone(&cluster.edge2, &id, "scan").await;
        assert_eq!(r.status(), StatusCode::OK);
        let body: serde_json::Value = r.json().await.unwrap();
        (
            body["browser"]["ip"].as_str().unwrap().to_owned(),
            body["browser"]["user_agent"].as_str().unwrap().to_owned(),
        )
    };
    // The peer (127.0.0.1) is a trusted proxy in the tests' configuration.
    assert_eq!(
        shown("203.0.113.9, 198.51.100.7:4711", "B").await.0,
        "198.51.100.7"
    );
    assert_eq!(
        shown("203.0.113.9, [2001:db8::7]:4711", "B").await.0,
        "2001:db8::7"
    );
    assert_eq!(shown("203.0.113.9, unknown", "B").await.0, "127.0.0.1");
    assert_eq!(shown("203.0.113.9, 127.0.0.5", "B").await.0, "203.0.113.9");
    let ua = "Mozilla/5.0 \u{202E}fdp.exe\u{202C} (X11)";
    let r = cluster
        .http
        .post(cluster.edge1.url("/v1/login-sessions"))
        .header(
            header::USER_AGENT,
            header::HeaderValue::from_bytes(ua.as_bytes()).unwrap(),
        )
        .send()
        .await
        .unwrap();
    let json: serde_json::Value = r.json().await.unwrap();
    let id = json["session_id"].as_str().unwrap().to_owned();
    let body: serde_json::Value = cluster
        .phone(&cluster.edge2, &id, "scan")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["browser"]["user_agent"], "Mozilla/5.0 fdp.exe (X11)");
}

/// Regression: a non-ASCII Origin counted as no Origin (allowed), the
/// same-host fallback ignored the scheme, any Sec-WebSocket-Key passed.
/// The same for STOMP's upgrade (its own same-host check had the first two
/// holes).
#[tokio::test]
async fn websocket_handshakes_are_checked_fail_closed() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    for (tail, protocol) in [("ws", None), ("stomp", Some("v12.stomp"))] {
        websocket_handshake_is_checked(&cluster, &created, tail, protocol).await;
    }
}

async fn websocket_handshake_is_checked(
    cluster: &Cluster,
    created: &Created,
    tail: &str,
    protocol: Option<&'static str>,
) {
    let url = cluster
        .edge1
        .ws_url(&format!("/v1/login-sessions/{}/{tail}", created.id));
    let open = |origin: Option<&[u8]>, key: Option<&'static str>| {
        let mut req = url.as_str().into_client_request().unwrap();
        let h = req.headers_mut();
        if let Some(p) = protocol {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, p.parse().unwrap());
        }
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {}", created.secret).parse().unwrap(),
        );
        if let Some(o) = origin {
            h.insert(header::ORIGIN, header::HeaderValue::from_bytes(o).unwrap());
        }
        if let Some(k) = key {
            h.insert(header::SEC_WEBSOCKET_KEY, k.parse().unwrap());
        }
        tokio_tungstenite::connect_async(req)
    };
    let status = |r: Result<_, WsError>| match r {
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Ok(_) => 101,
        Err(e) => panic!("{e}"),
    };
    let host = cluster.edge1.addr.to_string();
    assert_eq!(
        status(open(Some("http://exämple.com".as_bytes()), None).await),
        403
    );
    assert_eq!(
        status(open(Some(format!("https://{host}").as_bytes()), None).await),
        403
    );
    assert_eq!(status(open(Some(b"null"), None).await), 403);
    assert_eq!(status(open(Some(b"AAAA"), None).await), 403);
    assert_eq!(status(open(None, Some("not base64!")).await), 400);
    assert_eq!(status(open(None, Some("dG9vIHNob3J0")).await), 400);
    assert_eq!(
        status(open(Some(format!("http://{host}").as_bytes()), None).await),
        101
    );
    assert_eq!(
        status(open(None, Some("dGhlIHNhbXBsZSBub25jZQ==")).await),
        101
    );
}
