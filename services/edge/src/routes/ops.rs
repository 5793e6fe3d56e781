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

/// Longest a scrape waits for it: well inside any scrape timeout, so an
/// auth that does not answer shows as `qrlogin_edge_ready 0`, not as a
/// failed scrape of the edge.
const SCRAPE_AUTH_HEALTH_TIMEOUT: Duration = Duration::from_millis(500);

pub async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Ready when not draining, NATS is connected and auth answers.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let Readiness {
        ready,
        draining,
        nats,
        auth,
    } = readiness(&state, AUTH_HEALTH_TIMEOUT).await;
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

/// What `/readyz` answers and `qrlogin_edge_ready` shows.
struct Readiness {
    ready: bool,
    draining: bool,
    nats: bool,
    auth: bool,
}

async fn readiness(state: &AppState, auth_timeout: Duration) -> Readiness {
    let draining = state.drain.is_draining();
    let nats = state.broker.is_connected();
    let auth = !draining
        && tokio::time::timeout(auth_timeout, state.auth.is_serving())
            .await
            .unwrap_or(false);
    Readiness {
        ready: !draining && nats && auth,
        draining,
        nats,
        auth,
    }
}

/// The metrics, with the node's state taken now (readiness as `/readyz`
/// sees it, the NATS link, the connection cap).
pub async fn metrics(State(state): State<AppState>) -> Response {
    let now = readiness(&state, SCRAPE_AUTH_HEALTH_TIMEOUT).await;
    state
        .metrics
        .set_node_state(now.ready, now.nats, state.config.max_connections);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
