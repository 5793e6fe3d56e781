//! Admission, the middleware every API request passes: refused while
//! draining; counted against its client's cap from the head on
//! (`QRLOGIN_MAX_REQUESTS_PER_CLIENT`); its body read whole, within
//! `QRLOGIN_BODY_TIMEOUT` and `QRLOGIN_MAX_BODY_BYTES`, *before* it is
//! admitted, so that a body sent a byte at a time holds no admission; then
//! admitted against the node's cap (`QRLOGIN_MAX_CONNECTIONS`). The
//! admission (with the client's slot) lives as long as the response body,
//! so a stream keeps it, or is taken over by a WebSocket.

use std::{
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::{ConnectInfo, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{origin, AppState};
use crate::{
    error::ApiError,
    limits::{Admission, AdmissionSlot, ClientSlot, Refused},
};

pub(super) async fn admit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match admitted(&state, req).await {
        Ok((req, slot)) => {
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
        Err(refused) => refused.into_response(),
    }
}

/// The request with its body read and its admission in a slot a handler
/// may take over, or why it is refused.
async fn admitted(state: &AppState, req: Request) -> Result<(Request, AdmissionSlot), ApiError> {
    if state.drain.is_draining() {
        return Err(ApiError::Draining);
    }
    let client = client_slot(state, &req)?;
    let (parts, body) = req.into_parts();
    let body = if body.is_end_stream() {
        body
    } else {
        let limit = state.config.max_body_bytes;
        match tokio::time::timeout(state.config.body_timeout, read_body(body, limit)).await {
            Ok(read) => Body::from(read?),
            Err(_) => return Err(ApiError::BodyTimeout),
        }
    };
    let admission = state.gate.try_admit().ok_or(ApiError::OverCapacity)?;
    let slot = AdmissionSlot::default();
    *slot.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(admission.with_client(client));
    let mut req = Request::from_parts(parts, body);
    req.extensions_mut().insert(slot.clone());
    Ok((req, slot))
}

/// The request's place among its client's open requests: `None` for a
/// trusted proxy's own requests (or a request without a peer address).
fn client_slot(state: &AppState, req: &Request) -> Result<Option<ClientSlot>, ApiError> {
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>() else {
        return Ok(None);
    };
    let trusted = &state.config.trusted_proxies;
    let ip = origin::client_ip(*peer, req.headers(), trusted);
    if trusted.contains(ip) {
        return Ok(None);
    }
    match state.clients.try_enter(ip, true) {
        Ok(slot) => Ok(Some(slot)),
        Err(Refused::Client) => Err(ApiError::TooManyRequests),
        Err(Refused::Node) => Err(ApiError::OverCapacity),
    }
}

/// The whole body, at most `limit` bytes (one that says it is larger is
/// refused before anything is read).
async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(limit);
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    let mut read = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame
            .map_err(|_| ApiError::InvalidArgument("the request body could not be read".into()))?;
        if let Ok(data) = frame.into_data() {
            if read.len() + data.len() > limit {
                return Err(too_large());
            }
            read.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(read))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bodies_are_read_whole_up_to_the_limit() {
        let body = Body::from("{\"a\":1}");
        assert_eq!(&read_body(body, 64).await.unwrap()[..], b"{\"a\":1}");
        // Told larger than the limit: refused without reading.
        let err = read_body(Body::from(vec![b'x'; 65]), 64).await.unwrap_err();
        assert!(matches!(err, ApiError::PayloadTooLarge(64)));
        // Not told (a stream of chunks): refused once it passes the limit.
        let chunks = futures::stream::iter((0..5).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 20])));
        let err = read_body(Body::from_stream(chunks), 64).await.unwrap_err();
        assert!(matches!(err, ApiError::PayloadTooLarge(64)));
    }
}
