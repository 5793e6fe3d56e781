//! The STOMP watch against a scripted WebSocket server that speaks literal
//! frames, as the specification writes them: what the client sends is
//! checked byte for byte, what it receives is what a server would send.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::{
    handshake::server::{Request, Response},
    http::HeaderValue,
    Message,
};

use super::*;
use crate::api::LoginState;

const ID: &str = "q3Zb0Xz2kT9yLw1sJm5HAA";
const WAIT: Duration = Duration::from_secs(10);

fn snapshot_json(state: &str, version: u64) -> String {
    format!(
        r#"{{"session_id":"{ID}","state":"{state}","version":{version},"expires_at":null,"updated_at":"2026-11-26T09:59:00.000Z","user_display_name":null,"node":"edge-1"}}"#
    )
}

fn message_frame(id: u64, json: &str) -> String {
    format!(
        "MESSAGE\nsubscription:sub-0\nmessage-id:{id}\ndestination:/topic/login-sessions.{ID}\ncontent-type:application/json\ncontent-length:{}\n\n{json}\0",
        json.len()
    )
}

type ServerSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Accepts one WebSocket, checks the handshake, answers `v12.stomp`.
// The callback's error type is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
async fn accept(listener: TcpListener) -> ServerSocket {
    let (tcp, _) = listener.accept().await.unwrap();
    tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, mut resp: Response| {
        assert_eq!(req.uri().path(), format!("/v1/login-sessions/{ID}/stomp"));
        assert_eq!(req.headers()["authorization"], "Bearer s3cret");
        assert_eq!(
            req.headers()["sec-websocket-protocol"],
            "v12.stomp, v11.stomp"
        );
        resp.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("v12.stomp"),
        );
        resp.headers_mut()
            .insert("x-edge-node", HeaderValue::from_static("edge-1"));
        Ok(resp)
    })
    .await
    .unwrap()
}

async fn recv(socket: &mut ServerSocket) -> String {
    loop {
        let m = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("client stalled")
            .expect("client closed")
            .unwrap();
        if let Message::Text(t) = m {
            return t.as_str().to_owned();
        }
    }
}

async fn send(socket: &mut ServerSocket, text: &str) {
    socket.send(Message::text(text.to_owned())).await.unwrap();
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

#[tokio::test]
async fn connect_subscribe_with_since_messages_cancel_and_disconnect() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let mut s = accept(l).await;
        assert_eq!(
            recv(&mut s).await,
            format!("CONNECT\naccept-version:1.2,1.1\nhost:{addr}\nheart-beat:0,10000\n\n\0")
        );
        send(
            &mut s,
            "CONNECTED\nversion:1.2\nheart-beat:15000,20000\nserver:qrlogin\n\n\0",
        )
        .await;
        assert_eq!(
            recv(&mut s).await,
            format!("SUBSCRIBE\nid:sub-0\ndestination:/topic/login-sessions.{ID}\nsince:7\n\n\0")
        );
        // A server heart-beat, then two frames in one message.
        send(&mut s, "\n").await;
        let two = message_frame(1, &snapshot_json("SCANNED", 8))
            + "\n"
            + &message_frame(2, &snapshot_json("CONFIRMED", 9));
        send(&mut s, &two).await;
        assert_eq!(
            recv(&mut s).await,
            format!("SEND\ndestination:/app/login-sessions.{ID}.cancel\ncontent-length:0\n\n\0")
        );
        send(&mut s, &message_frame(3, &snapshot_json("CANCELLED", 10))).await;
        assert_eq!(recv(&mut s).await, "DISCONNECT\nreceipt:r-1\n\n\0");
        send(&mut s, "RECEIPT\nreceipt-id:r-1\n\n\0").await;
    });
    let options = StompOptions {
        heart_beat: (Duration::ZERO, Duration::from_secs(10)),
        since: Some(7),
        origin: None,
    };
    let mut w = StompWatch::open(addr, None, ID, "s3cret", options)
        .await
        .unwrap();
    assert_eq!(w.version(), "1.2");
    assert_eq!(w.server_heart_beat(), "15000,20000");
    assert_eq!(w.node(), Some("edge-1"));
    let states = |p: Push| match p {
        Push::Snapshot(s) => (s.state, s.version),
        other => panic!("expected a snapshot, got {other:?}"),
    };
    assert_eq!(states(w.next().await.unwrap()), (LoginState::Scanned, 8));
    assert_eq!(states(w.next().await.unwrap()), (LoginState::Confirmed, 9));
    w.cancel().await.unwrap();
    assert_eq!(states(w.next().await.unwrap()), (LoginState::Cancelled, 10));
    assert!(w.disconnect().await.unwrap().is_empty());
    server.await.unwrap();
}

