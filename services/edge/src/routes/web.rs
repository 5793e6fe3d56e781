//! The demo pages from `QRLOGIN_WEB_DIR`: `/` (index.html), `/phone.html`,
//! `/*.js`, `/*.css`, and `/m/{id}` (the QR payload URL, serving
//! phone.html). When the directory is missing these routes 404.

use axum::{
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use super::AppState;
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/m/{id}", get(phone))
        .route("/{file}", get(file))
}

async fn index(State(state): State<AppState>) -> Result<Response, ApiError> {
    serve(&state, "index.html").await
}

async fn phone(
    State(state): State<AppState>,
    Path(_id): Path<String>,
) -> Result<Response, ApiError> {
    serve(&state, "phone.html").await
}

async fn file(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    serve(&state, &name).await
}

/// Only plain names ending in .html, .js or .css; nothing outside the directory.
fn content_type(name: &str) -> Option<&'static str> {
    let plain = !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !plain {
        return None;
    }
    let ext = name.rsplit_once('.')?.1;
    match ext {
        "html" => Some("text/html; charset=utf-8"),
        "js" => Some("text/javascript; charset=utf-8"),
        "css" => Some("text/css; charset=utf-8"),
        _ => None,
    }
}

/// What the pages may load and do: their own scripts, styles and API
/// (`'self'` includes the same host's `ws:`/`wss:` for the WebSocket), the
/// QR code as a `data:` image; no inline script, no plugins, no framing
/// (clickjacking), no `<base>` rewriting, forms only to this origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

async fn serve(state: &AppState, name: &str) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound("no such page".into());
    let kind = content_type(name).ok_or_else(not_found)?;
    let bytes = tokio::fs::read(state.config.web_dir.join(name))
        .await
        .map_err(|_| not_found())?;
    // nosniff and no-referrer are set for every response (routes/mod.rs).
    Ok((
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_page_names_are_served() {
        assert!(super::content_type("app.js").is_some());
        assert!(super::content_type("phone.html").is_some());
        assert!(super::content_type("../secret.html").is_none());
        assert!(super::content_type(".env.js").is_none());
        assert!(super::content_type("key.pem").is_none());
    }
}
