//! Domain types of the edge: what a browser is told about a login session,
//! and the rules that decide whether a snapshot is news to a watcher.
//!
//! Nothing here knows axum, tonic or NATS: the transports, the broker and the
//! auth client convert to and from these types at their own boundaries.

mod qr;
mod session_id;
mod snapshot;

pub use qr::QrCode;
pub use session_id::{SessionId, SessionIdError};
pub use snapshot::{format_timestamp, DenyReason, LoginState, Snapshot};
