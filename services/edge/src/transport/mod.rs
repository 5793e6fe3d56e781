//! Push transports' wire formats, apart from routes and the delivery loop:
//! each module only turns pushes into bytes and client bytes into requests.
//!
//! - [`stomp`]: STOMP 1.2 over WebSocket (frame codec, negotiation, the
//!   destinations and headers qrlogin uses).

pub mod stomp;
