//! `run`: starts the workers, reads memory before and with every client
//! held, publishes one event per session at each rate, gathers the
//! latencies and writes one row per rate. Every wait has a limit; workers
//! are killed when the coordinator returns (`kill_on_drop`).

use std::{
    collections::BTreeMap,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command as Process},
    task::JoinSet,
};

use crate::{
    config::RunArgs,
    proto::{Collected, Command, ConnectPlan, Connected, Progress, RoundStarted},
    publish::Publisher,
    stats,
};

struct Worker {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    fn start(exe: &std::path::Path) -> anyhow::Result<Self> {
        let mut child = Process::new(exe)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a worker")?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        Ok(Self {
            _child: child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    async fn send(&mut self, cmd: &Command) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(cmd)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn answer<T: DeserializeOwned>(&mut self, limit: Duration) -> anyhow::Result<T> {
        let line = tokio::time::timeout(limit, self.lines.next_line())
            .await
            .context("a worker did not answer in time")??
            .context("a worker ended")?;
        Ok(serde_json::from_str(&line)?)
    }
}

/// Sends `cmd` to every worker, then reads every answer.
async fn ask_all<T: DeserializeOwned>(
    workers: &mut [Worker],
    cmd: &Command,
    limit: Duration,
) -> anyhow::Result<Vec<T>> {
    for w in workers.iter_mut() {
        w.send(cmd).await?;
    }
    let mut out = Vec::new();
    for w in workers.iter_mut() {
        out.push(w.answer(limit).await?);
    }
    Ok(out)
}

fn merge(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

fn per(x: f64, n: usize) -> Value {
    if n == 0 {
        Value::Null
    } else {
        json!(((x / n as f64) * 10.0).round() / 10.0)
    }
}

/// Setup bytes both ways per client plus one event's bytes.
fn bytes_per_login(setup: u64, held: usize, rx: u64, delivered: usize) -> Value {
    if held == 0 || delivered == 0 {
        return Value::Null;
    }
    let v = setup as f64 / held as f64 + rx as f64 / delivered as f64;
    json!((v * 10.0).round() / 10.0)
}

fn rss_of(named: &[(String, u32)]) -> BTreeMap<String, Option<u64>> {
    named
        .iter()
        .map(|(name, pid)| (name.clone(), stats::rss_kib(*pid)))
        .collect()
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    args.validate()?;
    let exe = std::env::current_exe().context("cannot find this program to start workers")?;
    let (_, baseline_kib) = stats::tree_rss(&args.measure_tree);
    let (baseline_procs, _) = stats::tree_rss(&args.measure_tree);
    let load_start = stats::load_average();

    let mut workers = Vec::new();
    for _ in 0..args.workers {
        workers.push(Worker::start(&exe)?);
    }
    let per_worker = args.waiting.div_ceil(args.workers);
    let connect_limit = args.connect_timeout + Duration::from_secs(30);
    let started = Instant::now();
    for (w, worker) in workers.iter_mut().enumerate() {
        let first = w * per_worker;
        let count = per_worker.min(args.waiting.saturating_sub(first));
        worker
            .send(&Command::Connect(ConnectPlan {
                target: args.target,
                src: std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                    127,
                    0,
                    0,
                    args.src_first + w as u8,
                )),
                path_prefix: args.path_prefix.clone(),
                channel_prefix: args.channel_prefix.clone(),
                first,
                count,
                concurrency: args.connect_concurrency,
                timeout_ms: args.connect_timeout.as_millis() as u64,
            }))
            .await?;
    }
    let mut connected = Vec::new();
    for w in workers.iter_mut() {
        connected.push(w.answer::<Connected>(connect_limit).await?);
    }
    let setup_secs = started.elapsed().as_secs_f64();
    let held: usize = connected.iter().map(|c| c.held).sum();
    let setup_rx: u64 = connected.iter().map(|c| c.rx_bytes).sum();
    let setup_tx: u64 = connected.iter().map(|c| c.tx_bytes).sum();
    let mut setup_errors = BTreeMap::new();
    for c in connected {
        merge(&mut setup_errors, c.errors);
    }
    eprintln!(
        "peer-sse: {held} of {} held through {} in {setup_secs:.1} s",
        args.waiting, args.target
    );

    tokio::time::sleep(args.settle).await;
    let (idle_procs, idle_kib) = stats::tree_rss(&args.measure_tree);
    let per_conn_kib = (held > 0).then(|| (idle_kib as f64 - baseline_kib as f64) / held as f64);

