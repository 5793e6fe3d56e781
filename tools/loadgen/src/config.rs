//! Command line: `run` (the coordinator, what people type) and `worker`
//! (started by `run`, one per process). Everything is validated before any
//! process is started or any socket opened; targets must be loopback.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

#[derive(Debug, Parser)]
#[command(
    name = "qrlogin-loadgen",
    version,
    about = "Waiting browsers on some qrlogin edges, phones confirming on others, and totals"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start worker processes, drive the phases, print totals and checks.
    Run(Box<RunArgs>),
    /// One transport of the measured comparison: one results.json row.
    Transport(Box<crate::compare::TransportArgs>),
    /// Whole logins per second at rising rates (the comparison's throughput).
    Throughput(Box<crate::compare::throughput::ThroughputArgs>),
    /// Whole logins at a steady rate under a fault schedule: lost,
    /// duplicated, latency in and out of the fault window, recovery.
    Chaos(Box<crate::chaos::ChaosArgs>),
    /// One worker process (started by `run`; reads its plan on stdin).
    #[command(hide = true)]
    Worker,
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// `http://127.0.0.1:8081`, `127.0.0.1:8081` or a comma-separated list.
/// A list of edge addresses (one flag value, comma-separated).
#[derive(Debug, Clone)]
pub struct EdgeList(pub Vec<SocketAddr>);

/// Parses `--watch-edges`-like lists (shared with `compare`).
pub fn parse_edge_list(text: &str) -> Result<EdgeList, String> {
    edge_list(text)
}

/// Parses `LABEL=PID` (shared with `compare`).
pub fn parse_measured(text: &str) -> Result<Measured, String> {
    measured(text)
}

fn edge_list(text: &str) -> Result<EdgeList, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bare = part.strip_prefix("http://").unwrap_or(part);
        let bare = bare.strip_suffix('/').unwrap_or(bare);
        let addr: SocketAddr = bare
            .parse()
            .map_err(|_| format!("{part:?} is not like http://127.0.0.1:8081"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{addr} is not a loopback address (127.0.0.0/8, ::1)"
            ));
        }
        out.push(addr);
    }
    if out.is_empty() {
        return Err("at least one edge is required".into());
    }
    Ok(EdgeList(out))
}

/// A process id with a label, `edge-1=1234`, whose memory is reported.
#[derive(Debug, Clone)]
pub struct Measured {
    pub label: String,
    pub pid: u32,
}

fn measured(text: &str) -> Result<Measured, String> {
    let (label, pid) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not LABEL=PID"))?;
    let pid = pid
        .trim()
        .parse()
        .map_err(|_| format!("{pid:?} is not a process id"))?;
    Ok(Measured {
        label: label.trim().to_owned(),
        pid,
    })
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Edges that hold the waiting browsers (client i of worker w starts on
    /// edge (i + w) mod N and moves to the next one when it must reconnect).
    #[arg(long, value_parser = edge_list)]
    pub watch_edges: Option<EdgeList>,
    /// Edges that receive the phones' scan and confirm: a browser whose home
    /// is watch edge k is confirmed on phone edge (k + 1) mod M, so with the
    /// same list on both sides every confirm crosses nodes.
    #[arg(long, value_parser = edge_list)]
    pub phone_edges: Option<EdgeList>,
    /// A phone user's JWT (`qrlogin-auth dev-token`).
    #[arg(long, env = "QRLOGIN_LOADGEN_USER_TOKEN", hide_env_values = true)]
    pub user_token: Option<String>,
    /// Waiting browsers, all workers together.
    #[arg(long)]
    pub clients: Option<usize>,
    /// Worker processes (each one keeps at most ~18,000 sockets).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Share of browsers that watch over WebSocket; the rest use SSE.
    #[arg(long)]
    pub ws_percent: Option<u8>,
    /// Confirms per second, all workers together (each confirm follows its scan).
    #[arg(long)]
    pub confirm_rate: Option<f64>,
    /// Worker w binds its sockets to this address + w (e.g. 127.0.0.2,
    /// 127.0.0.3, ...), so no source/destination pair runs out of ports.
    #[arg(long, default_value = "127.0.0.2")]
    pub source_ip_base: Ipv4Addr,
    /// After CONFIRMED, browsers redeem and wait for REDEEMED (a final state).
    #[arg(long)]
    pub redeem: bool,
    /// At the end, compare each browser's last snapshot with the session's
    /// state read from an edge (short poll).
    #[arg(long)]
    pub verify: bool,
    /// Creates and connects in flight per worker.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// Scan+confirm pipelines in flight per worker.
    #[arg(long, default_value_t = 256)]
    pub phone_concurrency: usize,
    /// Limit of the create-and-connect phase.
    #[arg(long, value_parser = duration)]
    pub connect_timeout: Option<Duration>,
    /// Limit of the confirm phase (until every browser has its event).
    #[arg(long, value_parser = duration)]
    pub confirm_timeout: Option<Duration>,
    /// Shell command started when the confirm phase starts (fault
    /// injection); it must exit 0 before the phase ends.
    #[arg(long)]
    pub on_confirm: Option<String>,
    /// Require at least one reconnect (proves a fault hit live clients).
    #[arg(long)]
    pub expect_reconnects: bool,
    /// Once every browser watches, wait this long before confirming and
    /// report the CPU the measured processes used meanwhile (idle cost).
    #[arg(long, value_parser = duration)]
    pub idle_for: Option<Duration>,
    /// Processes whose memory is reported, `LABEL=PID` (repeatable).
    #[arg(long = "measure", value_parser = measured)]
    pub measure: Vec<Measured>,
    /// Also write the totals as JSON here.
    #[arg(long)]
    pub json_out: Option<std::path::PathBuf>,
    /// Preset: 200 browsers (half WebSocket), 1 worker, redeem, verify,
    /// 50 confirms/s, 30 s phase limits. Explicit flags still win.
    #[arg(long)]
    pub smoke: bool,
}

/// The settings after presets and defaults, validated.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub watch_edges: Vec<SocketAddr>,
    pub phone_edges: Vec<SocketAddr>,
    pub user_token: String,
    pub clients: usize,
    pub workers: usize,
    pub ws_percent: u8,
    pub confirm_rate: f64,
    pub source_ip_base: Ipv4Addr,
    pub redeem: bool,
    pub verify: bool,
    pub connect_concurrency: usize,
    pub phone_concurrency: usize,
    pub connect_timeout: Duration,
    pub confirm_timeout: Duration,
    pub on_confirm: Option<String>,
    pub expect_reconnects: bool,
    pub idle_for: Duration,
    pub measure: Vec<Measured>,
    pub json_out: Option<std::path::PathBuf>,
}

