//! The gRPC watch against an in-process `LoginWatch` server that checks
//! what the client sends (metadata, `since`) and streams literal messages.

use std::{pin::Pin, time::Duration};

use futures::Stream;
use qrlogin_proto::{
    events::v1::LoginState as ProtoState,
    watch::v1::login_watch_server::{LoginWatch, LoginWatchServer},
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use super::*;

const ID: &str = "q3Zb0Xz2kT9yLw1sJm5HAA";

fn message(state: ProtoState, version: u64) -> LoginSession {
    LoginSession {
        session_id: ID.into(),
        state: state as i32,
        version,
        expires_at: Some(prost_types::Timestamp {
            seconds: 1_795_600_800,
            nanos: 0,
        }),
        updated_at: Some(prost_types::Timestamp {
            seconds: 1_795_600_740,
            nanos: 0,
        }),
        user_display_name: String::new(),
        node: "edge-1".into(),
        ..LoginSession::default()
    }
}

struct Scripted;

type Snapshots = Pin<Box<dyn Stream<Item = Result<LoginSession, Status>> + Send>>;

#[tonic::async_trait]
impl LoginWatch for Scripted {
    type WatchLoginSessionStream = Snapshots;

    async fn watch_login_session(
        &self,
        request: Request<WatchLoginSessionRequest>,
    ) -> Result<Response<Snapshots>, Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let r = request.into_inner();
        if auth.as_deref() != Some("Bearer s3cret") {
            return Err(Status::permission_denied("wrong secret"));
        }
        if r.session_id == "draining" {
            return Err(Status::unavailable("the node is draining"));
        }
        assert_eq!(r.session_id, ID);
        let items = match r.since {
            None => vec![
                Ok(message(ProtoState::Pending, 1)),
                Ok(message(ProtoState::Scanned, 2)),
                Ok(message(ProtoState::Confirmed, 3)),
            ],
            Some(2) => vec![Ok(message(ProtoState::Confirmed, 3))],
            Some(other) => vec![Err(Status::invalid_argument(format!("since {other}")))],
        };
        Ok(Response::new(Box::pin(futures::stream::iter(items))))
    }
}

async fn serve() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LoginWatchServer::new(Scripted))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

async fn collect(w: &mut GrpcWatch) -> Vec<(LoginState, u64)> {
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .unwrap()
            .unwrap()
        {
            Push::Snapshot(s) => got.push((s.state, s.version)),
            Push::End => return got,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn streams_snapshots_then_ends_ok_and_resumes_with_since() {
    let addr = serve().await;
    let src: IpAddr = "127.0.0.7".parse().unwrap();
    let ch = channel(addr, Some(src)).await.unwrap();
    let mut w = GrpcWatch::open(ch.clone(), ID, "s3cret", None)
        .await
        .unwrap();
    assert_eq!(
        collect(&mut w).await,
        [
            (LoginState::Pending, 1),
            (LoginState::Scanned, 2),
            (LoginState::Confirmed, 3)
        ]
    );
    // The same channel (one connection) carries the next watch.
    let mut w = GrpcWatch::open(ch, ID, "s3cret", Some(2)).await.unwrap();
    assert_eq!(collect(&mut w).await, [(LoginState::Confirmed, 3)]);
}

#[tokio::test]
async fn refusals_keep_their_code() {
    let addr = serve().await;
    let ch = channel(addr, None).await.unwrap();
    let err = GrpcWatch::open(ch.clone(), ID, "wrong", None)
        .await
        .err()
        .unwrap();
    assert!(matches!(&err, WatchError::Grpc(s) if s.code() == tonic::Code::PermissionDenied));
    assert!(!err.is_retryable());
    let err = GrpcWatch::open(ch, "draining", "s3cret", None)
        .await
        .err()
        .unwrap();
    assert!(matches!(&err, WatchError::Grpc(s) if s.code() == tonic::Code::Unavailable));
    assert!(err.is_retryable());
}

#[test]
fn messages_map_to_the_json_snapshot_shape() {
    let s = snapshot(message(ProtoState::Scanned, 7)).unwrap();
    assert_eq!(s.state, LoginState::Scanned);
    assert_eq!(s.expires_at.as_deref(), Some("2026-11-25T10:00:00Z"));
    assert_eq!(s.node.as_deref(), Some("edge-1"));
    assert_eq!(s.user_display_name, None);
    let mut unspecified = message(ProtoState::Unspecified, 1);
    assert!(snapshot(unspecified.clone()).is_err());
    unspecified.state = ProtoState::Expired as i32;
    unspecified.expires_at = None;
    assert_eq!(snapshot(unspecified).unwrap().expires_at, None);
}
