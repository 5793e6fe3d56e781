//! The one place where failures become HTTP responses:
//! `{ "error": { "code", "message" } }` with a stable code and status
//! (docs/protocol.md, "Errors").

use std::time::Duration;

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};

use crate::{auth_client::QrRefusal, sessions::SessionError};

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
    /// A browser request from another site (CSRF) or a WebSocket from an
    /// origin that is not allowed.
    #[error("requests from this origin are not allowed here")]
    OriginNotAllowed,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Expired(String),
    #[error("this method is not allowed on this path")]
    MethodNotAllowed,
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body did not arrive whole within `QRLOGIN_BODY_TIMEOUT` of the
    /// head; the connection is closed.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("a request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// Answered by the front server: not a readable HTTP/1.1 request.
    #[error("the request is not valid HTTP/1.1")]
    MalformedRequest,
    /// Answered by the front server: the head is over 8 KiB or 48 headers.
    #[error("the request head is too large")]
    HeadTooLarge,
    /// Answered by the front server: too many connections without a
    /// request head, on the node or from this client.
    #[error("too many connections have not sent a request; retry later")]
    TooManyConnections,
    /// This client has `QRLOGIN_MAX_REQUESTS_PER_CLIENT` requests and
    /// streams open on this node.
    #[error("too many requests from this address are open on this node; retry later")]
    TooManyRequests,
    /// A create rate (this edge's per client, auth's per network) or one of
    /// auth's per-user scan and confirm limits.
    #[error("rate limit reached (creates from this address, or scans and confirms by this user); retry later")]
    RateLimited { retry_after: Duration },
    /// A short poll sooner than the pace the answers ask for.
    #[error("polling faster than every {} ms; wait for Retry-After", interval.as_millis())]
    SlowDown {
        retry_after: Duration,
        interval: Duration,
    },
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
    /// A refusal of the QR protocol, with its own stable code.
    #[error("{message}")]
    Qr { reason: QrRefusal, message: String },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied(_) | Self::OriginNotAllowed => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::FailedPrecondition(_) | Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Expired(_) => StatusCode::GONE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MalformedRequest => StatusCode::BAD_REQUEST,
            Self::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RateLimited { .. }
            | Self::SlowDown { .. }
            | Self::TooManyWatchers
            | Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::OverCapacity
            | Self::Draining
            | Self::StorageFull
            | Self::Unavailable(_)
            | Self::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            Self::Qr { reason, .. } => match reason {
                QrRefusal::QrInvalid
                | QrRefusal::MatchRequired
                | QrRefusal::KeyRequired
                | QrRefusal::InvalidKey => StatusCode::BAD_REQUEST,
                QrRefusal::QrReplaced => StatusCode::CONFLICT,
                QrRefusal::WrongMatch => StatusCode::FORBIDDEN,
                QrRefusal::ProofRequired | QrRefusal::InvalidProof => StatusCode::UNAUTHORIZED,
            },
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
            Self::MethodNotAllowed => "method_not_allowed",
            Self::FailedPrecondition(_) => "failed_precondition",
            Self::Conflict(_) => "conflict",
            Self::Expired(_) => "expired",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::BodyTimeout => "body_timeout",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::MalformedRequest => "malformed_request",
            Self::HeadTooLarge => "head_too_large",
            Self::TooManyConnections => "too_many_connections",
            Self::TooManyRequests => "too_many_requests",
            Self::RateLimited { .. } => "rate_limited",
            Self::SlowDown { .. } => "slow_down",
            Self::TooManyWatchers => "too_many_watchers",
            Self::OverCapacity => "over_capacity",
            Self::Draining => "draining",
            Self::StorageFull => "storage_full",
            Self::Unavailable(_) => "unavailable",
            Self::Qr { reason, .. } => reason.code(),
        }
    }

    /// The JSON body, also sent as a WebSocket `error` message.
    pub fn body(&self) -> serde_json::Value {
        let mut body =
            serde_json::json!({ "error": { "code": self.code(), "message": self.to_string() } });
        if let Self::SlowDown { interval, .. } = self {
            // The pace to keep from now on, as in every poll answer.
            body["error"]["poll_interval_ms"] = (interval.as_millis() as u64).into();
        }
        body
    }
}

/// The one way a session call's failure becomes HTTP (auth's and the
/// watch's failures arrive sorted into [`SessionError`] by the facade).
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
            SessionError::Qr { reason, message } => Self::Qr { reason, message },
        }
    }
}

