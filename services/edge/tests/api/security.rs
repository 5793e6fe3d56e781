//! Secrets and origins: only the creating browser may watch.

use reqwest::{header, Method, StatusCode};

use crate::helpers::*;

#[tokio::test]
async fn missing_and_wrong_secrets_are_refused_on_every_transport() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let base = format!("/v1/login-sessions/{}", created.id);
    // The long poll before the short poll: after the short poll's answer,
    // `since=0` would ask for what was answered, which is paced.
    for suffix in ["?since=0&wait=1s", "", "/events"] {
        let url = cluster.edge1.url(&format!("{base}{suffix}"));
        let r = cluster.http.get(&url).send().await.unwrap();
        assert_eq!(
            error_code(r).await,
            (StatusCode::UNAUTHORIZED, "unauthenticated".into()),
            "{suffix}"
        );
        let wrong = "A".repeat(43);
        let r = cluster
            .http
            .get(&url)
            .header(header::COOKIE, format!("qrl_bs_{}={wrong}", created.id))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r).await,
            (StatusCode::FORBIDDEN, "permission_denied".into()),
            "{suffix}"
        );
        let r = cluster
            .http
            .get(&url)
            .bearer_auth(&created.secret)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "bearer secret works for {suffix}"
        );
    }
    let mut other = ws_connect(
        &cluster.edge1.ws_url(&format!("{base}/ws")),
        &Created {
            secret: "B".repeat(43),
            ..clone(&created)
        },
        None,
    )
    .await;
    assert!(
        matches!(other, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 403)
    );
    other = ws_connect(
        &cluster.edge1.ws_url(&format!("{base}/ws")),
        &Created {
            id: created.id.clone(),
            secret: String::new(),
            ..clone(&created)
        },
        None,
    )
    .await;
    assert!(
        matches!(other, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 401)
    );
    // Cancel and redeem need the secret too.
    let r = cluster
        .http
        .delete(cluster.edge2.url(&base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = cluster
        .http
        .post(cluster.edge2.url(&format!("{base}/redeem")))
        .bearer_auth("C".repeat(43))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Phone routes need a user token.
    let r = cluster
        .http
        .post(cluster.edge2.url(&format!("{base}/scan")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::UNAUTHORIZED, "unauthenticated".into())
    );
    let r = cluster
        .http
        .post(cluster.edge2.url(&format!("{base}/scan")))
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::UNAUTHORIZED, "unauthenticated".into())
    );
}

fn clone(c: &Created) -> Created {
    Created {
        id: c.id.clone(),
        secret: c.secret.clone(),
        cookie: c.cookie.clone(),
        json: c.json.clone(),
    }
}

#[tokio::test]
async fn bad_ids_unknown_sessions_and_routes_get_json_errors() {
    let cluster = Cluster::start().await;
    let r = cluster
        .http
        .get(cluster.edge1.url("/v1/login-sessions/short"))
        .bearer_auth("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-edge-node"], "edge-1");
    assert_eq!(
        error_code(r).await,
        (StatusCode::BAD_REQUEST, "invalid_argument".into())
    );
    let r = cluster
        .http
        .get(
            cluster
                .edge1
                .url("/v1/login-sessions/AAAAAAAAAAAAAAAAAAAAAA"),
        )
        .bearer_auth("A".repeat(43))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let r = cluster
        .http
        .get(cluster.edge1.url("/nope/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let created = cluster.create(&cluster.edge1).await;
    let r = cluster
        .browser(Method::GET, &cluster.edge1, &created, "?since=x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::BAD_REQUEST, "invalid_argument".into())
    );
    let r = cluster
        .browser(Method::GET, &cluster.edge1, &created, "?since=1&wait=later")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::BAD_REQUEST, "invalid_argument".into())
    );
    let r = cluster
        .http
        .post(cluster.edge1.url("/v1/login-sessions"))
        .header(header::CONTENT_TYPE, "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::BAD_REQUEST, "invalid_argument".into())
    );
    // No development endpoint unless configured; no pages without a web dir.
    let r = cluster
        .http
        .post(cluster.edge1.url("/v1/dev/token"))
        .json(&serde_json::json!({"user_id":"a","display_name":"A"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        cluster
            .http
            .get(cluster.edge1.url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn websocket_origin_must_be_allowed() {
    let cluster = Cluster::start_with(
        |_| {},
        |c| {
            c.allowed_origins =
                qrlogin_edge::config::OriginList(vec!["https://login.example".into()]);
        },
    )
    .await;
    let created = cluster.create(&cluster.edge1).await;
    let url = cluster
        .edge1
        .ws_url(&format!("/v1/login-sessions/{}/ws", created.id));
    let refused = ws_connect(&url, &created, Some("https://evil.example")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 403);
            let body: serde_json::Value =
                serde_json::from_slice(r.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "origin_not_allowed");
        }
        other => panic!("expected 403, got {other:?}"),
    }
    let mut ws = ws_connect(&url, &created, Some("https://login.example"))
        .await
        .unwrap();
    assert_eq!(ws_state(&mut ws).await["state"], "PENDING");
}

#[tokio::test]
async fn dev_token_endpoint_mints_tokens_auth_accepts() {
    let nats = qrlogin_auth::testing::NatsServer::start().await;
    let keys = qrlogin_auth::testing::TestKeys::generate();
    let auth = qrlogin_auth::testing::TestAuth::spawn(&nats, &keys, |_| {}).await;
    let mut c = edge_config("edge-dev", &auth, &nats);
    c.dev_user_token_key_file = Some(keys.user_private_key_path());
    let edge = TestEdge::spawn(c).await;
    let http = reqwest::Client::new();
    let r = http
        .post(edge.url("/v1/dev/token"))
        .json(&serde_json::json!({"user_id":"bob","display_name":"Bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token = r.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = http
        .post(edge.url("/v1/login-sessions"))
        .send()
        .await
        .unwrap();
    let created = r.json::<serde_json::Value>().await.unwrap();
    let id = created["session_id"].as_str().unwrap().to_owned();
    let r = http
        .post(edge.url(&format!("/v1/login-sessions/{id}/scan")))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "qr_payload": created["qr_payload"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["session"]["state"], "SCANNED");
    assert_eq!(body["match_choices"].as_array().unwrap().len(), 3);
    let r = http
        .post(edge.url("/v1/dev/token"))
        .json(&serde_json::json!({"user_id":""}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn pages_are_served_from_the_web_dir_and_cookies_follow_the_proxy() {
    let web = tempfile::tempdir().unwrap();
    std::fs::write(web.path().join("index.html"), "<h1>login</h1>").unwrap();
    std::fs::write(web.path().join("phone.html"), "<h1>phone</h1>").unwrap();
    std::fs::write(web.path().join("app.js"), "export {}").unwrap();
    std::fs::write(web.path().join("secret.pem"), "key").unwrap();
    let dir = web.path().to_owned();
    let cluster = Cluster::start_with(|_| {}, move |c| c.web_dir = dir.clone()).await;
    let get = |path: &'static str| cluster.http.get(cluster.edge1.url(path)).send();
    let r = get("/").await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(r.text().await.unwrap(), "<h1>login</h1>");
    let r = get("/m/q3Zb0Xz2kT9yLw1sJm5HAA").await.unwrap();
    assert_eq!(r.text().await.unwrap(), "<h1>phone</h1>");
    let r = get("/app.js").await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        get("/secret.pem").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("/missing.js").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // Behind a trusted proxy that terminated TLS, cookies are Secure.
    let r = cluster
        .http
        .post(cluster.edge1.url("/v1/login-sessions"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
}
