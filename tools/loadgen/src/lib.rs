//! Load generator for qrlogin edges.
//!
//! Many waiting browsers hold SSE streams or WebSockets on some edges while
//! phones scan and confirm on others; the load generator measures how long
//! each CONFIRMED takes to arrive, and checks that every browser got it.
//!
//! - [`config`]: the command line, validated; the per-worker [`config::Plan`].
//! - [`coordinator`]: `run` — starts worker processes (itself, re-executed),
//!   drives the phases, gathers results, prints totals and checks.
//! - [`worker`]: one process's browsers through the connect and confirm phases.
//! - [`watch`]: one browser's push connection, reconnecting and resuming.
//! - [`phone`]: scan, confirm, redeem and the final check, with retries.
//! - [`api`]: the edge's HTTP API and error codes.
//! - [`http`]: a minimal HTTP/1.1 client with source-address binding.
//! - [`sse`]: Server-Sent Events parsing.
//! - [`compare`]: the measured comparison's `transport` and `throughput`
//!   runs, on the shared client crate (`qrlogin-client`).
//! - [`report`]: worker messages, merging, percentiles, checks.

pub mod api;
pub mod compare;
pub mod config;
pub mod coordinator;
pub mod http;
pub mod phone;
pub mod report;
pub mod sse;
pub mod watch;
pub mod worker;