/// Sockets one worker may hold: below the 20,000 open files of a process.
pub const MAX_CLIENTS_PER_WORKER: usize = 18_500;

impl RunArgs {
    pub fn settings(self) -> Result<RunSettings, String> {
        let smoke = self.smoke;
        let watch_edges = self.watch_edges.ok_or("--watch-edges is required")?.0;
        let phone_edges = self
            .phone_edges
            .map_or_else(|| watch_edges.clone(), |e| e.0);
        let user_token = self
            .user_token
            .filter(|t| !t.trim().is_empty())
            .ok_or("--user-token (or QRLOGIN_LOADGEN_USER_TOKEN) is required")?;
        let s = RunSettings {
            clients: self.clients.unwrap_or(if smoke { 200 } else { 1000 }),
            workers: self.workers.unwrap_or(1),
            ws_percent: self.ws_percent.unwrap_or(if smoke { 50 } else { 0 }),
            confirm_rate: self
                .confirm_rate
                .unwrap_or(if smoke { 50.0 } else { 500.0 }),
            source_ip_base: self.source_ip_base,
            redeem: self.redeem || smoke,
            verify: self.verify || smoke,
            connect_concurrency: self.connect_concurrency,
            phone_concurrency: self.phone_concurrency,
            connect_timeout: self.connect_timeout.unwrap_or(if smoke {
                Duration::from_secs(30)
            } else {
                Duration::from_secs(300)
            }),
            confirm_timeout: self.confirm_timeout.unwrap_or(if smoke {
                Duration::from_secs(30)
            } else {
                Duration::from_secs(300)
            }),
            on_confirm: self.on_confirm,
            expect_reconnects: self.expect_reconnects,
            idle_for: self.idle_for.unwrap_or(Duration::ZERO),
            measure: self.measure,
            json_out: self.json_out,
            watch_edges,
            phone_edges,
            user_token,
        };
        s.validate()?;
        Ok(s)
    }
}

impl RunSettings {
    fn validate(&self) -> Result<(), String> {
        if self.clients == 0 || self.clients > 1_000_000 {
            return Err("--clients: 1..=1000000".into());
        }
        if self.workers == 0 || self.workers > 64 {
            return Err("--workers: 1..=64".into());
        }
        if self.clients.div_ceil(self.workers) > MAX_CLIENTS_PER_WORKER {
            return Err(format!(
                "--clients / --workers: at most {MAX_CLIENTS_PER_WORKER} browsers per worker (20,000 open files per process); add workers"
            ));
        }
        if self.ws_percent > 100 {
            return Err("--ws-percent: 0..=100".into());
        }
        if !(self.confirm_rate.is_finite()
            && self.confirm_rate > 0.0
            && self.confirm_rate <= 100_000.0)
        {
            return Err("--confirm-rate: above 0, at most 100000".into());
        }
        let base = self.source_ip_base.octets();
        if base[0] != 127 || usize::from(base[3]) + self.workers > 255 {
            return Err(
                "--source-ip-base: an address in 127.0.0.0/8 with room for one per worker".into(),
            );
        }
        if self.connect_concurrency == 0 || self.connect_concurrency > 4096 {
            return Err("--connect-concurrency: 1..=4096".into());
        }
        if self.phone_concurrency == 0 || self.phone_concurrency > 4096 {
            return Err("--phone-concurrency: 1..=4096".into());
        }
        if self.connect_timeout.is_zero() || self.confirm_timeout.is_zero() {
            return Err("phase timeouts must be greater than zero".into());
        }
        Ok(())
    }

