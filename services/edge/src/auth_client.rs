//! The only file that speaks gRPC: a lazily connecting tonic client of the
//! auth service, returning domain types and [`AuthError`].

use std::time::Duration;

use prost_types::Timestamp;
use qrlogin_proto::{
    auth::v1::{self as pb, auth_service_client::AuthServiceClient},
    events::v1::LoginState as PbState,
};
use time::OffsetDateTime;
use tonic::{
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
    Code, Request, Status,
};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::domain::{LoginState, SessionId, Snapshot};

/// How a call to auth failed, already sorted into the protocol's classes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// FAILED_PRECONDITION caused by a passed deadline (auth says "expired").
    #[error("{0}")]
    Expired(String),
    #[error("{0}")]
    Conflict(String),
    #[error("auth service unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    BadResponse(String),
}

impl From<Status> for AuthError {
    fn from(s: Status) -> Self {
        let msg = s.message().to_owned();
        match s.code() {
            Code::InvalidArgument | Code::OutOfRange => Self::InvalidArgument(msg),
            Code::Unauthenticated => Self::Unauthenticated(msg),
            Code::PermissionDenied => Self::PermissionDenied(msg),
            Code::NotFound => Self::NotFound(msg),
            Code::FailedPrecondition if msg.to_ascii_lowercase().contains("expired") => {
                Self::Expired(msg)
            }
            Code::FailedPrecondition => Self::FailedPrecondition(msg),
            Code::Aborted | Code::AlreadyExists => Self::Conflict(msg),
            _ => Self::Unavailable(format!("{:?}: {msg}", s.code())),
        }
    }
}

/// Answer of a create: the snapshot plus what only create reveals.
#[derive(Debug, Clone)]
pub struct Created {
    pub snapshot: Snapshot,
    pub browser_secret: String,
    pub qr_payload: String,
}

/// Where a login comes from, shown to the phone's user.
#[derive(Debug, Clone)]
pub struct BrowserContext {
    pub ip: String,
    pub user_agent: String,
    pub created_at: Option<OffsetDateTime>,
}

/// Answer of a redeem.
#[derive(Debug, Clone)]
pub struct Redeemed {
    pub snapshot: Snapshot,
    pub access_token: String,
    pub expires_at: Option<OffsetDateTime>,
    pub user_id: String,
    pub user_display_name: String,
}

/// A cheap-to-clone client; the channel reconnects by itself when auth
/// comes back, and every call carries the configured timeout.
#[derive(Clone)]
pub struct AuthClient {
    grpc: AuthServiceClient<Channel>,
    health: HealthClient<Channel>,
}

impl AuthClient {
    /// Builds the client without connecting: the first call connects.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, AuthError> {
        let channel = Endpoint::from_shared(url.to_owned())
            .map_err(|e| AuthError::InvalidArgument(format!("auth URL: {e}")))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect_lazy();
        Ok(Self {
            grpc: AuthServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
        })
    }

    pub async fn create(
        &self,
        client_ip: String,
        user_agent: String,
    ) -> Result<Created, AuthError> {
        let req = pb::CreateLoginSessionRequest {
            client_ip,
            user_agent,
        };
        let r = self
            .grpc
            .clone()
            .create_login_session(req)
            .await?
            .into_inner();
        Ok(Created {
            snapshot: snapshot(r.session)?,
            browser_secret: r.browser_secret,
            qr_payload: r.qr_payload,
        })
    }

    pub async fn get(&self, id: &SessionId, secret: &str) -> Result<Snapshot, AuthError> {
        let req = pb::GetLoginSessionRequest {
            session_id: id.to_string(),
            browser_secret: secret.to_owned(),
        };
        snapshot(
            self.grpc
                .clone()
                .get_login_session(req)
                .await?
                .into_inner()
                .session,
        )
    }

    pub async fn cancel(&self, id: &SessionId, secret: &str) -> Result<Snapshot, AuthError> {
        let req = pb::CancelLoginSessionRequest {
            session_id: id.to_string(),
            browser_secret: secret.to_owned(),
        };
        snapshot(
            self.grpc
                .clone()
                .cancel_login_session(req)
                .await?
                .into_inner()
                .session,
        )
    }

    pub async fn redeem(&self, id: &SessionId, secret: &str) -> Result<Redeemed, AuthError> {
        let req = pb::RedeemLoginSessionRequest {
            session_id: id.to_string(),
            browser_secret: secret.to_owned(),
        };
        let r = self
            .grpc
            .clone()
            .redeem_login_session(req)
            .await?
            .into_inner();
        Ok(Redeemed {
            snapshot: snapshot(r.session)?,
            access_token: r.access_token,
            expires_at: r.access_token_expires_at.and_then(timestamp),
            user_id: r.user_id,
            user_display_name: r.user_display_name,
        })
    }

    /// Scan on behalf of the phone whose `authorization` value is passed on.
    pub async fn scan(
        &self,
        id: &SessionId,
        authorization: &str,
    ) -> Result<(Snapshot, BrowserContext), AuthError> {
        let req = with_authorization(
            pb::ScanLoginSessionRequest {
                session_id: id.to_string(),
            },
            authorization,
        )?;
        let r = self
            .grpc
            .clone()
            .scan_login_session(req)
            .await?
            .into_inner();
        let b = r.browser.unwrap_or_default();
        let browser = BrowserContext {
            ip: b.ip,
            user_agent: b.user_agent,
            created_at: b.created_at.and_then(timestamp),
        };
        Ok((snapshot(r.session)?, browser))
    }

    pub async fn confirm(
        &self,
        id: &SessionId,
        authorization: &str,
    ) -> Result<Snapshot, AuthError> {
        let req = with_authorization(
            pb::ConfirmLoginSessionRequest {
                session_id: id.to_string(),
            },
            authorization,
        )?;
        snapshot(
            self.grpc
                .clone()
                .confirm_login_session(req)
                .await?
                .into_inner()
                .session,
        )
    }

    pub async fn deny(&self, id: &SessionId, authorization: &str) -> Result<Snapshot, AuthError> {
        let req = with_authorization(
            pb::DenyLoginSessionRequest {
                session_id: id.to_string(),
            },
            authorization,
        )?;
        snapshot(
            self.grpc
                .clone()
                .deny_login_session(req)
                .await?
                .into_inner()
                .session,
        )
    }

    /// Whether auth answers its gRPC health check for the AuthService as
    /// SERVING. A server that does not know the health service or this
    /// service name still proves that it answers.
    pub async fn is_serving(&self) -> bool {
        let req = HealthCheckRequest {
            service: HEALTH_SERVICE.to_owned(),
        };
        match self.health.clone().check(req).await {
            Ok(r) => r.into_inner().status == ServingStatus::Serving as i32,
            Err(s) => matches!(s.code(), Code::Unimplemented | Code::NotFound),
        }
    }
}

