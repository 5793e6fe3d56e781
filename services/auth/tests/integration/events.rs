//! Events are the bucket's writes, republished by NATS: a subscriber on the
//! session subject sees every transition, in version order, with the
//! revision in `Nats-Sequence`, and nothing private in clear.

use crate::common::*;
use async_nats::jetstream;
use futures::StreamExt as _;
use prost::Message as _;
use qrlogin_auth::testing::{NatsLayout, NatsServer};
use qrlogin_proto::events::v1::{LoginEvent, LoginState, StoredSession};
use sha2::Digest as _;
use std::time::Duration;

/// One republished write: the event, its version (`Nats-Sequence`), the
/// previous revision (`Nats-Last-Sequence`) and the raw message.
struct Republished {
    event: LoginEvent,
    version: u64,
    previous: u64,
    message: async_nats::Message,
}

fn header(msg: &async_nats::Message, name: &str) -> Option<String> {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_owned())
}

async fn next_event(sub: &mut async_nats::Subscriber) -> Republished {
    let message = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("event within 5 s")
        .expect("subscription open");
    let stored = StoredSession::decode(message.payload.as_ref()).expect("a StoredSession");
    let event = stored.event.expect("the public snapshot");
    let number = |name| {
        header(&message, name)
            .unwrap_or_else(|| panic!("{name} header"))
            .parse::<u64>()
            .expect("a number")
    };
    Republished {
        version: number("Nats-Sequence"),
        previous: number("Nats-Last-Sequence"),
        event,
        message,
    }
}

/// Everything a message carries, as text, for "not in clear" checks.
fn wire_text(msg: &async_nats::Message) -> String {
    let mut text = String::from_utf8_lossy(&msg.payload).into_owned();
    if let Some(headers) = &msg.headers {
        for (name, values) in headers.iter() {
            text.push_str(name.as_ref());
            for v in values {
                text.push_str(v.as_str());
            }
        }
    }
    text
}

#[tokio::test]
async fn every_write_is_republished_in_order_with_nothing_private_in_clear() {
    let mut h = Harness::start().await;
    let nats = h.nats.connect(&h.nats.edge_seed_file()).await.unwrap();
    // Subscribe to all sessions first, so the creation event is caught too.
    let mut sub = nats.subscribe("qrlogin.session.*").await.unwrap();
    nats.flush().await.unwrap();
    h.nats.wait_for_interest("qrlogin.session.probe").await;

    let user_agent = "Mozilla/5.0 UniqueBrowser/77.1";
    let created = h
        .client
        .create_login_session(qrlogin_proto::auth::v1::CreateLoginSessionRequest {
            client_ip: "198.51.100.99".into(),
            user_agent: user_agent.into(),
            browser_key: None,
        })
        .await
        .unwrap()
        .into_inner();
    let id = created.session.as_ref().unwrap().session_id.clone();
    let secret = created.browser_secret.clone();
    remember(&Created {
        id: id.clone(),
        secret: secret.clone(),
        version: 0,
        qr_payload: created.qr_payload.clone(),
    });
    // A user whose id is nowhere in its display name (the account shown
    // is preferred_username).
    let now = qrlogin_auth::token::unix_now_secs();
    let token = h.keys.user_token_claims(&serde_json::json!({
        "sub": "user-8d1f03", "preferred_username": "alice", "name": "Alice",
        "iss": "qrlogin-dev", "aud": "qrlogin", "iat": now, "exp": now + 600,
    }));
    let scanned = scan(&mut h.client, &id, &token).await.unwrap();
    let confirmed = confirm(&mut h.client, &id, &token).await.unwrap();
    let redeemed = redeem(&mut h.client, &id, &secret).await.unwrap();
    let versions = [
        created.session.unwrap().version,
        scanned.session.unwrap().version,
        confirmed.version,
        redeemed.session.unwrap().version,
    ];

    let secret_hash = hex(&sha2::Sha256::digest(secret.as_bytes()));
    let mut previous = 0;
    for (expected, version) in [
        LoginState::Pending,
        LoginState::Scanned,
        LoginState::Confirmed,
        LoginState::Redeemed,
    ]
    .into_iter()
    .zip(versions)
    {
        let got = next_event(&mut sub).await;
        assert_eq!(
            got.message.subject.as_str(),
            format!("qrlogin.session.{id}")
        );
        assert_eq!(got.event.session_id, id);
        assert_eq!(got.event.state(), expected);
        assert_eq!(got.version, version, "Nats-Sequence is the API's version");
        assert_eq!(
            got.previous, previous,
            "Nats-Last-Sequence chains the writes"
        );
        assert_eq!(
            got.event.version, 0,
            "the stored snapshot carries no version"
        );
        assert!(got.event.changed_at.is_some());
        assert_eq!(
            got.event.expires_at.is_some(),
            expected != LoginState::Redeemed
        );
        let wire = wire_text(&got.message);
        for private in [
            secret.as_str(),
            secret_hash.as_str(),
            "198.51.100.99",
            "UniqueBrowser",
            "user-8d1f03",
            redeemed.access_token.as_str(),
        ] {
            assert!(
                !wire.contains(private),
                "{private:?} is on the bus in clear"
            );
        }
        previous = version;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), sub.next())
            .await
            .is_err(),
        "one event per write, no more"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic by construction: the server routes a write's republished
