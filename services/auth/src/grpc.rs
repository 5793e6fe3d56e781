//! The gRPC face of the service: protobuf in, domain calls, protobuf out. The
//! one place where service errors become `tonic::Status`: each has a fixed
//! text (details of NATS or other upstream failures go to the log, never to
//! the caller) and, where a caller must tell causes apart, the metadata
//! `x-qrlogin-reason` (documented in auth.proto).

use std::sync::Arc;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use qrlogin_proto::auth::v1 as pb;
use qrlogin_proto::auth::v1::auth_service_server::AuthService;

use crate::broker::{proto_state, qr_rotation, timestamp};
use crate::callers::{CallerError, ServiceTokens, SERVICE_TOKEN_HEADER};
use crate::domain::{DenyReason, DomainError};
use crate::metrics::AuthMetrics;
use crate::proof::{BrowserKey, ProofError};
use crate::service::{now_millis, LoginService, ServiceError, SessionView};
use crate::token::TokenError;

/// Metadata naming the cause of UNAUTHENTICATED or RESOURCE_EXHAUSTED.
pub const REASON_HEADER: &str = "x-qrlogin-reason";
/// The wrong or missing service token (not the user's JWT).
pub const REASON_SERVICE_TOKEN: &str = "service_token";
/// The create limit of the caller's network; `retry-after` says when.
pub const REASON_RATE_LIMITED: &str = "rate_limited";
/// The session bucket is full.
pub const REASON_STORAGE_FULL: &str = "storage_full";
/// Auth holds its maximum of concurrent calls.
pub const REASON_OVER_CAPACITY: &str = "over_capacity";
/// The scanned QR payload is not one of this session (reasons of the QR
/// protocol: see auth.proto).
pub const REASON_QR_INVALID: &str = "qr_invalid";
/// The scanned QR payload was replaced by a newer one.
pub const REASON_QR_REPLACED: &str = "qr_replaced";
/// Confirm without the number the user picked.
pub const REASON_MATCH_REQUIRED: &str = "match_required";
/// A wrong number was picked: the session is DENIED.
pub const REASON_WRONG_MATCH: &str = "wrong_match";
/// Create without a browser key while key binding is required.
pub const REASON_KEY_REQUIRED: &str = "key_required";
/// The browser key is not a P-256 public key.
pub const REASON_INVALID_KEY: &str = "invalid_key";
/// Redeem of a key-bound session without a proof.
pub const REASON_PROOF_REQUIRED: &str = "proof_required";
/// A proof that does not verify.
pub const REASON_INVALID_PROOF: &str = "invalid_proof";
/// Seconds after which a rate-limited caller may try again; also sent with
/// UNAVAILABLE.
pub const RETRY_AFTER_HEADER: &str = "retry-after";
/// The fixed text of UNAVAILABLE: the store could not be reached within the
/// call's retry deadline (a NATS member or leader was still being replaced).
pub const UNAVAILABLE_MESSAGE: &str = "the session store is unavailable; retry";
/// The `retry-after` of UNAVAILABLE, in seconds: a NATS leader election
/// takes about that long.
pub const UNAVAILABLE_RETRY_AFTER: &str = "1";

/// A status with `x-qrlogin-reason` set.
pub fn with_reason(mut status: Status, reason: &'static str) -> Status {
    status
        .metadata_mut()
        .insert(REASON_HEADER, MetadataValue::from_static(reason));
    status
}

pub struct GrpcAuth {
    service: Arc<LoginService>,
    tokens: Arc<ServiceTokens>,
    metrics: Arc<AuthMetrics>,
    /// The JWK Set GetSigningKeys answers (rendered once).
    jwks: String,
}

impl GrpcAuth {
    pub fn new(
        service: Arc<LoginService>,
        tokens: Arc<ServiceTokens>,
        metrics: Arc<AuthMetrics>,
    ) -> Self {
        Self {
            service,
            tokens,
            metrics,
            jwks: r#"{"keys":[]}"#.into(),
        }
    }

    /// Answers GetSigningKeys with `keys`.
    pub fn publishing(mut self, keys: &crate::signing::PublishedKeys) -> Self {
        self.jwks = keys.jwks().to_string();
        self
    }

    /// Until when this call may retry the store (see `Settings::deadline`).
    fn deadline<T>(&self, request: &Request<T>) -> tokio::time::Instant {
        self.service
            .settings()
            .deadline(caller_timeout(request.metadata()))
    }

