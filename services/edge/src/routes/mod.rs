//! The HTTP surface: one file per concern, one router, the middleware that
//! every response passes through (node header, admission, rejection count).

mod browser;
mod extract;
mod ops;
mod phone;
mod sse;
mod stomp;
mod web;
pub mod ws;

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderName, HeaderValue},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::{
    auth_client::AuthClient,
    broker::Broker,
    config::EdgeConfig,
    delivery::Watches,
    error::{ApiError, Rejected},
    limits::{Admission, AdmissionSlot, ConnectionGate, CreateRateLimiter},
    metrics::Metrics,
    sessions::Sessions,
    shutdown::Drain,
};

/// What every handler shares.
pub struct Shared {
    pub config: EdgeConfig,
    pub node: String,
    pub auth: AuthClient,
    pub broker: Broker,
    pub watches: Watches,
    /// Sessions through auth and the watches (observes its own writes).
    pub sessions: Sessions,
    /// What every STOMP connection shares.
    pub stomp: Arc<crate::transport::stomp::conn::Endpoint>,
    pub metrics: Arc<Metrics>,
    pub drain: Drain,
    pub gate: ConnectionGate,
    pub create_rate: CreateRateLimiter,
    /// Development token minting, when `QRLOGIN_DEV_USER_TOKEN_KEY_FILE` is set.
    pub dev_tokens: Option<phone::DevTokens>,
}

pub type AppState = Arc<Shared>;

pub use phone::{DevTokenError, DevTokens};

/// The whole application router.
pub fn app(state: AppState) -> Router {
    let mut api = Router::new()
        .route("/v1/login-sessions", post(browser::create))
        .route(
            "/v1/login-sessions/{id}",
            get(browser::get_or_long_poll).delete(browser::cancel),
        )
        .route("/v1/login-sessions/{id}/qr.svg", get(browser::qr_svg))
        .route("/v1/login-sessions/{id}/redeem", post(browser::redeem))
        .route("/v1/login-sessions/{id}/events", get(sse::events))
        .route("/v1/login-sessions/{id}/ws", get(ws::upgrade))
        .route("/v1/login-sessions/{id}/stomp", get(stomp::upgrade))
        .route("/v1/login-sessions/{id}/scan", post(phone::scan))
        .route("/v1/login-sessions/{id}/confirm", post(phone::confirm))
        .route("/v1/login-sessions/{id}/deny", post(phone::deny));
    if state.dev_tokens.is_some() {
        api = api.route("/v1/dev/token", post(phone::dev_token));
    }
    let api = api
        .merge(web::routes())
        .layer(middleware::from_fn_with_state(state.clone(), admit));
    let node =
        HeaderValue::from_str(&state.node).unwrap_or_else(|_| HeaderValue::from_static("edge"));
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_rejections,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-edge-node"),
            node,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Refuses new work while draining or at the connection cap; otherwise the
/// admission lives as long as the response body (a stream keeps it), or is
/// taken over by the WebSocket.
async fn admit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if state.drain.is_draining() {
        return ApiError::Draining.into_response();
    }
    let Some(admission) = state.gate.try_admit() else {
        return ApiError::OverCapacity.into_response();
    };
    let slot = AdmissionSlot::default();
    *slot.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(admission);
    req.extensions_mut().insert(slot.clone());
    let response = next.run(req).await;
    match slot.take() {
        Some(admission) => response.map(|body| {
            Body::new(AdmittedBody {
                body,
                _admission: admission,
            })
        }),
        None => response,
    }
}

async fn count_rejections(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    if let Some(Rejected(reason)) = response.extensions().get::<Rejected>() {
        state.metrics.rejected(reason);
    }
    response
}

/// A response body that holds its request's admission until it is done.
struct AdmittedBody {
    body: Body,
    _admission: Admission,
}

impl HttpBody for AdmittedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
