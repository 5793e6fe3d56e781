//! Long polling: one push as a JSON answer. The request is held until a
//! snapshot newer than `since` is pushed, the wait ends, or the node
//! drains; then the newest snapshot the node has is the answer (the
//! client asks again with its version). When a push is due is
//! `delivery::push`'s.

use std::{sync::Arc, time::Duration};

use crate::{
    delivery::{Delivery, Push},
    domain::Snapshot,
};

/// Settings of the long poll.
pub struct Endpoint {
    pub node: String,
    /// Longest a request is held (`QRLOGIN_LONG_POLL_MAX`); a client's
    /// `wait` may only shorten it.
    pub max_wait: Duration,
}

impl Endpoint {
    /// How long to hold a request that asked for `wait`.
    pub fn wait(&self, wait: Option<Duration>) -> Duration {
        wait.unwrap_or(self.max_wait).min(self.max_wait)
    }
}

/// The snapshot to answer with after holding `delivery` for up to `wait`:
/// the pushed one, or (timeout, drain) the newest known. `None`: nothing
/// was read yet.
pub async fn answer(mut delivery: Delivery, wait: Duration) -> Option<Arc<Snapshot>> {
    let pushed = tokio::select! {
        push = delivery.next_push() => match push {
            Push::Snapshot(s) => Some(s),
            // No keep-alive is set; a leave (drain, or the end of the
            // watch) answers with what the node has.
            Push::KeepAlive | Push::Leave(_) => None,
        },
        _ = tokio::time::sleep(wait) => None,
    };
    pushed.or_else(|| delivery.current())
}

/// The answer's body.
pub fn body(s: &Snapshot, node: &str) -> serde_json::Value {
    s.to_json(node)
}
