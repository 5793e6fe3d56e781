//! `chaos`: whole logins at a steady rate while faults are injected, and
//! whether any was lost or duplicated (`tools/bench/chaos.sh` runs the
//! scenarios; docs/benchmarks.md, "Chaos").
//!
//! Login *i* starts at *i / rate* on the driver's clock and watches over
//! the *i*-th transport of `--transports` (round-robin) through the
//! balancer; its phone scans and confirms through `--phone-url`; the
//! browser redeems after CONFIRMED is pushed. Faults (`--fault
//! AT=COMMAND`) run with `sh -c` at their time. Every login has a
//! deadline; at the end each one is completed, told an outcome, lost
//! (silent past its deadline) or duplicated (two outcomes, two tokens).
//!
//! - [`schedule`]: the fault schedule, its runs, the fault window.
//! - [`login`]: one login from create to redeem, and its retries.
//! - [`phone`]: the phone's scan and confirm.
//! - [`browser`]: the browser's push, reconnecting and resuming.
//! - [`record`]: what a login did and the verdict on it.
//! - [`summary`]: counts, latency inside and outside the window,
//!   recovery, the scenario's line.

pub mod browser;
pub mod login;
pub mod phone;
pub mod record;
pub mod schedule;
pub mod summary;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context};
use clap::Args;
use qrlogin_client::api::Client;
use tokio::time::Instant;

use crate::config::EdgeList;
use browser::Kind;
use record::LoginRecord;
use schedule::{Fault, Window};

/// The driver's clock: seconds since the run started.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    t0: Instant,
}

impl Clock {
    pub fn start() -> Self {
        Self { t0: Instant::now() }
    }

    pub fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    pub fn instant(&self, at: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(at.max(0.0))
    }

