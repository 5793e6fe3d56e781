//! The push transports, one module each, apart from routes and from the
//! delivery policy they share (`delivery::push`: what to push and when):
//! each module only turns pushes into its bytes (and its client's bytes
//! into requests), and owns its settings in its `Endpoint`.
//!
//! - [`short_poll`]: the current snapshot per `GET`.
//! - [`long_poll`]: one push per `GET ?since=`, held until news.
//! - [`sse`]: Server-Sent Events.
//! - [`ws`]: JSON messages over a WebSocket.
//! - [`stomp`]: STOMP 1.2 over WebSocket (frame codec, negotiation, the
//!   destinations and headers qrlogin uses, the connection).
//! - [`grpc`]: the `qrlogin.watch.v1.LoginWatch` stream on its own port.
//!
//! [`upgrade`] is what the WebSocket transports share: the handshake and
//! the takeover of the socket by hyper or the front server's direct path.

pub mod grpc;
pub mod long_poll;
pub mod short_poll;
pub mod sse;
pub mod stomp;
pub mod upgrade;
pub mod ws;
