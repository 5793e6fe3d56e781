//! `GET /v1/login-sessions/{id}/stomp`: the upgrade to STOMP over
//! WebSocket. Checked before the `101`, like `/ws`: the handshake, the
//! Origin, a STOMP subprotocol (`v12.stomp` or `v11.stomp`), the browser
//! secret (the session's path-scoped cookie, or `Authorization: Bearer`),
//! and the watch is joined. The endpoint is per session because the secret
//! cookie is scoped to the session's path: a shared endpoint would not
//! receive it. The connection itself is `transport/stomp/conn.rs`.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, Path, Request, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use hyper_util::rt::TokioIo;

use super::{extract, origin, ws, AppState};
use crate::{
    error::ApiError,
    limits::AdmissionSlot,
    metrics::Transport,
    transport::stomp::{self, conn::Prepared},
};

pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let headers = req.headers();
    let id = extract::session_id(&id)?;
    // Fail closed, like `/ws`: an unreadable Origin is refused.
    origin::check_origin(peer, headers, &state.config)?;
    let accept = ws::handshake_accept(headers)?;
    let offers = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let protocol = stomp::choose_subprotocol(offers).ok_or_else(|| {
        ApiError::InvalidArgument("Sec-WebSocket-Protocol must offer v12.stomp or v11.stomp".into())
    })?;
    let secret = extract::browser_secret(headers, &id)?;
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(ApiError::Unavailable(
            "this connection cannot be upgraded".into(),
        ));
    };
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
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept)
            .map_err(|_| ApiError::InvalidArgument("bad Sec-WebSocket-Key".into()))?,
    );
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => stomp::conn::run(prepared, TokioIo::new(upgraded)).await,
            Err(e) => tracing::debug!(error = %e, "STOMP upgrade failed"),
        }
    });
    Ok(response)
}
