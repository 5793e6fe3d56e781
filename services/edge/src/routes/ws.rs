//! `GET /v1/login-sessions/{id}/ws`: the upgrade to a WebSocket. The
//! handshake headers, Origin and secret are checked and the watch is
//! joined before the `101`; the connection is `transport/ws.rs`'s.

use axum::{
    extract::{Request, State},
    response::Response,
};

use super::{
    params::{BrowserSecret, SameOrigin, SessionPath, Since},
    AppState,
};
use crate::{
    error::ApiError,
    limits::AdmissionSlot,
    metrics::Transport,
    transport::{upgrade, ws},
};

pub async fn upgrade(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    // Fail closed: an unreadable Origin is refused, the same-origin check
    // compares scheme and host (routes/origin.rs).
    _: SameOrigin,
    Since(since): Since,
    BrowserSecret(secret): BrowserSecret,
    mut req: Request,
) -> Result<Response, ApiError> {
    let accept = upgrade::handshake_accept(req.headers())?;
    let delivery = state
        .sessions
        .watch(&id, &secret, since, Transport::WebSocket)
        .await?;
    let admission = req
        .extensions()
        .get::<AdmissionSlot>()
        .and_then(AdmissionSlot::take);
    let prepared = ws::Prepared {
        endpoint: state.ws.clone(),
        id,
        secret,
        delivery,
        resumed: since.is_some(),
        admission,
    };
    upgrade::switch(&mut req, &accept, None, move |socket| {
        ws::run(prepared, socket)
    })
}
