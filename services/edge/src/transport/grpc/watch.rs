//! `LoginWatch/WatchLoginSession`: reads the browser secret from
//! `authorization: Bearer` metadata, joins the node's watch machinery, and
//! turns pushes into `LoginSession` messages: a final state ends the stream
//! with OK, a drain with UNAVAILABLE and `retry-after-ms`. The only mapping
//! of [`SessionError`] to gRPC codes is here ([`status`]).

use std::{pin::Pin, time::Duration};

use futures::Stream;
use prost_types::Timestamp;
use qrlogin_proto::{
    events::v1::LoginState as PbState,
    watch::v1::{login_watch_server::LoginWatch, LoginSession, WatchLoginSessionRequest},
};
use rand::Rng;
use time::OffsetDateTime;
use tonic::{metadata::MetadataValue, Request, Response, Status};

use super::GrpcContext;
use crate::{
    delivery::{Delivery, Leave, Push},
    domain::{LoginState, SessionId, Snapshot},
    limits::Admission,
    metrics::Transport,
    sessions::SessionError,
};

/// Trailer (and error metadata) with the delay to wait before reconnecting
/// while the node drains, in milliseconds.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// Base of the suggested reconnect delay when a call is refused because the
/// node drains (an open stream gets delivery's jittered hint instead).
const DRAINING_RETRY: Duration = Duration::from_secs(1);

pub struct WatchService {
    context: GrpcContext,
}

impl WatchService {
    pub fn new(context: GrpcContext) -> Self {
        Self { context }
    }
}

type Snapshots = Pin<Box<dyn Stream<Item = Result<LoginSession, Status>> + Send>>;

/// The one mapping of session failures to gRPC codes (watch.proto).
pub fn status(e: SessionError) -> Status {
    match e {
        SessionError::InvalidArgument(m) => Status::invalid_argument(m),
        SessionError::Unauthenticated(m) => Status::unauthenticated(m),
        SessionError::PermissionDenied(m) => Status::permission_denied(m),
        SessionError::NotFound(m) => Status::not_found(m),
        SessionError::FailedPrecondition(m) | SessionError::Expired(m) => {
            Status::failed_precondition(m)
        }
        SessionError::Conflict(m) => Status::aborted(m),
        e @ (SessionError::TooManyWatchers | SessionError::RateLimited { .. }) => {
            Status::resource_exhausted(e.to_string())
        }
        e @ SessionError::StorageFull => Status::unavailable(e.to_string()),
        SessionError::Unavailable(m) => Status::unavailable(m),
    }
}

/// UNAVAILABLE for a draining node, with the delay to wait in metadata.
fn draining(retry_after: Duration) -> Status {
    let mut status = Status::unavailable(
        "this node is shutting down; reconnect (to any node) and resume with since",
    );
    let ms = retry_after.as_millis().max(1).to_string();
    if let Ok(value) = MetadataValue::try_from(ms.as_str()) {
        status.metadata_mut().insert(RETRY_AFTER_MS, value);
    }
    status
}

/// The browser secret from `authorization: Bearer <secret>`.
fn bearer<T>(request: &Request<T>) -> Result<String, Status> {
    let missing = || {
        Status::unauthenticated(
            "the browser secret is missing: send metadata authorization: Bearer <browser_secret>",
        )
    };
    let value = request
        .metadata()
        .get("authorization")
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(missing());
    }
    Ok(token.to_owned())
}

#[tonic::async_trait]
impl LoginWatch for WatchService {
    type WatchLoginSessionStream = Snapshots;

    async fn watch_login_session(
        &self,
        request: Request<WatchLoginSessionRequest>,
    ) -> Result<Response<Snapshots>, Status> {
        let c = &self.context;
        let refused = |reason: &'static str, status: Status| {
            c.metrics.rejected(reason);
            status
        };
        if c.sessions.is_draining() {
            let jittered = DRAINING_RETRY.mul_f64(rand::rng().random_range(0.5..2.0));
            return Err(refused("draining", draining(jittered)));
        }
        let secret = bearer(&request).map_err(|s| refused("unauthenticated", s))?;
        let WatchLoginSessionRequest { session_id, since } = request.into_inner();
        let id = SessionId::parse(&session_id)
            .map_err(|e| refused("invalid_argument", Status::invalid_argument(e.to_string())))?;
        let admission = c.gate.try_admit().ok_or_else(|| {
            refused(
                "over_capacity",
                Status::resource_exhausted(
                    "this node holds its maximum number of connections; retry on another node",
                ),
            )
        })?;
        // Boxed: the join's future (a gRPC read to auth) is large.
        let delivery = Box::pin(c.sessions.watch(&id, &secret, since, Transport::Grpc))
            .await
            .map_err(|e| {
                let reason = crate::error::ApiError::from(e.clone()).code();
                refused(reason, status(e))
            })?;
        let stream = Stream_ {
            delivery,
            node: c.node.clone(),
            _admission: admission,
        };
        Ok(Response::new(Box::pin(stream.into_stream())))
    }
}

