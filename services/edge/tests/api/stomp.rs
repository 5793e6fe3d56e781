//! STOMP 1.2 over WebSocket (`/v1/login-sessions/{id}/stomp`) against real
//! edges: a whole login with the shared client's `StompWatch` (CONNECT,
//! SUBSCRIBE, MESSAGE, SEND cancel, DISCONNECT with a receipt, resume with
//! `since`), the upgrade's checks, malformed and refused frames on a raw
//! socket (each answered with ERROR, then the close), heart-beats, drain.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use qrlogin_client::{
    api::{LoginState, Snapshot},
    stomp::{
        codec::{self, Received, ServerFrame},
        StompError, StompOptions, StompWatch,
    },
    watch::{Push, WatchError},
    ws::{self, Handshake, Socket},
};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

async fn watch(edge: &TestEdge, created: &Created, since: Option<u64>) -> StompWatch {
    let options = StompOptions {
        since,
        ..StompOptions::default()
    };
    StompWatch::open(edge.addr, None, &created.id, &created.secret, options)
        .await
        .expect("STOMP watch opens")
}

async fn next(w: &mut StompWatch) -> Snapshot {
    match tokio::time::timeout(WAIT, w.next()).await.expect("stalled") {
        Ok(Push::Snapshot(s)) => s,
        other => panic!("expected a MESSAGE, got {other:?}"),
    }
}

