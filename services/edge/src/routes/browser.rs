//! Browser routes: create, short and long poll, cancel, redeem, QR image.

use std::{net::SocketAddr, time::Duration};

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, ConnectInfo, Path, RawQuery, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;

use super::{extract, origin, AppState};
use crate::{config::CookieSecure, domain::format_timestamp, error::ApiError, metrics::Transport};

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
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    origin::check_origin(peer, &headers, &state.config)?;
    let _: CreateBody = extract::json_body(&headers, body, state.config.max_body_bytes)?;
    let ip = origin::client_ip(peer, &headers, &state.config.trusted_proxies);
    state
        .create_rate
        .check(ip)
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let created = state
        .auth
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
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = extract::session_id(&id)?;
    let since = extract::query_value(query.as_deref(), "since")
        .map(|v| extract::version(v, "since"))
        .transpose()?;
    let wait = extract::query_value(query.as_deref(), "wait")
        .map(extract::wait)
        .transpose()?
        .unwrap_or(state.config.long_poll_max)
        .min(state.config.long_poll_max);
    let secret = extract::browser_secret(&headers, &id)?;
    let Some(since) = since else {
        let snapshot = state.auth.get(&id, &secret).await?;
        state.watches.observe(&snapshot);
        state.metrics.delivered(Transport::ShortPoll, None);
        return Ok(Json(snapshot.to_json(&state.node)).into_response());
    };
    let _open = state.metrics.connection(Transport::LongPoll);
    let mut watcher = state.watches.watch(&id, &secret, Some(since)).await?;
    let mut drain = state.drain.listener();
    let news = tokio::select! {
        news = watcher.next(&state.metrics) => news,
        _ = tokio::time::sleep(wait) => None,
        _ = drain.started() => None,
    };
    let snapshot = match news {
        Some(s) => {
            state
                .metrics
                .delivered(Transport::LongPoll, super::sse::delay(&s));
            s
        }
        None => watcher
            .current()
            .ok_or_else(|| ApiError::Unavailable("no state read yet".into()))?,
    };
    Ok(Json(snapshot.to_json(&state.node)).into_response())
}

pub async fn cancel(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    origin::check_origin(peer, &headers, &state.config)?;
    let id = extract::session_id(&id)?;
    let secret = extract::browser_secret(&headers, &id)?;
    let snapshot = state.auth.cancel(&id, &secret).await?;
    state.watches.observe(&snapshot);
    Ok(Json(snapshot.to_json(&state.node)).into_response())
}

pub async fn redeem(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    origin::check_origin(peer, &headers, &state.config)?;
    let id = extract::session_id(&id)?;
    let secret = extract::browser_secret(&headers, &id)?;
    let r = state.auth.redeem(&id, &secret).await?;
    state.watches.observe(&r.snapshot);
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
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = extract::session_id(&id)?;
    let secret = extract::browser_secret(&headers, &id)?;
    state.auth.get(&id, &secret).await?;
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
