//! The gRPC watch stream (`qrlogin.watch.v1.LoginWatch`) on the edge's
//! gRPC port, with the shared client's `GrpcWatch`: cross-node delivery,
//! resume with `since`, the documented error codes, the watcher limit,
//! the deadline, the drain, and health.

use std::time::Duration;

use qrlogin_client::{
    api::LoginState,
    grpc::{channel, GrpcWatch},
    watch::{Push, WatchError},
};
use qrlogin_proto::watch::v1::{login_watch_client::LoginWatchClient, WatchLoginSessionRequest};
use tonic::{transport::Channel, Code};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::helpers::*;

async fn grpc_channel(edge: &TestEdge) -> Channel {
    channel(edge.grpc.expect("gRPC port"), None).await.unwrap()
}

/// The next push within [`WAIT`], as (state, version, node).
async fn next(w: &mut GrpcWatch) -> Result<(LoginState, u64, String), WatchError> {
    match tokio::time::timeout(WAIT, w.next())
        .await
        .expect("the stream stalled")?
    {
        Push::Snapshot(s) => Ok((s.state, s.version, s.node.unwrap_or_default())),
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

async fn ends_ok(w: &mut GrpcWatch) {
    let end = tokio::time::timeout(WAIT, w.next())
        .await
        .expect("the stream stalled")
        .unwrap();
    assert_eq!(end, Push::End, "the stream ends with OK");
}

fn code(e: WatchError) -> Code {
    match e {
        WatchError::Grpc(s) => s.code(),
        other => panic!("expected a gRPC status, got {other}"),
    }
}

#[tokio::test]
async fn a_watch_on_edge_1_follows_a_login_confirmed_through_edge_2() {
    let c = Cluster::start().await;
    let created = c.create(&c.edge1).await;
    let ch = grpc_channel(&c.edge1).await;
    let mut w = GrpcWatch::open(ch, &created.id, &created.secret, None)
        .await
        .unwrap();
    let (state, v1, node) = next(&mut w).await.unwrap();
    assert_eq!((state, node.as_str()), (LoginState::Pending, "edge-1"));
    assert_eq!(c.phone(&c.edge2, &created.id, "scan").await.status(), 200);
    let (state, v2, node) = next(&mut w).await.unwrap();
    assert_eq!((state, node.as_str()), (LoginState::Scanned, "edge-1"));
    assert!(v2 > v1);
    assert_eq!(
        c.phone(&c.edge2, &created.id, "confirm").await.status(),
        200
    );
    assert_eq!(next(&mut w).await.unwrap().0, LoginState::Confirmed);
    assert_eq!(c.redeem(&c.edge2, &created).await.status(), 200);
    assert_eq!(next(&mut w).await.unwrap().0, LoginState::Redeemed);
    ends_ok(&mut w).await;
    let m = c.edge1.metrics().await;
    assert_eq!(
        metric(
            &m,
            "qrlogin_edge_events_delivered_total{transport=\"grpc\"}"
        ),
        4.0
    );
}

#[tokio::test]
async fn since_resumes_on_any_node_without_repeats() {
    let c = Cluster::start().await;
    let created = c.create(&c.edge1).await;
    assert_eq!(c.phone(&c.edge1, &created.id, "scan").await.status(), 200);
    let ch = grpc_channel(&c.edge1).await;
    let mut w = GrpcWatch::open(ch, &created.id, &created.secret, None)
        .await
        .unwrap();
    let (state, scanned, _) = next(&mut w).await.unwrap();
    assert_eq!(state, LoginState::Scanned);
    drop(w);
    // Resumed on edge 2 with the version held: nothing until the confirm.
    let ch = grpc_channel(&c.edge2).await;
    let mut w = GrpcWatch::open(ch, &created.id, &created.secret, Some(scanned))
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), w.next())
            .await
            .is_err(),
        "the held version is not sent again"
    );
    assert_eq!(c.phone(&c.edge1, &created.id, "deny").await.status(), 200);
    let (state, _, node) = next(&mut w).await.unwrap();
    assert_eq!((state, node.as_str()), (LoginState::Denied, "edge-2"));
    ends_ok(&mut w).await;
}

