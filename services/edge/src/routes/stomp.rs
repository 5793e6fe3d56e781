//! `GET /v1/login-sessions/{id}/stomp`: the upgrade to STOMP over
//! WebSocket. Checked before the `101`, like `/ws`: the handshake, the
//! Origin, a STOMP subprotocol (`v12.stomp` or `v11.stomp`), the browser
//! secret (the session's path-scoped cookie, or `Authorization: Bearer`),
//! and the watch is joined. The endpoint is per session because the secret
//! cookie is scoped to the session's path: a shared endpoint would not
//! receive it. The connection itself is `transport/stomp/conn.rs`.

use axum::{
    extract::{Request, State},
    http::header,
    response::Response,
    RequestExt,
};

use super::{
    params::{BrowserSecret, SameOrigin, SessionPath},
    AppState,
};
use crate::{
    error::ApiError,
    limits::AdmissionSlot,
    metrics::Transport,
    transport::{
        stomp::{self, conn::Prepared},
        upgrade,
    },
};

pub async fn upgrade(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    // Fail closed, like `/ws`: an unreadable Origin is refused.
    _: SameOrigin,
    mut req: Request,
) -> Result<Response, ApiError> {
    let headers = req.headers();
    let accept = upgrade::handshake_accept(headers)?;
    let offers = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let protocol = stomp::choose_subprotocol(offers).ok_or_else(|| {
        ApiError::InvalidArgument("Sec-WebSocket-Protocol must offer v12.stomp or v11.stomp".into())
    })?;
    let BrowserSecret(secret) = req.extract_parts::<BrowserSecret>().await?;
    // Authorized before it takes a slot; nothing is pushed before SUBSCRIBE.
    let delivery = state
        .sessions
        .watch(&id, &secret, None, Transport::Stomp)
        .await?;
    let admission = req
        .extensions()
        .get::<AdmissionSlot>()
        .and_then(AdmissionSlot::take);
    let prepared = Prepared {
        endpoint: state.stomp.clone(),
        id,
        secret,
        delivery,
        admission,
    };
    upgrade::switch(&mut req, &accept, Some(protocol), move |socket| {
        stomp::conn::run(prepared, socket)
    })
}
