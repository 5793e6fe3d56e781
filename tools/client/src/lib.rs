//! A client of qrlogin's own API, lean enough for a load generator holding
//! 100,000 waiting browsers over several processes, and typed enough for
//! tests and benchmarks.
//!
//! - [`net`]: TCP connections bound to a chosen source address (ports
//!   below the ephemeral range), the only place that opens sockets.
//! - [`http`]: a minimal HTTP/1.1 client (whole responses, streamed
//!   bodies, a keep-alive pool). An idle SSE watch costs one socket and a
//!   1 KiB buffer.
//! - [`api`]: the edge's HTTP API, typed: create, short and long poll,
//!   cancel, redeem, scan/confirm/deny, the development token; error bodies
//!   decoded into their stable codes; [`api::Snapshot`] and its ordering rule.
//! - [`sse`]: Server-Sent Events parsing and the SSE watch (`Last-Event-ID`).
//! - [`ws`]: the WebSocket handshake and the JSON watch (`since`, cancel).
//! - [`stomp`]: STOMP 1.2 over WebSocket (own frame codec, written from the
//!   specification apart from the edge's), subscribe with `since`, cancel,
//!   disconnect with a receipt.
//! - [`grpc`]: the `qrlogin.watch.v1.LoginWatch` stream.
//! - [`watch`]: what every watch yields ([`watch::Push`]) and its errors;
//!   [`watch::AnyWatch`], a watch over a [`watch::Transport`] chosen at run
//!   time.
//! - [`key`]: the key of key-bound redemption for clients that are not
//!   browsers (a P-256 key, its JWK and thumbprint, proofs).
//!
//! Every watch opens with `(addr, src, id, secret, since)` and then yields
//! [`watch::Push`] values from `next()`; what to do with repeats, drains and
//! reconnects is the caller's policy (the load generator reconnects to the
//! next edge, a test asserts).
//!
//! # Who uses it
//!
//! - **The load generator** (`tools/loadgen`): its `run` mode (100,000
//!   waiting browsers over SSE and WebSocket, reconnecting to the next edge
//!   and resuming) and the comparison's `transport` and `throughput` runs
//!   (every transport, short and long polling). It adds only policy:
//!   phases, retries, reconnects, timing, totals. Its sockets are bound to
//!   chosen loopback addresses through [`net`].
//! - **The edge's benchmark** (`services/edge/benches/edge`): the idle
//!   connections of the memory figures ([`watch::AnyWatch`] with STOMP
//!   heart-beats off, kept-alive [`http::Conn`]s) and the latency loop
//!   ([`api::Client`] phones scanning the payload on screen).
//! - **The edge's integration tests** (`services/edge/tests/api`): STOMP
//!   and gRPC tests use [`stomp::StompWatch`] and [`grpc::GrpcWatch`]; the
//!   SSE helper parses with [`sse::SseParser`]. Tests of raw HTTP details
//!   (headers, cookies, the status and body of malformed requests, the JSON
//!   shape on the wire) stay on reqwest and tungstenite, where a typed
//!   client would hide what they check.
//! - **The latency probe** (`examples/latency.rs`): confirm→event through
//!   any address (an edge or a balancer) for SSE, WebSocket, STOMP, gRPC
//!   and long polling.
//!
//! The browser's own client (`web/`) and the Node watcher of the local
//! cluster (`deploy/local/watch.mjs`) are JavaScript, as browsers and
//! stompjs users run it; this crate is the one Rust client.

pub mod api;
pub mod grpc;
pub mod http;
pub mod key;
pub mod net;
pub mod sse;
pub mod stomp;
pub mod watch;
pub mod ws;
