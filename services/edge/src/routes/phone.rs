//! Phone routes (scan, confirm, deny) and the development token endpoint.
//! The phone's `Authorization: Bearer <JWT>` goes to auth unchanged,
//! through the sessions facade.

use std::{net::SocketAddr, path::Path as FsPath};

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, ConnectInfo, State},
    http::{header, HeaderMap},
    response::{IntoResponse, Response},
    Json,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::{extract, origin, params::SessionPath, AppState};
use crate::{domain::format_timestamp, error::ApiError};

/// Lifetime of development user tokens.
const DEV_TOKEN_TTL_SECS: i64 = 3600;

fn authorization(headers: &HeaderMap) -> Result<String, ApiError> {
    extract::bearer(headers)
        .and_then(|_| headers.get(header::AUTHORIZATION)?.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::Unauthenticated(
                "a user token is required (Authorization: Bearer <JWT>)".into(),
            )
        })
}

/// The scan body: the whole payload the phone read from the QR code.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanBody {
    #[serde(default)]
    qr_payload: String,
}

/// The confirm body: the number the user picked (number matching).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    #[serde(default)]
    match_code: u32,
}

pub async fn scan(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    SessionPath(id): SessionPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: ScanBody = extract::json_body(&headers, body, state.config.max_body_bytes)?;
    let phone_ip = origin::client_ip(peer, &headers, &state.config.trusted_proxies);
    let scanned = state
        .sessions
        .scan(
            &id,
            &authorization(&headers)?,
            &body.qr_payload,
            &phone_ip.to_string(),
        )
        .await?;
    let browser = scanned.browser;
    let body = serde_json::json!({
        "session": scanned.snapshot.to_json(&state.node),
        "browser": {
            "ip": browser.ip,
            "user_agent": browser.user_agent,
            "created_at": browser.created_at.map(format_timestamp),
        },
        "match_choices": scanned.match_choices,
        "same_network": scanned.same_network,
    });
    Ok(Json(body).into_response())
}

pub async fn confirm(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: ConfirmBody = extract::json_body(&headers, body, state.config.max_body_bytes)?;
    let snapshot = state
        .sessions
        .confirm(&id, &authorization(&headers)?, body.match_code)
        .await?;
    Ok(Json(snapshot.to_json(&state.node)).into_response())
}

pub async fn deny(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let snapshot = state.sessions.deny(&id, &authorization(&headers)?).await?;
    Ok(Json(snapshot.to_json(&state.node)).into_response())
}

/// Mints phone user tokens for development: only when a key file is set.
pub struct DevTokens {
    key: EncodingKey,
    issuer: String,
    audience: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DevTokenError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an Ed25519 private key in PEM: {source}")]
    Key {
        path: String,
        source: jsonwebtoken::errors::Error,
    },
}

impl DevTokens {
    pub fn load(path: &FsPath, issuer: &str, audience: &str) -> Result<Self, DevTokenError> {
        let pem = std::fs::read(path).map_err(|source| DevTokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let key = EncodingKey::from_ed_pem(&pem).map_err(|source| DevTokenError::Key {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            key,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    pub fn mint(&self, user_id: &str, display_name: &str) -> Result<String, ApiError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            sub: user_id,
            preferred_username: user_id,
            name: display_name,
            iss: &self.issuer,
            aud: &self.audience,
            iat: now,
            exp: now + DEV_TOKEN_TTL_SECS,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key)
            .map_err(|e| ApiError::Unavailable(format!("cannot sign: {e}")))
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    /// The account auth shows to the browser (its default account claim).
    preferred_username: &'a str,
    name: &'a str,
    iss: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevTokenBody {
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    display_name: String,
}

pub async fn dev_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: DevTokenBody = extract::json_body(&headers, body, state.config.max_body_bytes)?;
    let Some(tokens) = &state.dev_tokens else {
        return Err(ApiError::NotFound("no such route".into()));
    };
    let valid =
        |s: &str| !s.trim().is_empty() && s.len() <= 128 && !s.chars().any(char::is_control);
    if !valid(&body.user_id) || !valid(&body.display_name) {
        return Err(ApiError::InvalidArgument(
            "user_id and display_name: 1..=128 characters".into(),
        ));
    }
    let token = tokens.mint(&body.user_id, &body.display_name)?;
    Ok(Json(serde_json::json!({ "token": token })).into_response())
}
