//! Every transition and every refusal, through the real gRPC API, against a
//! real nats-server.

use crate::common::*;
use qrlogin_proto::auth::v1 as pb;
use qrlogin_proto::events::v1::LoginState;
use std::time::Duration;
use tonic::Code;

#[tokio::test]
async fn full_flow_create_scan_confirm_redeem_once() {
    let mut h = Harness::start().await;
    let s = create(&mut h.client).await;
    assert_eq!(s.id.len(), 22);
    assert_eq!(s.secret.len(), 43);
    // The QR code carries the session id and a short-lived token.
    let prefix = format!("http://localhost:8080/m/{}#0.", s.id);
    assert!(s.qr_payload.starts_with(&prefix), "{}", s.qr_payload);
    assert_eq!(s.qr_payload.len(), prefix.len() + 16);

    let pending = get(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(state(&pending), LoginState::Pending);
    assert!(pending.expires_at.is_some());
    assert_eq!(pending.qr_payload, s.qr_payload, "the same epoch");
    let qr = pending.qr.as_ref().expect("the rotation, for edges");
    assert_eq!(qr.period_ms, 25_000);
    assert_eq!(qr.key.len(), 16);

    let token = h.alice();
    let scanned = scan(&mut h.client, &s.id, &token).await.unwrap();
    let browser = scanned.browser.expect("browser context");
    assert_eq!(browser.ip, "203.0.113.7");
    assert!(browser.user_agent.contains("TestBrowser/1.0"));
    assert!(browser.created_at.is_some());
    let session = scanned.session.unwrap();
    assert_eq!(state(&session), LoginState::Scanned);
    assert!(session.version > s.version);
    // Number matching: three choices for the phone, the code only for
    // the browser; no name for the browser before the confirm.
    let choices = scanned.match_choices.clone();
    assert_eq!(choices.len(), 3);
    assert_eq!(session.match_code, 0, "the phone is never told the code");
    let shown = get(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert!(choices.contains(&shown.match_code));
    assert_eq!(shown.user_display_name, "");
    assert!(shown.qr.is_none() && shown.qr_payload.is_empty());

    // Scanning again by the same user changes nothing.
    let again = scan(&mut h.client, &s.id, &token).await.unwrap();
    assert_eq!(again.session.unwrap().version, session.version);
    assert_eq!(again.match_choices, choices, "the same choices");

    let confirmed = confirm(&mut h.client, &s.id, &token).await.unwrap();
    assert_eq!(state(&confirmed), LoginState::Confirmed);
    assert!(confirmed.version > session.version);
    let shown = get(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(
        shown.user_display_name, "Alice (alice)",
        "named (name and account) once confirmed"
    );

    let redeemed = redeem(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(
        state(redeemed.session.as_ref().unwrap()),
        LoginState::Redeemed
    );
    assert_eq!(redeemed.user_id, "alice");
    assert_eq!(redeemed.user_display_name, "Alice (alice)");
    assert!(redeemed.access_token_expires_at.is_some());

    // The access token verifies with the access public key and names alice.
    let pem = std::fs::read(h.keys.access_public_key_path()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_ed_pem(&pem).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["qrlogin-web"]);
    v.set_issuer(&["qrlogin"]);
    let claims =
        jsonwebtoken::decode::<serde_json::Value>(&redeemed.access_token, &key, &v).unwrap();
    assert_eq!(claims.claims["sub"], "alice");
    assert_eq!(claims.claims["sid"], s.id.as_str());

    // Redeemed once: a repeat (its answer lost) gets the same token, not a
    // second one (the idempotency rules are in tests/integration/cluster.rs).
    let again = redeem(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(again.access_token, redeemed.access_token);
    let final_state = get(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(state(&final_state), LoginState::Redeemed);
    assert_eq!(final_state.expires_at, None);
}

#[tokio::test]
async fn deny_and_cancel_end_the_session() {
    let mut h = Harness::start().await;
    let token = h.alice();

    let s = scanned(&mut h).await;
    let denied = deny(&mut h.client, &s.id, &token).await.unwrap();
    assert_eq!(state(&denied), LoginState::Denied);
    assert_code(
        redeem(&mut h.client, &s.id, &s.secret).await,
        Code::FailedPrecondition,
        "DENIED",
    );

    let s = create(&mut h.client).await;
    let cancelled = cancel(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(state(&cancelled), LoginState::Cancelled);
    assert_code(
        scan(&mut h.client, &s.id, &token).await,
        Code::FailedPrecondition,
        "CANCELLED",
    );

    let s = scanned(&mut h).await;
    let cancelled = cancel(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(state(&cancelled), LoginState::Cancelled);
    assert_code(
        confirm(&mut h.client, &s.id, &token).await,
        Code::FailedPrecondition,
        "CANCELLED",
    );
}

#[tokio::test]
async fn forbidden_transitions_are_failed_precondition() {
    let mut h = Harness::start().await;
    let token = h.alice();

    let p = create(&mut h.client).await;
    assert_code(
        confirm(&mut h.client, &p.id, &token).await,
        Code::FailedPrecondition,
        "PENDING",
    );
    assert_code(
        deny(&mut h.client, &p.id, &token).await,
        Code::FailedPrecondition,
        "PENDING",
    );
    assert_code(
        redeem(&mut h.client, &p.id, &p.secret).await,
        Code::FailedPrecondition,
        "PENDING",
    );

    let s = scanned(&mut h).await;
    assert_code(
        redeem(&mut h.client, &s.id, &s.secret).await,
        Code::FailedPrecondition,
        "SCANNED",
    );

    let c = confirmed(&mut h).await;
    assert_code(
        scan(&mut h.client, &c.id, &token).await,
        Code::FailedPrecondition,
        "CONFIRMED",
    );
    assert_code(
        confirm(&mut h.client, &c.id, &token).await,
        Code::FailedPrecondition,
        "CONFIRMED",
    );
    assert_code(
        deny(&mut h.client, &c.id, &token).await,
        Code::FailedPrecondition,
        "CONFIRMED",
    );
    // The refusals changed nothing.
    let still = get(&mut h.client, &c.id, &c.secret).await.unwrap();
    assert_eq!(state(&still), LoginState::Confirmed);
    // The browser may still refuse the account that confirmed ("not you?
    // start over"): CONFIRMED -> CANCELLED, and nobody redeems it.
    let refused = cancel(&mut h.client, &c.id, &c.secret).await.unwrap();
    assert_eq!(state(&refused), LoginState::Cancelled);
    assert_code(
        redeem(&mut h.client, &c.id, &c.secret).await,
        Code::FailedPrecondition,
        "CANCELLED",
    );
}

#[tokio::test]
async fn only_the_scanning_user_decides() {
    let mut h = Harness::start().await;
    let s = scanned(&mut h).await;
    let bob = h.bob();
    assert_code(
        scan(&mut h.client, &s.id, &bob).await,
        Code::PermissionDenied,
        "another user",
    );
    assert_code(
        confirm(&mut h.client, &s.id, &bob).await,
        Code::PermissionDenied,
        "another user",
    );
    assert_code(
        deny(&mut h.client, &s.id, &bob).await,
        Code::PermissionDenied,
        "another user",
    );
    let still = get(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(state(&still), LoginState::Scanned);
    // The browser is not told who scanned before they confirm.
    assert_eq!(still.user_display_name, "");
    assert_eq!(
        h.auth.counters().multi_scan,
        1,
        "the second scanner is counted"
    );
}

#[tokio::test]
async fn browser_secret_is_required_and_checked() {
    let mut h = Harness::start().await;
    let s = create(&mut h.client).await;
    let other = create(&mut h.client).await;

    assert_code(
        get(&mut h.client, &s.id, &other.secret).await,
        Code::PermissionDenied,
        "wrong browser secret",
    );
    assert_code(
        cancel(&mut h.client, &s.id, &other.secret).await,
        Code::PermissionDenied,
        "wrong browser secret",
    );
    assert_code(
        get(&mut h.client, &s.id, "").await,
        Code::Unauthenticated,
        "browser_secret is required",
    );
    assert_code(
        get(&mut h.client, &s.id, "not-a-secret").await,
        Code::PermissionDenied,
        "wrong browser secret",
    );

    let c = confirmed(&mut h).await;
    assert_code(
        redeem(&mut h.client, &c.id, &other.secret).await,
        Code::PermissionDenied,
        "wrong browser secret",
    );
    // A wrong secret did not use up the one redemption.
    redeem(&mut h.client, &c.id, &c.secret).await.unwrap();
}

#[tokio::test]
async fn malformed_and_unknown_ids() {
    let mut h = Harness::start().await;
    let s = create(&mut h.client).await;
    let token = h.alice();
    for bad in [
        "",
        "abc",
        "qrlogin.session.>",
        "aaaaaaaaaaaaaaaaaaaaa*",
        &"x".repeat(5000),
    ] {
        let code = if bad.is_empty() {
            "empty"
        } else {
            "22 base64url"
        };
        assert_code(
            get(&mut h.client, bad, &s.secret).await,
            Code::InvalidArgument,
            code,
        );
        assert_code(
            scan(&mut h.client, bad, &token).await,
            Code::InvalidArgument,
            code,
        );
    }
    let unknown = "AAAAAAAAAAAAAAAAAAAAAA";
    assert_code(
        get(&mut h.client, unknown, &s.secret).await,
        Code::NotFound,
        "no login session",
    );
    assert_code(
        scan(&mut h.client, unknown, &token).await,
        Code::NotFound,
        "no login session",
    );
    assert_code(
        redeem(&mut h.client, unknown, &s.secret).await,
        Code::NotFound,
        "no login session",
    );
}

#[tokio::test]
async fn create_validates_browser_context() {
    let mut h = Harness::start().await;
    let req = |ip: &str, ua: String| pb::CreateLoginSessionRequest {
        client_ip: ip.into(),
        user_agent: ua,
        browser_key: None,
    };
    let r = h
        .client
        .create_login_session(req("not an ip", "x".into()))
        .await;
    assert_code(r, Code::InvalidArgument, "client_ip");
    let r = h.client.create_login_session(req("", "x".into())).await;
    assert_code(r, Code::InvalidArgument, "client_ip");
    let r = h
        .client
        .create_login_session(req("10.0.0.1", "x".repeat(513)))
        .await;
    assert_code(r, Code::InvalidArgument, "512 bytes");
    let r = h
        .client
        .create_login_session(req("10.0.0.1", "a\nb".into()))
        .await;
    assert_code(r, Code::InvalidArgument, "control");
    let ok = h
        .client
        .create_login_session(req("2001:db8::1", "x".repeat(512)))
        .await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn oversized_requests_are_refused_and_the_service_keeps_working() {
    let mut h = Harness::start().await;
    let r = h
        .client
        .create_login_session(pb::CreateLoginSessionRequest {
            client_ip: "10.0.0.1".into(),
            user_agent: "x".repeat(64 * 1024),
            browser_key: None,
        })
        .await;
    let status = r.expect_err("64 KiB request must be refused");
    assert!(
        matches!(
            status.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::InvalidArgument
        ),
        "{status:?}"
    );
    create(&mut h.client).await;
}

#[tokio::test]
async fn user_tokens_are_verified() {
    let mut h = Harness::start().await;
    let s = create(&mut h.client).await;
    let now = qrlogin_auth::token::unix_now_secs();
    let keys = &h.keys;
    let other_keys = qrlogin_auth::testing::TestKeys::generate();
    let header = r#"{"alg":"none","typ":"JWT"}"#;
    let body = format!(
        r#"{{"sub":"alice","name":"Alice","iss":"qrlogin-dev","aud":"qrlogin","iat":{now},"exp":{}}}"#,
        now + 3600
    );
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let alg_none = format!("{}.{}.", b64.encode(header), b64.encode(&body));
    // HS256 "signed" with the public key text: the classic algorithm confusion.
    let public_pem = std::fs::read(keys.user_public_key_path()).unwrap();
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        &jsonwebtoken::EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    let cases: Vec<(String, &str)> = vec![
        (
            keys.user_token_with("alice", "Alice", "qrlogin-dev", "qrlogin", now - 7200, 3600),
            "expired",
        ),
        (other_keys.user_token("alice", "Alice"), "signature"),
        (
            keys.user_token_with("alice", "Alice", "someone-else", "qrlogin", now, 3600),
            "issuer",
        ),
        (
            keys.user_token_with("alice", "Alice", "qrlogin-dev", "other-app", now, 3600),
            "audience",
        ),
        (
            keys.user_token_with("", "Alice", "qrlogin-dev", "qrlogin", now, 3600),
            "sub",
        ),
        (alg_none, "invalid user token"),
        (hs256, "EdDSA"),
        ("garbage".into(), "invalid user token"),
    ];
    for (token, needle) in cases {
        assert_code(
            scan(&mut h.client, &s.id, &token).await,
            Code::Unauthenticated,
            needle,
        );
    }
    // No header, and a header of the wrong scheme.
    let r = h
        .client
        .scan_login_session(pb::ScanLoginSessionRequest {
            session_id: s.id.clone(),
            qr_payload: s.qr_payload.clone(),
            client_ip: String::new(),
        })
        .await;
    assert_code(r, Code::Unauthenticated, "missing user token");
    let mut req = tonic::Request::new(pb::ScanLoginSessionRequest {
        session_id: s.id.clone(),
        qr_payload: s.qr_payload.clone(),
        client_ip: String::new(),
    });
    req.metadata_mut()
        .insert("authorization", "Basic YWxpY2U6cHc=".parse().unwrap());
    assert_code(
        h.client.scan_login_session(req).await,
        Code::Unauthenticated,
        "Bearer",
    );
    // None of that moved the session.
    let still = get(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(state(&still), LoginState::Pending);
}

#[tokio::test]
async fn deadlines_expire_each_state() {
    // Long enough that the calls before each wait (create, scan, confirm)
    // finish inside their deadlines on a busy machine.
    let ttl = Duration::from_secs(1);
    let mut h = Harness::start_with(|c| {
        c.pending_ttl = ttl;
        c.scanned_ttl = ttl;
        c.confirmed_ttl = ttl;
    })
    .await;
    let token = h.alice();
    let past = ttl + Duration::from_millis(150);

    // PENDING: a late scan is refused and the session reads EXPIRED.
    let p = create(&mut h.client).await;
    tokio::time::sleep(past).await;
    assert_code(
        scan(&mut h.client, &p.id, &token).await,
        Code::FailedPrecondition,
        "expired",
    );
    let e = get(&mut h.client, &p.id, &p.secret).await.unwrap();
    assert_eq!(state(&e), LoginState::Expired);
    assert!(
        e.version > p.version,
        "EXPIRED was written as a new version"
    );

    // SCANNED: a late confirm is refused.
    let s = scanned(&mut h).await;
    tokio::time::sleep(past).await;
    assert_code(
        confirm(&mut h.client, &s.id, &token).await,
        Code::FailedPrecondition,
        "expired",
    );
    assert_eq!(
        state(&get(&mut h.client, &s.id, &s.secret).await.unwrap()),
        LoginState::Expired
    );

    // CONFIRMED: a late redeem is refused.
    let c = confirmed(&mut h).await;
    tokio::time::sleep(past).await;
    assert_code(
        redeem(&mut h.client, &c.id, &c.secret).await,
        Code::FailedPrecondition,
        "expired",
    );
    assert_eq!(
        state(&get(&mut h.client, &c.id, &c.secret).await.unwrap()),
        LoginState::Expired
    );
}

/// Each transition restarts the clock: a session scanned halfway through
/// its PENDING deadline can be confirmed after that deadline has passed.
/// Deadlines of 2 s leave 0.8 s between the confirm and the SCANNED
/// deadline, however slowly a busy machine runs the calls.
#[tokio::test]
async fn each_transition_restarts_the_deadline() {
    let ttl = Duration::from_secs(2);
    let mut h = Harness::start_with(|c| {
        c.pending_ttl = ttl;
        c.scanned_ttl = ttl;
    })
    .await;
    let token = h.alice();
    let before_create = tokio::time::Instant::now();
    let q = create(&mut h.client).await;
    tokio::time::sleep_until(before_create + ttl / 2).await;
    scan(&mut h.client, &q.id, &token).await.unwrap();
    // Past the PENDING deadline, inside the SCANNED one (the scan was
    // written at least ttl/2 after the create).
    tokio::time::sleep_until(before_create + ttl + Duration::from_millis(200)).await;
    confirm(&mut h.client, &q.id, &token).await.unwrap();
}

#[tokio::test]
async fn nats_outage_is_unavailable_and_recovers() {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let mut h = Harness::start().await;
    let s = create(&mut h.client).await;
    h.nats.kill();
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        get(&mut h.client, &s.id, &s.secret),
    )
    .await
    .expect("answers within the request timeout");
    assert_code(r, Code::Unavailable, "unavailable");

    let channel = tonic::transport::Channel::from_shared(h.auth.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let check = || HealthCheckRequest {
        service: "qrlogin.auth.v1.AuthService".into(),
    };
    // NOT_SERVING while NATS is down (reported by the link callback).
    let mut saw_not_serving = false;
    for _ in 0..100 {
        if health.check(check()).await.unwrap().into_inner().status == 2 {
            saw_not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        saw_not_serving,
        "health must report NOT_SERVING while NATS is down"
    );

    h.nats.restart().await;
    let mut recovered = false;
    for _ in 0..200 {
        if let Ok(v) = get(&mut h.client, &s.id, &s.secret).await {
            assert_eq!(state(&v), LoginState::Pending, "state survived the restart");
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "auth must work again once NATS is back");
    for _ in 0..100 {
        if health.check(check()).await.unwrap().into_inner().status == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("health must report SERVING again");
}
