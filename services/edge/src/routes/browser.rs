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
use crate::{
    auth_client::BrowserKey, config::CookieSecure, domain::format_timestamp, error::ApiError,
    metrics::Transport,
};

/// The optional create body: the browser's public key (a P-256 JWK), which
/// binds the session to it (redeem then needs a proof signed by it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[serde(default)]
    public_key: Option<BrowserKey>,
}

/// The header that carries the proof of the browser key at redeem
/// (RFC 9449's name).
const PROOF_HEADER: &str = "dpop";

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
    let body: CreateBody = extract::json_body(&headers, body, state.config.max_body_bytes)?;
    let ip = origin::client_ip(peer, &headers, &state.config.trusted_proxies);
    state
        .create_rate
        .check(ip)
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let created = state
        .auth
        .create(
            ip.to_string(),
            extract::user_agent(&headers),
            body.public_key,
        )
        .await?;
    let id = created.snapshot.session_id.clone();
    let mut json = poll_answer(&state, &created.snapshot);
    json["qr_payload"] = created.qr_payload.clone().into();
    if !created.key_thumbprint.is_empty() {
        json["key_thumbprint"] = created.key_thumbprint.clone().into();
    }
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
    // The epoch of the QR payload a long-polling client holds (the number
    // after `#` in it): a rotated payload is news to it.
    let qr_epoch = extract::query_value(query.as_deref(), "qr")
        .map(|v| extract::version(v, "qr"))
        .transpose()?;
    let secret = extract::browser_secret(&headers, &id)?;
    // A short poll, or a long poll that may come back sooner than the pace
    // allows without news (held less than half of it), counts against the
    // pace of this session's polls on this node.
    let pace = state.poll_pace.interval();
    if since.is_none() || wait < pace / 2 {
        state
            .poll_pace
            .check(&id, &secret)
            .map_err(|retry_after| ApiError::SlowDown {
                retry_after,
                interval: pace,
            })?;
    }
    let Some(since) = since else {
        let snapshot = state.auth.get(&id, &secret).await?;
        state.watches.observe(&snapshot);
        state.metrics.delivered(Transport::ShortPoll, None);
        return Ok(Json(poll_answer(&state, &snapshot)).into_response());
    };
    let _open = state.metrics.connection(Transport::LongPoll);
    let mut watcher = state.watches.watch(&id, &secret, Some(since)).await?;
    if let Some(epoch) = qr_epoch {
        watcher.resume_qr(epoch);
    }
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
    Ok(Json(poll_answer(&state, &snapshot)).into_response())
}

/// A poll's answer: the snapshot and the pace to keep (`poll_interval_ms`).
fn poll_answer(state: &AppState, snapshot: &crate::domain::Snapshot) -> serde_json::Value {
    let mut json = snapshot.to_json(&state.node);
    json["poll_interval_ms"] = (state.poll_pace.interval().as_millis() as u64).into();
    json
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
    let proof = headers
        .get(PROOF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let r = state.auth.redeem(&id, &secret, proof).await?;
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
    let snapshot = state.auth.get(&id, &secret).await?;
    // The payload of this moment: it is replaced every rotation, so the
    // image must not be cached past that.
    let payload = snapshot.qr_payload().ok_or_else(|| {
        ApiError::FailedPrecondition(format!(
            "no QR code: the login session is {}",
            snapshot.state.as_str()
        ))
    })?;
    let svg = qr_svg_of(&payload)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        svg,
    )
        .into_response())
}
