//! The HTTP surface: one file per concern, one router for the public port
//! and one for the operations port, and the middleware that every response
//! passes through (node header, security headers, admission in
//! [`admit`], rejection count).

mod admit;
mod browser;
mod extract;
mod ops;
mod origin;
mod params;
mod phone;
mod sse;
mod stomp;
mod web;
mod ws;

use std::sync::Arc;

use axum::{
    extract::{DefaultBodyLimit, Request, State},
    http::{header, HeaderName, HeaderValue},
    middleware::{self, Next},
    response::Response,
    routing::{get, post, MethodRouter},
    Router,
};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::{
    auth_client::AuthClient,
    broker::Broker,
    config::EdgeConfig,
    error::{as_json_error, ApiError, Rejected},
    limits::{ClientGate, ConnectionGate, CreateRateLimiter, PollPace},
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
    /// Sessions through auth and the watches (observes its own writes);
    /// the session routes go through it, so none can forget to observe.
    /// (`/readyz` asks `auth` and `broker` directly.)
    pub sessions: Sessions,
    /// What every connection of each push transport shares (its settings).
    pub sse: Arc<crate::transport::sse::Endpoint>,
    pub ws: Arc<crate::transport::ws::Endpoint>,
    pub stomp: Arc<crate::transport::stomp::conn::Endpoint>,
    pub long_poll: crate::transport::long_poll::Endpoint,
    pub metrics: Arc<Metrics>,
    pub drain: Drain,
    pub gate: ConnectionGate,
    /// Requests and streams open per client (`QRLOGIN_MAX_REQUESTS_PER_CLIENT`).
    pub clients: ClientGate,
    pub create_rate: CreateRateLimiter,
    pub poll_pace: PollPace,
    /// Development token minting, when `QRLOGIN_DEV_USER_TOKEN_KEY_FILE` is set.
    pub dev_tokens: Option<phone::DevTokens>,
    /// The copy of auth's signing keys served at `/.well-known/jwks.json`.
    pub oidc_keys: crate::oidc::Keys,
}

pub type AppState = Arc<Shared>;

pub use phone::{DevTokenError, DevTokens};

/// A stream endpoint, `/v1/login-sessions/{id}/<tail>`.
pub struct StreamRoute {
    pub tail: &'static str,
    handler: fn() -> MethodRouter<AppState>,
}

/// The stream endpoints, declared once: the router serves them, and the
/// front server answers a fresh connection's bodiless `GET` of one on its
/// direct path ([`is_stream`]), so an idle stream keeps no hyper connection.
pub const STREAM_ROUTES: [StreamRoute; 3] = [
    StreamRoute {
        tail: "events",
        handler: || get(sse::events),
    },
    StreamRoute {
        tail: "ws",
        handler: || get(ws::upgrade),
    },
    StreamRoute {
        tail: "stomp",
        handler: || get(stomp::upgrade),
    },
];

/// Whether `path` (without its query) is one of [`STREAM_ROUTES`].
pub fn is_stream(path: &str) -> bool {
    path.strip_prefix("/v1/login-sessions/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(id, tail)| !id.is_empty() && STREAM_ROUTES.iter().any(|r| r.tail == tail))
}

/// The public router: the API and the demo pages.
pub fn app(state: AppState) -> Router {
    let mut api = Router::new()
        .route("/v1/login-sessions", post(browser::create))
        .route(
            "/v1/login-sessions/{id}",
            get(browser::get_or_long_poll).delete(browser::cancel),
        )
        .route("/v1/login-sessions/{id}/qr.svg", get(browser::qr_svg))
        .route("/v1/login-sessions/{id}/redeem", post(browser::redeem))
        .route("/v1/login-sessions/{id}/scan", post(phone::scan))
        .route("/v1/login-sessions/{id}/confirm", post(phone::confirm))
        .route("/v1/login-sessions/{id}/deny", post(phone::deny));
    for stream in &STREAM_ROUTES {
        let path = format!("/v1/login-sessions/{{id}}/{}", stream.tail);
        api = api.route(&path, (stream.handler)());
    }
    if state.dev_tokens.is_some() {
        api = api.route("/v1/dev/token", post(phone::dev_token));
    }
    let api = api
        .merge(web::routes())
        .merge(crate::oidc::routes())
        // Before the layers: it applies to the routes present now.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), admit::admit));
    let mut router = Router::new().merge(api);
    if crate::telemetry::enabled() {
        // Only while tracing is on: no cost per request otherwise.
        router = router.route_layer(middleware::from_fn(crate::telemetry::http_span));
    }
    let router = router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_rejections,
        ));
    common_headers(router, &state.node).with_state(state)
}

/// The operations router (`QRLOGIN_OPS_LISTEN`): liveness, readiness,
/// metrics, and nothing else.
pub fn ops_app(state: AppState) -> Router {
    let router = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    common_headers(router, &state.node).with_state(state)
}

/// Headers on every response: the node, `nosniff` (no content is ever to
/// be guessed at), no referrer, and `no-store` unless a route chose its
/// own caching (API answers carry secrets and tokens; pages, streams and
/// the QR image say what they need).
fn common_headers(router: Router<AppState>, node: &str) -> Router<AppState> {
    let node = HeaderValue::from_str(node).unwrap_or_else(|_| HeaderValue::from_static("edge"));
    router
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-edge-node"),
            node,
        ))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// The router's `405`, as JSON; axum adds `Allow`.
async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Every error as JSON (axum's own rejections too), counted by reason.
async fn count_rejections(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let response = as_json_error(next.run(req).await, state.config.max_body_bytes);
    if let Some(Rejected(reason)) = response.extensions().get::<Rejected>() {
        state.metrics.rejected(reason);
    }
    response
}
