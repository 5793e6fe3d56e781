//! What the coordinator and its workers say to each other: one JSON object
//! a line, commands on the worker's stdin, answers on its stdout (in order,
//! one answer per command).

use std::{collections::BTreeMap, net::SocketAddr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Open one SSE stream per session in `first..first + count`.
    Connect(ConnectPlan),
    /// Start counting events of round `round`; answered with [`RoundStarted`]
    /// (streams open now, and what went wrong since the last answer).
    Round { round: u32 },
    /// How many events of the current round arrived so far.
    Progress,
    /// The current round's samples, bytes and errors.
    Collect,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectPlan {
    pub target: SocketAddr,
    pub src: std::net::IpAddr,
    pub path_prefix: String,
    pub channel_prefix: String,
    pub first: usize,
    pub count: usize,
    pub concurrency: usize,
    pub timeout_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Connected {
    pub held: usize,
    pub failed: usize,
    pub secs: f64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RoundStarted {
    pub open: usize,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Progress {
    pub delivered: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Collected {
    /// Publish-to-receipt latency of each event of the round, microseconds.
    pub samples_us: Vec<u64>,
    /// Bytes read from all streams since the round started.
    pub rx_bytes: u64,
    /// Streams still open.
    pub open: usize,
    pub errors: BTreeMap<String, u64>,
}

/// The event payload the publisher sends and clients parse: session,
/// round, and the publisher's wall clock (ns since the Unix epoch) taken
/// just before the publish request is written.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stamp {
    pub s: String,
    pub r: u32,
    pub t: u64,
}
