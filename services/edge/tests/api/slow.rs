//! Slow and greedy clients of the public port: a request body that does
//! not arrive, a body sent a byte at a time while others wait for
//! admission, and one client holding many requests and streams.

use std::time::Duration;

use reqwest::{header, StatusCode};
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::{helpers::*, raw::*};

/// A create whose head says 4096 bytes of body and which sends one.
const SLOW_CREATE: &[u8] = b"POST /v1/login-sessions HTTP/1.1\r\nHost: edge\r\n\
Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n{";

/// Regression: only heads had a deadline; a client that sent a head with
/// `Content-Length` and then a byte now and then held its connection (and
/// an admission) for as long as it liked.
#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408_and_the_connection_closes() {
    let timeout = Duration::from_millis(500);
    let cluster = Cluster::start_with(|_| {}, |c| c.body_timeout = timeout).await;
    let mut s = TcpStream::connect(cluster.edge1.addr).await.unwrap();
    s.write_all(SLOW_CREATE).await.unwrap();
    let sent = tokio::time::Instant::now();
    let answer = read_to_close(&mut s).await;
    assert!(sent.elapsed() >= timeout, "answered before the deadline");
    assert_eq!(raw_error(&answer, "edge-1"), (408, "body_timeout".into()));
    let head = answer
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    let m = cluster.edge1.metrics().await;
    assert_eq!(
        metric(
            &m,
            "qrlogin_edge_rejected_requests_total{reason=\"body_timeout\"}"
        ),
        1.0
    );
}

/// Regression: admission was taken before the body was read, so bodies
/// sent slowly held every admission and the node answered everyone else
/// `503 over_capacity`.
#[tokio::test]
async fn a_slow_body_holds_no_admission() {
    let cluster = Cluster::start_with(
        |_| {},
        |c| {
            c.max_connections = 1;
            c.body_timeout = Duration::from_secs(3);
        },
    )
    .await;
    let edge = &cluster.edge1;
    let mut slow = TcpStream::connect(edge.addr).await.unwrap();
    slow.write_all(SLOW_CREATE).await.unwrap();
    // Its head is read: it is past the head reader, waiting for its body.
    wait_metrics(edge, "the slow head read", |m| {
        metric(m, "qrlogin_edge_pre_head_connections") == 0.0
    })
    .await;
    // The node's one admission is free for another client meanwhile.
    cluster.create(edge).await;
    let answer = read_to_close(&mut slow).await;
    assert_eq!(raw_error(&answer, "edge-1"), (408, "body_timeout".into()));
}

/// Regression: nothing capped what one client address held open, so one
/// client could take every admission of a node.
#[tokio::test]
async fn requests_and_streams_are_capped_per_client() {
    let cluster = Cluster::start_with(|_| {}, |c| c.max_requests_per_client = 2).await;
    let created = cluster.create(&cluster.edge1).await;
    let url = cluster
        .edge1
        .url(&format!("/v1/login-sessions/{}/events", created.id));
    // Clients behind the (trusted, loopback) proxy, told apart by it.
    let stream = |client: &'static str| {
        cluster
            .http
            .get(&url)
            .header(
                header::COOKIE,
                format!("qrl_bs_{}={}", created.id, created.secret),
            )
            .header("x-forwarded-for", client)
            .send()
    };
    let a1 = stream("198.51.100.7").await.unwrap();
    let a2 = stream("198.51.100.7").await.unwrap();
    assert_eq!((a1.status(), a2.status()), (StatusCode::OK, StatusCode::OK));
    let third = stream("198.51.100.7").await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        error_code(third).await,
        (StatusCode::TOO_MANY_REQUESTS, "too_many_requests".into())
    );
    // Another client, and the proxy itself, are not held back.
    assert_eq!(
        stream("198.51.100.8").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        SseClient::open(&cluster.http, &url, &created, None)
            .await
            .unwrap()
            .map(|_| ())
            .map_err(|r| r.status()),
        Ok(())
    );
    let m = cluster.edge1.metrics().await;
    assert_eq!(
        metric(
            &m,
            "qrlogin_edge_rejected_requests_total{reason=\"too_many_requests\"}"
        ),
        1.0
    );
    // A closed stream gives its client's place back.
    drop(a1);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = stream("198.51.100.7").await.unwrap();
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(a2);
}