#[tokio::test]
async fn client_heart_beats_follow_the_negotiated_interval() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let mut s = accept(l).await;
        let connect = recv(&mut s).await;
        assert!(connect.contains("\nheart-beat:50,0\n"), "{connect:?}");
        // sy = 100 ms: the client must send every max(50, 100) ms.
        send(&mut s, "CONNECTED\nversion:1.2\nheart-beat:0,100\n\n\0").await;
        recv(&mut s).await; // SUBSCRIBE
        let started = tokio::time::Instant::now();
        assert_eq!(recv(&mut s).await, "\n");
        assert_eq!(recv(&mut s).await, "\n");
        assert!(started.elapsed() >= Duration::from_millis(200));
        send(&mut s, &message_frame(1, &snapshot_json("EXPIRED", 3))).await;
    });
    let options = StompOptions {
        heart_beat: (Duration::from_millis(50), Duration::ZERO),
        since: None,
        origin: None,
    };
    let mut w = StompWatch::open(addr, None, ID, "s3cret", options)
        .await
        .unwrap();
    let pushed = tokio::time::timeout(WAIT, w.next()).await.unwrap().unwrap();
    assert!(matches!(pushed, Push::Snapshot(s) if s.state == LoginState::Expired));
    server.await.unwrap();
}

#[tokio::test]
async fn an_error_frame_is_an_error_with_its_message_and_body() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let mut s = accept(l).await;
        recv(&mut s).await;
        send(
            &mut s,
            "ERROR\nmessage:permission_denied\ncontent-type:text/plain\ncontent-length:24\n\nwrong secret for session\0",
        )
        .await;
    });
    let err = StompWatch::open(addr, None, ID, "s3cret", StompOptions::default())
        .await
        .err()
        .expect("CONNECT refused");
    match err {
        WatchError::Stomp(StompError::Server { message, body }) => {
            assert_eq!(message, "permission_denied");
            assert_eq!(body, "wrong secret for session");
        }
        other => panic!("expected a STOMP ERROR, got {other:?}"),
    }
    server.await.unwrap();
}

#[tokio::test]
async fn a_message_of_another_subscription_is_refused() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let mut s = accept(l).await;
        recv(&mut s).await;
        send(&mut s, "CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0").await;
        recv(&mut s).await;
        let json = snapshot_json("SCANNED", 2);
        let frame = message_frame(1, &json).replace("subscription:sub-0", "subscription:other");
        send(&mut s, &frame).await;
    });
    let mut w = StompWatch::open(addr, None, ID, "s3cret", StompOptions::default())
        .await
        .unwrap();
    assert!(matches!(w.next().await, Err(WatchError::Protocol(_))));
    server.await.unwrap();
}

#[test]
fn client_interval_is_the_larger_unless_either_is_zero() {
    let ms = Duration::from_millis;
    assert_eq!(
        client_interval(ms(10_000), "15000,20000").unwrap(),
        Some(ms(20_000))
    );
    assert_eq!(
        client_interval(ms(30_000), "15000,20000").unwrap(),
        Some(ms(30_000))
    );
    assert_eq!(client_interval(ms(0), "15000,20000").unwrap(), None);
    assert_eq!(client_interval(ms(10_000), "15000,0").unwrap(), None);
    assert!(client_interval(ms(10_000), "nonsense").is_err());
}
