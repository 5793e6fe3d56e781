//! A subscriber on the session subject sees every transition, in version order,
//! with nothing secret in the payload.
mod common;

use common::*;
use futures::StreamExt as _;
use prost::Message as _;
use qrlogin_auth::testing::{NatsLayout, NatsServer};
use qrlogin_proto::events::v1::{LoginEvent, LoginState};
use std::time::Duration;

async fn next_event(sub: &mut async_nats::Subscriber) -> (LoginEvent, Vec<u8>) {
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("event within 5 s")
        .expect("subscription open");
    (
        LoginEvent::decode(msg.payload.as_ref()).expect("protobuf LoginEvent"),
        msg.payload.to_vec(),
    )
}

#[tokio::test]
async fn every_transition_is_published_in_version_order() {
    let mut h = Harness::start().await;
    let nats = h.nats.connect(&h.nats.edge_seed_file()).await.unwrap();
    let token = h.alice();
    // Subscribe to all sessions first, so the creation event is caught too.
    let mut sub = nats.subscribe("qrlogin.session.*").await.unwrap();
    nats.flush().await.unwrap();

    let s = create(&mut h.client).await;
    scan(&mut h.client, &s.id, &token).await.unwrap();
    confirm(&mut h.client, &s.id, &token).await.unwrap();
    redeem(&mut h.client, &s.id, &s.secret).await.unwrap();

    let mut seen = Vec::new();
    let mut last_version = 0;
    for expected in [
        LoginState::Pending,
        LoginState::Scanned,
        LoginState::Confirmed,
        LoginState::Redeemed,
    ] {
        let (event, raw) = next_event(&mut sub).await;
        assert_eq!(event.session_id, s.id);
        assert_eq!(event.state(), expected);
        assert!(event.version > last_version, "versions strictly increase");
        last_version = event.version;
        assert!(event.changed_at.is_some());
        assert_eq!(
            event.expires_at.is_some(),
            !matches!(expected, LoginState::Redeemed)
        );
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains(&s.secret), "no browser secret on the bus");
        seen.push(event);
    }
    assert_eq!(seen[0].version, s.version);
    assert_eq!(seen[1].user_display_name, "Alice");
    assert_eq!(seen[0].user_display_name, "");
}

#[tokio::test]
async fn events_use_the_configured_prefix_and_report_expiry() {
    let layout = NatsLayout {
        subject_prefix: "acme.logins".into(),
        ..NatsLayout::default()
    };
    let mut h = Harness::start_on(NatsServer::start_for(&layout).await, |c| {
        c.subject_prefix = "acme.logins".into();
        c.pending_ttl = Duration::from_millis(300);
    })
    .await;
    let nats = h.nats.connect(&h.nats.edge_seed_file()).await.unwrap();
    let s = create(&mut h.client).await;
    let mut sub = nats
        .subscribe(format!("acme.logins.{}", s.id))
        .await
        .unwrap();
    nats.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    // The first reader after the deadline writes EXPIRED and publishes it.
    let view = get(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(state(&view), LoginState::Expired);
    let (event, _) = next_event(&mut sub).await;
    assert_eq!(event.state(), LoginState::Expired);
    assert_eq!(event.version, view.version);
    assert!(event.version > s.version);
}
