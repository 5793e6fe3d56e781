//! The login session model: identifiers, states, the stored record and the
//! transition rules. Pure code: no tonic, NATS or clock access — callers pass
//! `now` (and the random picks), so every rule is testable without waiting.

mod ids;
pub mod matching;
pub mod network;
pub mod qr;
mod session;
pub mod text;

pub use ids::{BrowserSecret, IdError, SecretHash, SessionId};
pub use matching::Matching;
pub use qr::{QrKey, QrRules};
pub use session::{
    Action, BrowserContext, Deadlines, DenyReason, DomainError, LoginState, Outcome, PhoneUser,
    Rules, SessionRecord,
};

/// Milliseconds since the Unix epoch. Stored in records as plain integers so
/// the JSON stays readable and independent of any time crate.
pub type UnixMillis = i64;
