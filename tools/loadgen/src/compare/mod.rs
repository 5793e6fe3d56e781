//! The measured comparison's two runs (`tools/bench/compare.sh` drives
//! them; docs/transports.md explains each figure):
//!
//! - `transport`: N waiting browsers of one transport through balancers,
//!   a fixed idle wait, then scan and confirm of every session at a fixed
//!   rate on the edge that does not hold its watch; one row of
//!   results.json (latency, bytes and requests per login, auth reads,
//!   edge CPU and memory).
//! - `throughput` ([`throughput`]): whole logins at rising rates until
//!   p99 completion passes a limit.
//!
//! - [`browser`]: one waiting browser, any transport.
//! - [`probe`]: /proc, HAProxy's counters, percentiles.

pub mod browser;
pub mod probe;
pub mod throughput;

use std::{
    net::{IpAddr, SocketAddr},
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use anyhow::{bail, Context};
use clap::Args;
use qrlogin_client::{api::Client, watch::Transport};
use serde_json::{json, Value};
use tokio::{sync::Semaphore, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::config::{EdgeList, Measured};
use browser::{Kind, Shared, Slot};

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

fn edges(text: &str) -> Result<EdgeList, String> {
    crate::config::parse_edge_list(text)
}

fn measured(text: &str) -> Result<Measured, String> {
    crate::config::parse_measured(text)
}

#[derive(Debug, Clone, Args)]
pub struct TransportArgs {
    /// short-poll-1s, short-poll-2s, long-poll, sse, ws, stomp, grpc.
    #[arg(long)]
    pub transport: String,
    /// Waiting browsers.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// HTTP balancers the browsers use (browser i: balancer i mod n).
    #[arg(long, value_parser = edges)]
    pub balancers: EdgeList,
    /// Where gRPC watches go (browser i: i mod n).
    #[arg(long, value_parser = edges)]
    pub grpc_balancers: Option<EdgeList>,
    /// The edges phones call, in the order of their node names' discovery.
    #[arg(long, value_parser = edges)]
    pub phone_edges: EdgeList,
    /// HAProxy stats pages (`/;csv`) of the browsers' balancers.
    #[arg(long, value_parser = edges)]
    pub balancer_stats: EdgeList,
    /// HAProxy stats page of the balancer between edges and auth.
    #[arg(long, value_parser = edges)]
    pub auth_stats: Option<EdgeList>,
    /// Edge processes (`edge-1=PID`) whose CPU and memory are read.
    #[arg(long = "edge-pid", value_parser = measured)]
    pub edge_pids: Vec<Measured>,
    #[arg(long, env = "QRLOGIN_LOADGEN_USER_TOKEN", hide_env_values = true)]
    pub user_token: String,
    /// Source address of the browsers' sockets.
    #[arg(long, default_value = "127.0.0.2")]
    pub src: IpAddr,
    /// Idle time with every browser waiting, before the confirms.
    #[arg(long, value_parser = duration, default_value = "30s")]
    pub wait: Duration,
    /// Scan+confirm pairs per second.
    #[arg(long, default_value_t = 500.0)]
    pub confirm_rate: f64,
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    #[arg(long, default_value_t = 256)]
    pub phone_concurrency: usize,
    #[arg(long, value_parser = duration, default_value = "300s")]
    pub connect_timeout: Duration,
    #[arg(long, value_parser = duration, default_value = "120s")]
    pub confirm_timeout: Duration,
    /// Mark the row as a --quick run.
    #[arg(long)]
    pub quick: bool,
    /// Where the row (a JSON object) is written.
    #[arg(long)]
    pub out: std::path::PathBuf,
}

/// Phone-side clients of each edge with the node name it answers with.
pub struct Phones(pub Vec<(Client, String)>);

impl Phones {
    pub async fn discover(edges: &[SocketAddr], concurrency: usize) -> anyhow::Result<Phones> {
        let mut out = Vec::new();
        for addr in edges {
            let client = Client::new(*addr, None, concurrency);
            let node = client
                .create()
                .await
                .with_context(|| format!("create on {addr}"))?
                .snapshot
                .node
                .unwrap_or_default();
            out.push((client, node));
        }
        Ok(Phones(out))
    }

    /// An edge other than `node` (the `i`-th when the holder is unknown).
    pub fn other_than(&self, node: Option<&str>, i: usize) -> &Client {
        let by_name = node.and_then(|n| self.0.iter().find(|(_, name)| name != n));
        &by_name.unwrap_or(&self.0[i % self.0.len()]).0
    }
}

fn sum(pids: &[Measured], read: impl Fn(u32) -> Option<f64>) -> f64 {
    pids.iter().filter_map(|m| read(m.pid)).sum()
}

/// `transport`: one row.
pub async fn transport(a: TransportArgs) -> anyhow::Result<bool> {
    let kind = Kind::parse(&a.transport).context("unknown --transport")?;
    if kind == Kind::Stream(Transport::Grpc) && a.grpc_balancers.is_none() {
        bail!("--transport grpc needs --grpc-balancers");
    }
    let n = a.clients;
    let phones = Arc::new(Phones::discover(&a.phone_edges.0, a.phone_concurrency).await?);
    let rss = |pids: &[Measured]| sum(pids, |p| probe::rss_kib(p).map(|k| k as f64));
    let stats = &a.balancer_stats.0;
    let auth_stats = a
        .auth_stats
        .as_ref()
        .map(|s| s.0.clone())
        .unwrap_or_default();
    let load_start = probe::load_average();
    let rss_before = rss(&a.edge_pids);
    let cpu_before = sum(&a.edge_pids, probe::cpu_ms);
    let hb_before = probe::haproxy(stats).await?;
    let auth_before = probe::haproxy(&auth_stats).await?;
    let bytes_before = qrlogin_client::net::bound_bytes();
    let sh = Arc::new(Shared {
        kind,
        balancers: a.balancers.0.clone(),
        creators: a
            .balancers
            .0
            .iter()
            .map(|b| Client::new(*b, None, a.connect_concurrency))
            .collect(),
        grpc_balancers: a.grpc_balancers.map(|g| g.0).unwrap_or_default(),
        src: Some(a.src),
        stop: CancellationToken::new(),
        ready: Default::default(),
        delivered: Default::default(),
        requests: Default::default(),
        reopens: Default::default(),
        errors: Default::default(),
        failed: Default::default(),
    });
    let slots: Vec<Arc<Slot>> = (0..n).map(|_| Arc::new(Slot::default())).collect();

    // Connect: every browser creates its session and sees it once.
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(a.connect_concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let deadline = started + a.connect_timeout;
    for (i, slot) in slots.iter().enumerate() {
        let permit = tokio::time::timeout_at(deadline, gate.clone().acquire_owned())
            .await
            .context("connect phase limit")??;
        *slot.permit.lock().unwrap_or_else(|p| p.into_inner()) = Some(permit);
        tasks.spawn(browser::run(sh.clone(), slot.clone(), i));
    }
    while sh.ready.load(Ordering::Relaxed) + sh.failed.load(Ordering::Relaxed) < n
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = sh.ready.load(Ordering::Relaxed);
    let connect_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "compare: {}: {ready}/{n} waiting after {connect_secs:.1} s",
        a.transport
    );
    let rss_ready = rss(&a.edge_pids);
    let rss_each: Vec<Value> = a
        .edge_pids
        .iter()
        .map(|m| json!({ "label": m.label, "kib": probe::rss_kib(m.pid) }))
        .collect();

    // The fixed wait: polls, heartbeats and pings run; nothing happens.
    let idle_cpu_before = sum(&a.edge_pids, probe::cpu_ms);
    tokio::time::sleep(a.wait).await;
    let idle_cpu = sum(&a.edge_pids, probe::cpu_ms) - idle_cpu_before;

    // Confirms at the rate, each on the edge that does not hold the watch.
    let confirm_started = Instant::now();
    let gate = Arc::new(Semaphore::new(a.phone_concurrency));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / a.confirm_rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut phone_tasks = tokio::task::JoinSet::new();
    for (i, slot) in slots.iter().enumerate() {
        if slot.node.get().is_none() {
            continue;
        }
        ticker.tick().await;
        let permit = gate.clone().acquire_owned().await?;
        let (slot, phones, sh, token) = (
            slot.clone(),
            phones.clone(),
            sh.clone(),
            a.user_token.clone(),
        );
        phone_tasks.spawn(async move {
            let _permit = permit;
            let id = slot.id.get().cloned().unwrap_or_default();
            let phone = phones.other_than(slot.node.get().and_then(|n| n.as_deref()), i + 1);
            let r = async {
                let qr = slot.qr_on_screen();
                phone.scan(&id, &token, &qr).await?;
                // The user picks the number the browser shows.
                let code = browser::match_code(&slot).await?;
                phone
                    .confirm(&id, &token, code, || {
                        let _ = slot.confirm_sent.set(Instant::now());
                    })
                    .await
                    .map_err(anyhow::Error::from)
            }
            .await;
            if let Err(e) = r {
                sh.error(format!("phone: {e}"));
            }
        });
    }
    let sent_secs = confirm_started.elapsed().as_secs_f64();
    let deadline = Instant::now() + a.confirm_timeout;
    while sh.delivered.load(Ordering::Relaxed) < ready && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = sh.delivered.load(Ordering::Relaxed);
    let delivery_secs = confirm_started.elapsed().as_secs_f64();
    sh.stop.cancel();
    while phone_tasks.join_next().await.is_some() {}
    while tasks.join_next().await.is_some() {}

    let cpu = sum(&a.edge_pids, probe::cpu_ms) - cpu_before;
    let bytes_after = qrlogin_client::net::bound_bytes();
    let (rx, tx) = (
        (bytes_after.0 - bytes_before.0) as f64,
        (bytes_after.1 - bytes_before.1) as f64,
    );
    let hb_after = probe::haproxy(stats).await?;
    let auth_after = probe::haproxy(&auth_stats).await?;
    let d = |px: &str, sv: &str, col: &str| probe::delta(&hb_before, &hb_after, px, sv, col);
    let bin = d("www", "FRONTEND", "bin") + d("grpc", "FRONTEND", "bin");
    let bout = d("www", "FRONTEND", "bout") + d("grpc", "FRONTEND", "bout");
    let ad = |px: &str, col: &str| probe::delta(&auth_before, &auth_after, px, "BACKEND", col);

    let mut latencies: Vec<f64> = slots
        .iter()
        .filter_map(|s| {
            let (sent, got) = (s.confirm_sent.get()?, s.confirmed_at.get()?);
            Some(got.saturating_duration_since(*sent).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let per = |x: f64| if n == 0 { None } else { Some(x / n as f64) };
    let errors = sh.errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let variant = match kind {
        Kind::Stream(Transport::Grpc) => "HAProxy round-robin (TCP)",
        _ => "HAProxy round-robin",
    };
    let row = json!({
        "system": "qrlogin",
        "variant": variant,
        "transport": a.transport,
        "waiting": ready,
        "expected": n,
        "delivered": delivered,
        "rate": a.confirm_rate,
        "achieved_rate": ready as f64 / sent_secs.max(1e-9),
        "latency_ms": probe::summary(&latencies),
        "latency_histogram": probe::histogram(&latencies),
        "bytes_per_login": per(rx + tx),
        "bytes": {
            "watch_rx_per_login": per(rx),
            "watch_tx_per_login": per(tx),
            "balancer_in_per_login": per(bin),
            "balancer_out_per_login": per(bout),
        },
        "requests_per_login": per(sh.requests.load(Ordering::Relaxed) as f64),
        "http_requests_per_wait": per(sh.requests.load(Ordering::Relaxed) as f64 - n as f64),
        "balancer_http_requests_per_login": per(d("www", "FRONTEND", "req_tot")),
        "auth_reads_per_login": per(ad("auth_read", "stot")),
        "auth_calls_per_login": per(ad("auth_read", "stot") + ad("auth_other", "stot")),
        "edge_cpu_ms_per_login": per(cpu),
        "edge_cpu_ms_idle_per_waiting_per_min": (ready > 0)
            .then(|| idle_cpu / ready as f64 * 60.0 / a.wait.as_secs_f64().max(1e-9)),
        "memory_per_conn_kib": (ready > 0).then(|| (rss_ready - rss_before) / ready as f64),
        "memory_kib": { "edges_baseline": rss_before, "edges_with_waiting": rss_ready, "per_edge": rss_each },
        "wait_secs": a.wait.as_secs_f64(),
        "connect_secs": connect_secs,
        "confirm_secs": sent_secs,
        "delivery_secs": delivery_secs,
        "reopens": sh.reopens.load(Ordering::Relaxed),
        "errors": errors,
        "load_average": { "start": load_start, "end": probe::load_average() },
        "quick": a.quick,
        "date": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    });
    std::fs::write(&a.out, serde_json::to_vec_pretty(&row)?)
        .with_context(|| format!("write {}", a.out.display()))?;
    eprintln!(
        "compare: {}: delivered {delivered}/{n}, p50 {:?} p99 {:?} ms, {:.0} B/login, edge {:.2} ms CPU/login",
        a.transport,
        probe::percentile(&latencies, 50.0),
        probe::percentile(&latencies, 99.0),
        per(rx + tx).unwrap_or(0.0),
        per(cpu).unwrap_or(0.0)
    );
    Ok(delivered == n)
}
