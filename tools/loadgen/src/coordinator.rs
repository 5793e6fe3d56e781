//! `run`: starts the worker processes (this binary, re-executed), hands
//! each its plan, starts the confirm phase in all of them at once when all
//! are connected, gathers their results and prints the totals and checks.
//!
//! Every wait has a limit (the phase limits plus a margin), and workers are
//! killed when the coordinator returns, so a run always ends by itself.

use std::{process::Stdio, time::Duration};

use anyhow::Context as _;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
    time::Instant,
};

use crate::{
    config::RunSettings,
    report::{self, rss_kib, Check, Ready, WorkerMessage, WorkerResult},
};

/// Extra time over the phase limits for workers to report (the final
/// check of every browser happens after the confirm phase).
const REPORT_MARGIN: Duration = Duration::from_secs(60);

struct WorkerProc {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl WorkerProc {
    /// The next message, skipping lines that are not one.
    async fn next(&mut self) -> Option<WorkerMessage> {
        while let Ok(Some(line)) = self.lines.next_line().await {
            match serde_json::from_str(&line) {
                Ok(m) => return Some(m),
                Err(_) => tracing::warn!("worker said: {line}"),
            }
        }
        None
    }
}

fn memory(s: &RunSettings) -> Vec<(String, Option<u64>)> {
    s.measure
        .iter()
        .map(|m| (m.label.clone(), rss_kib(m.pid)))
        .collect()
}

/// CPU seconds of the measured processes and of the workers.
fn cpu(s: &RunSettings, workers: &[WorkerProc]) -> Vec<(String, Option<f64>)> {
    let mut out: Vec<_> = s
        .measure
        .iter()
        .map(|m| (m.label.clone(), report::cpu_secs(m.pid)))
        .collect();
    for (i, w) in workers.iter().enumerate() {
        out.push((
            format!("loadgen-{i}"),
            w.child.id().and_then(report::cpu_secs),
        ));
    }
    out
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub async fn run(s: RunSettings) -> anyhow::Result<bool> {
    let exe = std::env::current_exe().context("cannot find this program to start workers")?;
    let baseline = memory(&s);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..s.workers {
        let mut child = Command::new(&exe)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker")?;
        let mut stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let mut plan = serde_json::to_string(&s.plan(w))?;
        plan.push('\n');
        stdin.write_all(plan.as_bytes()).await?;
        workers.push(WorkerProc {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        });
    }
    eprintln!(
        "loadgen: {} workers, {} browsers ({}% WebSocket); connecting",
        s.workers, s.clients, s.ws_percent
    );

    let ready_deadline = started + s.connect_timeout + REPORT_MARGIN;
    let mut ready: Vec<Ready> = Vec::new();
    for w in &mut workers {
        match tokio::time::timeout_at(ready_deadline, w.next()).await {
            Ok(Some(WorkerMessage::Ready(r))) => ready.push(r),
            other => tracing::warn!("a worker did not get ready: {other:?}"),
        }
    }
    let connect_wall = started.elapsed().as_secs_f64();
    let connected: usize = ready.iter().map(|r| r.connected).sum();
    let created: usize = ready.iter().map(|r| r.created).sum();
    let at_ready = memory(&s);
    let workers_rss: u64 = ready.iter().map(|r| r.rss_kib).sum();
    eprintln!(
        "loadgen: {connected} of {} browsers watching after {connect_wall:.1} s; {}",
        s.clients,
        if s.idle_for.is_zero() {
            "confirming".to_owned()
        } else {
            format!("idle for {:?}, then confirming", s.idle_for)
        }
    );
    let mut cpu_idle: Vec<String> = Vec::new();
    if !s.idle_for.is_zero() {
        let before = cpu(&s, &workers);
        tokio::time::sleep(s.idle_for).await;
        let after = cpu(&s, &workers);
        let secs = s.idle_for.as_secs_f64();
        cpu_idle = before
            .iter()
            .zip(&after)
            .filter_map(|((label, a), (_, b))| {
                let used = (*b)? - (*a)?;
                Some(format!(
                    "{label} {used:.2} s ({:.2} % of a core)",
                    used / secs * 100.0
                ))
            })
            .collect();
        println!(
            "cpu while idle ({secs:.0} s, {connected} browsers waiting): {}",
            cpu_idle.join(", ")
        );
    }

    let mut fault = match &s.on_confirm {
        Some(cmd) => Some(
            Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .kill_on_drop(true)
                .spawn()
                .context("starting the --on-confirm command")?,
        ),
        None => None,
    };
    for w in &mut workers {
        if let Err(e) = w.stdin.write_all(b"go\n").await {
            tracing::warn!("a worker is gone before the confirm phase: {e}");
        }
    }
    let go = Instant::now();
    let cpu_at_go = cpu(&s, &workers);
    let result_deadline = go + s.confirm_timeout + REPORT_MARGIN;
    let mut results: Vec<WorkerResult> = Vec::new();
    for w in &mut workers {
        match tokio::time::timeout_at(result_deadline, w.next()).await {
            Ok(Some(WorkerMessage::Result(r))) => results.push(r),
            other => tracing::warn!("a worker gave no result: {other:?}"),
        }
    }
    let cpu_at_end = cpu(&s, &workers);
    let phase_secs = go.elapsed().as_secs_f64();
    let fault_ok = match fault.as_mut() {
        Some(child) => match tokio::time::timeout_at(result_deadline, child.wait()).await {
            Ok(Ok(status)) => Some(status.success()),
            _ => Some(false),
        },
        None => None,
    };
    for w in &mut workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w.child.wait()).await;
    }

