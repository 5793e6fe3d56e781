//! Operations: liveness, readiness, metrics.

use std::time::Duration;

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};

use super::AppState;

/// Longest readiness waits for auth's health answer.
const AUTH_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Ready when not draining, NATS is connected and auth answers.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let draining = state.drain.is_draining();
    let nats = state.broker.is_connected();
    let auth = !draining
        && tokio::time::timeout(AUTH_HEALTH_TIMEOUT, state.auth.is_serving())
            .await
            .unwrap_or(false);
    let ready = !draining && nats && auth;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ready { "ready" } else if draining { "draining" } else { "not_ready" },
        "nats": nats,
        "auth": auth,
        "draining": draining,
    });
    (status, Json(body)).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