/// event before it acknowledges the write, so a subscriber that starts after
/// create returned cannot see the creation event; the first event it gets
/// is the expiry written by the first read after the deadline.
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
    h.nats
        .wait_for_interest(&format!("acme.logins.{}", s.id))
        .await;
    // Wait for the clock to pass the PENDING deadline (the rule under test),
    // not for anything to happen.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let view = loop {
        let view = get(&mut h.client, &s.id, &s.secret).await.unwrap();
        if state(&view) == LoginState::Expired {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let got = next_event(&mut sub).await;
    assert_eq!(got.event.state(), LoginState::Expired);
    assert_eq!(got.version, view.version);
    assert_eq!(got.previous, s.version);
    assert!(got.version > s.version);
}

/// Headers written with a session write (e.g. a W3C `traceparent`) reach the
/// subscribers unchanged, beside the sequence headers NATS adds; a write
/// whose expected revision is stale is refused and publishes nothing.
#[tokio::test]
async fn republished_writes_keep_the_writers_headers() {
    let h = Harness::start().await;
    let auth = h.nats.connect_as_auth().await.unwrap();
    let js = jetstream::new(auth);
    let edge = h.nats.connect(&h.nats.edge_seed_file()).await.unwrap();
    let id = "q3Zb0Xz2kT9yLw1sJm5HAA";
    let mut sub = edge
        .subscribe(format!("qrlogin.session.{id}"))
        .await
        .unwrap();
    edge.flush().await.unwrap();
    h.nats
        .wait_for_interest(&format!("qrlogin.session.{id}"))
        .await;

    let write = |expected: u64, trace: &'static str| {
        let js = js.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("traceparent", trace);
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                expected.to_string().as_str(),
            );
            let value = StoredSession {
                event: Some(LoginEvent {
                    session_id: id.into(),
                    state: LoginState::Pending as i32,
                    ..Default::default()
                }),
                sealed: vec![],
            };
            js.publish_with_headers(
                format!("$KV.qrlogin_sessions.{id}"),
                headers,
                value.encode_to_vec().into(),
            )
            .await
            .unwrap()
            .await
        }
    };
    let trace1 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let first = write(0, trace1).await.unwrap().sequence;
    let got = next_event(&mut sub).await;
    assert_eq!(header(&got.message, "traceparent").as_deref(), Some(trace1));
    assert_eq!((got.version, got.previous), (first, 0));

    let trace2 = "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01";
    let second = write(first, trace2).await.unwrap().sequence;
    let got = next_event(&mut sub).await;
    assert_eq!(header(&got.message, "traceparent").as_deref(), Some(trace2));
    assert_eq!((got.version, got.previous), (second, first));

    let stale = write(first, trace1).await;
    assert_eq!(
        stale.unwrap_err().kind(),
        jetstream::context::PublishErrorKind::WrongLastSequence
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), sub.next())
            .await
            .is_err(),
        "a refused write was published"
    );
}

/// A bucket made before the republish rule (by an older auth) gets it when
/// auth starts, and its writes become events.
#[tokio::test]
async fn auth_adds_the_republish_rule_to_an_existing_bucket() {
    let nats = NatsServer::start().await;
    let js = jetstream::new(nats.connect_as_auth().await.unwrap());
    js.create_key_value(jetstream::kv::Config {
        bucket: "qrlogin_sessions".into(),
        history: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut h = Harness::start_on(nats, |_| {}).await;
    let mut stream = js.get_stream("KV_qrlogin_sessions").await.unwrap();
    let republish = stream.info().await.unwrap().config.republish.clone();
    let republish = republish.expect("auth added the republish rule");
    assert_eq!(republish.source, "$KV.qrlogin_sessions.>");
    assert_eq!(republish.destination, "qrlogin.session.>");

    let edge = h.nats.connect(&h.nats.edge_seed_file()).await.unwrap();
    let mut sub = edge.subscribe("qrlogin.session.*").await.unwrap();
    edge.flush().await.unwrap();
    h.nats.wait_for_interest("qrlogin.session.probe").await;
    let s = create(&mut h.client).await;
    let got = next_event(&mut sub).await;
    assert_eq!(got.event.session_id, s.id);
    assert_eq!(got.version, s.version);
}

/// The cause of the old `events_use_the_configured_prefix_and_report_expiry`
/// flake, made certain: auth used to publish each event itself, fire and
/// forget, after its write; when create returned, the creation event could
/// still be on its way (in auth's client buffer or the server's read loop
/// of auth's connection), so a subscriber that started afterwards on the
/// same subject received it. Now NATS routes a write's event before it
/// acknowledges the write, and auth answers only after the acknowledgement.
/// (On the earlier code this failed within 50 rounds in 5 runs of 5.)
#[tokio::test]
async fn a_subscription_opened_after_a_write_returned_never_sees_that_write() {
    let mut h = Harness::start().await;
    let nats = h.nats.connect(&h.nats.edge_seed_file()).await.unwrap();
    for round in 0..50 {
        let s = create(&mut h.client).await;
        let mut sub = nats
            .subscribe(format!("qrlogin.session.{}", s.id))
            .await
            .unwrap();
        nats.flush().await.unwrap();
        h.nats
            .wait_for_interest(&format!("qrlogin.session.{}", s.id))
            .await;
        cancel(&mut h.client, &s.id, &s.secret).await.unwrap();
        let got = next_event(&mut sub).await;
        assert_eq!(got.event.state(), LoginState::Cancelled, "round {round}");
        assert_eq!(got.previous, s.version, "round {round}");
    }
}
