//! The gRPC watch port against idle and greedy clients: a connection that
//! says nothing, or completes its handshake and opens no stream, is closed;
//! one client's connections are capped while others still get in.

use std::time::Duration;

use qrlogin_client::{
    api::LoginState,
    grpc::{channel, GrpcWatch},
    watch::Push,
};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpSocket, TcpStream},
};

use crate::{helpers::*, raw::*};

/// The client's HTTP/2 connection preface with an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

async fn from(source: [u8; 4], to: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((source, 0).into()).unwrap();
    socket.connect(to).await.unwrap()
}

/// The next snapshot's state within [`WAIT`].
async fn next_state(w: &mut GrpcWatch) -> LoginState {
    match tokio::time::timeout(WAIT, w.next())
        .await
        .expect("the stream stalled")
        .unwrap()
    {
        Push::Snapshot(s) => s.state,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

/// Regression: the port had no handshake deadline and kept connections
/// without streams, so 1,000 idle sockets (QRLOGIN_GRPC_MAX_CONNECTIONS)
/// locked it for everyone.
#[tokio::test]
async fn connections_without_a_handshake_or_a_stream_are_closed() {
    let handshake = Duration::from_millis(300);
    let idle = Duration::from_millis(600);
    let cluster = Cluster::start_with(
        |_| {},
        |c| {
            c.grpc.handshake_timeout = handshake;
            c.grpc.idle_timeout = idle;
        },
    )
    .await;
    let addr = cluster.edge1.grpc.expect("gRPC port");
    // A socket that says nothing is closed at the handshake deadline
    // (after the server's SETTINGS, which it sends at once).
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let opened = tokio::time::Instant::now();
    read_to_close(&mut silent).await;
    assert!(opened.elapsed() >= handshake, "closed before the deadline");
    // One that completes the handshake and opens no stream: at the idle
    // timeout (after the server's own SETTINGS).
    let mut quiet = TcpStream::connect(addr).await.unwrap();
    let opened = tokio::time::Instant::now();
    quiet.write_all(PREFACE).await.unwrap();
    read_to_close(&mut quiet).await;
    assert!(opened.elapsed() >= idle, "closed before the idle timeout");
    // A connection with a watch open outlives both.
    let created = cluster.create(&cluster.edge1).await;
    let ch = channel(addr, None).await.unwrap();
    let mut w = GrpcWatch::open(ch, &created.id, &created.secret, None)
        .await
        .unwrap();
    assert_eq!(next_state(&mut w).await, LoginState::Pending);
    tokio::time::sleep(idle * 2).await;
    let scan = cluster.phone(&cluster.edge2, &created.id, "scan").await;
    assert_eq!(scan.status(), 200);
    assert_eq!(next_state(&mut w).await, LoginState::Scanned);
}

/// Regression: one client address could hold every connection the port
/// allows.
#[tokio::test]
async fn connections_beyond_the_per_client_cap_are_refused() {
    let cluster = Cluster::start_with(
        |_| {},
        |c| {
            c.grpc.max_connections_per_client = 2;
            // 127.0.0.x are clients here, not trusted proxies.
            c.trusted_proxies = qrlogin_edge::config::CidrList(vec![]);
        },
    )
    .await;
    let addr = cluster.edge1.grpc.expect("gRPC port");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = from([127, 0, 0, 3], addr).await;
        s.write_all(PREFACE).await.unwrap();
        held.push(s);
    }
    // The third from the same client: closed at once, before the server
    // says anything, and counted.
    let mut third = from([127, 0, 0, 3], addr).await;
    assert_eq!(read_to_close(&mut third).await, "");
    wait_metrics(&cluster.edge1, "the refusal counted", |m| {
        metric(
            m,
            "qrlogin_edge_rejected_requests_total{reason=\"too_many_connections\"}",
        ) == 1.0
    })
    .await;
    // Another client watches as usual.
    let created = cluster.create(&cluster.edge1).await;
    let ch = channel(addr, Some([127, 0, 0, 4].into())).await.unwrap();
    let mut w = GrpcWatch::open(ch, &created.id, &created.secret, None)
        .await
        .unwrap();
    assert_eq!(next_state(&mut w).await, LoginState::Pending);
    // A closed connection gives its client's place back.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let watch = async {
            let ch = channel(addr, Some([127, 0, 0, 3].into())).await.ok()?;
            GrpcWatch::open(ch, &created.id, &created.secret, None)
                .await
                .ok()
        };
        if let Some(mut w) = watch.await {
            assert_eq!(next_state(&mut w).await, LoginState::Pending);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
