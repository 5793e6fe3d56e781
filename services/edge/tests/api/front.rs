//! The front server seen from raw sockets: write deadlines, the pre-head
//! caps, its own answers (JSON, with the node header, on the first and on
//! later heads of a connection), and the operations port.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::{helpers::*, raw::*};

/// Regression: a WebSocket client that sends pings but never reads filled
/// the socket with pongs and the edge awaited its next write forever,
/// keeping the admission, the watcher slot and the NATS subscription.
#[tokio::test]
async fn a_websocket_peer_that_never_reads_is_dropped() {
    let cluster = Cluster::start_with(
        |_| {},
        |c| {
            c.write_timeout = Duration::from_millis(500);
            c.ws.ping = Duration::from_millis(200);
            c.max_watchers_per_session = 1;
        },
    )
    .await;
    let created = cluster.create(&cluster.edge1).await;
    let mut s = small_socket(cluster.edge1.addr, [127, 0, 0, 1]).await;
    s.write_all(
        format!(
            "GET /v1/login-sessions/{}/ws?since=0 HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {}\r\n\r\n",
            created.id, created.secret
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    read_until(&mut s, &mut head, b"\r\n\r\n").await;
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    wait_metrics(&cluster.edge1, "one WebSocket", |m| {
        metric(m, "qrlogin_edge_connections{transport=\"websocket\"}") == 1.0
    })
    .await;
    // From now on: masked pings with the largest payload, never a read.
    let (_read, mut write) = s.into_split();
    let flood = tokio::spawn(async move {
        let mut frame = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
        frame.extend_from_slice(&[b'p'; 125]);
        while write.write_all(&frame).await.is_ok() {}
    });
    let text = wait_metrics(&cluster.edge1, "the stuck peer dropped", |m| {
        metric(m, "qrlogin_edge_write_timeouts_total") >= 1.0
            && metric(m, "qrlogin_edge_connections{transport=\"websocket\"}") == 0.0
            && metric(m, "qrlogin_edge_nats_subscriptions") == 0.0
    })
    .await;
    assert!(text.contains("# TYPE qrlogin_edge_write_timeouts counter"));
    flood.abort();
    // The watcher slot is free again.
    let url = cluster
        .edge1
        .url(&format!("/v1/login-sessions/{}/events", created.id));
    assert!(SseClient::open(&cluster.http, &url, &created, None)
        .await
        .unwrap()
        .is_ok());
}

/// Regression: an SSE client that never reads kept its stream (and
/// everything it holds) forever once the socket was full.
#[tokio::test]
async fn an_event_stream_peer_that_never_reads_is_dropped() {
    let cluster = Cluster::start_with(
        |_| {},
        |c| {
            c.write_timeout = Duration::from_millis(500);
            c.sse.heartbeat = Duration::from_millis(1);
            // Without it the kernel lets about 4 MiB queue up on loopback
            // (minutes of heartbeats) before a write blocks.
            c.socket_send_buffer = 4096;
        },
    )
    .await;
    let created = cluster.create(&cluster.edge1).await;
    let mut s = small_socket(cluster.edge1.addr, [127, 0, 0, 1]).await;
    s.write_all(
        format!(
            "GET /v1/login-sessions/{}/events HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer {}\r\n\r\n",
            created.id, created.secret
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    wait_metrics(&cluster.edge1, "one stream", |m| {
        metric(m, "qrlogin_edge_connections{transport=\"sse\"}") == 1.0
    })
    .await;
    // Heartbeats every millisecond fill both socket buffers; nobody reads.
    wait_metrics(&cluster.edge1, "the stuck peer dropped", |m| {
        metric(m, "qrlogin_edge_write_timeouts_total") >= 1.0
            && metric(m, "qrlogin_edge_connections{transport=\"sse\"}") == 0.0
            && metric(m, "qrlogin_edge_nats_subscriptions") == 0.0
    })
    .await;
    drop(s);
}

/// Regression: connections that never sent a head were not counted
/// anywhere; idle sockets alone could exhaust the open-file limit.
#[tokio::test]
async fn connections_without_a_head_are_capped_per_client_and_per_node() {
    let cluster = Cluster::start_with(
        |_| {},
        |c| {
            c.max_pre_head_connections = 3;
            c.max_pre_head_per_client = 2;
            // 127.0.0.x are clients here, not trusted proxies.
            c.trusted_proxies = qrlogin_edge::config::CidrList(vec![]);
        },
    )
    .await;
    let edge = &cluster.edge1;
    let a1 = small_socket(edge.addr, [127, 0, 0, 1]).await;
    let _a2 = small_socket(edge.addr, [127, 0, 0, 1]).await;
    wait_metrics(edge, "two waiting", |m| {
        metric(m, "qrlogin_edge_pre_head_connections") == 2.0
    })
    .await;
    // A third from the same client: answered 503 at once, then closed.
    let mut a3 = small_socket(edge.addr, [127, 0, 0, 1]).await;
    let answer = read_to_close(&mut a3).await;
    assert_eq!(
        raw_error(&answer, "edge-1"),
        (503, "too_many_connections".into())
    );
    // Another client still gets in, until the node's cap.
    let _b1 = small_socket(edge.addr, [127, 0, 0, 2]).await;
    wait_metrics(edge, "three waiting", |m| {
        metric(m, "qrlogin_edge_pre_head_connections") == 3.0
    })
    .await;
    let mut c1 = small_socket(edge.addr, [127, 0, 0, 3]).await;
    let answer = read_to_close(&mut c1).await;
    assert_eq!(
        raw_error(&answer, "edge-1"),
        (503, "too_many_connections".into())
    );
    let m = edge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "qrlogin_edge_rejected_requests_total{reason=\"too_many_connections\"}"
        ),
        2.0
    );
    // A connection that sends its head leaves the count at once.
    let mut a1 = a1;
    a1.write_all(b"GET /nope/nothing HTTP/1.1\r\nHost: edge\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    read_until(&mut a1, &mut buf, b"no such route").await;
    wait_metrics(edge, "two waiting", |m| {
        metric(m, "qrlogin_edge_pre_head_connections") == 2.0
    })
    .await;
    let mut c2 = small_socket(edge.addr, [127, 0, 0, 3]).await;
    c2.write_all(b"GET /nope/nothing HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        raw_error(&read_to_close(&mut c2).await, "edge-1"),
        (404, "not_found".into())
    );
}

fn many_headers(n: usize) -> String {
    (0..n).map(|i| format!("x-h{i}: v\r\n")).collect()
}

/// Regression: answers outside the routes (a head over the limits, a
/// malformed head, a wrong method) had empty bodies and no node header;
/// later heads on a kept-alive connection had hyper's default limits
/// (about 400 KiB) instead of 8 KiB and 48 headers.
#[tokio::test]
async fn refusals_are_json_on_first_and_later_heads() {
    let cluster = Cluster::start().await;
    let edge = &cluster.edge1;
    let first = |request: String| async move {
        let mut s = TcpStream::connect(edge.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        raw_error(&read_to_close(&mut s).await, "edge-1")
    };
    // After one answered request on the same connection (hyper reads it).
    let later = |request: String| async move {
        let mut s = TcpStream::connect(edge.addr).await.unwrap();
        s.write_all(b"GET /nope/nothing HTTP/1.1\r\nHost: edge\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        read_until(&mut s, &mut buf, b"no such route\"}}").await;
        s.write_all(request.as_bytes()).await.unwrap();
        let rest = read_to_close(&mut s).await;
        raw_error(&rest, "edge-1")
    };
    let too_many = format!("GET /nope/nothing HTTP/1.1\r\n{}\r\n", many_headers(49));
    let too_long = format!(
        "GET /nope/nothing HTTP/1.1\r\nx-long: {}\r\n\r\n",
        "v".repeat(9000)
    );
    let malformed = "GET /nope/nothing HTTP/1.1\r\nBad Header: x\r\n\r\n".to_owned();
    let stream_malformed =
        "GET /v1/login-sessions/AAAAAAAAAAAAAAAAAAAAAA/events HTTP/1.1\r\nBad Header: x\r\n\r\n"
            .to_owned();
    for (name, request, want) in [
        ("49 headers", &too_many, (431, "head_too_large")),
        ("9 KiB head", &too_long, (431, "head_too_large")),
        ("malformed", &malformed, (400, "malformed_request")),
        (
            "malformed stream request",
            &stream_malformed,
            (400, "malformed_request"),
        ),
    ] {
        let want = (want.0, want.1.to_owned());
        assert_eq!(first(request.clone()).await, want, "first head: {name}");
        assert_eq!(later(request.clone()).await, want, "later head: {name}");
    }
    // 48 headers are fine on both.
    let ok = format!(
        "GET /nope/nothing HTTP/1.1\r\n{}Connection: close\r\n\r\n",
        many_headers(47)
    );
    assert_eq!(first(ok.clone()).await, (404, "not_found".into()));
    assert_eq!(later(ok).await, (404, "not_found".into()));
    // A wrong method: 405 with Allow, as JSON.
    let r = cluster
        .http
        .put(edge.url("/v1/login-sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(r.headers()["x-edge-node"], "edge-1");
    assert_eq!(
        error_code(r).await,
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into())
    );
    // A path parameter that is not UTF-8: JSON too, not axum's text.
    let r = cluster
        .http
        .get(edge.url("/v1/login-sessions/%FF%FE"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::BAD_REQUEST, "invalid_argument".into())
    );
    let m = edge.metrics().await;
    assert!(
        metric(
            &m,
            "qrlogin_edge_rejected_requests_total{reason=\"head_too_large\"}"
        ) >= 4.0
    );
    assert!(
        metric(
            &m,
            "qrlogin_edge_rejected_requests_total{reason=\"malformed_request\"}"
        ) >= 4.0
    );
}

/// Regression: a head ending in a bare LF (`\n\n`) waited for the 15 s
/// header timeout instead of being answered at once, as hyper answers it.
#[tokio::test]
async fn a_bare_lf_head_is_answered_at_once() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let mut s = TcpStream::connect(cluster.edge1.addr).await.unwrap();
    s.write_all(b"GET /nope/nothing HTTP/1.1\nHost: edge\nConnection: close\n\n")
        .await
        .unwrap();
    assert_eq!(
        raw_error(&read_to_close(&mut s).await, "edge-1"),
        (404, "not_found".into())
    );
    // The stream path too.
    let mut s = TcpStream::connect(cluster.edge1.addr).await.unwrap();
    s.write_all(
        format!(
            "GET /v1/login-sessions/{}/events HTTP/1.1\nHost: edge\nAuthorization: Bearer {}\n\n",
            created.id, created.secret
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    read_until(&mut s, &mut buf, b"event: PENDING").await;
    assert!(buf.starts_with(b"HTTP/1.1 200 OK\r\n"));
}

/// Contract C4: operations routes live on their own port only.
#[tokio::test]
async fn operations_routes_are_on_the_operations_port_only() {
    let cluster = Cluster::start().await;
    let edge = &cluster.edge1;
    for path in ["/metrics", "/healthz", "/readyz"] {
        let r = cluster.http.get(edge.url(path)).send().await.unwrap();
        assert_eq!(
            error_code(r).await,
            (StatusCode::NOT_FOUND, "not_found".into()),
            "{path} on the public port"
        );
        let r = cluster.http.get(edge.ops_url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path} on the operations port");
        assert_eq!(r.headers()["x-edge-node"], "edge-1");
    }
    let r = cluster
        .http
        .get(edge.ops_url("/v1/login-sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let text = edge.metrics().await;
    assert!(text.contains("# TYPE qrlogin_edge_pre_head_connections gauge"));
}
