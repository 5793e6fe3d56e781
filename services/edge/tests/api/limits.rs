//! Limits: watchers per session, create rate, body size, connections.

use reqwest::{header, StatusCode};

use crate::helpers::*;

#[tokio::test]
async fn a_session_has_at_most_max_watchers_per_node() {
    let cluster = Cluster::start_with(|_| {}, |c| c.max_watchers_per_session = 2).await;
    let created = cluster.create(&cluster.edge1).await;
    let url1 = cluster
        .edge1
        .url(&format!("/v1/login-sessions/{}/events", created.id));
    let _a = SseClient::open(&cluster.http, &url1, &created, None)
        .await
        .unwrap()
        .unwrap();
    let _b = SseClient::open(&cluster.http, &url1, &created, None)
        .await
        .unwrap()
        .unwrap();
    let third = SseClient::open(&cluster.http, &url1, &created, None)
        .await
        .unwrap()
        .err()
        .unwrap();
    assert_eq!(
        error_code(third).await,
        (StatusCode::TOO_MANY_REQUESTS, "too_many_watchers".into())
    );
    let ws = ws_connect(
        &cluster
            .edge1
            .ws_url(&format!("/v1/login-sessions/{}/ws", created.id)),
        &created,
        None,
    )
    .await;
    assert!(
        matches!(ws, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 429)
    );
    // The limit is per node.
    let url2 = cluster
        .edge2
        .url(&format!("/v1/login-sessions/{}/events", created.id));
    assert!(SseClient::open(&cluster.http, &url2, &created, None)
        .await
        .unwrap()
        .is_ok());
    assert!(cluster
        .edge1
        .metrics()
        .await
        .contains("qrlogin_edge_rejected_requests_total{reason=\"too_many_watchers\"} 2"));
}

#[tokio::test]
async fn creates_per_ip_are_rate_limited_with_retry_after() {
    let cluster = Cluster::start_with(|_| {}, |c| c.create_rate_per_ip = 3).await;
    for _ in 0..3 {
        cluster.create(&cluster.edge1).await;
    }
    let r = cluster
        .http
        .post(cluster.edge1.url("/v1/login-sessions"))
        .send()
        .await
        .unwrap();
    let retry_after: u64 = r.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(
        error_code(r).await,
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited".into())
    );
    // Another client address behind the trusted proxy has its own budget.
    let r = cluster
        .http
        .post(cluster.edge1.url("/v1/login-sessions"))
        .header("x-forwarded-for", "198.51.100.23")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let cluster = Cluster::start_with(|_| {}, |c| c.max_body_bytes = 256).await;
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(1000));
    let r = cluster
        .http
        .post(cluster.edge1.url("/v1/login-sessions"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".into())
    );
}

#[tokio::test]
async fn beyond_max_connections_requests_get_503_over_capacity() {
    let cluster = Cluster::start_with(|_| {}, |c| c.max_connections = 2).await;
    let a = cluster.create(&cluster.edge2).await;
    let b = cluster.create(&cluster.edge2).await;
    let url = |c: &Created| {
        cluster
            .edge1
            .url(&format!("/v1/login-sessions/{}/events", c.id))
    };
    let sse_a = SseClient::open(&cluster.http, &url(&a), &a, None)
        .await
        .unwrap()
        .unwrap();
    let _sse_b = SseClient::open(&cluster.http, &url(&b), &b, None)
        .await
        .unwrap()
        .unwrap();
    let r = cluster
        .http
        .post(cluster.edge1.url("/v1/login-sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::SERVICE_UNAVAILABLE, "over_capacity".into())
    );
    // The operations port is not counted.
    assert_eq!(
        cluster
            .http
            .get(cluster.edge1.ops_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    drop(sse_a);
    // The closed stream's slot comes back.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = cluster
            .http
            .post(cluster.edge1.url("/v1/login-sessions"))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::CREATED {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot never released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
