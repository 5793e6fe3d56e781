//! Browser routes: create, short and long poll, cancel, redeem, QR image.
//! Every call goes through the sessions facade (which passes what it reads
//! or writes to this node's watchers); the poll answers' bodies are
//! `transport/short_poll.rs`'s and `transport/long_poll.rs`'s.

use std::{net::SocketAddr, time::Duration};

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;

use super::{
    extract, origin,
    params::{BrowserSecret, SameOrigin, SessionPath, Since, Wait},
    AppState,
};
use crate::{
    config::CookieSecure,
    domain::format_timestamp,
    error::ApiError,
    metrics::Transport,
    transport::{long_poll, short_poll},
};

/// The optional create body; no fields yet, but it must be a JSON object.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {}

fn secure_cookie(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> bool {
    match state.config.cookie_secure {
        CookieSecure::Always => true,
        CookieSecure::Never => false,
        CookieSecure::Auto => origin::forwarded_https(peer, headers, &state.config.trusted_proxies),
    }
}

/// The QR code of `payload` as an SVG document.
pub fn qr_svg_of(payload: &str) -> Result<String, ApiError> {
    let code = qrcode::QrCode::new(payload.as_bytes())
        .map_err(|e| ApiError::Unavailable(format!("cannot encode the QR payload: {e}")))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build())
}

pub async fn create(
    State(state): State<AppState>,
    SameOrigin(peer): SameOrigin,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let _: CreateBody = extract::json_body(&headers, body, state.config.max_body_bytes)?;
    let ip = origin::client_ip(peer, &headers, &state.config.trusted_proxies);
    state
        .create_rate
        .check(ip)
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let created = state
        .sessions
        .create(ip.to_string(), extract::user_agent(&headers))
        .await?;
    let id = created.snapshot.session_id.clone();
    let mut json = created.snapshot.to_json(&state.node);
    json["qr_payload"] = created.qr_payload.clone().into();
    json["qr_svg"] = qr_svg_of(&created.qr_payload)?.into();
    json["browser_secret"] = created.browser_secret.clone().into();
    let secure = secure_cookie(&state, peer, &headers);
    let cookie = extract::cookie(
        &extract::secret_cookie_name(&id, secure),
        &created.browser_secret,
        &format!("/v1/login-sessions/{id}"),
        secure,
        state.config.secret_cookie_max_age,
    );
    tracing::info!(session = %id, %ip, "login session created");
    Ok((
        StatusCode::CREATED,
        [(header::SET_COOKIE, cookie)],
        Json(json),
    )
        .into_response())
}

/// `GET /v1/login-sessions/{id}`: a short poll, or with `since` a long poll.
pub async fn get_or_long_poll(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    Since(since): Since,
    Wait(wait): Wait,
    BrowserSecret(secret): BrowserSecret,
) -> Result<Response, ApiError> {
    let Some(since) = since else {
        let snapshot = state.sessions.get(&id, &secret).await?;
        let body = short_poll::body(&snapshot, &state.node, &state.metrics);
        return Ok(Json(body).into_response());
    };
    let delivery = state
        .sessions
        .watch(&id, &secret, Some(since), Transport::LongPoll)
        .await?;
    let snapshot = long_poll::answer(delivery, state.long_poll.wait(wait))
        .await
        .ok_or_else(|| ApiError::Unavailable("no state read yet".into()))?;
    Ok(Json(long_poll::body(&snapshot, &state.long_poll.node)).into_response())
}

pub async fn cancel(
    State(state): State<AppState>,
    _: SameOrigin,
    SessionPath(id): SessionPath,
    BrowserSecret(secret): BrowserSecret,
) -> Result<Response, ApiError> {
    let snapshot = state.sessions.cancel(&id, &secret).await?;
    Ok(Json(snapshot.to_json(&state.node)).into_response())
}

pub async fn redeem(
    State(state): State<AppState>,
    SameOrigin(peer): SameOrigin,
    SessionPath(id): SessionPath,
    BrowserSecret(secret): BrowserSecret,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let r = state.sessions.redeem(&id, &secret).await?;
    let secure = secure_cookie(&state, peer, &headers);
    // The cookie lives as long as the token it carries.
    let lifetime = r
        .expires_at
        .and_then(|at| Duration::try_from(at - time::OffsetDateTime::now_utc()).ok())
        .unwrap_or(Duration::ZERO);
    let cookie = extract::cookie(
        extract::login_cookie_name(secure),
        &r.access_token,
        "/",
        secure,
        lifetime,
    );
    let body = serde_json::json!({
        "access_token": r.access_token,
        "token_type": "Bearer",
        "expires_at": r.expires_at.map(format_timestamp),
        "user": { "id": r.user_id, "display_name": r.user_display_name },
    });
    tracing::info!(session = %id, "login session redeemed");
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

/// The QR image; only for the creating browser, like every browser route.
pub async fn qr_svg(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    BrowserSecret(secret): BrowserSecret,
) -> Result<Response, ApiError> {
    state.sessions.get(&id, &secret).await?;
    let payload = format!(
        "{}/m/{id}",
        state.config.public_base_url.trim_end_matches('/')
    );
    let svg = qr_svg_of(&payload)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        svg,
    )
        .into_response())
}
