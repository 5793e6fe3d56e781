//! The operations port (`QRLOGIN_AUTH_OPS_LISTEN`): `/metrics` (OpenMetrics
//! text), `/healthz` (the process answers) and `/readyz` (NATS and the
//! session bucket are usable and auth is not stopping: the same condition
//! as the gRPC health check). Nothing else, and never on the gRPC port, so
//! that whoever scrapes auth needs no gRPC client and the gRPC port shows
//! nothing to whoever is not a caller.

use std::sync::{
    atomic::{AtomicBool, Ordering::Relaxed},
    Arc,
};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};

use crate::metrics::AuthMetrics;

/// Whether auth serves: set with the gRPC health status, read by `/readyz`.
/// Once stopped it stays unready.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<[AtomicBool; 2]>);

impl Readiness {
    pub fn set(&self, serving: bool) {
        self.0[0].store(serving, Relaxed);
    }

    /// The stop signal came.
    pub fn stop(&self) {
        self.0[1].store(true, Relaxed);
        self.0[0].store(false, Relaxed);
    }

    pub fn is_stopped(&self) -> bool {
        self.0[1].load(Relaxed)
    }

    pub fn is_ready(&self) -> bool {
        self.0[0].load(Relaxed) && !self.is_stopped()
    }
}

#[derive(Clone)]
struct OpsState {
    metrics: Arc<AuthMetrics>,
    ready: Readiness,
}

/// The router of the operations port.
pub fn app(metrics: Arc<AuthMetrics>, ready: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(OpsState { metrics, ready })
}

async fn render(State(s): State<OpsState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn readyz(State(s): State<OpsState>) -> impl IntoResponse {
    if s.ready.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: NATS or the session bucket unavailable, or stopping\n",
        )
    }
}