async fn closed(w: &mut StompWatch) -> Option<u16> {
    match tokio::time::timeout(WAIT, w.next()).await.expect("stalled") {
        Ok(Push::Closed(code)) => code,
        other => panic!("expected the close, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stomp_watch_on_edge_1_follows_a_login_made_through_edge_2() {
    let c = Cluster::start().await;
    let created = c.create(&c.edge1).await;
    let mut w = watch(&c.edge1, &created, None).await;
    assert_eq!(w.version(), "1.2");
    // stompjs offers 10000,10000; the server's 20 s wins both ways.
    assert_eq!(w.server_heart_beat(), "20000,20000");
    assert_eq!(w.node(), Some("edge-1"));
    let pending = next(&mut w).await;
    assert_eq!(
        (pending.state, pending.node.as_deref()),
        (LoginState::Pending, Some("edge-1"))
    );
    assert_eq!(c.phone(&c.edge2, &created.id, "scan").await.status(), 200);
    assert_eq!(next(&mut w).await.state, LoginState::Scanned);
    assert_eq!(
        c.phone(&c.edge2, &created.id, "confirm").await.status(),
        200
    );
    let confirmed = next(&mut w).await;
    assert_eq!(
        (confirmed.state, confirmed.node.as_deref()),
        (LoginState::Confirmed, Some("edge-1"))
    );
    assert_eq!(c.redeem(&c.edge2, &created).await.status(), 200);
    assert_eq!(next(&mut w).await.state, LoginState::Redeemed);
    assert_eq!(
        closed(&mut w).await,
        Some(1000),
        "a final state closes cleanly"
    );
    let m = c.edge1.metrics().await;
    assert_eq!(
        metric(
            &m,
            "qrlogin_edge_events_delivered_total{transport=\"stomp\"}"
        ),
        4.0
    );
    assert_eq!(
        metric(&m, "qrlogin_edge_connections{transport=\"stomp\"}"),
        0.0
    );
}

#[tokio::test]
async fn send_cancels_and_disconnect_gets_its_receipt() {
    let c = Cluster::start().await;
    let created = c.create(&c.edge1).await;
    let mut w = watch(&c.edge1, &created, None).await;
    assert_eq!(next(&mut w).await.state, LoginState::Pending);
    w.cancel().await.unwrap();
    let cancelled = next(&mut w).await;
    assert_eq!(cancelled.state, LoginState::Cancelled);
    assert_eq!(closed(&mut w).await, Some(1000));

    let created = c.create(&c.edge1).await;
    let mut w = watch(&c.edge2, &created, None).await;
    assert_eq!(next(&mut w).await.state, LoginState::Pending);
    let before = tokio::time::timeout(WAIT, w.disconnect())
        .await
        .expect("RECEIPT")
        .unwrap();
    assert!(before.is_empty(), "{before:?}");
}

#[tokio::test]
async fn since_on_subscribe_resumes_without_repeats() {
    let c = Cluster::start().await;
    let created = c.create(&c.edge1).await;
    let v0 = created.json["version"].as_u64().unwrap();
    let mut w = watch(&c.edge2, &created, Some(v0)).await;
    // A resumed PENDING is sent once, with the QR payload of this moment
    // (the one the client holds may have been replaced since).
    let first = next(&mut w).await;
    assert_eq!((first.state, first.version), (LoginState::Pending, v0));
    assert!(first.qr_payload.is_some(), "{first:?}");
    assert_eq!(c.phone(&c.edge1, &created.id, "scan").await.status(), 200);
    let second = next(&mut w).await;
    assert_eq!(
        second.state,
        LoginState::Scanned,
        "PENDING v{v0} is not sent twice"
    );
}

#[tokio::test]
async fn the_upgrade_checks_subprotocol_origin_and_secret() {
    let c = Cluster::start().await;
    let created = c.create(&c.edge1).await;
    let path = format!("/v1/login-sessions/{}/stomp", created.id);
    let attempt =
        |secret: String, origin: Option<&'static str>, protocols: &'static [&'static str]| {
            let (addr, path) = (c.edge1.addr, path.clone());
            async move {
                let handshake = Handshake {
                    origin,
                    subprotocols: protocols,
                };
                match ws::connect(addr, None, &path, &secret, &handshake).await {
                    Ok((_, _, protocol)) => Ok(protocol),
                    Err(WatchError::Api(e)) => Err((e.status(), e.code().to_owned())),
                    Err(other) => panic!("{other}"),
                }
            }
        };
    let s = created.secret.clone();
    assert_eq!(
        attempt(s.clone(), None, &["v10.stomp", "v11.stomp"]).await,
        Ok(Some("v11.stomp".into()))
    );
    assert_eq!(
        attempt(s.clone(), None, &[]).await,
        Err((Some(400), "invalid_argument".into())),
        "no STOMP subprotocol offered"
    );
    assert_eq!(
        attempt(s.clone(), None, &["v10.stomp"]).await,
        Err((Some(400), "invalid_argument".into()))
    );
    assert_eq!(
        attempt(s, Some("https://evil.example"), &["v12.stomp"]).await,
        Err((Some(403), "origin_not_allowed".into()))
    );
    assert_eq!(
        attempt("wrong".into(), None, &["v12.stomp"]).await,
        Err((Some(403), "permission_denied".into()))
    );
}

/// A raw STOMP socket for frames the client library would never send.
async fn raw(edge: &TestEdge, created: &Created) -> Socket {
    let path = format!("/v1/login-sessions/{}/stomp", created.id);
    let handshake = Handshake {
        origin: None,
        subprotocols: &["v12.stomp"],
    };
    ws::connect(edge.addr, None, &path, &created.secret, &handshake)
        .await
        .unwrap()
        .0
}

#[derive(Debug)]
enum Got {
    Frame(ServerFrame),
    Closed(Option<u16>),
}

/// The next frame (heart-beats skipped) or the close.
async fn got(socket: &mut Socket) -> Got {
    loop {
        let m = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("stalled");
        let bytes = match m {
            Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
            Some(Ok(Message::Close(f))) => return Got::Closed(f.map(|f| f.code.into())),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Got::Closed(None),
        };
        if let Some(Received::Frame(f)) = codec::decode(&bytes)
            .unwrap()
            .into_iter()
            .find(|r| matches!(r, Received::Frame(_)))
        {
            return Got::Frame(f);
        }
    }
}

async fn send(socket: &mut Socket, bytes: impl Into<Vec<u8>>) {
    let text = String::from_utf8(bytes.into()).unwrap();
    socket.send(Message::text(text)).await.unwrap();
}

async fn connect(socket: &mut Socket, heart_beat: &str) -> ServerFrame {
    send(
        socket,
        codec::encode(
            "CONNECT",
            &[("accept-version", "1.2"), ("heart-beat", heart_beat)],
            b"",
        ),
    )
    .await;
    match got(socket).await {
        Got::Frame(f) if f.command == "CONNECTED" => f,
        other => panic!("expected CONNECTED, got {other:?}"),
    }
}

/// Expects ERROR with `message`, then the close with `code`.
async fn refused(socket: &mut Socket, message: &str, code: u16) -> ServerFrame {
    let error = match got(socket).await {
        Got::Frame(f) if f.command == "ERROR" => f,
        other => panic!("expected ERROR {message:?}, got {other:?}"),
    };
    assert_eq!(error.header("message"), Some(message), "{error:?}");
    assert_eq!(error.header("content-type"), Some("text/plain"));
    assert!(!error.body.is_empty());
    match got(socket).await {
        Got::Closed(c) => assert_eq!(c, Some(code)),
        other => panic!("expected the close after ERROR, got {other:?}"),
    }
    error
}

#[tokio::test]
async fn malformed_and_refused_frames_get_an_error_then_the_close() {
    let c = Cluster::start().await;
    let created = c.create(&c.edge1).await;
    let other = c.create(&c.edge1).await;
    let own = format!("/topic/login-sessions.{}", created.id);

    // Nothing before CONNECT.
    let mut s = raw(&c.edge1, &created).await;
    send(
        &mut s,
        codec::encode("SUBSCRIBE", &[("id", "0"), ("destination", &own)], b""),
    )
    .await;
    refused(&mut s, "not connected", 1002).await;

    // Another session's topic.
    let mut s = raw(&c.edge1, &created).await;
    connect(&mut s, "0,0").await;
    let theirs = format!("/topic/login-sessions.{}", other.id);
    send(
        &mut s,
        codec::encode(
            "SUBSCRIBE",
            &[("id", "0"), ("destination", &theirs), ("receipt", "r1")],
            b"",
        ),
    )
    .await;
    let e = refused(&mut s, "no such destination", 1002).await;
    assert_eq!(
        e.header("receipt-id"),
        Some("r1"),
        "the ERROR answers the receipt"
    );

    // A header escape STOMP 1.2 does not define.
    let mut s = raw(&c.edge1, &created).await;
    connect(&mut s, "0,0").await;
    send(
        &mut s,
        format!("SUBSCRIBE\nid:0\ndestination:{own}\\t\n\n\0"),
    )
    .await;
    refused(&mut s, "malformed frame", 1002).await;

    // An unknown command, and a server command.
    for bad in ["HELLO\n\n\0", "MESSAGE\ndestination:/x\n\n\0"] {
        let mut s = raw(&c.edge1, &created).await;
        connect(&mut s, "0,0").await;
        send(&mut s, bad).await;
        refused(&mut s, "malformed frame", 1002).await;
    }

    // A body over the frame limit, and a message over the WebSocket limit.
    let mut s = raw(&c.edge1, &created).await;
    connect(&mut s, "0,0").await;
    let cancel = format!("/app/login-sessions.{}.cancel", created.id);
    send(
        &mut s,
        codec::encode("SEND", &[("destination", &cancel)], &[b'x'; 5000]),
    )
    .await;
    refused(&mut s, "malformed frame", 1002).await;
    let mut s = raw(&c.edge1, &created).await;
    connect(&mut s, "0,0").await;
    send(
        &mut s,
        codec::encode("SEND", &[("destination", &cancel)], &[b'x'; 9000]),
    )
    .await;
    refused(&mut s, "frame too large", 1009).await;

    // SEND to another session's cancel destination: refused, nothing cancelled.
    let mut s = raw(&c.edge1, &created).await;
    connect(&mut s, "0,0").await;
    let theirs = format!("/app/login-sessions.{}.cancel", other.id);
    send(
        &mut s,
        codec::encode("SEND", &[("destination", &theirs)], b""),
    )
    .await;
    refused(&mut s, "no such destination", 1002).await;
    let r = c
        .browser(reqwest::Method::GET, &c.edge2, &other, "")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["state"],
        "PENDING"
    );

    // Transactions and acknowledgements are not offered.
    let mut s = raw(&c.edge1, &created).await;
    connect(&mut s, "0,0").await;
    send(
        &mut s,
        codec::encode("BEGIN", &[("transaction", "t1")], b""),
    )
    .await;
    refused(&mut s, "unsupported frame", 1002).await;

    // A second CONNECT, and a second subscription.
    let mut s = raw(&c.edge1, &created).await;
    connect(&mut s, "0,0").await;
    send(
        &mut s,
        codec::encode("CONNECT", &[("accept-version", "1.2")], b""),
    )
    .await;
    refused(&mut s, "already connected", 1002).await;
    let mut s = raw(&c.edge1, &created).await;
    connect(&mut s, "0,0").await;
    send(
        &mut s,
        codec::encode(
            "SUBSCRIBE",
            &[("id", "0"), ("destination", &own), ("receipt", "s0")],
            b"",
        ),
    )
    .await;
    let mut receipted = false;
    let mut pending = false;
    while !(receipted && pending) {
        match got(&mut s).await {
            Got::Frame(f) if f.command == "RECEIPT" => {
                assert_eq!(f.header("receipt-id"), Some("s0"));
                receipted = true;
            }
            Got::Frame(f) if f.command == "MESSAGE" => {
                assert_eq!(f.header("subscription"), Some("0"));
                assert_eq!(f.header("destination"), Some(own.as_str()));
                assert_eq!(f.header("content-type"), Some("application/json"));
                assert_eq!(
                    f.header("content-length"),
                    Some(f.body.len().to_string().as_str())
                );
                pending = true;
            }
            other => panic!("{other:?}"),
        }
    }
    send(
        &mut s,
        codec::encode("SUBSCRIBE", &[("id", "1"), ("destination", &own)], b""),
    )
    .await;
    refused(&mut s, "already subscribed", 1002).await;

    // Versions no one speaks.
    let mut s = raw(&c.edge1, &created).await;
    send(
        &mut s,
        codec::encode("CONNECT", &[("accept-version", "1.0")], b""),
    )
    .await;
    refused(&mut s, "bad CONNECT", 1002).await;
}

#[tokio::test]
async fn unsubscribe_then_subscribe_again_starts_with_the_current_snapshot() {
    let c = Cluster::start().await;
    let created = c.create(&c.edge1).await;
    let own = format!("/topic/login-sessions.{}", created.id);
    let mut s = raw(&c.edge1, &created).await;
    connect(&mut s, "0,0").await;
    let message_ids = &mut Vec::new();
    for id in ["a", "b"] {
        send(
            &mut s,
            codec::encode("SUBSCRIBE", &[("id", id), ("destination", &own)], b""),
        )
        .await;
        match got(&mut s).await {
            Got::Frame(f) if f.command == "MESSAGE" => {
                assert_eq!(f.header("subscription"), Some(id));
                message_ids.push(f.header("message-id").unwrap().to_owned());
            }
            other => panic!("{other:?}"),
        }
        send(
            &mut s,
            codec::encode("UNSUBSCRIBE", &[("id", id), ("receipt", id)], b""),
        )
        .await;
        match got(&mut s).await {
            Got::Frame(f) if f.command == "RECEIPT" => assert_eq!(f.header("receipt-id"), Some(id)),
            other => panic!("{other:?}"),
        }
    }
    assert_ne!(
        message_ids[0], message_ids[1],
        "message-ids are unique on a connection"
    );
    send(&mut s, codec::encode("UNSUBSCRIBE", &[("id", "zz")], b"")).await;
    refused(&mut s, "no such subscription", 1002).await;
}

#[tokio::test]
async fn heart_beats_flow_and_a_silent_client_is_dropped() {
    let c = Cluster::start_with(|_| {}, |e| e.stomp.heart_beat = Duration::from_secs(1)).await;
    let created = c.create(&c.edge1).await;
    // A client that promised beats every second and sends none: dropped
    // after twice that (checked every second).
    let mut s = raw(&c.edge1, &created).await;
    let connected = connect(&mut s, "1000,1000").await;
    assert_eq!(connected.header("heart-beat"), Some("1000,1000"));
    let quiet = tokio::time::Instant::now();
    refused(&mut s, "heart-beat timeout", 1002).await;
    let after = quiet.elapsed();
    assert!(
        after >= Duration::from_millis(1900),
        "dropped after {after:?}"
    );

    // A client that keeps its promise stays, and the server beats too.
    let options = StompOptions {
        heart_beat: (Duration::from_secs(1), Duration::from_secs(1)),
        ..StompOptions::default()
    };
    let mut w = StompWatch::open(c.edge1.addr, None, &created.id, &created.secret, options)
        .await
        .unwrap();
    assert_eq!(w.server_heart_beat(), "1000,1000");
    assert_eq!(next(&mut w).await.state, LoginState::Pending);
    // Nothing happens for 3.5 s (longer than the 2 s limit) ...
    assert!(tokio::time::timeout(Duration::from_millis(3500), w.next())
        .await
        .is_err());
    // ... and the connection still delivers.
    assert_eq!(c.phone(&c.edge2, &created.id, "scan").await.status(), 200);
    assert_eq!(next(&mut w).await.state, LoginState::Scanned);
}

#[tokio::test]
async fn drain_sends_an_error_with_a_retry_hint_then_1012() {
    let mut c = Cluster::start().await;
    let created = c.create(&c.edge1).await;
    let own = format!("/topic/login-sessions.{}", created.id);
    let mut s = raw(&c.edge1, &created).await;
    connect(&mut s, "0,0").await;
    send(
        &mut s,
        codec::encode("SUBSCRIBE", &[("id", "0"), ("destination", &own)], b""),
    )
    .await;
    assert!(matches!(got(&mut s).await, Got::Frame(f) if f.command == "MESSAGE"));
    let mut w = watch(&c.edge1, &created, None).await;
    assert_eq!(next(&mut w).await.state, LoginState::Pending);
    let task = c.edge1.stop();
    let e = refused(&mut s, "draining", 1012).await;
    let hint: u64 = e.header("retry-after-ms").unwrap().parse().unwrap();
    assert!((500..8000).contains(&hint), "{hint}");
    match tokio::time::timeout(WAIT, w.next()).await.expect("stalled") {
        Err(WatchError::Stomp(StompError::Server { message, .. })) => {
            assert_eq!(message, "draining")
        }
        other => panic!("expected the draining ERROR, got {other:?}"),
    }
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}