/// An error response that did not come from [`ApiError`] (an axum
/// rejection: a path parameter that is not UTF-8, a body that cannot be
/// read) turned into the JSON error of its class, with a fixed message;
/// every other response unchanged. `body_limit` is the configured largest
/// body, for the 413 message.
pub fn as_json_error(response: Response, body_limit: usize) -> Response {
    let status = response.status();
    let error_status = status.is_client_error() || status.is_server_error();
    if !error_status || response.extensions().get::<Rejected>().is_some() {
        return response;
    }
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::NotFound("no such route".into()),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(body_limit),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
        s if s.is_client_error() => {
            ApiError::InvalidArgument("the request could not be read".into())
        }
        _ => ApiError::Unavailable("the request could not be served".into()),
    };
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut json = error.into_response();
    if let Some(allow) = allow {
        json.headers_mut().insert(header::ALLOW, allow);
    }
    json
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if let Self::BodyTimeout = self {
            // The rest of the body may still come: the connection ends here.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        // Counted by the metrics middleware, which owns the node's registry.
        response.extensions_mut().insert(Rejected(self.code()));
        if let Self::RateLimited { retry_after } | Self::SlowDown { retry_after, .. } = &self {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        // Auth (or its session store) is away for a moment, e.g. while a
        // NATS member or the bucket's leader is replaced: worth a retry.
        if let Self::Unavailable(_) = &self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth_client::AuthError;

    /// Auth's failures, through the sessions facade, to HTTP.
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
            let api = ApiError::from(SessionError::from(auth));
            assert_eq!(api.status().as_u16(), status);
            assert_eq!(api.code(), code);
        }
    }

    /// Every error the edge can answer with, once.
    fn every_variant() -> Vec<ApiError> {
        let mut all = vec![
            ApiError::InvalidArgument("x".into()),
            ApiError::Unauthenticated("x".into()),
            ApiError::PermissionDenied("x".into()),
            ApiError::OriginNotAllowed,
            ApiError::NotFound("x".into()),
            ApiError::MethodNotAllowed,
            ApiError::FailedPrecondition("x".into()),
            ApiError::Conflict("x".into()),
            ApiError::Expired("x".into()),
            ApiError::PayloadTooLarge(1),
            ApiError::BodyTimeout,
            ApiError::UnsupportedMediaType,
            ApiError::MalformedRequest,
            ApiError::HeadTooLarge,
            ApiError::RateLimited {
                retry_after: Duration::from_secs(1),
            },
            ApiError::SlowDown {
                retry_after: Duration::from_secs(1),
                interval: Duration::from_secs(2),
            },
            ApiError::TooManyWatchers,
            ApiError::OverCapacity,
            ApiError::Draining,
            ApiError::StorageFull,
            ApiError::Unavailable("x".into()),
            ApiError::TooManyConnections,
            ApiError::TooManyRequests,
        ];
        all.extend(
            [
                QrRefusal::QrInvalid,
                QrRefusal::QrReplaced,
                QrRefusal::MatchRequired,
                QrRefusal::WrongMatch,
                QrRefusal::KeyRequired,
                QrRefusal::InvalidKey,
                QrRefusal::ProofRequired,
                QrRefusal::InvalidProof,
            ]
            .map(|reason| ApiError::Qr {
                reason,
                message: "x".into(),
            }),
        );
        // A new variant fails to compile here until it is listed above.
        for e in &all {
            match e {
                ApiError::InvalidArgument(_)
                | ApiError::Unauthenticated(_)
                | ApiError::PermissionDenied(_)
                | ApiError::OriginNotAllowed
                | ApiError::NotFound(_)
                | ApiError::MethodNotAllowed
                | ApiError::FailedPrecondition(_)
                | ApiError::Conflict(_)
                | ApiError::Expired(_)
                | ApiError::PayloadTooLarge(_)
                | ApiError::BodyTimeout
                | ApiError::UnsupportedMediaType
                | ApiError::MalformedRequest
                | ApiError::HeadTooLarge
                | ApiError::RateLimited { .. }
                | ApiError::SlowDown { .. }
                | ApiError::TooManyWatchers
                | ApiError::OverCapacity
                | ApiError::Draining
                | ApiError::StorageFull
                | ApiError::Unavailable(_)
                | ApiError::TooManyConnections
                | ApiError::TooManyRequests
                | ApiError::Qr { .. } => {}
            }
        }
        all
    }

    /// The error table of docs/protocol.md and this mapping are the same
    /// set of (status, code) pairs.
    #[test]
    fn every_code_is_in_the_documented_table() {
        let doc = include_str!("../../../docs/protocol.md");
        let section = doc
            .split("### Errors")
            .nth(1)
            .and_then(|s| s.split("\n### ").next())
            .expect("docs/protocol.md has an Errors section");
        let documented: std::collections::BTreeSet<(u16, String)> = section
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let status = cells.get(1)?.parse().ok()?;
                let code = cells.get(2)?.trim_matches('`').to_owned();
                Some((status, code))
            })
            .collect();
        let mapped: std::collections::BTreeSet<(u16, String)> = every_variant()
            .iter()
            .map(|e| (e.status().as_u16(), e.code().to_owned()))
            .collect();
        assert_eq!(documented, mapped);
        for e in every_variant() {
            let r = e.into_response();
            assert!(r.extensions().get::<Rejected>().is_some());
        }
    }

    #[test]
    fn rejections_outside_api_error_become_json() {
        let plain = (StatusCode::BAD_REQUEST, "Invalid URL: bad utf-8").into_response();
        let json = as_json_error(plain, 4096);
        assert_eq!(json.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            json.extensions().get::<Rejected>().map(|r| r.0),
            Some("invalid_argument")
        );
        let ok = as_json_error((StatusCode::OK, "fine").into_response(), 4096);
        assert!(ok.extensions().get::<Rejected>().is_none());
        let too_big = as_json_error(StatusCode::PAYLOAD_TOO_LARGE.into_response(), 4096);
        assert_eq!(
            too_big.extensions().get::<Rejected>().map(|r| r.0),
            Some("payload_too_large")
        );
    }

    #[test]
    fn unavailable_says_when_to_retry() {
        let r = ApiError::Unavailable("x".into()).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
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