#[tokio::test]
async fn refusals_carry_the_documented_codes() {
    let c = Cluster::start().await;
    let created = c.create(&c.edge1).await;
    let ch = grpc_channel(&c.edge1).await;
    let other = c.create(&c.edge1).await;
    let open = |id: String, secret: String| {
        let ch = ch.clone();
        async move {
            GrpcWatch::open(ch, &id, &secret, None)
                .await
                .err()
                .map(code)
        }
    };
    assert_eq!(
        open(created.id.clone(), other.secret.clone()).await,
        Some(Code::PermissionDenied),
        "another session's secret"
    );
    assert_eq!(
        open("not-an-id".into(), created.secret.clone()).await,
        Some(Code::InvalidArgument)
    );
    assert_eq!(
        open("AAAAAAAAAAAAAAAAAAAAAA".into(), created.secret.clone()).await,
        Some(Code::NotFound)
    );
    // No metadata at all, and a scheme other than Bearer.
    let request = || WatchLoginSessionRequest {
        session_id: created.id.clone(),
        since: None,
    };
    let err = LoginWatchClient::new(ch.clone())
        .watch_login_session(request())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut basic = tonic::Request::new(request());
    basic.metadata_mut().insert(
        "authorization",
        format!("Basic {}", created.secret).parse().unwrap(),
    );
    let err = LoginWatchClient::new(ch.clone())
        .watch_login_session(basic)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // The secret never travels in the message: there is no field for it.
    let m = c.edge1.metrics().await;
    assert!(
        metric(
            &m,
            "qrlogin_edge_rejected_requests_total{reason=\"unauthenticated\"}"
        ) >= 2.0
    );
    assert_eq!(
        metric(&m, "qrlogin_edge_connections{transport=\"grpc\"}"),
        0.0,
        "no refused call holds a watch"
    );
}

#[tokio::test]
async fn the_watcher_limit_answers_resource_exhausted() {
    let c = Cluster::start_with(|_| {}, |e| e.max_watchers_per_session = 1).await;
    let created = c.create(&c.edge1).await;
    let ch = grpc_channel(&c.edge1).await;
    let mut first = GrpcWatch::open(ch.clone(), &created.id, &created.secret, None)
        .await
        .unwrap();
    next(&mut first).await.unwrap();
    let err = GrpcWatch::open(ch.clone(), &created.id, &created.secret, None)
        .await
        .err()
        .unwrap();
    assert_eq!(code(err), Code::ResourceExhausted);
    drop(first);
    // The slot is free again once the first stream is gone.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match GrpcWatch::open(ch.clone(), &created.id, &created.secret, None).await {
            Ok(mut w) => {
                next(&mut w).await.unwrap();
                break;
            }
            Err(e) => {
                assert_eq!(code(e), Code::ResourceExhausted);
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slot never freed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn the_deadline_ends_the_stream_with_expired() {
    let c = Cluster::start_with(|a| a.pending_ttl = Duration::from_secs(2), |_| {}).await;
    let created = c.create(&c.edge1).await;
    let ch = grpc_channel(&c.edge1).await;
    let mut w = GrpcWatch::open(ch, &created.id, &created.secret, None)
        .await
        .unwrap();
    let (_, pending, _) = next(&mut w).await.unwrap();
    let (state, version, _) = next(&mut w).await.unwrap();
    assert_eq!(state, LoginState::Expired);
    assert!(version >= pending);
    ends_ok(&mut w).await;
}

#[tokio::test]
async fn drain_ends_streams_with_unavailable_and_a_retry_hint() {
    let mut c = Cluster::start().await;
    let created = c.create(&c.edge1).await;
    let ch = grpc_channel(&c.edge1).await;
    let mut w = GrpcWatch::open(ch.clone(), &created.id, &created.secret, None)
        .await
        .unwrap();
    let (_, version, _) = next(&mut w).await.unwrap();
    let task = c.edge1.stop();
    let status = match next(&mut w).await {
        Err(WatchError::Grpc(status)) => status,
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    };
    assert_eq!(status.code(), Code::Unavailable);
    let hint: u64 = status
        .metadata()
        .get("retry-after-ms")
        .expect("retry-after-ms")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((500..8000).contains(&hint), "{hint} ms");
    // A new call on the draining node is refused too.
    let err = GrpcWatch::open(ch, &created.id, &created.secret, None)
        .await
        .err()
        .unwrap();
    assert!(err.is_retryable(), "{err}");
    // Resumed elsewhere, a confirm made meanwhile arrives.
    assert_eq!(c.phone(&c.edge2, &created.id, "scan").await.status(), 200);
    let mut w = GrpcWatch::open(
        grpc_channel(&c.edge2).await,
        &created.id,
        &created.secret,
        Some(version),
    )
    .await
    .unwrap();
    assert_eq!(next(&mut w).await.unwrap().0, LoginState::Scanned);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn health_answers_like_readyz() {
    let c = Cluster::start().await;
    let mut health = HealthClient::new(grpc_channel(&c.edge1).await);
    for service in ["", "qrlogin.watch.v1.LoginWatch"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
    let err = health
        .check(HealthCheckRequest {
            service: "qrlogin.auth.v1.AuthService".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}