    fn refused(&self, e: CallerError) -> Status {
        self.metrics.service_token_refused(match e {
            CallerError::Missing => "missing",
            CallerError::Invalid => "invalid",
        });
        caller_status(e)
    }

    /// Browser-side calls come from an edge: a valid service token is required.
    fn browser_side<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let token = request
            .metadata()
            .get(SERVICE_TOKEN_HEADER)
            .map(|v| v.as_bytes());
        self.tokens.check(token).map_err(|e| self.refused(e))
    }

    /// Phone-side calls are authenticated by the user's JWT; a service token
    /// is optional, but one that is present must be valid.
    fn phone_side<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match request.metadata().get(SERVICE_TOKEN_HEADER) {
            None => Ok(()),
            Some(v) => self
                .tokens
                .check(Some(v.as_bytes()))
                .map_err(|e| self.refused(e)),
        }
    }
}

fn caller_status(e: CallerError) -> Status {
    tracing::warn!(error = %e, "call refused: service token");
    with_reason(Status::unauthenticated(e.to_string()), REASON_SERVICE_TOKEN)
}

/// The caller's own deadline, from the `grpc-timeout` metadata (gRPC over
/// HTTP/2: up to 8 digits and a unit, H M S m u n); `None` when absent or
/// malformed.
pub fn caller_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The `authorization` metadata as text. A value that is not visible ASCII
/// is reported as malformed rather than missing.
fn authorization<T>(request: &Request<T>) -> Result<Option<String>, Status> {
    match request.metadata().get("authorization") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.to_owned()))
            .map_err(|_| to_status(ServiceError::Token(TokenError::MalformedHeader))),
    }
}

/// The public view of a session: what the browser side may see in its
/// state (see `login_event`), with the QR payload of this moment.
fn session(service: &LoginService, view: &SessionView) -> pb::LoginSession {
    use qrlogin_proto::events::v1::DenyReason as PbDeny;
    let r = &view.record;
    let base = &service.settings().public_base;
    pb::LoginSession {
        session_id: r.id.clone(),
        state: proto_state(r.state) as i32,
        version: view.version,
        expires_at: r.expires_at.map(timestamp),
        updated_at: Some(timestamp(r.updated_at)),
        user_display_name: r
            .public_display_name()
            .map(str::to_owned)
            .unwrap_or_default(),
        qr_payload: service.qr_payload(r, now_millis()),
        qr: r.public_qr().map(|k| qr_rotation(k, base)),
        match_code: r.public_match_code().map_or(0, u32::from),
        deny_reason: r.deny_reason.map_or(PbDeny::Unspecified, |d| match d {
            DenyReason::User => PbDeny::User,
            DenyReason::WrongMatch => PbDeny::WrongMatch,
        }) as i32,
    }
}

/// The view a phone gets: never the match code it must find on the other
/// screen, nor the QR key.
fn phone_session(service: &LoginService, view: &SessionView) -> pb::LoginSession {
    pb::LoginSession {
        match_code: 0,
        qr: None,
        qr_payload: String::new(),
        ..session(service, view)
    }
}

