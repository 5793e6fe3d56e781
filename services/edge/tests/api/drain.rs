//! Drain: the stop signal ends every stream so clients move elsewhere.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn drain_closes_streams_answers_polls_and_fails_readiness() {
    let mut cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let v0 = created.json["version"].as_u64().unwrap();
    let ws_url = cluster
        .edge1
        .ws_url(&format!("/v1/login-sessions/{}/ws", created.id));
    let mut ws = ws_connect(&ws_url, &created, None).await.unwrap();
    assert_eq!(ws_state(&mut ws).await["state"], "PENDING");
    let mut sse = cluster.sse_pending(&cluster.edge1, &created).await;
    let poll_url = cluster.edge1.url(&format!(
        "/v1/login-sessions/{}?since={v0}&wait=20s",
        created.id
    ));
    let poll = cluster
        .http
        .get(&poll_url)
        .bearer_auth(&created.secret)
        .send();
    let poll = tokio::spawn(poll);
    // The poll is parked when the node holds 3 connections.
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric(
        &cluster.edge1.metrics().await,
        "qrlogin_edge_connections{transport=\"long_poll\"}",
    ) < 1.0
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let started = tokio::time::Instant::now();
    let task = cluster.edge1.stop();
    assert!(matches!(ws_next(&mut ws).await, WsEvent::Close(Some(1012))));
    let retry = sse.next().await.unwrap();
    assert!(retry.retry.is_some(), "a retry: before the end");
    assert!(sse.next().await.is_none(), "SSE ends");
    let answered = poll.await.unwrap().unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    assert_eq!(
        answered.json::<serde_json::Value>().await.unwrap()["state"],
        "PENDING"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "all answered at once"
    );

    let ready = cluster
        .http
        .get(cluster.edge1.ops_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = cluster
        .http
        .post(cluster.edge1.url("/v1/login-sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::SERVICE_UNAVAILABLE, "draining".into())
    );
    // The other edge is unaffected, and the node exits within its deadline.
    assert_eq!(
        cluster
            .http
            .get(cluster.edge2.ops_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("exits within the drain deadline")
        .unwrap();
}
