//! qrlogin as seen by relying parties: the public keys of the tokens auth
//! signs, at `/.well-known/jwks.json` (auth's GetSigningKeys: the current
//! key, the next one and the previous ones). The answer is kept for
//! [`KEYS_FRESH_FOR`] so that relying parties polling it do not each cost
//! an auth call; the rotation procedure (docs/operations.md) waits longer
//! than that and than relying parties' own caches.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::{
    extract::State,
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use crate::{auth_client::AuthClient, error::ApiError, routes::AppState};

/// How long an edge serves the key set it last read from auth.
pub const KEYS_FRESH_FOR: Duration = Duration::from_secs(60);
/// What relying parties may cache (`Cache-Control: max-age`).
const CLIENT_MAX_AGE_SECS: u64 = 300;

/// The edge's copy of auth's key set: one document, replaced whole.
#[derive(Default)]
pub struct Keys {
    last: Mutex<Option<(Instant, String)>>,
}

impl Keys {
    /// The JWK Set, from the copy when it is fresh, else from auth (a copy
    /// that cannot be renewed is still served: the keys change rarely and
    /// the next one is published long before it signs).
    pub async fn jwks(&self, auth: &AuthClient) -> Result<String, ApiError> {
        let held = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((at, jwks)) = &held {
            if at.elapsed() < KEYS_FRESH_FOR {
                return Ok(jwks.clone());
            }
        }
        match auth.signing_keys().await {
            Ok(jwks) => {
                *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), jwks.clone()));
                Ok(jwks)
            }
            Err(e) => match held {
                Some((_, jwks)) => {
                    tracing::warn!(error = %e, "cannot renew the signing keys; serving the last copy");
                    Ok(jwks)
                }
                None => Err(ApiError::Unavailable(e.to_string())),
            },
        }
    }
}

/// The routes relying parties use.
pub fn routes() -> Router<AppState> {
    Router::new().route("/.well-known/jwks.json", get(jwks))
}

async fn jwks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let body = state.oidc_keys.jwks(&state.auth).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jwk-set+json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_str(&format!("public, max-age={CLIENT_MAX_AGE_SECS}"))
                    .unwrap_or(HeaderValue::from_static("no-store")),
            ),
        ],
        body,
    )
        .into_response())
}
