//! The login session model: identifiers, states, the stored record and the
//! transition rules. Pure code: no tonic, NATS or clock access — callers pass
//! `now`, so every rule is testable without waiting.

mod ids;
mod session;
pub mod text;

pub use ids::{BrowserSecret, IdError, SecretHash, SessionId};
pub use session::{
    Action, BrowserContext, Deadlines, DomainError, LoginState, Outcome, PhoneUser, SessionRecord,
};

/// Milliseconds since the Unix epoch. Stored in records as plain integers so
/// the JSON stays readable and independent of any time crate.
pub type UnixMillis = i64;
