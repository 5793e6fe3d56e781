//! `GET /v1/login-sessions/{id}/events`: Server-Sent Events. The watch is
//! joined (authorized first) here; the stream's bytes are
//! `transport/sse.rs`'s.

use axum::{extract::State, response::Response};

use super::{
    params::{BrowserSecret, LastEventId, SessionPath},
    AppState,
};
use crate::{error::ApiError, metrics::Transport, transport::sse};

pub async fn events(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    LastEventId(since): LastEventId,
    BrowserSecret(secret): BrowserSecret,
) -> Result<Response, ApiError> {
    let delivery = state
        .sessions
        .watch(&id, &secret, since, Transport::Sse)
        .await?;
    Ok(sse::response(state.sse.clone(), delivery))
}