    let mut total = report::merge(&results);
    let latency = report::latency(&mut total.latencies_us);
    let goal = if s.redeem { "REDEEMED" } else { "CONFIRMED" };
    println!(
        "browsers: {} ({} SSE, {} WebSocket) in {} worker processes",
        s.clients, total.sse, total.ws, s.workers
    );
    println!("connect: {created} created, {connected} watching; all connected after {connect_wall:.2} s (slowest worker {:.2} s)", total.connect_secs);
    let rate = if total.confirm_span_secs > 0.0 {
        total.confirms_ok as f64 / total.confirm_span_secs
    } else {
        0.0
    };
    println!(
        "confirm: {} accepted of {} sent in {:.2} s: {rate:.0} confirms/s (asked {:.0}/s)",
        total.confirms_ok, total.confirms_sent, total.confirm_span_secs, s.confirm_rate
    );
    println!(
        "delivery: {} of {} browsers got {goal} within {:.2} s of the first confirm; other final states {}; reconnects {}; retried requests {}",
        total.reached_goal, s.clients, total.delivery_secs, total.wrong_final, total.reconnects, total.retries
    );
    for (reason, n) in &total.reconnect_reasons {
        println!("reconnects: {n} after {reason}");
    }
    if let Some(l) = &latency {
        println!(
            "latency confirm sent -> CONFIRMED received ({} samples): median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            l.count, l.median_ms, l.p90_ms, l.p99_ms, l.max_ms
        );
    }
    let mut edge_growth = 0i64;
    let mut measured_total = 0u64;
    for ((label, before), (_, after)) in baseline.iter().zip(&at_ready) {
        if let (Some(b), Some(a)) = (before, after) {
            println!(
                "memory {label}: RSS {:.1} MiB before, {:.1} MiB with all browsers watching",
                mib(*b),
                mib(*a)
            );
            measured_total += a;
            if label.starts_with("edge") {
                edge_growth += *a as i64 - *b as i64;
            }
        }
    }
    let per_conn = if connected > 0 && edge_growth > 0 {
        Some(edge_growth as f64 * 1024.0 / connected as f64)
    } else {
        None
    };
    if let Some(bytes) = per_conn {
        println!(
            "memory edges: {:.0} bytes (RSS growth) per watching connection",
            bytes
        );
    }
    println!(
        "memory total: {:.1} MiB measured processes + {:.1} MiB loadgen workers",
        mib(measured_total),
        mib(workers_rss)
    );
    let cpu_used: Vec<String> = cpu_at_go
        .iter()
        .zip(&cpu_at_end)
        .filter_map(|((label, a), (_, b))| Some(format!("{label} {:.1} s", (*b)? - (*a)?)))
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "cpu during the confirm phase ({phase_secs:.1} s wall x {cores} cores = {:.1} core-s available): {}",
        cores as f64 * phase_secs,
        cpu_used.join(", ")
    );
    for sample in &total.samples {
        println!("sample problem: {sample}");
    }

    let mut checks = vec![
        Check::new(
            "every worker reported",
            results.len() == s.workers,
            format!("{} of {}", results.len(), s.workers),
        ),
        Check::new(
            "every session created",
            total.created == s.clients,
            format!("{} of {}", total.created, s.clients),
        ),
        Check::new(
            "every browser watching before the confirms",
            connected == s.clients,
            format!("{connected} of {}", s.clients),
        ),
        Check::new(
            "every scan and confirm accepted",
            total.confirms_ok == s.clients,
            format!("{} of {}", total.confirms_ok, s.clients),
        ),
        Check::new(
            &format!("every browser got {goal}"),
            total.reached_goal == s.clients,
            format!("{} of {}", total.reached_goal, s.clients),
        ),
        Check::new(
            "no browser ended in another state",
            total.wrong_final == 0 && total.failures == 0,
            format!(
                "{} other final states, {} failed browsers",
                total.wrong_final, total.failures
            ),
        ),
    ];
    if s.verify {
        checks.push(Check::new(
            "every browser holds its session's stored state",
            total.verified == s.clients,
            format!(
                "{} of {} match, {} differ",
                total.verified, s.clients, total.verify_mismatches
            ),
        ));
    }
    if let Some(ok) = fault_ok {
        checks.push(Check::new(
            "the --on-confirm command succeeded",
            ok,
            String::new(),
        ));
    }
    if s.expect_reconnects {
        checks.push(Check::new(
            "the fault made browsers reconnect",
            total.reconnects > 0,
            format!("{} reconnects", total.reconnects),
        ));
    }
    if let Some(path) = &s.json_out {
        let json = serde_json::json!({
            "clients": s.clients, "workers": s.workers, "ws_percent": s.ws_percent,
            "confirm_rate_asked": s.confirm_rate, "confirm_rate_achieved": rate,
            "connect_wall_secs": connect_wall, "connected": connected,
            "latency": latency, "edge_bytes_per_connection": per_conn,
            "cpu_confirm_phase": cpu_used, "cpu_idle": cpu_idle, "confirm_phase_secs": phase_secs,
            "memory_before_kib": baseline, "memory_ready_kib": at_ready, "workers_rss_kib": workers_rss,
            "totals": WorkerResult { latencies_us: Vec::new(), ..total },
            "checks": checks.iter().map(|c| serde_json::json!({"name": c.name, "ok": c.ok, "detail": c.detail})).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report::print_checks(&checks))
}