#[tonic::async_trait]
impl AuthService for GrpcAuth {
    async fn create_login_session(
        &self,
        request: Request<pb::CreateLoginSessionRequest>,
    ) -> Result<Response<pb::CreateLoginSessionResponse>, Status> {
        self.browser_side(&request)?;
        let deadline = self.deadline(&request);
        let req = request.into_inner();
        let key = req.browser_key.map(|k| BrowserKey {
            kty: k.kty,
            crv: k.crv,
            x: k.x,
            y: k.y,
        });
        let created = self
            .service
            .create(&req.client_ip, &req.user_agent, key.as_ref(), deadline)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CreateLoginSessionResponse {
            session: Some(session(&self.service, &created.view)),
            browser_secret: created.secret.expose().to_owned(),
            qr_payload: created.qr_payload,
            key_thumbprint: created
                .view
                .record
                .key_thumbprint
                .clone()
                .unwrap_or_default(),
        }))
    }

    async fn get_login_session(
        &self,
        request: Request<pb::GetLoginSessionRequest>,
    ) -> Result<Response<pb::GetLoginSessionResponse>, Status> {
        self.browser_side(&request)?;
        let deadline = self.deadline(&request);
        let req = request.into_inner();
        let view = self
            .service
            .get(&req.session_id, &req.browser_secret, deadline)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetLoginSessionResponse {
            session: Some(session(&self.service, &view)),
        }))
    }

    async fn scan_login_session(
        &self,
        request: Request<pb::ScanLoginSessionRequest>,
    ) -> Result<Response<pb::ScanLoginSessionResponse>, Status> {
        self.phone_side(&request)?;
        let auth = authorization(&request)?;
        let deadline = self.deadline(&request);
        let req = request.into_inner();
        let scanned = self
            .service
            .scan(
                &req.session_id,
                auth.as_deref(),
                &req.qr_payload,
                &req.client_ip,
                deadline,
            )
            .await
            .map_err(to_status)?;
        let b = &scanned.view.record.browser;
        Ok(Response::new(pb::ScanLoginSessionResponse {
            session: Some(phone_session(&self.service, &scanned.view)),
            browser: Some(pb::BrowserContext {
                ip: b.ip.clone(),
                user_agent: b.user_agent.clone(),
                created_at: Some(timestamp(b.created_at)),
            }),
            match_choices: scanned.choices.iter().map(|&c| u32::from(c)).collect(),
            same_network: scanned.same_network,
        }))
    }

    async fn confirm_login_session(
        &self,
        request: Request<pb::ConfirmLoginSessionRequest>,
    ) -> Result<Response<pb::ConfirmLoginSessionResponse>, Status> {
        self.phone_side(&request)?;
        let auth = authorization(&request)?;
        let deadline = self.deadline(&request);
        let req = request.into_inner();
        let view = self
            .service
            .confirm(&req.session_id, auth.as_deref(), req.match_code, deadline)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ConfirmLoginSessionResponse {
            session: Some(phone_session(&self.service, &view)),
        }))
    }

    async fn deny_login_session(
        &self,
        request: Request<pb::DenyLoginSessionRequest>,
    ) -> Result<Response<pb::DenyLoginSessionResponse>, Status> {
        self.phone_side(&request)?;
        let auth = authorization(&request)?;
        let deadline = self.deadline(&request);
        let req = request.into_inner();
        let view = self
            .service
            .deny(&req.session_id, auth.as_deref(), deadline)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DenyLoginSessionResponse {
            session: Some(phone_session(&self.service, &view)),
        }))
    }

    async fn cancel_login_session(
        &self,
        request: Request<pb::CancelLoginSessionRequest>,
    ) -> Result<Response<pb::CancelLoginSessionResponse>, Status> {
        self.browser_side(&request)?;
        let deadline = self.deadline(&request);
        let req = request.into_inner();
        let view = self
            .service
            .cancel(&req.session_id, &req.browser_secret, deadline)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CancelLoginSessionResponse {
            session: Some(session(&self.service, &view)),
        }))
    }

    async fn get_signing_keys(
        &self,
        request: Request<pb::GetSigningKeysRequest>,
    ) -> Result<Response<pb::GetSigningKeysResponse>, Status> {
        self.browser_side(&request)?;
        Ok(Response::new(pb::GetSigningKeysResponse {
            jwks: self.jwks.clone(),
        }))
    }

    async fn redeem_login_session(
        &self,
        request: Request<pb::RedeemLoginSessionRequest>,
    ) -> Result<Response<pb::RedeemLoginSessionResponse>, Status> {
        self.browser_side(&request)?;
        let deadline = self.deadline(&request);
        let req = request.into_inner();
        let r = self
            .service
            .redeem(&req.session_id, &req.browser_secret, &req.proof, deadline)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RedeemLoginSessionResponse {
            session: Some(session(&self.service, &r.view)),
            access_token: r.token.token,
            access_token_expires_at: Some(timestamp(r.token.expires_at)),
            user_id: r.user.id,
            user_display_name: r.user.display_name,
        }))
    }
}

fn rate_limited(msg: String, retry_after: Duration) -> Status {
    let mut status = with_reason(Status::resource_exhausted(msg), REASON_RATE_LIMITED);
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    if let Ok(v) = MetadataValue::try_from(secs.max(1).to_string()) {
        status.metadata_mut().insert(RETRY_AFTER_HEADER, v);
    }
    status
}