    /// The plan of worker `index`: its share of browsers and of the rate.
    pub fn plan(&self, index: usize) -> Plan {
        let base = self.clients / self.workers;
        let clients = base + usize::from(index < self.clients % self.workers);
        let [a, b, c, d] = self.source_ip_base.octets();
        Plan {
            index,
            clients,
            ws_percent: self.ws_percent,
            watch_edges: self.watch_edges.clone(),
            phone_edges: self.phone_edges.clone(),
            source_ip: Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d + index as u8))),
            user_token: self.user_token.clone(),
            confirm_rate: self.confirm_rate * clients as f64 / self.clients as f64,
            redeem: self.redeem,
            verify: self.verify,
            connect_concurrency: self.connect_concurrency,
            phone_concurrency: self.phone_concurrency,
            connect_timeout_ms: self.connect_timeout.as_millis() as u64,
            confirm_timeout_ms: self.confirm_timeout.as_millis() as u64,
        }
    }
}

/// What one worker does; sent as the first line of its stdin (so the user
/// token never shows in a process listing).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub index: usize,
    pub clients: usize,
    pub ws_percent: u8,
    pub watch_edges: Vec<SocketAddr>,
    pub phone_edges: Vec<SocketAddr>,
    pub source_ip: Option<IpAddr>,
    pub user_token: String,
    pub confirm_rate: f64,
    pub redeem: bool,
    pub verify: bool,
    pub connect_concurrency: usize,
    pub phone_concurrency: usize,
    pub connect_timeout_ms: u64,
    pub confirm_timeout_ms: u64,
}

impl Plan {
    /// Whether browser `i` of this worker uses WebSocket: spread evenly,
    /// and over each edge's browsers too (counted per edge, since
    /// consecutive browsers start on consecutive edges).
    pub fn is_ws(&self, i: usize) -> bool {
        let k = i / self.watch_edges.len();
        (k * usize::from(self.ws_percent)) % 100 + usize::from(self.ws_percent) >= 100
    }

    /// The watch edge browser `i` starts on.
    pub fn home(&self, i: usize) -> usize {
        (i + self.index) % self.watch_edges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<RunSettings, String> {
        let mut argv = vec!["qrlogin-loadgen", "run", "--user-token", "t"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            Command::Run(a) => (*a).settings(),
            _ => unreachable!("parsed run"),
        }
    }

    #[test]
    fn smoke_preset_and_plans() {
        let s = args(&["--smoke", "--watch-edges", "http://127.0.0.1:1,127.0.0.1:2"]).unwrap();
        assert_eq!((s.clients, s.workers, s.ws_percent), (200, 1, 50));
        assert!(s.redeem && s.verify);
        assert_eq!(s.phone_edges, s.watch_edges);
        let s = args(&[
            "--watch-edges",
            "127.0.0.1:1",
            "--clients",
            "10",
            "--workers",
            "3",
            "--confirm-rate",
            "30",
        ])
        .unwrap();
        let plans: Vec<Plan> = (0..3).map(|w| s.plan(w)).collect();
        assert_eq!(
            plans.iter().map(|p| p.clients).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(plans[2].source_ip, Some("127.0.0.4".parse().unwrap()));
        assert!((plans.iter().map(|p| p.confirm_rate).sum::<f64>() - 30.0).abs() < 1e-9);
    }

    #[test]
    fn bad_settings_are_refused_with_the_flag_name() {
        let e = args(&["--watch-edges", "10.0.0.1:80"]).unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        let e = args(&["--watch-edges", "127.0.0.1:1", "--clients", "40000"]).unwrap_err();
        assert!(e.contains("per worker"), "{e}");
        let e = args(&["--watch-edges", "127.0.0.1:1", "--ws-percent", "101"]).unwrap_err();
        assert!(e.contains("--ws-percent"), "{e}");
        let e = args(&["--watch-edges", "127.0.0.1:1", "--confirm-rate", "0"]).unwrap_err();
        assert!(e.contains("--confirm-rate"), "{e}");
        assert!(args(&["--clients", "1"])
            .unwrap_err()
            .contains("--watch-edges"));
    }

    #[test]
    fn transports_are_mixed_as_asked() {
        let mut p = args(&["--watch-edges", "127.0.0.1:1"]).unwrap().plan(0);
        for (percent, expected) in [(0, 0), (30, 300), (50, 500), (100, 1000)] {
            p.ws_percent = percent;
            assert_eq!((0..1000).filter(|&i| p.is_ws(i)).count(), expected);
        }
        // Two edges, half WebSocket: each edge gets both transports.
        p.watch_edges.push("127.0.0.1:2".parse().unwrap());
        p.ws_percent = 50;
        for edge in 0..2 {
            let on_edge: Vec<usize> = (0..200).filter(|&i| p.home(i) == edge).collect();
            let ws = on_edge.iter().filter(|&&i| p.is_ws(i)).count();
            assert_eq!((on_edge.len(), ws), (100, 50), "edge {edge}");
        }
    }
}