    let publisher = Arc::new(Publisher::new(args.publish, args.publish_connections));
    let mut rows = Vec::new();
    for (k, &rate) in args.rates.iter().enumerate() {
        let round = k as u32 + 1;
        let started: Vec<RoundStarted> = ask_all(
            &mut workers,
            &Command::Round { round },
            Duration::from_secs(10),
        )
        .await?;
        let open_at_start: usize = started.iter().map(|s| s.open).sum();
        for s in started {
            // Streams that ended between the connect phase and this round.
            for (k, v) in s.errors {
                *setup_errors
                    .entry(format!("before round {round}: {k}"))
                    .or_default() += v;
            }
        }
        let mut errors = setup_errors.clone();
        eprintln!(
            "peer-sse: round {round}: {} publishes at {rate}/s",
            args.waiting
        );
        let mut tasks = JoinSet::new();
        let start = tokio::time::Instant::now();
        for i in 0..args.waiting {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / f64::from(rate)))
                .await;
            let publisher = publisher.clone();
            let channel = format!("{}{i}", args.channel_prefix);
            tasks.spawn(async move { publisher.publish(&channel, round).await });
        }
        let mut accepted = 0usize;
        let (mut req_bytes, mut resp_bytes) = (0usize, 0usize);
        let mut answer_ms = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(p)) => {
                    accepted += 1;
                    req_bytes += p.request_bytes;
                    resp_bytes += p.response_bytes;
                    answer_ms.push(p.answer_us as f64 / 1000.0);
                }
                Ok(Err(e)) => *errors.entry(e).or_default() += 1,
                Err(e) => *errors.entry(format!("publish task: {e}")).or_default() += 1,
            }
        }
        let publish_secs = start.elapsed().as_secs_f64();
        let deadline = Instant::now() + args.deliver_timeout;
        loop {
            let progress: Vec<Progress> =
                ask_all(&mut workers, &Command::Progress, Duration::from_secs(10)).await?;
            let delivered: usize = progress.iter().map(|p| p.delivered).sum();
            if delivered >= accepted || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let collected: Vec<Collected> =
            ask_all(&mut workers, &Command::Collect, Duration::from_secs(30)).await?;
        let mut samples = Vec::new();
        let (mut rx, mut open) = (0u64, 0usize);
        for c in collected {
            samples.extend(c.samples_us.iter().map(|us| *us as f64 / 1000.0));
            rx += c.rx_bytes;
            open += c.open;
            merge(&mut errors, c.errors);
        }
        let delivered = samples.len();
        if accepted > delivered {
            *errors
                .entry("not delivered within the deadline".into())
                .or_default() += (accepted - delivered) as u64;
        }
        let (procs, _) = stats::tree_rss(&args.measure_tree);
        let latency = stats::summary(&samples);
        eprintln!(
            "peer-sse: round {round}: {delivered}/{} delivered, p50 {:?} p99 {:?} ms",
            args.waiting, latency.p50, latency.p99
        );
        rows.push(json!({
            "system": args.system,
            "variant": args.variant,
            "transport": args.transport,
            "waiting": open_at_start,
            "held_after_setup": held,
            "rate": rate,
            "achieved_rate": ((args.waiting as f64 / publish_secs) * 10.0).round() / 10.0,
            "latency_ms": latency,
            "latency_histogram": stats::histogram(&samples),
            "delivered": delivered,
            "expected": args.waiting,
            "publishes_accepted": accepted,
            "publish_answer_ms": stats::summary(&answer_ms),
            "bytes_per_event": per(rx as f64, delivered),
            "bytes_per_login": bytes_per_login(setup_rx + setup_tx, held, rx, delivered),
            "bytes": {
                "client_rx_per_event": per(rx as f64, delivered),
                "publish_request_per_event": per(req_bytes as f64, accepted),
                "publish_response_per_event": per(resp_bytes as f64, accepted),
                "setup_rx_per_conn": per(setup_rx as f64, held),
                "setup_tx_per_conn": per(setup_tx as f64, held),
            },
            "http_requests_per_wait": 1,
            "memory_per_conn_kib": per_conn_kib.map(|x| (x * 100.0).round() / 100.0),
            "memory_kib": {
                "baseline_total": baseline_kib,
                "idle_with_waiting_total": idle_kib,
                "baseline": baseline_procs,
                "idle_with_waiting": idle_procs,
            },
            "setup_rate_per_s": ((held as f64 / setup_secs) * 10.0).round() / 10.0,
            "setup_secs": (setup_secs * 100.0).round() / 100.0,
            "streams_open_after": open,
            "processes": procs,
            "other_processes": rss_of(&args.measure),
            "errors": errors,
            "load_average": {"start": load_start, "end": stats::load_average()},
            "date": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }));
    }
    std::fs::write(&args.json_out, serde_json::to_string_pretty(&rows)? + "\n")
        .with_context(|| format!("cannot write {}", args.json_out.display()))?;
    Ok(())
}
