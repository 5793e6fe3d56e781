//! The one way routes and transports reach login sessions: auth's calls and
//! the node's watches behind one type. Every answer a call brings back
//! (a read, a cancel, a scan...) is passed to this node's watchers at once
//! ([`Watches::observe`]), so no caller has to remember it. Failures come
//! back as [`SessionError`], mapped to HTTP once (`error.rs`) and to gRPC
//! once (`transport/grpc`).

use std::{sync::Arc, time::Duration};

use crate::{
    auth_client::{AuthClient, AuthError, BrowserContext, Created, Redeemed},
    delivery::{ports::BusError, Delivery, WatchError, Watches},
    domain::{SessionId, Snapshot},
    metrics::{Metrics, Transport},
    shutdown::Drain,
};

/// How a session call failed, sorted into the protocol's classes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    /// The transition is not allowed in the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The session's deadline passed.
    #[error("{0}")]
    Expired(String),
    /// Lost a concurrent update; retrying is safe.
    #[error("{0}")]
    Conflict(String),
    /// The session already has the maximum of watchers on this node.
    #[error("this login session already has the maximum number of watchers on this node")]
    TooManyWatchers,
    /// Auth's create limit for the client's network, across all edges.
    #[error("too many login sessions created from this network; retry later")]
    RateLimited { retry_after: Duration },
    /// The session store is full.
    #[error("the session store is full; retry later")]
    StorageFull,
    /// Auth or NATS cannot be reached, or answered badly.
    #[error("{0}")]
    Unavailable(String),
}

impl From<AuthError> for SessionError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidArgument(m) => Self::InvalidArgument(m),
            AuthError::Unauthenticated(m) => Self::Unauthenticated(m),
            AuthError::PermissionDenied(m) => Self::PermissionDenied(m),
            AuthError::NotFound(m) => Self::NotFound(m),
            AuthError::FailedPrecondition(m) => Self::FailedPrecondition(m),
            AuthError::Expired(m) => Self::Expired(m),
            AuthError::Conflict(m) => Self::Conflict(m),
            AuthError::Unavailable(m) | AuthError::BadResponse(m) => Self::Unavailable(m),
            AuthError::RateLimited { retry_after } => Self::RateLimited { retry_after },
            AuthError::StorageFull => Self::StorageFull,
            AuthError::Config { .. } => {
                Self::Unavailable("the login service is unavailable".into())
            }
        }
    }
}

impl From<WatchError> for SessionError {
    fn from(e: WatchError) -> Self {
        match e {
            WatchError::TooManyWatchers => Self::TooManyWatchers,
            WatchError::Auth(e) => Self::from(e),
            WatchError::Bus(BusError::PermissionDenied | BusError::Closed) => {
                Self::Unavailable("cannot watch this session right now".into())
            }
        }
    }
}

/// Whether the node can serve: what `/readyz` and gRPC health report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub nats: bool,
    pub auth: bool,
    pub draining: bool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.nats && self.auth && !self.draining
    }
}

/// Longest a readiness check waits for auth's health answer.
const AUTH_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Login sessions as this node serves them (cheap to clone).
#[derive(Clone)]
pub struct Sessions {
    auth: AuthClient,
    watches: Watches,
    metrics: Arc<Metrics>,
    drain: Drain,
    /// Base of the reconnect delay suggested to clients at drain.
    reconnect_hint: Duration,
}

impl Sessions {
    pub fn new(
        auth: AuthClient,
        watches: Watches,
        metrics: Arc<Metrics>,
        drain: Drain,
        reconnect_hint: Duration,
    ) -> Self {
        Self {
            auth,
            watches,
            metrics,
            drain,
            reconnect_hint,
        }
    }

    pub async fn create(
        &self,
        client_ip: String,
        user_agent: String,
    ) -> Result<Created, SessionError> {
        Ok(self.auth.create(client_ip, user_agent).await?)
    }

    /// The current snapshot, for the creating browser.
    pub async fn get(&self, id: &SessionId, secret: &str) -> Result<Snapshot, SessionError> {
        let snapshot = self.auth.get(id, secret).await?;
        self.watches.observe(&snapshot);
        Ok(snapshot)
    }

    pub async fn cancel(&self, id: &SessionId, secret: &str) -> Result<Snapshot, SessionError> {
        let snapshot = self.auth.cancel(id, secret).await?;
        self.watches.observe(&snapshot);
        Ok(snapshot)
    }

    pub async fn redeem(&self, id: &SessionId, secret: &str) -> Result<Redeemed, SessionError> {
        let redeemed = self.auth.redeem(id, secret).await?;
        self.watches.observe(&redeemed.snapshot);
        Ok(redeemed)
    }

    /// Scan for the phone whose `Authorization` value is passed on.
    pub async fn scan(
        &self,
        id: &SessionId,
        authorization: &str,
    ) -> Result<(Snapshot, BrowserContext), SessionError> {
        let (snapshot, browser) = self.auth.scan(id, authorization).await?;
        self.watches.observe(&snapshot);
        Ok((snapshot, browser))
    }

    pub async fn confirm(
        &self,
        id: &SessionId,
        authorization: &str,
    ) -> Result<Snapshot, SessionError> {
        let snapshot = self.auth.confirm(id, authorization).await?;
        self.watches.observe(&snapshot);
        Ok(snapshot)
    }

    pub async fn deny(
        &self,
        id: &SessionId,
        authorization: &str,
    ) -> Result<Snapshot, SessionError> {
        let snapshot = self.auth.deny(id, authorization).await?;
        self.watches.observe(&snapshot);
        Ok(snapshot)
    }

    /// Starts a push delivery of `id` to the browser holding `secret`
    /// (authorized before it takes a watcher slot), counted under
    /// `transport`. `since`: the version the client already holds.
    pub async fn watch(
        &self,
        id: &SessionId,
        secret: &str,
        since: Option<u64>,
        transport: Transport,
    ) -> Result<Delivery, SessionError> {
        let watcher = self.watches.watch(id, secret, since).await?;
        Ok(Delivery::new(
            watcher,
            self.drain.listener(),
            self.metrics.connection(transport),
            self.reconnect_hint,
        ))
    }

    /// Whether the node is draining (new work is refused).
    pub fn is_draining(&self) -> bool {
        self.drain.is_draining()
    }

    /// NATS connected, auth answering its health check, not draining.
    pub async fn readiness(&self) -> Readiness {
        let draining = self.drain.is_draining();
        let nats = self.watches.is_connected();
        let auth = !draining
            && tokio::time::timeout(AUTH_HEALTH_TIMEOUT, self.auth.is_serving())
                .await
                .unwrap_or(false);
        Readiness {
            nats,
            auth,
            draining,
        }
    }
}
