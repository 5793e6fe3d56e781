//! What the operations port's metrics say about the node and about a
//! delivery: readiness and the NATS link as a scrape sees them, the
//! connection cap, and the delay of a pushed event counted by transport.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{metric, Cluster, TestEdge, WAIT};

/// Scrapes `edge` until `ok` holds (bounded by [`WAIT`]).
async fn scrape_until(edge: &TestEdge, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = edge.metrics().await;
        if ok(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not seen within {WAIT:?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_node_state_follows_the_nats_link() {
    let mut cluster = Cluster::start().await;
    let edge = &cluster.edge1;
    let text = scrape_until(edge, "ready", |m| metric(m, "qrlogin_edge_ready") == 1.0).await;
    assert_eq!(metric(&text, "qrlogin_edge_nats_connected"), 1.0);
    assert_eq!(metric(&text, "qrlogin_edge_connections_limit"), 18_000.0);
    assert!(text.contains("qrlogin_edge_build_info{version="));

    cluster.nats.kill();
    scrape_until(&cluster.edge1, "not ready without NATS", |m| {
        metric(m, "qrlogin_edge_ready") == 0.0 && metric(m, "qrlogin_edge_nats_connected") == 0.0
    })
    .await;
    // /readyz agrees with the gauge.
    let r = reqwest::get(cluster.edge1.ops_url("/readyz"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// A confirm pushed over SSE and WebSocket counts once per transport, each
/// with a delay from the commit; the short poll that reads it adds none.
#[tokio::test]
async fn a_pushed_event_has_a_delay_in_its_transport() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let mut sse = cluster.sse_pending(&cluster.edge1, &created).await;
    let scan = cluster.phone(&cluster.edge2, &created.id, "scan").await;
    assert_eq!(scan.status(), StatusCode::OK);
    assert_eq!(
        sse.next_snapshot().await.unwrap().event.as_deref(),
        Some("SCANNED")
    );
    let text = scrape_until(&cluster.edge1, "the SSE push counted", |m| {
        metric(
            m,
            "qrlogin_edge_delivery_delay_seconds_count{transport=\"sse\"}",
        ) == 1.0
    })
    .await;
    assert_eq!(
        metric(
            &text,
            "qrlogin_edge_events_delivered_total{transport=\"sse\"}"
        ),
        2.0,
        "PENDING (a read) and SCANNED (an event)"
    );
    let delay = metric(
        &text,
        "qrlogin_edge_delivery_delay_seconds_sum{transport=\"sse\"}",
    );
    assert!(
        delay > 0.0 && delay < WAIT.as_secs_f64(),
        "a delay from the commit: {delay} s"
    );
    assert_eq!(
        metric(
            &text,
            "qrlogin_edge_delivery_delay_seconds_count{transport=\"websocket\"}"
        ),
        0.0
    );
    let read = cluster
        .browser(reqwest::Method::GET, &cluster.edge1, &created, "")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let text = cluster.edge1.metrics().await;
    assert_eq!(
        metric(
            &text,
            "qrlogin_edge_events_delivered_total{transport=\"short_poll\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "qrlogin_edge_delivery_delay_seconds_count{transport=\"short_poll\"}"
        ),
        0.0
    );
}
