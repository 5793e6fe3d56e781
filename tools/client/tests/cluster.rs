//! The client against a real cluster: nats-server, auth and two edges in
//! this process (the edge tests' own fixture, shared rather than copied),
//! every call and watch crossing nodes the way browsers and phones do.

#[allow(dead_code)]
#[path = "../../../services/edge/tests/api/helpers.rs"]
mod helpers;

use std::{future::Future, time::Duration};

use helpers::{Cluster, TestEdge, WAIT};
use qrlogin_client::{
    api::{Client, LoginState, Snapshot},
    key::BrowserKey,
    sse::SseWatch,
    watch::{AnyWatch, Push, Transport, WatchError, WatchOptions},
    ws::WsWatch,
};

fn client(edge: &TestEdge) -> Client {
    Client::new(edge.addr, None, 4)
}

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {WAIT:?}"))
}

fn snapshot(push: Push) -> Snapshot {
    match push {
        Push::Snapshot(s) => s,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_calls_cover_a_whole_login_across_two_edges() {
    let c = Cluster::start().await;
    let (one, two) = (client(&c.edge1), client(&c.edge2));
    let token = c.keys.user_token("alice", "Alice");

    // A client that is not a browser binds the login to a key of its own.
    let key = BrowserKey::generate();
    let created = one.create_bound(&key).await.unwrap();
    assert_eq!(created.snapshot.state, LoginState::Pending);
    assert_eq!(created.snapshot.node.as_deref(), Some("edge-1"));
    assert_eq!(created.browser_secret.len(), 43);
    assert_eq!(
        created.key_thumbprint.as_deref(),
        Some(key.thumbprint().as_str())
    );
    assert!(created
        .qr_payload()
        .contains(&format!("/m/{}#", created.id())));
    assert!(created.qr_svg.starts_with("<svg") || created.qr_svg.starts_with("<?xml"));
    let (id, secret) = (created.id().to_owned(), created.browser_secret.clone());

    let got = two.get(&id, &secret).await.unwrap();
    assert_eq!(
        (got.state, got.node.as_deref()),
        (LoginState::Pending, Some("edge-2"))
    );

    // A long poll held on edge-1 answers when the scan lands on edge-2.
    let held = {
        let (id, secret, held) = (id.clone(), secret.clone(), got.clone());
        let addr = c.edge1.addr;
        tokio::spawn(async move {
            Client::new(addr, None, 1)
                .long_poll(&id, &secret, &held, Duration::from_secs(20))
                .await
        })
    };
    // Scan once the poll is held (a scan before would be answered at once
    // too: `since` is older than the state).
    bounded("the long poll being held", async {
        let series = "qrlogin_edge_connections{transport=\"long_poll\"}";
        while helpers::metric(&c.edge1.metrics().await, series) < 1.0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let payload = got.qr_payload.clone().unwrap();
    let scanned = two.scan(&id, &token, &payload).await.unwrap();
    assert_eq!(scanned.session.state, LoginState::Scanned);
    assert_eq!(scanned.browser.ip, "127.0.0.1");
    assert_eq!(scanned.same_network, Some(true));
    let polled = bounded("the long poll's answer", held)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(polled.state, LoginState::Scanned);
    assert_eq!(polled.node.as_deref(), Some("edge-1"));
    let code = polled.match_code.unwrap();
    assert!(scanned.match_choices.contains(&code));
    assert_eq!(scanned.session.match_code, None, "the phone is not told");

    let confirmed = two.confirm(&id, &token, code, || {}).await.unwrap();
    assert_eq!(confirmed.state, LoginState::Confirmed);
    // The secret alone does not redeem a key-bound login.
    let e = one.redeem(&id, &secret).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(401), "proof_required"));
    let redeemed = one.redeem_bound(&id, &secret, &key).await.unwrap();
    assert_eq!(redeemed.token_type, "Bearer");
    assert_eq!(redeemed.user.display_name, "Alice (alice)");
    // Repeated on the other edge (the first answer lost): the same token.
    let again = two.redeem_bound(&id, &secret, &key).await.unwrap();
    assert_eq!(again.access_token, redeemed.access_token);

    // Deny and cancel on fresh sessions.
    let other = one.create().await.unwrap();
    two.scan(other.id(), &token, other.qr_payload())
        .await
        .unwrap();
    let denied = one.deny(other.id(), &token).await.unwrap();
    assert_eq!(denied.state, LoginState::Denied);
    let third = two.create().await.unwrap();
    let cancelled = one.cancel(third.id(), &third.browser_secret).await.unwrap();
    assert_eq!(cancelled.state, LoginState::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_back_with_their_stable_codes() {
    let c = Cluster::start().await;
    let one = client(&c.edge1);
    let created = one.create().await.unwrap();
    let id = created.id();

    let e = one.get(id, "wrong-secret").await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(403), "permission_denied"));
    let e = one
        .get("AAAAAAAAAAAAAAAAAAAAAA", &created.browser_secret)
        .await
        .unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(404), "not_found"));
    let e = one
        .scan(id, "not-a-jwt", created.qr_payload())
        .await
        .unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(401), "unauthenticated"));

    let refused = |e: WatchError| match e {
        WatchError::Api(a) => (a.status(), a.code().to_owned()),
        other => panic!("expected an API refusal, got {other:?}"),
    };
    let e = SseWatch::open(c.edge2.addr, None, id, "wrong-secret", None)
        .await
        .err()
        .unwrap();
    assert_eq!(refused(e), (Some(403), "permission_denied".into()));
    let e = WsWatch::open(c.edge2.addr, None, id, "wrong-secret", None, None)
        .await
        .err()
        .unwrap();
    assert_eq!(refused(e), (Some(403), "permission_denied".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_watch_gets_events_from_the_other_edge_and_resumes_with_last_event_id() {
    let c = Cluster::start().await;
    let (one, two) = (client(&c.edge1), client(&c.edge2));
    let token = c.keys.user_token("alice", "Alice");
    let created = one.create().await.unwrap();
    let (id, secret) = (created.id(), created.browser_secret.as_str());

    let mut sse = SseWatch::open(c.edge1.addr, None, id, secret, None)
        .await
        .unwrap();
    assert_eq!(sse.node(), Some("edge-1"));
    let mut first = None;
    while first.is_none() {
        match bounded("the first SSE event", sse.next()).await.unwrap() {
            Push::Snapshot(s) => first = Some(s),
            Push::Retry(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    let first = first.unwrap();
    assert_eq!(first.state, LoginState::Pending);
    two.scan(id, &token, first.qr_payload.as_deref().unwrap())
        .await
        .unwrap();
    let scanned = snapshot(bounded("SCANNED", sse.next()).await.unwrap());
    assert_eq!(
        (scanned.state, scanned.node.as_deref()),
        (LoginState::Scanned, Some("edge-1"))
    );
    drop(sse);

    // Resume on edge-2 from the version held: nothing is repeated, the
    // next change is the first event.
    let mut sse = SseWatch::open(c.edge2.addr, None, id, secret, Some(scanned.version))
        .await
        .unwrap();
    one.confirm(id, &token, scanned.match_code.unwrap(), || {})
        .await
        .unwrap();
    let confirmed = loop {
        match bounded("CONFIRMED", sse.next()).await.unwrap() {
            Push::Snapshot(s) => break s,
            Push::Retry(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(confirmed.state, LoginState::Confirmed);
    assert!(confirmed.is_newer_than(Some(&scanned)));
    assert_eq!(confirmed.node.as_deref(), Some("edge-2"));
    one.redeem(id, secret).await.unwrap();
    let redeemed = snapshot(bounded("REDEEMED", sse.next()).await.unwrap());
    assert_eq!(redeemed.state, LoginState::Redeemed);
    assert_eq!(bounded("the end", sse.next()).await.unwrap(), Push::End);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_watch_resumes_with_since_and_cancels_from_the_socket() {
    let c = Cluster::start().await;
    let one = client(&c.edge1);
    let token = c.keys.user_token("alice", "Alice");
    let created = one.create().await.unwrap();
    let (id, secret) = (created.id(), created.browser_secret.as_str());

    let mut ws = WsWatch::open(c.edge1.addr, None, id, secret, None, None)
        .await
        .unwrap();
    assert_eq!(ws.node(), Some("edge-1"));
    let pending = snapshot(bounded("PENDING", ws.next()).await.unwrap());
    assert_eq!(pending.state, LoginState::Pending);
    ws.close().await.unwrap();

    let mut ws = WsWatch::open(c.edge2.addr, None, id, secret, Some(pending.version), None)
        .await
        .unwrap();
    // Resuming at a PENDING version: the QR code on screen now, first.
    let resumed = snapshot(bounded("PENDING again", ws.next()).await.unwrap());
    assert_eq!(resumed.state, LoginState::Pending);
    one.scan(id, &token, resumed.qr_payload.as_deref().unwrap())
        .await
        .unwrap();
    let scanned = snapshot(bounded("SCANNED", ws.next()).await.unwrap());
    assert_eq!(
        (scanned.state, scanned.node.as_deref()),
        (LoginState::Scanned, Some("edge-2"))
    );
    ws.cancel().await.unwrap();
    let cancelled = snapshot(bounded("CANCELLED", ws.next()).await.unwrap());
    assert_eq!(cancelled.state, LoginState::Cancelled);
    assert_eq!(
        bounded("the close", ws.next()).await.unwrap(),
        Push::Closed(Some(1000))
    );
    let read = one.get(id, secret).await.unwrap();
    assert_eq!(read.state, LoginState::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_token_is_a_user_token_for_the_asked_user() {
    use base64::Engine;
    let dev_keys = qrlogin_auth::testing::TestKeys::generate();
    let key = dev_keys.user_private_key_path();
    let c = Cluster::start_with(|_| {}, |e| e.dev_user_token_key_file = Some(key.clone())).await;
    let token = client(&c.edge1).dev_token("bob", "Bob").await.unwrap();
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (claims["sub"].as_str(), claims["name"].as_str()),
        (Some("bob"), Some("Bob"))
    );
    // Without the key the route does not exist.
    let plain = Cluster::start().await;
    let e = client(&plain.edge1)
        .dev_token("bob", "Bob")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_watch_follows_a_login_over_every_transport_and_resumes_on_the_other_edge() {
    let c = Cluster::start().await;
    let (one, two) = (client(&c.edge1), client(&c.edge2));
    let grpc = |edge: &TestEdge| edge.grpc.expect("the test edges serve gRPC");
    for (n, transport) in Transport::ALL.into_iter().enumerate() {
        let user = format!("user-{n}");
        let token = c.keys.user_token(&user, "User");
        let created = two.create().await.unwrap();
        let (id, secret) = (created.id(), created.browser_secret.as_str());
        let at = |edge: &TestEdge| match transport {
            Transport::Grpc => grpc(edge),
            _ => edge.addr,
        };
        // `since: 0`: the current snapshot comes at once on every transport.
        let first = WatchOptions {
            since: Some(0),
            ..WatchOptions::default()
        };
        let mut w = AnyWatch::open(transport, at(&c.edge1), id, secret, &first)
            .await
            .unwrap_or_else(|e| panic!("{transport:?}: open: {e}"));
        assert_eq!(w.transport(), transport);
        let pending = bounded("PENDING", w.next_snapshot()).await.unwrap();
        assert_eq!(pending.state, LoginState::Pending, "{transport:?}");
        assert_eq!(pending.node.as_deref(), Some("edge-1"), "{transport:?}");
        // The phone scans the payload on screen, on the other edge.
        two.scan(id, &token, pending.qr_payload.as_deref().unwrap())
            .await
            .unwrap();
        let scanned = bounded("SCANNED", w.next_snapshot()).await.unwrap();
        assert_eq!(scanned.state, LoginState::Scanned, "{transport:?}");
        let code = scanned.match_code.expect("a number to match");
        drop(w);

        // Resume on edge-2 from the version held: the next change is the
        // first snapshot.
        let resume = WatchOptions {
            since: Some(scanned.version),
            ..WatchOptions::default()
        };
        let mut w = AnyWatch::open(transport, at(&c.edge2), id, secret, &resume)
            .await
            .unwrap_or_else(|e| panic!("{transport:?}: reopen: {e}"));
        one.confirm(id, &token, code, || {}).await.unwrap();
        let confirmed = bounded("CONFIRMED", w.next_snapshot()).await.unwrap();
        assert_eq!(
            (confirmed.state, confirmed.node.as_deref()),
            (LoginState::Confirmed, Some("edge-2")),
            "{transport:?}"
        );
        assert!(confirmed.version > scanned.version, "{transport:?}");
        // `until` refuses a final state it was not waiting for.
        one.redeem(id, secret).await.unwrap();
        let e = bounded("REDEEMED", w.until(LoginState::Scanned))
            .await
            .expect_err("REDEEMED is not SCANNED");
        assert!(
            e.to_string().contains("Redeemed instead of Scanned"),
            "{transport:?}: {e}"
        );
        assert_eq!(transport, Transport::parse(transport.label()).unwrap());
    }
}