    pub async fn sleep_until(&self, at: f64) {
        tokio::time::sleep_until(self.instant(at)).await;
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

fn edges(text: &str) -> Result<EdgeList, String> {
    crate::config::parse_edge_list(text)
}

fn one_addr(text: &str) -> Result<SocketAddr, String> {
    match edges(text)?.0.as_slice() {
        [one] => Ok(*one),
        _ => Err(format!("{text:?}: one address")),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// The scenario's name, for the line and the JSON.
    #[arg(long, default_value = "chaos")]
    pub scenario: String,
    /// Logins started per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// How long logins are started.
    #[arg(long, value_parser = duration, default_value = "60s")]
    pub duration: Duration,
    /// Transports, round-robin over the logins: sse, ws, stomp, grpc,
    /// long-poll.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sse,ws,stomp,grpc,long-poll"
    )]
    pub transports: Vec<String>,
    /// Where browsers create, watch and redeem (the balancer).
    #[arg(long, value_parser = one_addr)]
    pub browser_url: SocketAddr,
    /// Where gRPC watches go (the balancer's gRPC port).
    #[arg(long, value_parser = one_addr)]
    pub grpc_url: Option<SocketAddr>,
    /// Where phones scan and confirm: edges (one other than the browser's
    /// is chosen) or the balancer.
    #[arg(long, value_parser = edges)]
    pub phone_url: EdgeList,
    /// A phone user's JWT.
    #[arg(long, env = "QRLOGIN_LOADGEN_USER_TOKEN", hide_env_values = true)]
    pub user_token: String,
    /// Keep starting logins past --duration until every fault command has
    /// ended and this long after (at most 300 s more), so that a slow
    /// repair or a long rolling restart meets logins to its end.
    #[arg(long, value_parser = duration)]
    pub after_faults: Option<Duration>,
    /// A login not done this long after its start is lost (unless it was
    /// told an outcome).
    #[arg(long, value_parser = duration, default_value = "30s")]
    pub login_deadline: Duration,
    /// `AT_SECONDS=COMMAND`, run with `sh -c` at that time (repeatable).
    #[arg(long = "fault", value_parser = schedule::parse_fault)]
    pub faults: Vec<Fault>,
    /// `START..END` seconds: the fault window, instead of the first
    /// fault's start to the last one's end.
    #[arg(long, value_parser = schedule::parse_window)]
    pub window: Option<Window>,
    /// The confirm→event p99 taken as normal for recovery (default: this
    /// run's p99 outside the fault window).
    #[arg(long)]
    pub normal_p99_ms: Option<f64>,
    /// Also write the figures and every login's record here.
    #[arg(long)]
    pub json_out: Option<std::path::PathBuf>,
}

/// What every login shares.
pub struct Ctx {
    pub clock: Clock,
    /// The browser's calls (create, short poll, redeem) through the balancer.
    pub browser: Client,
    pub browser_addr: SocketAddr,
    pub grpc_addr: Option<SocketAddr>,
    pub phones: Vec<phone::Phone>,
    pub user_token: String,
    pub deadline: Duration,
}

/// Runs the scenario; true when no login was lost or duplicated.
pub async fn run(a: ChaosArgs) -> anyhow::Result<bool> {
    let kinds: Vec<Kind> = a
        .transports
        .iter()
        .map(|t| Kind::parse(t.trim()).with_context(|| format!("--transports: unknown {t:?}")))
        .collect::<anyhow::Result<_>>()?;
    if kinds.is_empty() {
        bail!("--transports: at least one");
    }
    if kinds.contains(&Kind::Stream(qrlogin_client::watch::Transport::Grpc)) && a.grpc_url.is_none()
    {
        bail!("--transports grpc needs --grpc-url");
    }
    if !(a.rate.is_finite() && a.rate > 0.0 && a.rate <= 10_000.0) {
        bail!("--rate: above 0, at most 10000");
    }
    let count = (a.rate * a.duration.as_secs_f64()).round() as usize;
    if count == 0 {
        bail!("--rate × --duration starts no login");
    }
    let until = Until {
        duration: a.duration.as_secs_f64(),
        after_faults: a.after_faults.map(|d| d.as_secs_f64()),
        faults: a.faults.len(),
    };
    if a.login_deadline.is_zero() {
        bail!("--login-deadline: above zero");
    }
    let clock = Clock::start();
    let ctx = Arc::new(Ctx {
        clock,
        browser: Client::new(a.browser_url, None, 256),
        browser_addr: a.browser_url,
        grpc_addr: a.grpc_url,
        phones: a
            .phone_url
            .0
            .iter()
            .map(|addr| phone::Phone::new(Client::new(*addr, None, 256)))
            .collect(),
        user_token: a.user_token.clone(),
        deadline: a.login_deadline,
    });
    eprintln!(
        "chaos: {}: {count} logins (more while faults run, with --after-faults) at {}/s over {}, deadline {:?}, {} fault(s)",
        a.scenario,
        a.rate,
        kinds
            .iter()
            .map(|k| k.label())
            .collect::<Vec<_>>()
            .join(","),
        a.login_deadline,
        a.faults.len()
    );
    let runs = schedule::Runs::default();
    let fault_tasks: Vec<_> = a
        .faults
        .iter()
        .enumerate()
        .map(|(i, f)| tokio::spawn(schedule::run_fault(clock, i, f.clone(), runs.clone())))
        .collect();

    let records: Arc<Mutex<Vec<LoginRecord>>> = Arc::default();
    let mut logins = tokio::task::JoinSet::new();
    let progress = tokio::spawn(progress(clock, records.clone()));
    for i in 0.. {
        let at = i as f64 / a.rate;
        if !until.starts(at, &runs.lock().unwrap_or_else(|p| p.into_inner())) {
            break;
        }
        clock.sleep_until(at).await;
        let (ctx, records) = (ctx.clone(), records.clone());
        let kind = kinds[i % kinds.len()];
        logins.spawn(async move {
            let r = login::login(ctx.clone(), i, kind, ctx.clock.now()).await;
            records.lock().unwrap_or_else(|p| p.into_inner()).push(r);
        });
    }
    while let Some(joined) = logins.join_next().await {
        joined.context("a login task failed")?;
    }
    progress.abort();
    let grace = Instant::now() + schedule::FAULT_GRACE;
    for mut task in fault_tasks {
        if tokio::time::timeout_at(grace, &mut task).await.is_err() {
            eprintln!("chaos: a fault command is still running; its end is not recorded");
            task.abort();
        }
    }
    let now = clock.now();
    let mut runs = runs.lock().unwrap_or_else(|p| p.into_inner()).clone();
    runs.sort_by(|x, y| x.started.total_cmp(&y.started));
    let window = schedule::window(&runs, a.window, now);
    let mut records = std::mem::take(&mut *records.lock().unwrap_or_else(|p| p.into_inner()));
    let s = summary::Summary::new(&a.scenario, &mut records, &runs, window, a.normal_p99_ms);
    println!("{}", s.line());
    for (end, n) in &s.ends {
        println!("  {n} × {end}");
    }
    if let Some(path) = &a.json_out {
        let json = serde_json::json!({
            "scenario": a.scenario,
            "rate": a.rate,
            "duration_s": a.duration.as_secs_f64(),
            "login_deadline_s": a.login_deadline.as_secs_f64(),
            "transports": kinds.iter().map(|k| k.label()).collect::<Vec<_>>(),
            "line": s.line(),
            "passed": s.passed(),
            "summary": s,
            "faults": runs,
            "wall_s": now,
            "logins": records,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(s.passed())
}

/// When logins stop being started.
struct Until {
    duration: f64,
    after_faults: Option<f64>,
    faults: usize,
}

/// The most --after-faults adds to --duration.
const AFTER_FAULTS_MOST: f64 = 300.0;

impl Until {
    /// Whether a login is started at `at`, given the fault runs so far.
    fn starts(&self, at: f64, runs: &[schedule::FaultRun]) -> bool {
        if at < self.duration {
            return true;
        }
        let Some(tail) = self.after_faults else {
            return false;
        };
        let all_ended = runs.len() == self.faults && runs.iter().all(|r| r.ended.is_some());
        let last_end = runs.iter().filter_map(|r| r.ended).fold(0.0, f64::max);
        at < self.duration + AFTER_FAULTS_MOST && !(all_ended && at >= last_end + tail)
    }
}

/// Every 5 s on stderr: logins done so far.
async fn progress(clock: Clock, records: Arc<Mutex<Vec<LoginRecord>>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tick.tick().await;
        let (done, completed) = {
            let r = records.lock().unwrap_or_else(|p| p.into_inner());
            let completed = r
                .iter()
                .filter(|r| r.verdict() == record::Verdict::Completed)
                .count();
            (r.len(), completed)
        };
        eprintln!(
            "chaos: +{:.1}s {done} logins done, {completed} completed",
            clock.now()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schedule::FaultRun;

    #[test]
    fn logins_go_on_while_faults_run_with_after_faults() {
        let run = |started: f64, ended: Option<f64>| FaultRun {
            at: started,
            command: "x".into(),
            started,
            ended,
            status: Some(0),
        };
        let plain = Until {
            duration: 10.0,
            after_faults: None,
            faults: 1,
        };
        assert!(plain.starts(9.9, &[]));
        assert!(!plain.starts(10.0, &[run(5.0, None)]));
        let until = Until {
            after_faults: Some(2.0),
            ..plain
        };
        // A fault still running, or not started yet: go on.
        assert!(until.starts(12.0, &[run(5.0, None)]));
        assert!(until.starts(12.0, &[]));
        // Ended at 20 s: two seconds more.
        assert!(until.starts(21.9, &[run(5.0, Some(20.0))]));
        assert!(!until.starts(22.0, &[run(5.0, Some(20.0))]));
        // Ended early: the duration rules.
        assert!(!until.starts(10.0, &[run(5.0, Some(6.0))]));
        // Never past the most.
        assert!(!until.starts(310.0, &[run(5.0, None)]));
    }
}
