//! The two narrow seams of delivery: an event bus (interest in a session's
//! events, and the events themselves pushed into an [`Inbox`]) and a state
//! reader (the authorizing read of a session). Production implements them
//! with the NATS client ([`crate::broker`]) and the tonic client
//! ([`crate::auth_client`]); the tests with in-memory doubles.

use futures::future::BoxFuture;

use crate::{
    auth_client::{AuthClient, AuthError},
    domain::{SessionId, Snapshot},
};

/// Why interest in a session could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The bus refused the subscription (NATS permissions).
    #[error("the event bus refused the subscription")]
    PermissionDenied,
    /// The bus is shut down.
    #[error("the event bus is closed")]
    Closed,
}

/// Where sessions' events come from.
pub trait EventBus: Send + Sync + 'static {
    /// Registers interest in `id` at once (before returning), and resolves
    /// when the bus has proven that the interest is in place, so that a
    /// read started afterwards cannot miss a later event. While the bus is
    /// disconnected it resolves at once: the interest is re-established on
    /// reconnect, and [`Inbox::resync`] follows.
    fn subscribe(&self, id: &SessionId) -> BoxFuture<'static, Result<(), BusError>>;
    /// Drops the interest in `id`.
    fn unsubscribe(&self, id: &SessionId);
    /// Whether events currently flow.
    fn is_connected(&self) -> bool;
    /// Whether the bus is a cluster whose servers learn of an interest a
    /// little after the one it was registered on. [`subscribe`]'s proof
    /// then covers that one server only: an event published on another
    /// before the interest reaches it is not forwarded, and delivery reads
    /// the session once more after a short delay
    /// ([`Settings::interest_settle`](super::Settings)).
    ///
    /// [`subscribe`]: EventBus::subscribe
    fn is_clustered(&self) -> bool {
        false
    }
}

/// One event taken off the bus.
#[derive(Debug, Clone)]
pub struct BusEvent {
    pub snapshot: Snapshot,
    /// The version of the write before this one, when the bus knows it
    /// (`Nats-Last-Sequence`): a value above what a watcher holds means a
    /// write was missed in between.
    pub previous: Option<u64>,
}

/// What a bus pushes into delivery. Called from the bus's reader: must not
/// block (everything it does is a map lookup and a non-blocking hand-over).
pub trait Inbox: Send + Sync + 'static {
    fn event(&self, event: BusEvent);
    /// Events may have been missed (reconnect, overflow): re-read everything.
    /// Called once the interest is proven again.
    fn resync(&self);
}

/// The authorizing read of a session's current state.
pub trait StateReader: Send + Sync + 'static {
    fn read(&self, id: &SessionId, secret: &str)
        -> BoxFuture<'static, Result<Snapshot, AuthError>>;
}

impl StateReader for AuthClient {
    fn read(
        &self,
        id: &SessionId,
        secret: &str,
    ) -> BoxFuture<'static, Result<Snapshot, AuthError>> {
        let client = self.clone();
        let id = id.clone();
        let secret = secret.to_owned();
        Box::pin(async move { client.get(&id, &secret).await })
    }
}
