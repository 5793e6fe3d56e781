//! The one place where failures become HTTP responses:
//! `{ "error": { "code", "message" } }` with a stable code and status
//! (docs/protocol.md, "Errors").

use std::time::Duration;

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};

use crate::{auth_client::AuthError, delivery::WatchError, sessions::SessionError};

/// Marks a response as a rejection, with its code as the metric reason.
#[derive(Debug, Clone, Copy)]
pub struct Rejected(pub &'static str);

/// Every error an HTTP route can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("this Origin may not open a WebSocket here")]
    OriginNotAllowed,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Expired(String),
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("too many login sessions created from this address; retry later")]
    RateLimited { retry_after: Duration },
    #[error("this login session already has the maximum number of watchers on this node")]
    TooManyWatchers,
    #[error("this node holds its maximum number of connections; retry on another node")]
    OverCapacity,
    #[error("this node is shutting down; retry on another node")]
    Draining,
    #[error("the session store is full; retry later")]
    StorageFull,
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied(_) | Self::OriginNotAllowed => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::FailedPrecondition(_) | Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Expired(_) => StatusCode::GONE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } | Self::TooManyWatchers => StatusCode::TOO_MANY_REQUESTS,
            Self::OverCapacity | Self::Draining | Self::StorageFull | Self::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The stable `code` of the JSON body; also the `reason` label of the
    /// rejected-requests metric.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "invalid_argument",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::PermissionDenied(_) => "permission_denied",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::NotFound(_) => "not_found",
            Self::FailedPrecondition(_) => "failed_precondition",
            Self::Conflict(_) => "conflict",
            Self::Expired(_) => "expired",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::TooManyWatchers => "too_many_watchers",
            Self::OverCapacity => "over_capacity",
            Self::Draining => "draining",
            Self::StorageFull => "storage_full",
            Self::Unavailable(_) => "unavailable",
        }
    }

    /// The JSON body, also sent as a WebSocket `error` message.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code(), "message": self.to_string() } })
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidArgument(m) => Self::InvalidArgument(m),
            AuthError::Unauthenticated(m) => Self::Unauthenticated(m),
            AuthError::PermissionDenied(m) => Self::PermissionDenied(m),
            AuthError::NotFound(m) => Self::NotFound(m),
            AuthError::FailedPrecondition(m) => Self::FailedPrecondition(m),
            AuthError::Expired(m) => Self::Expired(m),
            AuthError::Conflict(m) => Self::Conflict(m),
            AuthError::Unavailable(m) => Self::Unavailable(m),
            AuthError::BadResponse(m) => Self::Unavailable(m),
            AuthError::RateLimited { retry_after } => Self::RateLimited { retry_after },
            AuthError::StorageFull => Self::StorageFull,
            AuthError::Config { .. } => {
                Self::Unavailable("the login service is unavailable".into())
            }
        }
    }
}

impl From<WatchError> for ApiError {
    fn from(e: WatchError) -> Self {
        match e {
            WatchError::TooManyWatchers => Self::TooManyWatchers,
            WatchError::Auth(e) => Self::from(e),
            WatchError::Bus(_) => Self::Unavailable("cannot watch this session right now".into()),
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::InvalidArgument(m) => Self::InvalidArgument(m),
            SessionError::Unauthenticated(m) => Self::Unauthenticated(m),
            SessionError::PermissionDenied(m) => Self::PermissionDenied(m),
            SessionError::NotFound(m) => Self::NotFound(m),
            SessionError::FailedPrecondition(m) => Self::FailedPrecondition(m),
            SessionError::Expired(m) => Self::Expired(m),
            SessionError::Conflict(m) => Self::Conflict(m),
            SessionError::TooManyWatchers => Self::TooManyWatchers,
            SessionError::RateLimited { retry_after } => Self::RateLimited { retry_after },
            SessionError::StorageFull => Self::StorageFull,
            SessionError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        // Counted by the metrics middleware, which owns the node's registry.
        response.extensions_mut().insert(Rejected(self.code()));
        if let Self::RateLimited { retry_after } = &self {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_failures_map_to_the_documented_statuses() {
        let cases = [
            (
                AuthError::InvalidArgument("x".into()),
                400,
                "invalid_argument",
            ),
            (
                AuthError::Unauthenticated("x".into()),
                401,
                "unauthenticated",
            ),
            (
                AuthError::PermissionDenied("x".into()),
                403,
                "permission_denied",
            ),
            (AuthError::NotFound("x".into()), 404, "not_found"),
            (
                AuthError::FailedPrecondition("x".into()),
                409,
                "failed_precondition",
            ),
            (AuthError::Expired("x".into()), 410, "expired"),
            (AuthError::Conflict("x".into()), 409, "conflict"),
            (AuthError::Unavailable("x".into()), 503, "unavailable"),
            (AuthError::StorageFull, 503, "storage_full"),
            (
                AuthError::RateLimited {
                    retry_after: Duration::from_secs(5),
                },
                429,
                "rate_limited",
            ),
        ];
        for (auth, status, code) in cases {
            let api = ApiError::from(auth);
            assert_eq!(api.status().as_u16(), status);
            assert_eq!(api.code(), code);
        }
    }

    #[test]
    fn rate_limited_sets_retry_after() {
        let r = ApiError::RateLimited {
            retry_after: Duration::from_millis(1500),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
