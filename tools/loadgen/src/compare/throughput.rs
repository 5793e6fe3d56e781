//! Whole logins per second: at each rate of a rising list, for a fixed
//! step, start logins at that rate — create through a balancer, watch over
//! SSE, scan and confirm on the edge that does not hold the watch, wait for
//! CONFIRMED, redeem — and time each from the create to the redeem's answer.
//! A step is held when every login completed and p99 stayed within the
//! limit; the run stops at the first step that is not held. The CPU every
//! measured process used in each step says which one ran out, and the
//! completion time split into its consecutive stages ([`STAGES`]) says
//! which wait grew.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use clap::Args;
use qrlogin_client::{
    api::{Client, LoginState},
    watch::{AnyWatch, Transport, WatchOptions},
};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{probe, Phones};
use crate::config::{EdgeList, Measured};

/// One login may take this long before it counts as failed.
const LOGIN_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Args)]
pub struct ThroughputArgs {
    /// HTTP balancers the browsers use.
    #[arg(long, value_parser = super::edges)]
    pub balancers: EdgeList,
    #[arg(long, value_parser = super::edges)]
    pub phone_edges: EdgeList,
    #[arg(long, env = "QRLOGIN_LOADGEN_USER_TOKEN", hide_env_values = true)]
    pub user_token: String,
    /// Processes whose CPU is read each step (`auth-1=PID`, repeatable).
    #[arg(long = "pid", value_parser = super::measured)]
    pub pids: Vec<Measured>,
    /// Rates to try, logins per second, ascending.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "50,100,200,300,400,500,600,800,1000"
    )]
    pub rates: Vec<f64>,
    #[arg(long, value_parser = super::duration, default_value = "10s")]
    pub step: Duration,
    /// p99 login completion above this ends the run.
    #[arg(long, default_value_t = 100.0)]
    pub limit_ms: f64,
    #[arg(long, default_value = "127.0.0.2")]
    pub src: IpAddr,
    /// A label for the row (`auth replicas: 1`).
    #[arg(long, default_value_t = 1)]
    pub auth_replicas: u32,
    #[arg(long)]
    pub out: std::path::PathBuf,
}

/// The consecutive stages of one login; their durations add up to its
/// completion time.
pub const STAGES: [&str; 7] = [
    // The create answer (auth: one compare-and-swap create).
    "create",
    // The SSE watch opened and its first snapshot (PENDING) read.
    "watch",
    // The scan answered (auth: one compare-and-swap).
    "scan",
    // From the scan's answer to SCANNED on the watch.
    "scanned_push",
    // The confirm answered (auth: one compare-and-swap).
    "confirm",
    // From the confirm's answer to CONFIRMED on the watch.
    "confirmed_push",
    // The redeem answered (auth: one compare-and-swap).
    "redeem",
];

struct Tally {
    completions_ms: Vec<f64>,
    /// Per stage of [`STAGES`], the milliseconds of each completed login.
    stages_ms: [Vec<f64>; STAGES.len()],
    errors: std::collections::BTreeMap<String, u64>,
}

/// One whole login; the instant each stage of [`STAGES`] ended.
async fn login(
    balancer: &Client,
    phones: &Phones,
    src: IpAddr,
    token: &str,
    i: usize,
) -> anyhow::Result<[Instant; STAGES.len()]> {
    let created = balancer.create().await?;
    let created_at = Instant::now();
    let (id, secret) = (created.id(), &created.browser_secret);
    let options = WatchOptions {
        src: Some(src),
        ..WatchOptions::default()
    };
    let mut watch = AnyWatch::open(Transport::Sse, balancer.addr(), id, secret, &options).await?;
    let pending = watch.until(LoginState::Pending).await?;
    let watching = Instant::now();
    let phone = phones.other_than(pending.node.as_deref(), i);
    // The phone reads the QR code on screen.
    let payload = pending
        .qr_payload
        .as_deref()
        .unwrap_or(created.qr_payload());
    phone.scan(id, token, payload).await?;
    let scan_answered = Instant::now();
    // The user picks the number the browser shows.
    let scanned = watch.until(LoginState::Scanned).await?;
    let scanned_at = Instant::now();
    let code = scanned.match_code.unwrap_or_default();
    phone.confirm(id, token, code, || {}).await?;
    let confirm_answered = Instant::now();
    watch.until(LoginState::Confirmed).await?;
    let confirmed_at = Instant::now();
    drop(watch);
    balancer.redeem(id, secret).await?;
    Ok([
        created_at,
        watching,
        scan_answered,
        scanned_at,
        confirm_answered,
        confirmed_at,
        Instant::now(),
    ])
}

