//! Load for the Pushpin peer of the comparison: many waiting SSE clients
//! held through Pushpin, one GRIP publish per session at a fixed rate, and
//! the figures (`README.md` in `tools/bench/peers`).
//!
//! - [`config`]: the command line of both roles.
//! - [`coordinator`]: `run` — starts the workers (this binary re-executed,
//!   one loopback source address each), measures memory, publishes, gathers
//!   the samples and writes the result rows.
//! - [`worker`]: holds its share of SSE clients and answers the
//!   coordinator's commands on stdin/stdout (one JSON object a line).
//! - [`client`]: one SSE client: connect, send the `GET`, read the stream
//!   with a small buffer, time each event.
//! - [`publish`]: the HTTP publisher (Pushpin's `POST /publish/`).
//! - [`stats`]: percentiles, the bucketed histogram, RSS and process trees.
//! - [`proto`]: the messages between coordinator and workers.

pub mod client;
pub mod config;
pub mod coordinator;
pub mod proto;
pub mod publish;
pub mod stats;
pub mod worker;
