//! The edge's gRPC client of the auth service: a lazily connecting tonic
//! client (with the edge's service token on every call, over TLS when the
//! URL is https://), returning domain types and [`AuthError`]. (The gRPC
//! watch stream the edge serves is `transport/grpc/`.) Auth's
//! refusals keep their texts; everything else (transport errors, unexpected
//! answers) becomes a fixed text, the detail going to the log only.

use std::path::Path;
use std::time::Duration;

use prost_types::Timestamp;
use qrlogin_proto::{
    auth::v1::{self as pb, auth_service_client::AuthServiceClient},
    events::v1::{DenyReason as PbDeny, LoginState as PbState, QrRotation},
};
use time::OffsetDateTime;
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
    Code, Request, Status,
};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::config::EdgeConfig;
use crate::domain::{DenyReason, LoginState, QrCode, SessionId, Snapshot};

/// What a client sees when auth cannot be used: never the upstream text.
const UNAVAILABLE: &str = "the login service is unavailable; retry";
/// What a client sees when auth answered something this edge cannot read.
const BAD_ANSWER: &str = "unexpected answer from the login service";
/// Retry hint when auth's rate-limit answer carries none.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

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
    /// A fixed text (the cause is logged where it happened).
    #[error("{0}")]
    Unavailable(String),
    /// A fixed text (the cause is logged where it happened).
    #[error("{0}")]
    BadResponse(String),
    /// Auth's create limit for the client's network, or its scan or
    /// confirm limit for the phone user, across all edges.
    #[error("too many requests; retry later")]
    RateLimited { retry_after: Duration },
    /// A refusal of the QR protocol, named by auth's `x-qrlogin-reason`.
    #[error("{message}")]
    Qr { reason: QrRefusal, message: String },
    /// The session store is full.
    #[error("the session store is full; retry later")]
    StorageFull,
    /// A file of the client's own configuration (token, TLS) is unusable.
    #[error("{var}: {reason}")]
    Config { var: &'static str, reason: String },
}

/// Refusals of the QR protocol that a client must tell apart (auth.proto;
/// the HTTP error code is the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrRefusal {
    /// The scanned payload is not one of this session.
    QrInvalid,
    /// The scanned payload was replaced by a newer one.
    QrReplaced,
    /// Confirm without the number picked.
    MatchRequired,
    /// A wrong number was picked: the session is DENIED.
    WrongMatch,
    /// Create without a browser key where one is required.
    KeyRequired,
    /// The browser key is not an EC P-256 public key.
    InvalidKey,
    /// Redeem of a key-bound session without a proof.
    ProofRequired,
    /// A proof that does not verify.
    InvalidProof,
}

impl QrRefusal {
    fn from_reason(reason: &str) -> Option<Self> {
        Some(match reason {
            "qr_invalid" => Self::QrInvalid,
            "qr_replaced" => Self::QrReplaced,
            "match_required" => Self::MatchRequired,
            "wrong_match" => Self::WrongMatch,
            "key_required" => Self::KeyRequired,
            "invalid_key" => Self::InvalidKey,
            "proof_required" => Self::ProofRequired,
            "invalid_proof" => Self::InvalidProof,
            _ => return None,
        })
    }

    /// The stable code, as auth's reason and the edge's HTTP error code.
    pub fn code(self) -> &'static str {
        match self {
            Self::QrInvalid => "qr_invalid",
            Self::QrReplaced => "qr_replaced",
            Self::MatchRequired => "match_required",
            Self::WrongMatch => "wrong_match",
            Self::KeyRequired => "key_required",
            Self::InvalidKey => "invalid_key",
            Self::ProofRequired => "proof_required",
            Self::InvalidProof => "invalid_proof",
        }
    }
}

impl AuthError {
    fn unavailable() -> Self {
        Self::Unavailable(UNAVAILABLE.to_owned())
    }

    fn bad_response(detail: impl std::fmt::Display) -> Self {
        tracing::warn!(detail = %detail, "auth answered something unexpected");
        Self::BadResponse(BAD_ANSWER.to_owned())
    }
}

