//! The gRPC face of the service: protobuf in, domain calls, protobuf out. The
//! one place where service errors become `tonic::Status`.

use std::sync::Arc;
use tonic::{Request, Response, Status};

use crate::broker::{proto_state, timestamp};
use crate::service::{LoginService, ServiceError, SessionView};
use crate::token::TokenError;
use qrlogin_proto::auth::v1 as pb;
use qrlogin_proto::auth::v1::auth_service_server::AuthService;

pub struct GrpcAuth {
    service: Arc<LoginService>,
}

impl GrpcAuth {
    pub fn new(service: Arc<LoginService>) -> Self {
        Self { service }
    }
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

fn session(view: &SessionView) -> pb::LoginSession {
    let r = &view.record;
    pb::LoginSession {
        session_id: r.id.clone(),
        state: proto_state(r.state) as i32,
        version: view.version,
        expires_at: r.expires_at.map(timestamp),
        updated_at: Some(timestamp(r.updated_at)),
        user_display_name: r
            .user
            .as_ref()
            .map(|u| u.display_name.clone())
            .unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl AuthService for GrpcAuth {
    async fn create_login_session(
        &self,
        request: Request<pb::CreateLoginSessionRequest>,
    ) -> Result<Response<pb::CreateLoginSessionResponse>, Status> {
        let req = request.into_inner();
        let created = self
            .service
            .create(&req.client_ip, &req.user_agent)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CreateLoginSessionResponse {
            session: Some(session(&created.view)),
            browser_secret: created.secret.expose().to_owned(),
            qr_payload: created.qr_payload,
        }))
    }

    async fn get_login_session(
        &self,
        request: Request<pb::GetLoginSessionRequest>,
    ) -> Result<Response<pb::GetLoginSessionResponse>, Status> {
        let req = request.into_inner();
        let view = self
            .service
            .get(&req.session_id, &req.browser_secret)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetLoginSessionResponse {
            session: Some(session(&view)),
        }))
    }

    async fn scan_login_session(
        &self,
        request: Request<pb::ScanLoginSessionRequest>,
    ) -> Result<Response<pb::ScanLoginSessionResponse>, Status> {
        let auth = authorization(&request)?;
        let req = request.into_inner();
        let view = self
            .service
            .scan(&req.session_id, auth.as_deref())
            .await
            .map_err(to_status)?;
        let b = &view.record.browser;
        Ok(Response::new(pb::ScanLoginSessionResponse {
            session: Some(session(&view)),
            browser: Some(pb::BrowserContext {
                ip: b.ip.clone(),
                user_agent: b.user_agent.clone(),
                created_at: Some(timestamp(b.created_at)),
            }),
        }))
    }

    async fn confirm_login_session(
        &self,
        request: Request<pb::ConfirmLoginSessionRequest>,
    ) -> Result<Response<pb::ConfirmLoginSessionResponse>, Status> {
        let auth = authorization(&request)?;
        let req = request.into_inner();
        let view = self
            .service
            .confirm(&req.session_id, auth.as_deref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ConfirmLoginSessionResponse {
            session: Some(session(&view)),
        }))
    }

    async fn deny_login_session(
        &self,
        request: Request<pb::DenyLoginSessionRequest>,
    ) -> Result<Response<pb::DenyLoginSessionResponse>, Status> {
        let auth = authorization(&request)?;
        let req = request.into_inner();
        let view = self
            .service
            .deny(&req.session_id, auth.as_deref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DenyLoginSessionResponse {
            session: Some(session(&view)),
        }))
    }

    async fn cancel_login_session(
        &self,
        request: Request<pb::CancelLoginSessionRequest>,
    ) -> Result<Response<pb::CancelLoginSessionResponse>, Status> {
        let req = request.into_inner();
        let view = self
            .service
            .cancel(&req.session_id, &req.browser_secret)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CancelLoginSessionResponse {
            session: Some(session(&view)),
        }))
    }

    async fn redeem_login_session(
        &self,
        request: Request<pb::RedeemLoginSessionRequest>,
    ) -> Result<Response<pb::RedeemLoginSessionResponse>, Status> {
        let req = request.into_inner();
        let r = self
            .service
            .redeem(&req.session_id, &req.browser_secret)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RedeemLoginSessionResponse {
            session: Some(session(&r.view)),
            access_token: r.token.token,
            access_token_expires_at: Some(timestamp(r.token.expires_at)),
            user_id: r.user.id,
            user_display_name: r.user.display_name,
        }))
    }
}

/// Every service error's gRPC code, in one place (documented in auth.proto).
pub fn to_status(e: ServiceError) -> Status {
    let msg = e.to_string();
    match e {
        ServiceError::InvalidArgument(_) => Status::invalid_argument(msg),
        ServiceError::NotFound => Status::not_found(msg),
        ServiceError::MissingSecret => Status::unauthenticated(msg),
        ServiceError::WrongSecret => Status::permission_denied(msg),
        ServiceError::Token(_) => Status::unauthenticated(msg),
        ServiceError::Domain(crate::domain::DomainError::WrongUser) => {
            Status::permission_denied(msg)
        }
        ServiceError::Domain(_) => Status::failed_precondition(msg),
        ServiceError::Aborted(_) => Status::aborted(msg),
        ServiceError::Unavailable(_) => Status::unavailable(msg),
        ServiceError::Internal(detail) => {
            tracing::error!(error = %detail, "internal error");
            Status::internal("internal error")
        }
    }
}
