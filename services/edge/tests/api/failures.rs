//! Failures: garbage on the bus, NATS restarting under waiting watchers.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn a_malformed_event_is_dropped_and_counted() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let mut sse = cluster.sse_pending(&cluster.edge1, &created).await;
    // Only a writer with publish rights could put garbage there: a user
    // made for this test (neither auth's nor the edge's credential may).
    let seed = cluster
        .nats
        .add_user(
            "garbage-publisher",
            qrlogin_auth::testing::Permissions {
                publish: vec!["qrlogin.session.>".into()],
                subscribe: vec![],
            },
        )
        .await;
    let nats = cluster.nats.connect(&seed).await.unwrap();
    let subject = format!("qrlogin.session.{}", created.id);
    nats.publish(subject.clone(), "\u{1}not a protobuf \u{ff}".into())
        .await
        .unwrap();
    nats.publish(subject, vec![0xff, 0xff, 0xff].into())
        .await
        .unwrap();
    nats.flush().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric(
        &cluster.edge1.metrics().await,
        "qrlogin_edge_undecodable_events_total",
    ) < 2.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "undecodable events not counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The node still delivers.
    assert_eq!(
        cluster
            .phone(&cluster.edge2, &created.id, "scan")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        sse.next_snapshot().await.unwrap().event.as_deref(),
        Some("SCANNED")
    );
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
}

#[tokio::test]
async fn events_after_a_nats_restart_still_arrive() {
    let mut cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let mut sse = cluster.sse_pending(&cluster.edge1, &created).await;
    let v0 = created.json["version"].as_u64().unwrap();
    let ws_url = cluster
        .edge1
        .ws_url(&format!("/v1/login-sessions/{}/ws?since={v0}", created.id));
    let mut ws = ws_connect(&ws_url, &created, None).await.unwrap();

    cluster.nats.restart().await;
    cluster.edge1.wait_ready().await;
    cluster.edge2.wait_ready().await;
    // Auth reconnects on its own schedule; the phone retries while it says 503.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = cluster.phone(&cluster.edge2, &created.id, "scan").await;
        if r.status() == StatusCode::OK {
            break;
        }
        assert_eq!(
            r.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "only unavailability is expected"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "auth never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sse.next_snapshot().await.unwrap().event.as_deref(),
        Some("SCANNED")
    );
    assert_eq!(ws_state(&mut ws).await["state"], "SCANNED");
    assert_eq!(
        cluster
            .phone(&cluster.edge2, &created.id, "confirm")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        sse.next_snapshot().await.unwrap().event.as_deref(),
        Some("CONFIRMED")
    );
    assert_eq!(ws_state(&mut ws).await["state"], "CONFIRMED");
    assert!(
        metric(
            &cluster.edge1.metrics().await,
            "qrlogin_edge_nats_reconnects_total"
        ) >= 2.0
    );
}

/// A transition whose event never reaches the edge (auth wrote the state but
/// its publish was lost) must not show up as EXPIRED at the old deadline:
/// the edge asks auth before announcing a deadline, and delivers what auth
/// holds. The test takes the republish rule off the bucket's stream, so the
/// writes after that are exactly such lost events; only the deadline can
/// catch it (the edge reads nothing periodically).
#[tokio::test]
async fn a_lost_publish_is_found_at_the_deadline_not_reported_as_expired() {
    let cluster = Cluster::start_with(
        |a| {
            a.pending_ttl = Duration::from_secs(2);
        },
        |_| {},
    )
    .await;
    let created = cluster.create(&cluster.edge1).await;
    let mut sse = cluster.sse_pending(&cluster.edge1, &created).await;

    // From here on, writes commit but no event is published.
    let js = async_nats::jetstream::new(cluster.nats.connect_as_auth().await.unwrap());
    let stream = js.get_stream("KV_qrlogin_sessions").await.unwrap();
    let mut config = stream.cached_info().config.clone();
    config.republish = None;
    js.update_stream(&config).await.unwrap();
    for call in ["scan", "confirm"] {
        assert_eq!(
            cluster
                .phone(&cluster.edge2, &created.id, call)
                .await
                .status(),
            StatusCode::OK
        );
    }

    // Nothing arrives before the PENDING deadline; at it, the edge re-reads
    // and delivers CONFIRMED (not EXPIRED).
    let next = tokio::time::timeout(Duration::from_secs(10), sse.next_snapshot())
        .await
        .expect("an event by the deadline")
        .expect("stream open");
    assert_eq!(
        next.event.as_deref(),
        Some("CONFIRMED"),
        "{:?}",
        next.json()
    );
    let redeemed = cluster.redeem(&cluster.edge1, &created).await;
    assert_eq!(redeemed.status(), StatusCode::OK);
}
