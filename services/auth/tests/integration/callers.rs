//! Auth's gRPC boundary: who may call (service tokens), reflection as a
//! setting, and the limits that keep one caller from taking it all: the
//! concurrency cap, the request timeout, the create limit shared by every
//! replica, the size cap of the session bucket.

use crate::common::*;
use qrlogin_auth::testing::{grpcurl_bin, TestAuth};
use qrlogin_proto::auth::v1 as pb;
use std::time::Duration;
use tonic::{Code, Status};

fn reason(s: &Status) -> Option<&str> {
    s.metadata()
        .get("x-qrlogin-reason")
        .and_then(|v| v.to_str().ok())
}

fn create_request(ip: &str) -> pb::CreateLoginSessionRequest {
    pb::CreateLoginSessionRequest {
        client_ip: ip.into(),
        user_agent: "TestBrowser/1.0".into(),
        browser_key: None,
    }
}

#[tokio::test]
async fn browser_side_calls_need_a_valid_service_token() {
    let mut h = Harness::start().await;
    let s = create(&mut h.client).await;
    let by_secret = || pb::GetLoginSessionRequest {
        session_id: s.id.clone(),
        browser_secret: s.secret.clone(),
    };
    let mut none = raw_client(&h.auth).await;
    let wrong_token = "x".repeat(64);
    let mut wrong = client_with_token(&h.auth, &wrong_token).await;

    for (label, result) in [
        (
            "create without",
            none.create_login_session(create_request("203.0.113.1"))
                .await
                .map(|_| ()),
        ),
        (
            "create wrong",
            wrong
                .create_login_session(create_request("203.0.113.1"))
                .await
                .map(|_| ()),
        ),
        (
            "get without",
            none.get_login_session(by_secret()).await.map(|_| ()),
        ),
        (
            "get wrong",
            wrong.get_login_session(by_secret()).await.map(|_| ()),
        ),
        (
            "cancel without",
            none.cancel_login_session(pb::CancelLoginSessionRequest {
                session_id: s.id.clone(),
                browser_secret: s.secret.clone(),
            })
            .await
            .map(|_| ()),
        ),
        (
            "redeem wrong",
            wrong
                .redeem_login_session(pb::RedeemLoginSessionRequest {
                    session_id: s.id.clone(),
                    browser_secret: s.secret.clone(),
                    proof: String::new(),
                })
                .await
                .map(|_| ()),
        ),
    ] {
        let status = result.expect_err(label);
        assert_eq!(status.code(), Code::Unauthenticated, "{label}");
        assert_eq!(reason(&status), Some("service_token"), "{label}");
        assert!(!status.message().contains(&wrong_token));
    }
    // Nothing happened to the session.
    let read = get(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(read.version, s.version);

    // Phone-side calls carry the user's token; a phone backend may make
    // them without a service token, but not with a wrong one.
    let token = h.alice();
    let mut phone = raw_client(&h.auth).await;
    let scanned = phone
        .scan_login_session(with_token(
            pb::ScanLoginSessionRequest {
                session_id: s.id.clone(),
                qr_payload: s.qr_payload.clone(),
                client_ip: String::new(),
            },
            &token,
        ))
        .await
        .expect("scan without a service token");
    assert!(scanned.into_inner().session.is_some());
    let refused = wrong
        .confirm_login_session(with_token(
            pb::ConfirmLoginSessionRequest {
                session_id: s.id.clone(),
                match_code: 0,
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(reason(&refused), Some("service_token"));
}

#[tokio::test]
async fn reflection_is_off_unless_configured() {
    let h = Harness::start_with(|c| c.grpc_reflection = false).await;
    // tokio's process: auth runs on this test's runtime and must keep serving.
    let out = tokio::process::Command::new(grpcurl_bin())
        .args(["-plaintext", &h.auth.addr().to_string(), "list"])
        .output()
        .await
        .unwrap();
    assert!(
        !out.status.success(),
        "grpcurl listed services without reflection"
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("Unimplemented") || said.contains("reflection"),
        "{said}"
    );
    // (The health service stays: TestAuth waited for SERVING through it.)
}

/// With NATS gone, a call waits (for the JetStream timeout) in auth; the
/// cap of one concurrent call makes every other call RESOURCE_EXHAUSTED at
/// once instead of queueing behind it.
#[tokio::test]
async fn calls_beyond_the_concurrency_cap_are_refused_at_once() {
    let mut h = Harness::start_with(|c| {
        c.max_concurrent_requests = 1;
        c.request_timeout = Duration::from_secs(30);
    })
    .await;
    let s = create(&mut h.client).await;
    h.nats.kill();
    let mut slow_client = client(&h.auth).await;
    let (id, secret) = (s.id.clone(), s.secret.clone());
    let slow = tokio::spawn(async move { get(&mut slow_client, &id, &secret).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        assert!(
            !slow.is_finished(),
            "the slow call ended before a second one was refused"
        );
        assert!(tokio::time::Instant::now() < deadline, "never refused");
        match get(&mut h.client, &s.id, &s.secret).await {
            Err(status) if status.code() == Code::ResourceExhausted => break status,
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    assert_eq!(reason(&refused), Some("over_capacity"));
    slow.abort();
}

#[tokio::test]
async fn a_call_longer_than_the_request_timeout_is_cut() {
    let mut h = Harness::start_with(|c| c.request_timeout = Duration::from_millis(300)).await;
    let s = create(&mut h.client).await;
    h.nats.kill();
    let started = tokio::time::Instant::now();
    let status = get(&mut h.client, &s.id, &s.secret).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Two auth replicas on one NATS count the same network together: the
/// limit is cluster-wide, keyed by IPv4 address or IPv6 /64.
#[tokio::test]
async fn the_create_limit_holds_across_replicas_per_network() {
    let mut h = Harness::start_with(|c| c.create_limit = 3).await;
    let mut config = TestAuth::config(&h.nats, &h.keys);
    config.create_limit = 3;
    let other = TestAuth::spawn_config(config).await;
    let mut second = client(&other).await;

    let mut first = h.client.clone();
    for (n, c) in [&mut first, &mut second, &mut h.client]
        .into_iter()
        .enumerate()
    {
        c.create_login_session(create_request("2001:db8:7:1::10"))
            .await
            .unwrap_or_else(|e| panic!("create {n}: {e:?}"));
    }
    // A fourth from another host of the same /64, on either replica.
    for c in [&mut second, &mut h.client] {
        let status = c
            .create_login_session(create_request("2001:db8:7:1:ffff::99"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(reason(&status), Some("rate_limited"));
        let retry: u64 = status
            .metadata()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("retry-after");
        assert!((1..=60).contains(&retry), "{retry}");
    }
    // Another /64 and an IPv4 client are not affected.
    second
        .create_login_session(create_request("2001:db8:7:2::10"))
        .await
        .unwrap();
    h.client
        .create_login_session(create_request("198.51.100.20"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_full_session_bucket_is_a_clear_refusal() {
    let mut h = Harness::start_with(|c| c.kv_max_bytes = 16 << 10).await;
    let mut created = 0;
    let status = loop {
        match h
            .client
            .create_login_session(create_request("203.0.113.9"))
            .await
        {
            Ok(_) => created += 1,
            Err(status) => break status,
        }
        assert!(created < 500, "16 KiB never filled up");
    };
    assert!(created > 0);
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), Some("storage_full"));
    assert!(!status.message().to_lowercase().contains("nats"));
}
