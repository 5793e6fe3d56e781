//! Resuming after a dropped connection, late watchers, expiry, cancel.

use std::time::Duration;

use futures::SinkExt;
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

#[tokio::test]
async fn sse_resumes_with_last_event_id_on_another_edge() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let path = format!("/v1/login-sessions/{}/events", created.id);
    let mut sse = SseClient::open(&cluster.http, &cluster.edge1.url(&path), &created, None)
        .await
        .unwrap()
        .unwrap();
    let pending = sse.next_snapshot().await.unwrap();
    let v0: u64 = pending.id.unwrap().parse().unwrap();
    drop(sse);
    // Scanned while the browser was away.
    assert_eq!(
        cluster
            .phone(&cluster.edge2, &created.id, "scan")
            .await
            .status(),
        StatusCode::OK
    );
    let mut sse = SseClient::open(&cluster.http, &cluster.edge2.url(&path), &created, Some(v0))
        .await
        .unwrap()
        .unwrap();
    let scanned = sse.next_snapshot().await.unwrap();
    assert_eq!(
        scanned.event.as_deref(),
        Some("SCANNED"),
        "PENDING is not sent again"
    );
    assert_eq!(scanned.json()["node"], "edge-2");
    let v1: u64 = scanned.id.unwrap().parse().unwrap();
    assert!(v1 > v0);
    drop(sse);
    // Resuming at the current version sends nothing until the next change.
    let mut sse = SseClient::open(&cluster.http, &cluster.edge1.url(&path), &created, Some(v1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        cluster
            .phone(&cluster.edge2, &created.id, "confirm")
            .await
            .status(),
        StatusCode::OK
    );
    let confirmed = sse.next_snapshot().await.unwrap();
    assert_eq!(confirmed.event.as_deref(), Some("CONFIRMED"));
}

#[tokio::test]
async fn long_poll_since_returns_what_happened_meanwhile_at_once() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let v0 = created.json["version"].as_u64().unwrap();
    assert_eq!(
        cluster
            .phone(&cluster.edge2, &created.id, "scan")
            .await
            .status(),
        StatusCode::OK
    );
    let started = tokio::time::Instant::now();
    let s = long_poll(&cluster, &cluster.edge2, &created, v0, "20s").await;
    assert_eq!(s["state"], "SCANNED");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at once"
    );
    // Nothing newer: the poll is held for `wait` and returns the same snapshot.
    let v1 = s["version"].as_u64().unwrap();
    let started = tokio::time::Instant::now();
    let same = long_poll(&cluster, &cluster.edge1, &created, v1, "300ms").await;
    assert_eq!(same["version"].as_u64(), Some(v1));
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn websocket_resumes_with_since_and_with_a_resume_message() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let v0 = created.json["version"].as_u64().unwrap();
    assert_eq!(
        cluster
            .phone(&cluster.edge2, &created.id, "scan")
            .await
            .status(),
        StatusCode::OK
    );
    let url = cluster
        .edge1
        .ws_url(&format!("/v1/login-sessions/{}/ws?since={v0}", created.id));
    let mut ws = ws_connect(&url, &created, None).await.unwrap();
    let scanned = ws_state(&mut ws).await;
    assert_eq!(scanned["state"], "SCANNED");
    let v1 = scanned["version"].as_u64().unwrap();
    drop(ws);
    // The resume message form, on the other edge: nothing is repeated.
    let url = cluster
        .edge2
        .ws_url(&format!("/v1/login-sessions/{}/ws", created.id));
    let mut ws = ws_connect(&url, &created, None).await.unwrap();
    ws.send(Message::Text(
        format!(r#"{{"type":"resume","since":{v1}}}"#).into(),
    ))
    .await
    .unwrap();
    assert_eq!(
        cluster
            .phone(&cluster.edge1, &created.id, "confirm")
            .await
            .status(),
        StatusCode::OK
    );
    let confirmed = ws_state(&mut ws).await;
    assert_eq!(
        confirmed["state"], "CONFIRMED",
        "SCANNED was not sent twice"
    );
}

