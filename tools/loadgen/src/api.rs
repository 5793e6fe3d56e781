//! The edge's HTTP API as the load generator uses it (docs/protocol.md):
//! create, short poll, redeem (browser routes) and scan, confirm (phone
//! routes), with the error body decoded into its stable code.

use serde::Deserialize;

use crate::http::{HttpError, Pool};

/// The session snapshot (the shared client's type, with its news rule:
/// a higher version, a final state, or a later QR payload of the same
/// PENDING version).
pub use qrlogin_client::api::{LoginState, Snapshot};

/// The create answer, minus the QR code.
#[derive(Debug, Clone, Deserialize)]
pub struct Created {
    pub session_id: String,
    pub browser_secret: String,
    pub version: u64,
    /// The payload of the QR code on screen (the phone scans it).
    #[serde(default)]
    pub qr_payload: String,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("HTTP {status} {code}: {message}")]
    Status {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot decode the answer: {0}")]
    Decode(String),
}

impl ApiError {
    /// Worth retrying (possibly on another edge): the network, a node that
    /// is down, draining or over capacity, a lost concurrent update.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Http(_) => true,
            ApiError::Status { status, code, .. } => {
                *status == 503 || *status == 429 || code == "conflict"
            }
            ApiError::Decode(_) => false,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            ApiError::Http(_) => "network",
            ApiError::Status { code, .. } => code,
            ApiError::Decode(_) => "decode",
        }
    }
}

/// The error a non-2xx answer stands for.
pub fn status_error(status: u16, body: &[u8]) -> ApiError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => ApiError::Status {
            status,
            code: b.error.code,
            message: b.error.message,
        },
        Err(_) => ApiError::Status {
            status,
            code: "unknown".into(),
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    }
}

fn decode<T: for<'de> Deserialize<'de>>(status: u16, body: &[u8]) -> Result<T, ApiError> {
    if !(200..300).contains(&status) {
        return Err(status_error(status, body));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::Decode(e.to_string()))
}

/// `POST /v1/login-sessions` with `{}`.
pub async fn create(pool: &Pool) -> Result<Created, ApiError> {
    let r = pool
        .request("POST", "/v1/login-sessions", &[], Some(b"{}"), || {})
        .await?;
    decode(r.head.status, &r.body)
}

/// `GET /v1/login-sessions/{id}` (short poll) with the browser secret.
pub async fn get(pool: &Pool, id: &str, secret: &str) -> Result<Snapshot, ApiError> {
    let auth = format!("Bearer {secret}");
    let r = pool
        .request(
            "GET",
            &format!("/v1/login-sessions/{id}"),
            &[("Authorization", &auth)],
            None,
            || {},
        )
        .await?;
    decode(r.head.status, &r.body)
}

/// `POST /v1/login-sessions/{id}/redeem` with the browser secret.
pub async fn redeem(pool: &Pool, id: &str, secret: &str) -> Result<(), ApiError> {
    let auth = format!("Bearer {secret}");
    let r = pool
        .request(
            "POST",
            &format!("/v1/login-sessions/{id}/redeem"),
            &[("Authorization", &auth)],
            Some(b"{}"),
            || {},
        )
        .await?;
    decode::<serde_json::Value>(r.head.status, &r.body).map(|_| ())
}

/// A phone route (`scan` or `confirm`) with the user's JWT; `on_send` runs
/// right before the request is written. Returns the session snapshot.
pub async fn phone(
    pool: &Pool,
    id: &str,
    action: &str,
    user_token: &str,
    body: &[u8],
    on_send: impl Fn(),
) -> Result<Snapshot, ApiError> {
    let auth = format!("Bearer {user_token}");
    let r = pool
        .request(
            "POST",
            &format!("/v1/login-sessions/{id}/{action}"),
            &[("Authorization", &auth)],
            Some(body),
            on_send,
        )
        .await?;
    if action == "scan" {
        #[derive(Deserialize)]
        struct Scanned {
            session: Snapshot,
        }
        return decode::<Scanned>(r.head.status, &r.body).map(|s| s.session);
    }
    decode(r.head.status, &r.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_keep_their_code() {
        let e = status_error(
            409,
            br#"{"error":{"code":"conflict","message":"lost a race"}}"#,
        );
        assert_eq!(e.code(), "conflict");
        assert!(e.is_retryable());
        let e = status_error(
            409,
            br#"{"error":{"code":"failed_precondition","message":"x"}}"#,
        );
        assert!(!e.is_retryable());
        let e = status_error(502, b"<html>bad gateway</html>");
        assert_eq!(e.code(), "unknown");
        assert!(!e.is_retryable());
        assert!(status_error(503, b"").is_retryable());
    }
}