/// The `retry-after` seconds auth sends with a rate-limit answer.
fn retry_after(s: &Status) -> Duration {
    s.metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_RETRY_AFTER)
}

impl From<Status> for AuthError {
    fn from(s: Status) -> Self {
        let msg = s.message().to_owned();
        let reason = s
            .metadata()
            .get("x-qrlogin-reason")
            .and_then(|v| v.to_str().ok());
        match (s.code(), reason) {
            (Code::Unauthenticated, Some("service_token")) => {
                tracing::error!("auth refused this edge's service token: check QRLOGIN_AUTH_SERVICE_TOKEN_FILE against auth's QRLOGIN_SERVICE_TOKENS_FILE");
                return Self::unavailable();
            }
            (Code::ResourceExhausted, Some("rate_limited")) => {
                return Self::RateLimited {
                    retry_after: retry_after(&s),
                }
            }
            (Code::ResourceExhausted, Some("storage_full")) => return Self::StorageFull,
            (_, Some(reason)) => {
                if let Some(reason) = QrRefusal::from_reason(reason) {
                    return Self::Qr {
                        reason,
                        message: msg,
                    };
                }
            }
            _ => {}
        }
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
            code => {
                tracing::warn!(?code, message = %msg, "auth call failed");
                Self::unavailable()
            }
        }
    }
}

/// Adds the edge's service token to every call, and, with tracing on, the
/// W3C context of the calling request's span (auth's call span continues it).
#[derive(Clone)]
pub struct ServiceToken(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for ServiceToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("x-qrlogin-service-token", token.clone());
        }
        crate::telemetry::inject_current(&mut crate::telemetry::GrpcMetadata(
            request.metadata_mut(),
        ));
        Ok(request)
    }
}

/// How the edge proves itself to auth: its service token and, with an
/// https:// URL, the TLS settings. Read before the edge binds.
#[derive(Clone)]
pub struct AuthAccess {
    token: ServiceToken,
    tls: Option<ClientTlsConfig>,
}

impl std::fmt::Debug for AuthAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthAccess")
            .field("token", &self.token.0.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

fn read_file(var: &'static str, path: &Path) -> Result<Vec<u8>, AuthError> {
    std::fs::read(path).map_err(|e| AuthError::Config {
        var,
        reason: format!("cannot read {}: {e}", path.display()),
    })
}

impl AuthAccess {
    pub fn load(c: &EdgeConfig) -> Result<Self, AuthError> {
        let token = match &c.auth_service_token_file {
            Some(path) => {
                let var = "QRLOGIN_AUTH_SERVICE_TOKEN_FILE";
                let text = String::from_utf8(read_file(var, path)?).unwrap_or_default();
                let value = MetadataValue::try_from(text.trim())
                    .ok()
                    .filter(|_| !text.trim().is_empty())
                    .ok_or_else(|| AuthError::Config {
                        var,
                        reason: format!("{} holds no token of visible ASCII", path.display()),
                    })?;
                Some(value)
            }
            None => None,
        };
        let tls = match &c.auth_tls_ca_file {
            Some(ca) => {
                let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(
                    read_file("QRLOGIN_AUTH_TLS_CA_FILE", ca)?,
                ));
                if let (Some(cert), Some(key)) =
                    (&c.auth_tls_client_cert_file, &c.auth_tls_client_key_file)
                {
                    tls = tls.identity(Identity::from_pem(
                        read_file("QRLOGIN_AUTH_TLS_CLIENT_CERT_FILE", cert)?,
                        read_file("QRLOGIN_AUTH_TLS_CLIENT_KEY_FILE", key)?,
                    ));
                }
                Some(tls)
            }
            None => None,
        };
        Ok(Self {
            token: ServiceToken(token),
            tls,
        })
    }

    pub fn has_token(&self) -> bool {
        self.token.0.is_some()
    }
}

/// Answer of a create: the snapshot plus what only create reveals.
#[derive(Debug, Clone)]
pub struct Created {
    pub snapshot: Snapshot,
    pub browser_secret: String,
    pub qr_payload: String,
    /// The RFC 7638 thumbprint of the browser key, when one was bound.
    pub key_thumbprint: String,
}