/// One open watch: the delivery, and the admission it holds.
struct Stream_ {
    delivery: Delivery,
    node: String,
    _admission: Admission,
}

impl Stream_ {
    fn into_stream(self) -> impl Stream<Item = Result<LoginSession, Status>> + Send + 'static {
        futures::stream::unfold(Some(self), |me| async move {
            let mut me = me?;
            loop {
                match me.delivery.next_push().await {
                    Push::Snapshot(s) => {
                        let message = message(&s, &me.node);
                        return Some((Ok(message), Some(me)));
                    }
                    // HTTP/2 pings keep the connection alive.
                    Push::KeepAlive => continue,
                    Push::Leave(Leave::Finished) => return None,
                    Push::Leave(Leave::Draining { reconnect_after }) => {
                        return Some((Err(draining(reconnect_after)), None))
                    }
                }
            }
        })
    }
}

fn timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: t.unix_timestamp(),
        nanos: t.nanosecond() as i32,
    }
}

fn state(s: LoginState) -> PbState {
    match s {
        LoginState::Pending => PbState::Pending,
        LoginState::Scanned => PbState::Scanned,
        LoginState::Confirmed => PbState::Confirmed,
        LoginState::Redeemed => PbState::Redeemed,
        LoginState::Denied => PbState::Denied,
        LoginState::Cancelled => PbState::Cancelled,
        LoginState::Expired => PbState::Expired,
    }
}

/// The `LoginSession` message of a snapshot: the JSON snapshot, field for field.
pub fn message(s: &Snapshot, node: &str) -> LoginSession {
    LoginSession {
        session_id: s.session_id.to_string(),
        state: state(s.state) as i32,
        version: s.version,
        expires_at: s.expires_at.map(timestamp),
        updated_at: Some(timestamp(s.updated_at)),
        user_display_name: s.user_display_name.clone().unwrap_or_default(),
        node: node.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_errors_map_to_the_documented_codes() {
        use tonic::Code;
        let cases = [
            (
                SessionError::InvalidArgument("x".into()),
                Code::InvalidArgument,
            ),
            (
                SessionError::Unauthenticated("x".into()),
                Code::Unauthenticated,
            ),
            (
                SessionError::PermissionDenied("x".into()),
                Code::PermissionDenied,
            ),
            (SessionError::NotFound("x".into()), Code::NotFound),
            (SessionError::TooManyWatchers, Code::ResourceExhausted),
            (SessionError::Unavailable("x".into()), Code::Unavailable),
            (SessionError::Conflict("x".into()), Code::Aborted),
            (SessionError::Expired("x".into()), Code::FailedPrecondition),
        ];
        for (e, code) in cases {
            assert_eq!(status(e).code(), code);
        }
    }

    #[test]
    fn the_secret_comes_only_from_bearer_metadata() {
        let mut r = Request::new(());
        assert_eq!(bearer(&r).unwrap_err().code(), tonic::Code::Unauthenticated);
        r.metadata_mut()
            .insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&r).unwrap_err().code(), tonic::Code::Unauthenticated);
        r.metadata_mut()
            .insert("authorization", "Bearer ".parse().unwrap());
        assert!(bearer(&r).is_err());
        r.metadata_mut()
            .insert("authorization", "bearer s3cret".parse().unwrap());
        assert_eq!(bearer(&r).unwrap(), "s3cret");
    }

    #[test]
    fn draining_carries_the_delay() {
        let s = draining(Duration::from_millis(1234));
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(s.metadata().get(RETRY_AFTER_MS).unwrap(), "1234");
    }

    #[test]
    fn messages_mirror_the_json_snapshot() {
        let s = Snapshot {
            session_id: SessionId::parse("q3Zb0Xz2kT9yLw1sJm5HAA").unwrap(),
            state: LoginState::Scanned,
            version: 7,
            expires_at: Some(OffsetDateTime::from_unix_timestamp(1_795_600_800).unwrap()),
            updated_at: OffsetDateTime::from_unix_timestamp_nanos(1_795_600_740_500_000_000)
                .unwrap(),
            user_display_name: None,
            changed_at: None,
        };
        let m = message(&s, "edge-1");
        assert_eq!(m.session_id, "q3Zb0Xz2kT9yLw1sJm5HAA");
        assert_eq!(m.state(), PbState::Scanned);
        assert_eq!(m.version, 7);
        assert_eq!(m.expires_at.unwrap().seconds, 1_795_600_800);
        assert_eq!(m.updated_at.unwrap().nanos, 500_000_000);
        assert_eq!(
            (m.user_display_name.as_str(), m.node.as_str()),
            ("", "edge-1")
        );
    }
}
