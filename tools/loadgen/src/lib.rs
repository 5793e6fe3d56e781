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
//! - [`watch`]: one browser's push connection (SSE or WebSocket),
//!   reconnecting to the next edge and resuming by version.
//! - [`phone`]: scan, confirm, redeem and the final check, with retries.
//! - [`compare`]: the measured comparison's `transport` and `throughput`
//!   runs.
//! - [`chaos`]: whole logins at a steady rate under a fault schedule;
//!   lost and duplicated logins, latency in and out of the fault window,
//!   recovery.
//! - [`report`]: worker messages, merging, percentiles, checks.
//!
//! Every byte on the wire goes through the shared client crate
//! (`qrlogin-client`): its HTTP client with source-address binding, its
//! typed API and error codes, its SSE, WebSocket, STOMP and gRPC watches.
//! The load generator adds only the policy: phases, retries, reconnects,
//! timing and totals.

pub mod chaos;
pub mod compare;
pub mod config;
pub mod coordinator;
pub mod phone;
pub mod report;
pub mod watch;
pub mod worker;
