//! Push transports' wire formats, apart from routes and the delivery loop:
//! each module only turns pushes into bytes and client bytes into requests,
//! and owns its settings.
//!
//! - [`stomp`]: STOMP 1.2 over WebSocket (frame codec, negotiation, the
//!   destinations and headers qrlogin uses, the connection).
//! - [`grpc`]: the `qrlogin.watch.v1.LoginWatch` stream on its own port.

pub mod grpc;
pub mod stomp;