#[tokio::test]
async fn a_watcher_that_connects_after_confirm_gets_confirmed_first() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    assert_eq!(
        cluster
            .phone(&cluster.edge2, &created.id, "scan")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        cluster
            .phone(&cluster.edge2, &created.id, "confirm")
            .await
            .status(),
        StatusCode::OK
    );
    let url = cluster
        .edge1
        .url(&format!("/v1/login-sessions/{}/events", created.id));
    let mut sse = SseClient::open(&cluster.http, &url, &created, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sse.next_snapshot().await.unwrap().event.as_deref(),
        Some("CONFIRMED")
    );
    let ws_url = cluster
        .edge2
        .ws_url(&format!("/v1/login-sessions/{}/ws", created.id));
    let mut ws = ws_connect(&ws_url, &created, None).await.unwrap();
    assert_eq!(ws_state(&mut ws).await["state"], "CONFIRMED");
}

#[tokio::test]
async fn watchers_are_told_expired_at_the_deadline() {
    let cluster = Cluster::start_with(|c| c.pending_ttl = Duration::from_secs(2), |_| {}).await;
    let created = cluster.create(&cluster.edge1).await;
    let v0 = created.json["version"].as_u64().unwrap();
    let mut sse = cluster.sse_pending(&cluster.edge1, &created).await;
    let ws_url = cluster
        .edge2
        .ws_url(&format!("/v1/login-sessions/{}/ws", created.id));
    let mut ws = ws_connect(&ws_url, &created, None).await.unwrap();
    assert_eq!(ws_state(&mut ws).await["state"], "PENDING");
    let expired = sse.next_snapshot().await.unwrap();
    assert_eq!(expired.event.as_deref(), Some("EXPIRED"));
    assert!(expired.json()["expires_at"].is_null());
    assert!(expired.json()["version"].as_u64().unwrap() >= v0);
    assert!(sse.next().await.is_none());
    assert_eq!(ws_state(&mut ws).await["state"], "EXPIRED");
    assert!(matches!(ws_next(&mut ws).await, WsEvent::Close(Some(1000))));
    // A transition after the deadline is refused as expired.
    let late = cluster.phone(&cluster.edge2, &created.id, "scan").await;
    assert_eq!(
        error_code(late).await,
        (StatusCode::GONE, "expired".to_owned())
    );
}

#[tokio::test]
async fn cancel_over_websocket_reaches_every_watcher() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let mut sse = cluster.sse_pending(&cluster.edge2, &created).await;
    let url = cluster
        .edge1
        .ws_url(&format!("/v1/login-sessions/{}/ws", created.id));
    let mut ws = ws_connect(&url, &created, None).await.unwrap();
    assert_eq!(ws_state(&mut ws).await["state"], "PENDING");
    ws.send(Message::Text(r#"{"type":"cancel"}"#.into()))
        .await
        .unwrap();
    assert_eq!(ws_state(&mut ws).await["state"], "CANCELLED");
    assert!(matches!(ws_next(&mut ws).await, WsEvent::Close(Some(1000))));
    assert_eq!(
        sse.next_snapshot().await.unwrap().event.as_deref(),
        Some("CANCELLED")
    );
}

#[tokio::test]
async fn a_bad_websocket_message_closes_with_1008() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let url = cluster
        .edge1
        .ws_url(&format!("/v1/login-sessions/{}/ws?since=0", created.id));
    let mut ws = ws_connect(&url, &created, None).await.unwrap();
    assert_eq!(ws_state(&mut ws).await["state"], "PENDING");
    ws.send(Message::Text(r#"{"type":"launch"}"#.into()))
        .await
        .unwrap();
    assert!(matches!(ws_next(&mut ws).await, WsEvent::Close(Some(1008))));
}