/// Every service error's gRPC code, in one place (documented in auth.proto).
pub fn to_status(e: ServiceError) -> Status {
    let msg = e.to_string();
    match e {
        ServiceError::RateLimited { retry_after }
        | ServiceError::UserLimited { retry_after, .. } => rate_limited(msg, retry_after),
        ServiceError::Domain(DomainError::QrInvalid(_)) => {
            with_reason(Status::invalid_argument(msg), REASON_QR_INVALID)
        }
        ServiceError::Domain(DomainError::QrReplaced) => {
            with_reason(Status::failed_precondition(msg), REASON_QR_REPLACED)
        }
        ServiceError::Domain(DomainError::MatchRequired) => {
            with_reason(Status::invalid_argument(msg), REASON_MATCH_REQUIRED)
        }
        ServiceError::WrongMatch => with_reason(Status::permission_denied(msg), REASON_WRONG_MATCH),
        ServiceError::KeyRequired => {
            with_reason(Status::invalid_argument(msg), REASON_KEY_REQUIRED)
        }
        ServiceError::Proof(ProofError::InvalidKey) => {
            with_reason(Status::invalid_argument(msg), REASON_INVALID_KEY)
        }
        ServiceError::Proof(ProofError::Missing) => {
            with_reason(Status::unauthenticated(msg), REASON_PROOF_REQUIRED)
        }
        ServiceError::Proof(ProofError::Invalid(_)) => {
            with_reason(Status::unauthenticated(msg), REASON_INVALID_PROOF)
        }
        ServiceError::StorageFull => {
            tracing::error!("session bucket full (QRLOGIN_KV_MAX_BYTES): refusing creates");
            with_reason(Status::resource_exhausted(msg), REASON_STORAGE_FULL)
        }
        ServiceError::InvalidArgument(_) => Status::invalid_argument(msg),
        ServiceError::NotFound => Status::not_found(msg),
        ServiceError::MissingSecret => Status::unauthenticated(msg),
        ServiceError::WrongSecret => Status::permission_denied(msg),
        ServiceError::Token(TokenError::KeysUnavailable) => Status::unavailable(msg),
        ServiceError::Token(_) => Status::unauthenticated(msg),
        ServiceError::Domain(DomainError::WrongUser) => Status::permission_denied(msg),
        ServiceError::Domain(_) => Status::failed_precondition(msg),
        ServiceError::Aborted(_) => Status::aborted(msg),
        ServiceError::Unavailable(detail) => {
            tracing::warn!(error = %detail, "session store unavailable");
            let mut status = Status::unavailable(UNAVAILABLE_MESSAGE);
            status.metadata_mut().insert(
                RETRY_AFTER_HEADER,
                MetadataValue::from_static(UNAVAILABLE_RETRY_AFTER),
            );
            status
        }
        ServiceError::Internal(detail) => {
            tracing::error!(error = %detail, "internal error");
            Status::internal("internal error")
        }
    }
}

/// The answer when auth already holds its maximum of concurrent calls.
pub fn over_capacity() -> Status {
    with_reason(
        Status::resource_exhausted("auth is at its limit of concurrent calls; retry"),
        REASON_OVER_CAPACITY,
    )
}

/// The answer when a call took longer than the request timeout.
pub fn timed_out(limit: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the call took longer than {}s",
        limit.as_secs_f64()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_is_read_in_every_unit() {
        let mut m = tonic::metadata::MetadataMap::new();
        assert_eq!(caller_timeout(&m), None);
        for (text, want) in [
            ("5S", Some(Duration::from_secs(5))),
            ("4999m", Some(Duration::from_millis(4999))),
            ("2M", Some(Duration::from_secs(120))),
            ("1H", Some(Duration::from_secs(3600))),
            ("250000u", Some(Duration::from_millis(250))),
            ("7n", Some(Duration::from_nanos(7))),
            ("5s", None),
            ("S", None),
            ("123456789S", None),
            ("-5S", None),
        ] {
            m.insert("grpc-timeout", text.parse().unwrap());
            assert_eq!(caller_timeout(&m), want, "{text}");
        }
    }

    #[test]
    fn an_unavailable_store_is_a_fixed_retryable_answer() {
        let status = to_status(ServiceError::Unavailable("timed out: detail".into()));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), UNAVAILABLE_MESSAGE);
        assert_eq!(
            status.metadata().get(RETRY_AFTER_HEADER).unwrap(),
            UNAVAILABLE_RETRY_AFTER
        );
    }
}
