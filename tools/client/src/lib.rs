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
//! - [`watch`]: what every watch yields ([`watch::Push`]) and its errors.
//! - [`key`]: the key of key-bound redemption for clients that are not
//!   browsers (a P-256 key, its JWK and thumbprint, proofs).
//!
//! Every watch opens with `(addr, src, id, secret, since)` and then yields
//! [`watch::Push`] values from `next()`; what to do with repeats, drains and
//! reconnects is the caller's policy (the load generator reconnects to the
//! next edge, a test asserts).
//!
//! # Who uses it (and how they move to it)
//!
//! - **The load generator** (`tools/loadgen`) keeps its coordinator, worker
//!   and report; its `http.rs`, `sse.rs`, `api.rs` and the per-transport
//!   halves of `watch.rs` are this crate's [`http`], [`sse`], [`api`] and
//!   [`sse::SseWatch`]/[`ws::WsWatch`] (they started as those files). Its
//!   `watch::run` loop becomes a `match` over transports calling
//!   `SseWatch::open`, `WsWatch::open`, `StompWatch::open` (with heart-beat
//!   `0,<cy>` so no client timer runs) or `GrpcWatch::open` (one shared
//!   [`grpc::channel`] per worker and edge), feeding `Push::Snapshot` to its
//!   `on_snapshot`. Phones use [`api::Client::scan`] and
//!   [`api::Client::confirm`] with `on_send` starting the latency clock.
//! - **The edge's integration tests** (`services/edge/tests/api`) keep their
//!   cluster fixture (`helpers.rs`: NATS, auth, two edges) and replace its
//!   reqwest/SSE/WebSocket helpers with [`api::Client`] per edge and the
//!   watches; assertions on raw HTTP details (headers, cookies, status of
//!   malformed requests) stay on reqwest, where a typed client would hide
//!   them. STOMP and gRPC tests use [`stomp::StompWatch`] and
//!   [`grpc::GrpcWatch`] against the real edge.
//! - **The edge's benches** (`services/edge/benches/edge/clients.rs`) use
//!   the watches to hold idle connections for the memory figures and
//!   [`api::Client`] for the cross-node delivery loop.
//! - **The latency probe** (`examples/latency.rs`) measures confirm→event
//!   through any address (an edge or a balancer) for SSE, WebSocket, STOMP,
//!   gRPC and long polling.

pub mod api;
pub mod grpc;
pub mod http;
pub mod key;
pub mod net;
pub mod sse;
pub mod stomp;
pub mod watch;
pub mod ws;
