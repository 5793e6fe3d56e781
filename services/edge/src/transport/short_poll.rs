//! Short polling: each `GET` answers with the session's current snapshot,
//! read from auth (and passed to this node's watchers). Counted as a
//! delivery without a delay (a read, not an event).

use crate::{
    domain::Snapshot,
    metrics::{Metrics, Transport},
};

/// The answer's body, counted as delivered.
pub fn body(s: &Snapshot, node: &str, metrics: &Metrics) -> serde_json::Value {
    metrics.delivered(Transport::ShortPoll, None);
    s.to_json(node)
}