/// One step at `rate`: its row.
async fn step(
    a: &ThroughputArgs,
    phones: &Arc<Phones>,
    balancers: &Arc<Vec<Client>>,
    rate: f64,
) -> Value {
    let tally = Arc::new(Mutex::new(Tally {
        completions_ms: Vec::new(),
        stages_ms: Default::default(),
        errors: Default::default(),
    }));
    let cpu_before: Vec<Option<f64>> = a.pids.iter().map(|m| probe::cpu_ms(m.pid)).collect();
    let started = Instant::now();
    let count = (rate * a.step.as_secs_f64()).round() as usize;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        ticker.tick().await;
        let (phones, balancers, tally) = (phones.clone(), balancers.clone(), tally.clone());
        let (src, token) = (a.src, a.user_token.clone());
        tasks.spawn(async move {
            let t0 = Instant::now();
            let b = &balancers[i % balancers.len()];
            let r = tokio::time::timeout(LOGIN_LIMIT, login(b, &phones, src, &token, i)).await;
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            match r {
                Ok(Ok(ends)) => {
                    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                    let mut start = t0;
                    for (stage, end) in ends.iter().enumerate() {
                        t.stages_ms[stage].push(ms(end.saturating_duration_since(start)));
                        start = *end;
                    }
                    t.completions_ms
                        .push(ms(start.saturating_duration_since(t0)));
                }
                Ok(Err(e)) => {
                    let text: String = e.to_string().chars().take(120).collect();
                    *t.errors.entry(text).or_default() += 1;
                }
                Err(_) => *t.errors.entry("login over 10 s".into()).or_default() += 1,
            }
        });
    }
    let sent_secs = started.elapsed().as_secs_f64();
    while tasks.join_next().await.is_some() {}
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    let cpu: Vec<Value> = a
        .pids
        .iter()
        .zip(cpu_before)
        .map(|(m, before)| {
            let used = probe::cpu_ms(m.pid).zip(before).map(|(x, y)| x - y);
            json!({ "process": m.label, "cpu_percent": used.map(|u| u / wall_ms * 100.0) })
        })
        .collect();
    let t = tally.lock().unwrap_or_else(|p| p.into_inner());
    let mut done = t.completions_ms.clone();
    done.sort_by(f64::total_cmp);
    let p99 = probe::percentile(&done, 99.0);
    let stages: serde_json::Map<String, Value> = STAGES
        .iter()
        .zip(&t.stages_ms)
        .map(|(name, ms)| {
            let mut ms = ms.clone();
            ms.sort_by(f64::total_cmp);
            (name.to_string(), probe::summary(&ms))
        })
        .collect();
    let held = t.errors.is_empty() && done.len() == count && p99.is_some_and(|p| p <= a.limit_ms);
    json!({
        "rate": rate,
        "logins": count,
        "completed": done.len(),
        "achieved_rate": count as f64 / sent_secs.max(1e-9),
        "completion_ms": probe::summary(&done),
        "stages_ms": stages,
        "held": held,
        "cpu": cpu,
        "errors": t.errors,
        "load_average": probe::load_average(),
    })
}

/// `throughput`: steps until one is not held; writes the row.
pub async fn run(mut a: ThroughputArgs) -> anyhow::Result<()> {
    a.pids.push(Measured {
        label: "loadgen".into(),
        pid: std::process::id(),
    });
    let phones = Arc::new(Phones::discover(&a.phone_edges.0, 256).await?);
    let balancers: Arc<Vec<Client>> = Arc::new(
        a.balancers
            .0
            .iter()
            .map(|b: &SocketAddr| Client::new(*b, Some(a.src), 256))
            .collect(),
    );
    let mut steps = Vec::new();
    let mut highest = None;
    for &rate in &a.rates {
        let row = step(&a, &phones, &balancers, rate).await;
        eprintln!(
            "throughput ({} auth): {rate}/s: held {}, p99 {} ms, cpu {}",
            a.auth_replicas, row["held"], row["completion_ms"]["p99"], row["cpu"]
        );
        let held = row["held"].as_bool() == Some(true);
        steps.push(row);
        if !held {
            break;
        }
        highest = Some(rate);
    }
    // The busiest process in the first step not held (or the last step).
    let busiest = steps.last().and_then(|s| {
        s["cpu"]
            .as_array()?
            .iter()
            .max_by(|x, y| {
                let f = |v: &Value| v["cpu_percent"].as_f64().unwrap_or(0.0);
                f(x).total_cmp(&f(y))
            })
            .cloned()
    });
    let row = json!({
        "system": "qrlogin",
        "transport": "sse",
        "variant": format!("throughput, {} auth", a.auth_replicas),
        "kind": "throughput",
        "auth_replicas": a.auth_replicas,
        "limit_p99_ms": a.limit_ms,
        "step_secs": a.step.as_secs_f64(),
        "highest_rate_held": highest,
        "busiest_process_at_end": busiest,
        "steps": steps,
    });
    std::fs::write(&a.out, serde_json::to_vec_pretty(&row)?)
        .with_context(|| format!("write {}", a.out.display()))?;
    Ok(())
}
