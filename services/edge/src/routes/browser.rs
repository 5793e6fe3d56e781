//! Browser routes: create, short and long poll, cancel, redeem, QR image.
//! Every call goes through the sessions facade (which passes what it reads
//! or writes to this node's watchers); the poll answers' bodies are
//! `transport/short_poll.rs`'s and `transport/long_poll.rs`'s.

use std::{net::SocketAddr, time::Duration};

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, RawQuery, State},
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
    auth_client::BrowserKey,
    config::CookieSecure,
    domain::format_timestamp,
    error::ApiError,
    limits::Held,
    metrics::Transport,
    transport::{long_poll, short_poll},
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
    SameOrigin(peer): SameOrigin,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: CreateBody = extract::json_body(&headers, body, state.config.max_body_bytes)?;
    let ip = origin::client_ip(peer, &headers, &state.config.trusted_proxies);
    state
        .create_rate
        .check(ip)
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let created = state
        .sessions
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
    SessionPath(id): SessionPath,
    Since(since): Since,
    Wait(wait): Wait,
    BrowserSecret(secret): BrowserSecret,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    // The epoch of the QR payload a long-polling client holds (the number
    // after `#` in it): a rotated payload is news to it.
    let qr_epoch = extract::query_value(query.as_deref(), "qr")
        .map(|v| extract::version(v, "qr"))
        .transpose()?;
    let wait = state.long_poll.wait(wait);
    // Paced like a short poll: a short poll; a long poll that may come back
    // sooner than the pace allows without news (held less than half of
    // it); and a long poll for what this node already answered this
    // session and secret with (`?since=0` over and over), which is answered
    // at once. Too early: refused before anything is read. Only once auth
    // accepted the secret is the poll recorded (guessed secrets leave no
    // trace in the pace table).
    let pace = state.poll_pace.interval();
    let slow_down = |retry_after| ApiError::SlowDown {
        retry_after,
        interval: pace,
    };
    let held = since.map(|version| Held { version, qr_epoch });
    let paced = match held {
        None => true,
        Some(held) => wait < pace / 2 || state.poll_pace.is_replay(&id, &secret, held),
    };
    if paced {
        state.poll_pace.check(&id, &secret).map_err(slow_down)?;
    }
    let Some(since) = since else {
        let snapshot = state.sessions.get(&id, &secret).await?;
        state
            .poll_pace
            .answered(&id, &secret, &snapshot, paced)
            .map_err(slow_down)?;
        let body = short_poll::body(&snapshot, &state.node, &state.metrics);
        return Ok(Json(paced_body(&state, body)).into_response());
    };
    let mut delivery = state
        .sessions
        .watch(&id, &secret, Some(since), Transport::LongPoll)
        .await?;
    if let Some(epoch) = qr_epoch {
        delivery.resume_qr(epoch);
    }
    let snapshot = long_poll::answer(delivery, wait)
        .await
        .ok_or_else(|| ApiError::Unavailable("no state read yet".into()))?;
    state
        .poll_pace
        .answered(&id, &secret, &snapshot, paced)
        .map_err(slow_down)?;
    let body = long_poll::body(&snapshot, &state.long_poll.node);
    Ok(Json(paced_body(&state, body)).into_response())
}

/// A poll's answer carries the pace to keep (`poll_interval_ms`).
fn paced_body(state: &AppState, mut json: serde_json::Value) -> serde_json::Value {
    json["poll_interval_ms"] = (state.poll_pace.interval().as_millis() as u64).into();
    json
}

/// The snapshot as a poll answers it (create's answer starts from it).
fn poll_answer(state: &AppState, snapshot: &crate::domain::Snapshot) -> serde_json::Value {
    paced_body(state, snapshot.to_json(&state.node))
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
    let proof = headers
        .get(PROOF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let r = state.sessions.redeem(&id, &secret, proof).await?;
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
    let snapshot = state.sessions.get(&id, &secret).await?;
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
