//! The NATS trust boundary, against a real nats-server secured as in
//! production: nobody gets in without a listed nkey, and the edge's
//! credential can only listen to session events.
mod common;

use common::*;
use futures::StreamExt as _;
use std::time::Duration;

/// How long a test waits for something that must not arrive.
const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn an_anonymous_client_is_refused() {
    let nats = qrlogin_auth::testing::NatsServer::start().await;
    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(nats.url())
        .await;
    let err = anonymous.expect_err("an anonymous client must be refused");
    assert_eq!(
        err.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
    // A seed the server does not know is refused the same way.
    let stranger = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(stranger.path(), nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    let err = nats
        .connect(stranger.path())
        .await
        .expect_err("unknown nkey");
    assert_eq!(
        err.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation
    );
}

/// Publishes with the edge's credential and checks, from auth's side of the
/// server, that nothing arrived; the server reports the violation.
#[tokio::test]
async fn the_edge_credential_cannot_publish_nor_use_jetstream() {
    let mut h = Harness::start().await;
    let s = create(&mut h.client).await;
    let edge = h.nats.connect(&h.nats.edge_seed_file()).await.unwrap();
    let watcher = h.nats.connect(&h.nats.edge_seed_file()).await.unwrap();
    let mut events = watcher
        .subscribe(format!("qrlogin.session.{}", s.id))
        .await
        .unwrap();
    watcher.flush().await.unwrap();

    // A fake event on the session's subject never reaches a subscriber.
    edge.publish(format!("qrlogin.session.{}", s.id), "forged event".into())
        .await
        .unwrap();
    edge.flush().await.unwrap();
    assert!(
        tokio::time::timeout(QUIET, events.next()).await.is_err(),
        "a forged event was delivered"
    );

    // A write to the bucket's subject does not change the stored session.
    edge.publish(format!("$KV.qrlogin_sessions.{}", s.id), "x".into())
        .await
        .unwrap();
    edge.flush().await.unwrap();
    let stored = get(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(stored.version, s.version, "the bucket changed");

    // The JetStream API answers nothing to the edge: requests time out or
    // are refused (no responder is reachable without publish rights).
    let mut js = async_nats::jetstream::new(edge.clone());
    js.set_timeout(Duration::from_millis(500));
    assert!(js.query_account().await.is_err(), "JetStream INFO answered");
    assert!(
        js.get_key_value("qrlogin_sessions").await.is_err(),
        "the edge opened the bucket"
    );

    // It may not listen to the bucket's raw writes or other subjects either.
    let mut raw = edge.subscribe("$KV.qrlogin_sessions.>").await.unwrap();
    let mut all = edge.subscribe(">").await.unwrap();
    edge.flush().await.unwrap();
    let token = h.alice();
    scan(&mut h.client, &s.id, &token).await.unwrap();
    assert!(tokio::time::timeout(QUIET, raw.next())
        .await
        .map_or(true, |m| m.is_none()));
    assert!(tokio::time::timeout(QUIET, all.next())
        .await
        .map_or(true, |m| m.is_none()));
    // ...while the subscription it is allowed gets the event.
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the scan event")
        .expect("subscription open");
    assert!(!event.payload.is_empty());
}
