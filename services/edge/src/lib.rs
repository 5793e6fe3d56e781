//! qrlogin edge: holds browser connections (short and long polling, SSE,
//! WebSocket, STOMP over WebSocket, a gRPC watch stream) for login sessions
//! and serves the phone's HTTP routes.
//! Stateless: any edge delivers any session's events.
//!
//! - [`config`]: the typed, validated configuration (flags + environment).
//! - [`startup`]: [`startup::Application`] builds, binds and runs the node.
//! - [`server`]: the HTTP/1.1 front (lean path for idle streams, hyper for the rest).
//! - [`routes`]: the HTTP surface, one file per concern; thin handlers on
//!   typed extractors.
//! - [`transport`]: one module per push transport, each only encoding
//!   pushes (the delivery loop is [`delivery::Delivery::next_push`]).
//! - [`delivery`]: the node-wide dispatcher: authorize, subscribe, read,
//!   expire, re-read; behind two narrow traits ([`delivery::ports`]).
//! - [`sessions`]: the facade over auth and the watches that routes and
//!   transports use (observes its own writes; one error type).
//! - [`hub`]: which local watchers watch which session (no NATS in it).
//! - [`broker`]: the NATS client (subscribe-only, our own).
//!   [`auth_client`]: the gRPC client of auth.
//! - [`domain`]: snapshots and their ordering rules.
//! - [`error`]: the one mapping of failures to HTTP.
//! - [`oidc`]: what relying parties read: the signing keys (JWKS).
//! - [`limits`], [`metrics`], [`shutdown`], [`telemetry`].

pub mod auth_client;
pub mod broker;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod oidc;
pub mod routes;
pub mod server;
pub mod sessions;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
pub mod transport;
