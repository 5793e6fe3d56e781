//! Auth's operations port: metrics of what callers did, and readiness, on
//! a port of their own (the gRPC port shows neither).

use crate::common::*;
use qrlogin_proto::auth::v1 as pb;
use tonic::Code;

async fn scrape(h: &Harness) -> String {
    let addr = h
        .auth
        .ops_addr()
        .expect("the test config sets QRLOGIN_AUTH_OPS_LISTEN");
    let r = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/openmetrics-text")));
    r.text().await.unwrap()
}

/// The value of the series `name{labels}` (as written) in a scrape.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{series} not in the scrape:\n{text}"))
}

#[tokio::test]
async fn transitions_refusals_and_latencies_are_counted() {
    let mut h = Harness::start_with(|c| c.create_limit = 2).await;
    let s = create(&mut h.client).await;
    let _second = create(&mut h.client).await;
    let limited = h
        .client
        .create_login_session(pb::CreateLoginSessionRequest {
            client_ip: "203.0.113.7".into(),
            user_agent: "TestBrowser/1.0".into(),
            browser_key: None,
        })
        .await;
    assert_code(limited, Code::ResourceExhausted, "too many");
    let alice = h.alice();
    scan(&mut h.client, &s.id, &alice).await.unwrap();
    assert_code(
        confirm(&mut h.client, &s.id, "not-a-jwt").await,
        Code::Unauthenticated,
        "",
    );
    confirm(&mut h.client, &s.id, &alice).await.unwrap();
    assert_code(
        deny(&mut h.client, &s.id, &alice).await,
        Code::FailedPrecondition,
        "CONFIRMED",
    );
    let mut anonymous = raw_client(&h.auth).await;
    assert_code(
        anonymous
            .get_login_session(pb::GetLoginSessionRequest {
                session_id: s.id.clone(),
                browser_secret: s.secret.clone(),
            })
            .await,
        Code::Unauthenticated,
        "service token",
    );

    let text = scrape(&h).await;
    for (series, want) in [
        (
            "qrlogin_auth_transitions_total{action=\"create\",outcome=\"written\"}",
            2.0,
        ),
        (
            "qrlogin_auth_transitions_total{action=\"create\",outcome=\"rate_limited\"}",
            1.0,
        ),
        (
            "qrlogin_auth_transitions_total{action=\"scan\",outcome=\"written\"}",
            1.0,
        ),
        (
            "qrlogin_auth_transitions_total{action=\"confirm\",outcome=\"written\"}",
            1.0,
        ),
        (
            "qrlogin_auth_transitions_total{action=\"deny\",outcome=\"refused\"}",
            1.0,
        ),
        ("qrlogin_auth_create_limited_total", 1.0),
        (
            "qrlogin_auth_user_token_failures_total{reason=\"invalid\"}",
            1.0,
        ),
        (
            "qrlogin_auth_service_token_refusals_total{reason=\"missing\"}",
            1.0,
        ),
        (
            "qrlogin_auth_calls_total{method=\"CreateLoginSession\",code=\"OK\"}",
            2.0,
        ),
        (
            "qrlogin_auth_calls_total{method=\"CreateLoginSession\",code=\"RESOURCE_EXHAUSTED\"}",
            1.0,
        ),
        (
            "qrlogin_auth_calls_total{method=\"GetLoginSession\",code=\"UNAUTHENTICATED\"}",
            1.0,
        ),
        ("qrlogin_auth_cas_aborts_total{action=\"confirm\"}", 0.0),
        ("qrlogin_auth_calls_in_flight", 0.0),
        ("qrlogin_auth_nats_connected", 1.0),
    ] {
        assert_eq!(value(&text, series), want, "{series}");
    }
    // Two creates, a scan, a confirm: four committed writes, each timed.
    assert_eq!(
        value(
            &text,
            "qrlogin_auth_kv_write_duration_seconds_count{result=\"committed\"}"
        ),
        4.0
    );
    assert!(value(&text, "qrlogin_auth_kv_read_duration_seconds_count") >= 3.0);
}

#[tokio::test]
async fn readiness_follows_nats_and_the_grpc_port_shows_no_metrics() {
    let mut h = Harness::start().await;
    let ops = h.auth.ops_addr().unwrap();
    let get = |path: &'static str| async move {
        reqwest::get(format!("http://{ops}{path}"))
            .await
            .unwrap()
            .status()
    };
    assert_eq!(get("/healthz").await, 200);
    assert_eq!(get("/readyz").await, 200);
    assert_eq!(get("/metricz").await, 404);
    // The gRPC port speaks HTTP/2 only: a plain HTTP/1 GET gets no metrics.
    let plain = reqwest::get(format!("http://{}/metrics", h.auth.addr())).await;
    assert!(plain.map_or(true, |r| r.status() != 200));

    h.nats.kill();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while get("/readyz").await != 503 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready without NATS"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(get("/healthz").await, 200, "alive without NATS");
    assert_eq!(value(&scrape(&h).await, "qrlogin_auth_nats_connected"), 0.0);
    h.nats.restart().await;
    while get("/readyz").await != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready again after NATS came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let text = scrape(&h).await;
    assert_eq!(value(&text, "qrlogin_auth_nats_connected"), 1.0);
    assert_eq!(value(&text, "qrlogin_auth_nats_reconnects_total"), 1.0);
}