/// The browser's public key (the members of an EC P-256 JWK), bound to
/// the session at create.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct BrowserKey {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub y: String,
}

/// Where a login comes from, shown to the phone's user.
#[derive(Debug, Clone)]
pub struct BrowserContext {
    pub ip: String,
    pub user_agent: String,
    pub created_at: Option<OffsetDateTime>,
}

/// Answer of a scan: the session, where it comes from, the numbers to
/// offer, and whether browser and phone share a network.
#[derive(Debug, Clone)]
pub struct Scanned {
    pub snapshot: Snapshot,
    pub browser: BrowserContext,
    pub match_choices: Vec<u32>,
    pub same_network: Option<bool>,
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
    grpc: AuthServiceClient<InterceptedService<Channel, ServiceToken>>,
    health: HealthClient<Channel>,
}

impl AuthClient {
    /// Builds the client without connecting: the first call connects.
    pub fn new(url: &str, timeout: Duration, access: &AuthAccess) -> Result<Self, AuthError> {
        let mut endpoint =
            Endpoint::from_shared(url.to_owned()).map_err(|_| AuthError::Config {
                var: "QRLOGIN_AUTH_URL",
                reason: "not a valid URL".into(),
            })?;
        if let Some(tls) = &access.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| AuthError::Config {
                    var: "QRLOGIN_AUTH_TLS_CA_FILE",
                    reason: e.to_string(),
                })?;
        }
        let channel = endpoint
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect_lazy();
        Ok(Self {
            grpc: AuthServiceClient::with_interceptor(channel.clone(), access.token.clone()),
            health: HealthClient::new(channel),
        })
    }

    pub async fn create(
        &self,
        client_ip: String,
        user_agent: String,
        browser_key: Option<BrowserKey>,
    ) -> Result<Created, AuthError> {
        let req = pb::CreateLoginSessionRequest {
            client_ip,
            user_agent,
            browser_key: browser_key.map(|k| pb::BrowserKey {
                kty: k.kty,
                crv: k.crv,
                x: k.x,
                y: k.y,
            }),
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
            key_thumbprint: r.key_thumbprint,
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

    /// Redeems with the browser secret and, for a key-bound session, the
    /// proof of the browser's key (`proof` empty: none).
    pub async fn redeem(
        &self,
        id: &SessionId,
        secret: &str,
        proof: &str,
    ) -> Result<Redeemed, AuthError> {
        let req = pb::RedeemLoginSessionRequest {
            session_id: id.to_string(),
            browser_secret: secret.to_owned(),
            proof: proof.to_owned(),
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

    /// The JWK Set of the tokens auth signs (JSON text).
    pub async fn signing_keys(&self) -> Result<String, AuthError> {
        let r = self
            .grpc
            .clone()
            .get_signing_keys(pb::GetSigningKeysRequest {})
            .await?
            .into_inner();
        Ok(r.jwks)
    }

    /// Scan on behalf of the phone whose `authorization` value is passed
    /// on, with the payload it read and its address as this edge saw it.
    pub async fn scan(
        &self,
        id: &SessionId,
        authorization: &str,
        qr_payload: &str,
        phone_ip: &str,
    ) -> Result<Scanned, AuthError> {
        let req = with_authorization(
            pb::ScanLoginSessionRequest {
                session_id: id.to_string(),
                qr_payload: qr_payload.to_owned(),
                client_ip: phone_ip.to_owned(),
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
        Ok(Scanned {
            snapshot: snapshot(r.session)?,
            browser,
            match_choices: r.match_choices,
            same_network: r.same_network,
        })
    }

    /// Confirm with the number the user picked (0: none).
    pub async fn confirm(
        &self,
        id: &SessionId,
        authorization: &str,
        match_code: u32,
    ) -> Result<Snapshot, AuthError> {
        let req = with_authorization(
            pb::ConfirmLoginSessionRequest {
                session_id: id.to_string(),
                match_code,
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

/// The QR code of a PENDING session from auth's rotation, showing the
/// epoch that runs now.
pub(crate) fn qr_code(state: LoginState, qr: Option<QrRotation>) -> Option<QrCode> {
    let qr = qr.filter(|_| state == LoginState::Pending)?;
    QrCode::new(
        &qr.key,
        timestamp_opt(qr.starts_at)?,
        qr.period_ms,
        &qr.base_url,
        OffsetDateTime::now_utc(),
    )
}

/// The match code while SCANNED (0 on the wire: none).
pub(crate) fn match_code(state: LoginState, code: u32) -> Option<u8> {
    (state == LoginState::Scanned)
        .then(|| u8::try_from(code).ok())
        .flatten()
        .filter(|&c| c != 0)
}

pub(crate) fn deny_reason(value: i32) -> Option<DenyReason> {
    match PbDeny::try_from(value).ok()? {
        PbDeny::Unspecified => None,
        PbDeny::User => Some(DenyReason::User),
        PbDeny::WrongMatch => Some(DenyReason::WrongMatch),
    }
}

fn snapshot(session: Option<pb::LoginSession>) -> Result<Snapshot, AuthError> {
    let s = session.ok_or_else(|| AuthError::bad_response("no session in the answer"))?;
    let session_id = SessionId::parse(&s.session_id)
        .map_err(|_| AuthError::bad_response(format!("session id {:?}", s.session_id)))?;
    let state = login_state(s.state)
        .ok_or_else(|| AuthError::bad_response(format!("state {}", s.state)))?;
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
        qr: qr_code(state, s.qr),
        match_code: match_code(state, s.match_code),
        deny_reason: deny_reason(s.deny_reason),
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

    #[test]
    fn upstream_text_never_reaches_clients() {
        for status in [
            Status::unavailable("tcp connect error: 10.1.2.3:50051 refused"),
            Status::internal("h2 protocol error: frame with invalid size"),
            Status::unknown("NATS: nats://user:pass@nats:4222 timed out"),
        ] {
            let text = AuthError::from(status).to_string();
            assert_eq!(text, UNAVAILABLE);
        }
        assert_eq!(
            snapshot(None).unwrap_err().to_string(),
            BAD_ANSWER,
            "a malformed answer says nothing about what auth sent"
        );
    }

    #[test]
    fn auth_reasons_become_their_own_errors() {
        let mut limited = Status::resource_exhausted("too many");
        limited
            .metadata_mut()
            .insert("x-qrlogin-reason", "rate_limited".parse().unwrap());
        limited
            .metadata_mut()
            .insert("retry-after", "17".parse().unwrap());
        assert!(matches!(
            AuthError::from(limited),
            AuthError::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(17)
        ));
        for reason in [
            "qr_invalid",
            "qr_replaced",
            "match_required",
            "wrong_match",
            "key_required",
            "invalid_key",
            "proof_required",
            "invalid_proof",
        ] {
            let mut s = Status::failed_precondition("refused");
            s.metadata_mut()
                .insert("x-qrlogin-reason", reason.parse().unwrap());
            match AuthError::from(s) {
                AuthError::Qr { reason: r, .. } => assert_eq!(r.code(), reason),
                other => panic!("{reason}: {other:?}"),
            }
        }
        let mut full = Status::resource_exhausted("full");
        full.metadata_mut()
            .insert("x-qrlogin-reason", "storage_full".parse().unwrap());
        assert!(matches!(AuthError::from(full), AuthError::StorageFull));
        // A refused service token is the operator's problem, not the browser's.
        let mut token = Status::unauthenticated("this call needs a service token");
        token
            .metadata_mut()
            .insert("x-qrlogin-reason", "service_token".parse().unwrap());
        assert!(matches!(AuthError::from(token), AuthError::Unavailable(_)));
        // A user token refusal stays unauthenticated.
        assert!(matches!(
            AuthError::from(Status::unauthenticated("user token expired")),
            AuthError::Unauthenticated(_)
        ));
    }
}
