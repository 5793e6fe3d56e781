//! The typed extractors that open the session routes, in the order a
//! handler lists them: [`SameOrigin`] (browser routes that change state or
//! open a stream), [`SessionPath`], [`Since`], [`BrowserSecret`]. Each one
//! answers bad input with its [`ApiError`], so a handler starts with
//! checked values instead of the same parsing prologue. The parsing itself
//! is `extract.rs`'s, where-from is `origin.rs`'s.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, FromRequestParts, Path},
    http::request::Parts,
};

use super::{extract, origin, AppState};
use crate::{domain::SessionId, error::ApiError};

/// The `{id}` of a session route, parsed.
pub struct SessionPath(pub SessionId);

impl<S: Send + Sync> FromRequestParts<S> for SessionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // A path that is not UTF-8 gets the same answer as any unreadable
        // request (`error::as_json_error`).
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::InvalidArgument("the request could not be read".into()))?;
        extract::session_id(&id).map(Self)
    }
}

/// The browser secret of the path's session: its cookie, else
/// `Authorization: Bearer` (`extract::browser_secret`).
pub struct BrowserSecret(pub String);

impl<S: Send + Sync> FromRequestParts<S> for BrowserSecret {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let SessionPath(id) = SessionPath::from_request_parts(parts, state).await?;
        extract::browser_secret(&parts.headers, &id).map(Self)
    }
}

/// `?since=<version>`: the version the client already holds, if it says.
pub struct Since(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for Since {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        extract::query_value(parts.uri.query(), "since")
            .map(|v| extract::version(v, "since"))
            .transpose()
            .map(Self)
    }
}

/// The request comes from an allowed origin, or from no browser page at
/// all (`origin::check_origin`, fail closed). Carries the peer address the
/// check used.
pub struct SameOrigin(pub SocketAddr);

impl FromRequestParts<AppState> for SameOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .ok_or_else(|| ApiError::Unavailable("the peer address is unknown".into()))?;
        origin::check_origin(peer, &parts.headers, &state.config)?;
        Ok(Self(peer))
    }
}

/// Where an event stream resumes: `Last-Event-ID` (what `EventSource`
/// sends when it reconnects), else `?since`.
pub struct LastEventId(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for LastEventId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok());
        match header {
            Some(v) if !v.trim().is_empty() => {
                Ok(Self(Some(extract::version(v, "Last-Event-ID")?)))
            }
            _ => Ok(Self(Since::from_request_parts(parts, state).await?.0)),
        }
    }
}

/// `?wait=` of a long poll (`25`, `25s`, `2500ms`), if given.
pub struct Wait(pub Option<std::time::Duration>);

impl<S: Send + Sync> FromRequestParts<S> for Wait {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        extract::query_value(parts.uri.query(), "wait")
            .map(extract::wait)
            .transpose()
            .map(Self)
    }
}
