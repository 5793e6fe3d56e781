//! The command line: `run` with everything the coordinator needs, checked
//! before any process starts; `worker` takes its plan on stdin.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "qrlogin-peer-sse",
    about = "SSE clients held through Pushpin, one publish per session"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Coordinate a run: start workers, connect, publish at each rate, report.
    Run(Box<RunArgs>),
    /// Internal: one worker process (started by `run`).
    #[command(hide = true)]
    Worker,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Where clients connect (Pushpin's client port), a loopback address.
    #[arg(long)]
    pub target: SocketAddr,
    /// Request path of session i is PREFIX + CHANNEL_PREFIX + i.
    #[arg(long, default_value = "/stream/")]
    pub path_prefix: String,
    /// Channel (and session) names are this prefix and a number.
    #[arg(long, default_value = "s")]
    pub channel_prefix: String,
    /// Pushpin's HTTP publish endpoint (host:port; the path is /publish/).
    #[arg(long)]
    pub publish: SocketAddr,
    /// Waiting clients (one session and channel each).
    #[arg(long, default_value_t = 1000)]
    pub waiting: usize,
    /// Publish rates (events per second), one round per rate, each
    /// publishing one event to every session.
    #[arg(long, value_delimiter = ',', default_value = "500")]
    pub rates: Vec<u32>,
    /// Worker processes; worker w binds its sockets to 127.0.0.(SRC_FIRST + w).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    #[arg(long, default_value_t = 2)]
    pub src_first: u8,
    /// Connections being opened at once per worker (128, as qrlogin-loadgen).
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// Concurrent publish connections (keep-alive, one request at a time each).
    #[arg(long, default_value_t = 16)]
    pub publish_connections: usize,
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// How long to wait, after the last publish, for the last delivery.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub deliver_timeout: Duration,
    /// Pause between all clients held and the memory reading.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Root processes whose whole tree is the system measured (NAME=PID);
    /// memory per connection is the growth of their summed RSS.
    #[arg(long = "measure-tree", value_parser = parse_named_pid)]
    pub measure_tree: Vec<(String, u32)>,
    /// Other processes whose RSS is reported but not counted (NAME=PID).
    #[arg(long = "measure", value_parser = parse_named_pid)]
    pub measure: Vec<(String, u32)>,
    /// Row fields.
    #[arg(long, default_value = "pushpin")]
    pub system: String,
    #[arg(long, default_value = "stock")]
    pub variant: String,
    #[arg(long, default_value = "sse")]
    pub transport: String,
    /// Where the rows go (a JSON array).
    #[arg(long)]
    pub json_out: std::path::PathBuf,
}

fn parse_named_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or("expected NAME=PID")?;
    let pid = pid.parse().map_err(|e| format!("bad pid {pid}: {e}"))?;
    Ok((name.to_owned(), pid))
}

impl RunArgs {
    /// Refuses targets off the loopback range, empty runs and too many
    /// clients per worker for the 20,000 open files a process may have.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.target.ip().is_loopback() && self.publish.ip().is_loopback(),
            "targets must be loopback addresses"
        );
        anyhow::ensure!(self.waiting > 0 && self.workers > 0, "nothing to run");
        anyhow::ensure!(
            !self.rates.is_empty() && self.rates.iter().all(|r| *r > 0),
            "rates must be positive"
        );
        let per_worker = self.waiting.div_ceil(self.workers);
        anyhow::ensure!(
            per_worker <= 18_500,
            "{per_worker} clients per worker: use more workers (a process may hold 20,000 files)"
        );
        anyhow::ensure!(
            usize::from(self.src_first) + self.workers <= 255,
            "too many workers for 127.0.0.x source addresses"
        );
        Ok(())
    }
}
