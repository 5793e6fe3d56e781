//! The NATS trust boundary, against a real nats-server secured as in
//! production: nobody gets in without a listed nkey, and the edge's
//! credential can only listen to session events.

use crate::common::*;
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
    h.nats
        .wait_for_interest(&format!("qrlogin.session.{}", s.id))
        .await;

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

/// NATS over TLS: auth connects with `tls://` and the CA
/// (QRLOGIN_NATS_TLS_CA_FILE) and works as before; a client that does not
/// speak TLS, or does not trust the server's CA, gets nowhere.
#[tokio::test]
async fn auth_reaches_nats_over_tls_and_plaintext_clients_do_not() {
    let tls = qrlogin_auth::testing::TestTls::generate();
    let nats = qrlogin_auth::testing::NatsServer::start_tls(&tls).await;
    assert!(nats.url().starts_with("tls://"));
    let mut h = Harness::start_on(nats, |_| {}).await;
    let s = create(&mut h.client).await;
    let token = h.alice();
    scan(&mut h.client, &s.id, &token).await.unwrap();

    let seed = std::fs::read_to_string(h.nats.edge_seed_file()).unwrap();
    let plain = format!("nats://127.0.0.1:{}", h.nats.port());
    let refused = async_nats::ConnectOptions::with_nkey(seed.trim().to_owned())
        .connection_timeout(Duration::from_secs(2))
        .connect(plain)
        .await;
    assert!(refused.is_err(), "a plaintext client got in");
    let untrusted = async_nats::ConnectOptions::with_nkey(seed.trim().to_owned())
        .connection_timeout(Duration::from_secs(2))
        .add_root_certificates(tls.path("stranger.pem"))
        .require_tls(true)
        .connect(h.nats.url())
        .await;
    assert!(
        untrusted.is_err(),
        "a client that does not trust the CA got in"
    );
}

/// The cluster the fault tests run on is a cluster: a replicated bucket
/// made with auth's credential has a leader, loses it with its member, gets
/// another, and the member comes back with the data.
#[tokio::test]
async fn a_three_member_cluster_replicates_and_elects_a_new_stream_leader() {
    use async_nats::jetstream::kv;
    let mut cluster = qrlogin_auth::testing::NatsCluster::start(3).await;
    let client = cluster.connect_as_auth().await.expect("connect as auth");
    let js = async_nats::jetstream::new(client);
    let bucket = js
        .create_key_value(kv::Config {
            bucket: qrlogin_auth::testing::TEST_BUCKET.into(),
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .expect("R3 bucket");
    let stream = format!("KV_{}", qrlogin_auth::testing::TEST_BUCKET);
    // A new R3 stream answers writes once its first leader is elected (on a
    // busy machine that can outlast one publish's acknowledgement timeout).
    let leader = cluster.wait_for_stream_leader(&stream, None).await;
    bucket.put("k", "v1".into()).await.expect("put");
    cluster.kill(leader);
    let next = cluster.wait_for_stream_leader(&stream, Some(leader)).await;
    assert_ne!(next, leader);
    cluster.restart(leader).await;
    let back = cluster
        .connect_as_auth_to(&[leader])
        .await
        .expect("the restarted member takes clients");
    let kv = async_nats::jetstream::new(back)
        .get_key_value(qrlogin_auth::testing::TEST_BUCKET)
        .await
        .expect("bucket");
    let value = kv.get("k").await.expect("get").expect("the value survived");
    assert_eq!(&value[..], b"v1");
}
