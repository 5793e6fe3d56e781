//! The QR protocol through the edge's HTTP routes (docs/protocol.md, "QR
//! protocol"): the scan sends the payload on screen and the phone's address,
//! the confirm the number picked, create binds a browser key and redeem
//! checks its proof, and short polls keep the pace the answers ask for.

use std::time::Duration;

use qrlogin_auth::testing::BrowserKeyPair;
use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The public JWK of `key`, as WebCrypto exports it.
fn jwk(key: &BrowserKeyPair) -> Value {
    let k = key.public();
    json!({ "kty": k.kty, "crv": k.crv, "x": k.x, "y": k.y })
}

/// Creates a session through edge-1 with `body`.
async fn create_with(cluster: &Cluster, body: &Value) -> reqwest::Response {
    cluster
        .http
        .post(cluster.edge1.url("/v1/login-sessions"))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// What `create_with` answered, as the other helpers take it.
async fn created_from(cluster: &Cluster, r: reqwest::Response) -> Created {
    assert_eq!(r.status(), StatusCode::CREATED);
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    let json: Value = r.json().await.unwrap();
    let created = Created {
        id: json["session_id"].as_str().unwrap().to_owned(),
        secret: json["browser_secret"].as_str().unwrap().to_owned(),
        cookie,
        json,
    };
    cluster.remember(&created.id, &created.secret);
    created
}

/// A scan by `user` with `body`, through edge-2.
async fn scan(cluster: &Cluster, id: &str, user: &str, body: &Value) -> reqwest::Response {
    let token = cluster.keys.user_token(user, user);
    cluster
        .phone_with(&cluster.edge2, id, "scan", &token, body)
        .await
}

async fn confirm(cluster: &Cluster, id: &str, user: &str, body: &Value) -> reqwest::Response {
    let token = cluster.keys.user_token(user, user);
    cluster
        .phone_with(&cluster.edge2, id, "confirm", &token, body)
        .await
}

#[tokio::test]
async fn scan_answers_three_choices_and_the_browser_alone_sees_the_code() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let mut sse = cluster.sse_pending(&cluster.edge1, &created).await;
    let r = scan(
        &cluster,
        &created.id,
        "alice",
        &json!({ "qr_payload": created.json["qr_payload"] }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let phone: Value = r.json().await.unwrap();
    let choices: Vec<u64> = phone["match_choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert_eq!(choices.len(), 3);
    assert_eq!(
        phone["session"]["match_code"],
        Value::Null,
        "never the phone"
    );
    // Browser and phone both come from 127.0.0.1.
    assert_eq!(phone["same_network"], true);
    let scanned = sse.next_snapshot().await.unwrap().json();
    assert_eq!(scanned["state"], "SCANNED");
    let code = scanned["match_code"].as_u64().unwrap();
    assert!(choices.contains(&code) && (10..=99).contains(&code));
    assert_eq!(scanned["user_display_name"], Value::Null, "no name yet");
    assert_eq!(scanned["qr_payload"], Value::Null, "no QR once scanned");
    let r = confirm(
        &cluster,
        &created.id,
        "alice",
        &json!({ "match_code": code }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let confirmed = sse.next_snapshot().await.unwrap().json();
    assert_eq!(confirmed["state"], "CONFIRMED");
    assert_eq!(confirmed["user_display_name"], "alice");
}

#[tokio::test]
async fn a_phone_on_another_network_is_told_so_and_still_scans() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    // The peer (127.0.0.1) is a trusted proxy in the tests' configuration:
    // the phone's address is the one it forwards.
    let token = cluster.keys.user_token("alice", "Alice");
    let r = cluster
        .http
        .post(
            cluster
                .edge2
                .url(&format!("/v1/login-sessions/{}/scan", created.id)),
        )
        .bearer_auth(&token)
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({ "qr_payload": created.json["qr_payload"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let phone: Value = r.json().await.unwrap();
    assert_eq!(phone["same_network"], false);
    assert_eq!(phone["session"]["state"], "SCANNED");
}

#[tokio::test]
async fn scan_refuses_replaced_forged_and_malformed_payloads() {
    let cluster = Cluster::start_with(
        |a| {
            a.protocol.qr_rotation = Duration::from_secs(1);
            a.protocol.qr_grace = Duration::from_millis(200);
        },
        |_| {},
    )
    .await;
    let created = cluster.create(&cluster.edge1).await;
    let old = created.json["qr_payload"].as_str().unwrap().to_owned();
    // The browser's stream shows the rotated payloads (no write per epoch).
    let mut sse = cluster.sse_pending(&cluster.edge1, &created).await;
    let current = loop {
        let s = sse.next_snapshot().await.unwrap().json();
        assert_eq!(s["state"], "PENDING");
        let p = s["qr_payload"].as_str().unwrap().to_owned();
        let epoch: u64 = p
            .rsplit_once('#')
            .and_then(|(_, f)| f.split_once('.'))
            .and_then(|(e, _)| e.parse().ok())
            .unwrap();
        if epoch >= 2 {
            break p;
        }
    };
    let r = scan(
        &cluster,
        &created.id,
        "alice",
        &json!({ "qr_payload": old }),
    )
    .await;
    assert_eq!(
        error_code(r).await,
        (StatusCode::CONFLICT, "qr_replaced".into())
    );
    let forged = format!("{}AAAA", &current[..current.len() - 4]);
    let other = cluster.create(&cluster.edge1).await;
    for (body, status, code) in [
        (json!({ "qr_payload": forged }), 400, "qr_invalid"),
        (
            json!({ "qr_payload": other.json["qr_payload"] }),
            400,
            "qr_invalid",
        ),
        (json!({ "qr_payload": "not a url" }), 400, "qr_invalid"),
        (json!({ "qr_payload": 7 }), 400, "invalid_argument"),
        (json!({ "qr": current }), 400, "invalid_argument"),
    ] {
        let r = scan(&cluster, &created.id, "alice", &body).await;
        assert_eq!(
            error_code(r).await,
            (StatusCode::from_u16(status).unwrap(), code.into()),
            "{body}"
        );
    }
    // A body that is not JSON is not read.
    let token = cluster.keys.user_token("alice", "Alice");
    let r = cluster
        .http
        .post(
            cluster
                .edge2
                .url(&format!("/v1/login-sessions/{}/scan", created.id)),
        )
        .bearer_auth(&token)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(format!("qr_payload={current}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type".into()
        )
    );
    // None of it moved the session: the payload on screen scans. (The
    // code rotates every second: on a busy machine the refusals above can
    // outlast it, so the scan takes the payload of the next rotation, and
    // once more if even that one was replaced before it arrived.)
    let mut replaced = 0;
    loop {
        let s = sse.next_snapshot().await.unwrap().json();
        assert_eq!(s["state"], "PENDING", "nothing moved the session");
        let body = json!({ "qr_payload": s["qr_payload"] });
        let r = scan(&cluster, &created.id, "alice", &body).await;
        if r.status() == StatusCode::OK {
            break;
        }
        assert_eq!(
            error_code(r).await,
            (StatusCode::CONFLICT, "qr_replaced".into())
        );
        replaced += 1;
        assert!(replaced < 5, "never scanned with the payload on screen");
    }
}

#[tokio::test]
async fn confirm_needs_the_number_shown_and_a_wrong_pick_denies() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let mut sse = cluster.sse_pending(&cluster.edge1, &created).await;
    assert_eq!(
        cluster
            .phone(&cluster.edge2, &created.id, "scan")
            .await
            .status(),
        StatusCode::OK
    );
    let code = sse.next_snapshot().await.unwrap().json()["match_code"]
        .as_u64()
        .unwrap();
    for (body, status, want) in [
        (json!({}), 400, "match_required"),
        (json!({ "match_code": "12" }), 400, "invalid_argument"),
        (json!({ "match_code": -1 }), 400, "invalid_argument"),
    ] {
        let r = confirm(&cluster, &created.id, "alice", &body).await;
        assert_eq!(
            error_code(r).await,
            (StatusCode::from_u16(status).unwrap(), want.into()),
            "{body}"
        );
    }
    let wrong = if code == 99 { 10 } else { code + 1 };
    let r = confirm(
        &cluster,
        &created.id,
        "alice",
        &json!({ "match_code": wrong }),
    )
    .await;
    assert_eq!(
        error_code(r).await,
        (StatusCode::FORBIDDEN, "wrong_match".into())
    );
    let denied = sse.next_snapshot().await.unwrap().json();
    assert_eq!(denied["state"], "DENIED");
    assert_eq!(denied["deny_reason"], "wrong_match");
    // One try: the right number is too late now.
    let r = confirm(
        &cluster,
        &created.id,
        "alice",
        &json!({ "match_code": code }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_key_bound_session_redeems_only_with_a_proof_of_its_key() {
    let cluster = Cluster::start().await;
    let key = BrowserKeyPair::generate();
    let created = created_from(
        &cluster,
        create_with(&cluster, &json!({ "public_key": jwk(&key) })).await,
    )
    .await;
    assert_eq!(
        created.json["key_thumbprint"],
        key.public().thumbprint().unwrap()
    );
    for action in ["scan", "confirm"] {
        assert_eq!(
            cluster
                .phone(&cluster.edge2, &created.id, action)
                .await
                .status(),
            StatusCode::OK
        );
    }
    // The secret alone (stolen from the browser) does not redeem.
    let r = cluster.redeem(&cluster.edge1, &created).await;
    assert_eq!(
        error_code(r).await,
        (StatusCode::UNAUTHORIZED, "proof_required".into())
    );
    let thief = BrowserKeyPair::generate();
    for proof in [
        thief.proof(&created.id, now_s()),
        key.proof(&created.id, now_s() - 3600),
        "not.a.jwt".to_owned(),
    ] {
        let r = cluster
            .browser(Method::POST, &cluster.edge1, &created, "/redeem")
            .header("DPoP", &proof)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r).await,
            (StatusCode::UNAUTHORIZED, "invalid_proof".into())
        );
    }
    let r = cluster
        .browser(Method::POST, &cluster.edge2, &created, "/redeem")
        .header("DPoP", key.proof(&created.id, now_s()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["user"]["id"], "alice");
}

#[tokio::test]
async fn create_refuses_keys_that_are_not_p256_public_jwks() {
    let cluster = Cluster::start().await;
    let key = jwk(&BrowserKeyPair::generate());
    let mut same_xy = key.clone();
    same_xy["y"] = key["x"].clone();
    let mut rsa = key.clone();
    rsa["kty"] = "RSA".into();
    for (body, status, code) in [
        (json!({ "public_key": same_xy }), 400, "invalid_key"),
        (json!({ "public_key": rsa }), 400, "invalid_key"),
        (json!({ "public_key": "jwk" }), 400, "invalid_argument"),
        (json!({ "key": key }), 400, "invalid_argument"),
    ] {
        let r = create_with(&cluster, &body).await;
        assert_eq!(
            error_code(r).await,
            (StatusCode::from_u16(status).unwrap(), code.into()),
            "{body}"
        );
    }
}

#[tokio::test]
async fn short_polls_faster_than_the_pace_get_slow_down() {
    // The default pace (2 s), not the tests' quick one.
    let cluster = Cluster::start_with(|_| {}, |c| c.poll_interval = Duration::from_secs(2)).await;
    let created = cluster.create(&cluster.edge1).await;
    assert_eq!(created.json["poll_interval_ms"], 2000);
    let poll = |edge: &'static str, suffix: &'static str| {
        let edge = if edge == "edge-1" {
            &cluster.edge1
        } else {
            &cluster.edge2
        };
        cluster.browser(Method::GET, edge, &created, suffix).send()
    };
    let r = poll("edge-1", "").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["poll_interval_ms"], 2000);
    let r = poll("edge-1", "").await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "slow_down");
    assert_eq!(body["error"]["poll_interval_ms"], 2000);
    // A long poll held shorter than the pace is a short poll in disguise.
    let r = poll("edge-1", "?since=0&wait=10ms").await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // Someone who read the id from the QR code, polling with a guessed
    // secret, does not slow the browser down.
    for _ in 0..3 {
        let r = cluster
            .http
            .get(
                cluster
                    .edge2
                    .url(&format!("/v1/login-sessions/{}", created.id)),
            )
            .header(
                header::COOKIE,
                format!("qrl_bs_{}={}", created.id, "A".repeat(43)),
            )
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), StatusCode::OK);
    }
    // Each edge keeps its own pace (docs/security.md, "Poll pace"), and
    // the guesses above did not touch the browser's.
    let r = poll("edge-2", "").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let refused = metric(
        &cluster.edge1.metrics().await,
        "qrlogin_edge_rejected_requests_total{reason=\"slow_down\"}",
    );
    assert_eq!(refused, 2.0);
}