/// The name auth reports its own readiness under (gRPC health protocol).
const HEALTH_SERVICE: &str = "qrlogin.auth.v1.AuthService";

fn with_authorization<T>(msg: T, authorization: &str) -> Result<Request<T>, AuthError> {
    let value: MetadataValue<_> = authorization
        .parse()
        .map_err(|_| AuthError::Unauthenticated("malformed Authorization header".into()))?;
    let mut req = Request::new(msg);
    req.metadata_mut().insert("authorization", value);
    Ok(req)
}

fn timestamp(t: Timestamp) -> Option<OffsetDateTime> {
    let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

/// Converts a protobuf state; `None` for UNSPECIFIED or unknown numbers.
pub(crate) fn login_state(value: i32) -> Option<LoginState> {
    Some(match PbState::try_from(value).ok()? {
        PbState::Unspecified => return None,
        PbState::Pending => LoginState::Pending,
        PbState::Scanned => LoginState::Scanned,
        PbState::Confirmed => LoginState::Confirmed,
        PbState::Redeemed => LoginState::Redeemed,
        PbState::Denied => LoginState::Denied,
        PbState::Cancelled => LoginState::Cancelled,
        PbState::Expired => LoginState::Expired,
    })
}

pub(crate) fn timestamp_opt(t: Option<Timestamp>) -> Option<OffsetDateTime> {
    t.and_then(timestamp)
}

fn snapshot(session: Option<pb::LoginSession>) -> Result<Snapshot, AuthError> {
    let s = session.ok_or_else(|| AuthError::BadResponse("no session in the answer".into()))?;
    let session_id = SessionId::parse(&s.session_id)
        .map_err(|_| AuthError::BadResponse(format!("session id {:?}", s.session_id)))?;
    let state =
        login_state(s.state).ok_or_else(|| AuthError::BadResponse(format!("state {}", s.state)))?;
    Ok(Snapshot {
        session_id,
        state,
        version: s.version,
        expires_at: if state.is_final() {
            None
        } else {
            timestamp_opt(s.expires_at)
        },
        updated_at: timestamp_opt(s.updated_at).unwrap_or_else(OffsetDateTime::now_utc),
        user_display_name: Some(s.user_display_name).filter(|n| !n.is_empty()),
        changed_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_precondition_about_a_deadline_is_expired() {
        let e = AuthError::from(Status::failed_precondition("session expired at 10:00"));
        assert!(matches!(e, AuthError::Expired(_)));
        let e = AuthError::from(Status::failed_precondition("session is REDEEMED"));
        assert!(matches!(e, AuthError::FailedPrecondition(_)));
        assert!(matches!(
            AuthError::from(Status::aborted("race")),
            AuthError::Conflict(_)
        ));
        assert!(matches!(
            AuthError::from(Status::deadline_exceeded("slow")),
            AuthError::Unavailable(_)
        ));
        assert!(matches!(
            AuthError::from(Status::unavailable("down")),
            AuthError::Unavailable(_)
        ));
    }
}
