//! One worker process: its slice of browsers, in two phases.
//!
//! 1. Connect: create every login session (bounded in flight), start its
//!    watcher, wait until each watcher holds its first snapshot; report
//!    `ready`.
//! 2. After `go` on stdin: scan and confirm every session at the planned
//!    rate, wait until every browser has its event (or the phase limit),
//!    optionally check each browser against the stored state; report
//!    `result`. Then every task is stopped through one token.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::Semaphore,
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use qrlogin_client::api::{self, Client};

use crate::{
    config::Plan,
    phone,
    report::{rss_kib, Ready, WorkerMessage, WorkerResult},
    watch::{self, Browser},
};

/// How often the phase loops look at the counters.
const POLL: Duration = Duration::from_millis(20);
/// How long one browser's final check may take (reads retry on 503).
const VERIFY_LIMIT: Duration = Duration::from_secs(30);

/// What every task of the worker shares.
pub struct Ctx {
    pub plan: Plan,
    /// Clients (each a keep-alive pool) for creates, redeems and reads, one
    /// per watch edge.
    pub watch_clients: Vec<Client>,
    /// Clients for scans and confirms, one per phone edge.
    pub phone_clients: Vec<Client>,
    /// The one stop signal: ends watchers, retries and pipelines.
    pub stop: CancellationToken,
    pub counters: Counters,
}

#[derive(Default)]
pub struct Counters {
    /// Why watchers reconnected: a handful of distinct reasons.
    pub reconnect_reasons: Mutex<BTreeMap<String, u64>>,
    pub connected: AtomicUsize,
    pub done: AtomicUsize,
    pub reconnects: AtomicU64,
    pub retries: AtomicU64,
    pub confirm_ok: AtomicUsize,
    pub phone_failures: AtomicUsize,
    pub redeemed: AtomicUsize,
}

impl Counters {
    pub fn reconnect_reason(&self, reason: String) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        let mut reasons = self
            .reconnect_reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *reasons.entry(reason).or_default() += 1;
    }
}

fn emit(message: &WorkerMessage) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(message)?);
    Ok(())
}

/// The `worker` subcommand: plan on the first stdin line, `go` on the second.
pub async fn main() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let plan_line = lines
        .next_line()
        .await?
        .context("no plan on stdin (workers are started by `qrlogin-loadgen run`)")?;
    let plan: Plan = serde_json::from_str(&plan_line).context("bad plan")?;
    let mut worker = Worker::new(plan);
    let ready = worker.connect_phase().await;
    emit(&WorkerMessage::Ready(ready))?;
    let go = lines.next_line().await?;
    if go.as_deref() != Some("go") {
        worker.ctx.stop.cancel();
        anyhow::bail!("the coordinator ended the run before the confirm phase");
    }
    let result = worker.confirm_phase().await;
    emit(&WorkerMessage::Result(result))?;
    Ok(())
}

pub struct Worker {
    ctx: Arc<Ctx>,
    browsers: Vec<Arc<Browser>>,
    create_failures: usize,
    /// The first few create failures, for the report.
    create_samples: Vec<String>,
    connect_secs: f64,
}

impl Worker {
    pub fn new(plan: Plan) -> Self {
        let clients = |edges: &[std::net::SocketAddr], idle: usize| {
            edges
                .iter()
                .map(|&a| Client::new(a, plan.source_ip, idle))
                .collect()
        };
        let ctx = Ctx {
            watch_clients: clients(&plan.watch_edges, plan.connect_concurrency),
            phone_clients: clients(&plan.phone_edges, plan.phone_concurrency),
            stop: CancellationToken::new(),
            counters: Counters::default(),
            plan,
        };
        Self {
            ctx: Arc::new(ctx),
            browsers: Vec::new(),
            create_failures: 0,
            create_samples: Vec::new(),
            connect_secs: 0.0,
        }
    }

    /// Creates every session and starts its watcher.
    pub async fn connect_phase(&mut self) -> Ready {
        let ctx = self.ctx.clone();
        let start = Instant::now();
        let deadline = start + Duration::from_millis(ctx.plan.connect_timeout_ms);
        let slots = Arc::new(Semaphore::new(ctx.plan.connect_concurrency));
        let created: Arc<Mutex<Vec<Arc<Browser>>>> = Arc::default();
        let mut tasks = JoinSet::new();
        for i in 0..ctx.plan.clients {
            let Ok(Ok(permit)) =
                tokio::time::timeout_at(deadline, slots.clone().acquire_owned()).await
            else {
                break;
            };
            let (ctx, created) = (ctx.clone(), created.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let home = ctx.plan.home(i);
                let ws = ctx.plan.is_ws(i);
                let made = create(&ctx, home, deadline).await?;
                let b = Arc::new(Browser::new(i, made, ws, home));
                created
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(b.clone());
                tokio::spawn(watch::run(ctx, b));
                Ok::<_, String>(())
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.create_failures += 1;
                    if self.create_samples.len() < 3 {
                        tracing::warn!("create failed: {e}");
                        self.create_samples.push(e);
                    }
                }
                Err(e) => {
                    self.create_failures += 1;
                    tracing::warn!("create task failed: {e}");
                }
            }
        }
        let mut browsers = std::mem::take(&mut *created.lock().unwrap_or_else(|p| p.into_inner()));
        browsers.sort_by_key(|b| b.index);
        while ctx.counters.connected.load(Ordering::Relaxed) < browsers.len()
            && Instant::now() < deadline
        {
            tokio::time::sleep(POLL).await;
        }
        self.connect_secs = start.elapsed().as_secs_f64();
        self.browsers = browsers;
        Ready {
            index: ctx.plan.index,
            created: self.browsers.len(),
            connected: ctx.counters.connected.load(Ordering::Relaxed),
            connect_secs: self.connect_secs,
            rss_kib: rss_kib(std::process::id()).unwrap_or(0),
        }
    }

    /// Scans and confirms every session at the planned rate and waits for
    /// the browsers; then stops everything and reports.
    pub async fn confirm_phase(self) -> WorkerResult {
        let ctx = self.ctx.clone();
        let go = Instant::now();
        let deadline = go + Duration::from_millis(ctx.plan.confirm_timeout_ms);
        let period = Duration::from_secs_f64(1.0 / ctx.plan.confirm_rate);
        let slots = Arc::new(Semaphore::new(ctx.plan.phone_concurrency));
        let mut pipelines = JoinSet::new();
        for (k, b) in self.browsers.iter().enumerate() {
            let due = go + period.mul_f64(k as f64);
            if due >= deadline {
                break;
            }
            tokio::time::sleep_until(due).await;
            let Ok(Ok(permit)) =
                tokio::time::timeout_at(deadline, slots.clone().acquire_owned()).await
            else {
                break;
            };
            let (ctx, b) = (ctx.clone(), b.clone());
            pipelines.spawn(async move {
                let _permit = permit;
                phone::login(ctx, b).await;
            });
        }
        let total = self.browsers.len();
        while ctx.counters.done.load(Ordering::Relaxed) < total && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        if ctx.plan.redeem {
            // Redeems are spawned by watchers; give the last ones the same limit.
            while ctx.counters.redeemed.load(Ordering::Relaxed)
                + ctx.counters.phone_failures.load(Ordering::Relaxed)
                < ctx.counters.confirm_ok.load(Ordering::Relaxed)
                && Instant::now() < deadline
            {
                tokio::time::sleep(POLL).await;
            }
        }
        // A browser may see CONFIRMED before its phone has read the answer.
        while tokio::time::timeout_at(deadline, pipelines.join_next())
            .await
            .is_ok_and(|joined| joined.is_some())
        {}
        let mut result = self.tally(go);
        if ctx.plan.verify {
            self.verify_all(&mut result).await;
        }
        ctx.stop.cancel();
        pipelines.shutdown().await;
        result
    }

    fn tally(&self, go: Instant) -> WorkerResult {
        let ctx = &self.ctx;
        let goal = if ctx.plan.redeem {
            "REDEEMED"
        } else {
            "CONFIRMED"
        };
        let mut r = WorkerResult {
            index: ctx.plan.index,
            clients: ctx.plan.clients,
            created: self.browsers.len(),
            create_failures: self.create_failures,
            connected: ctx.counters.connected.load(Ordering::Relaxed),
            confirms_ok: ctx.counters.confirm_ok.load(Ordering::Relaxed),
            redeemed: ctx.counters.redeemed.load(Ordering::Relaxed),
            reconnects: ctx.counters.reconnects.load(Ordering::Relaxed),
            reconnect_reasons: ctx
                .counters
                .reconnect_reasons
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            retries: ctx.counters.retries.load(Ordering::Relaxed),
            connect_secs: self.connect_secs,
            rss_kib: rss_kib(std::process::id()).unwrap_or(0),
            samples: self.create_samples.clone(),
            ..Default::default()
        };
        let (mut first_sent, mut last_ok, mut last_done) = (None::<Instant>, None::<Instant>, go);
        for b in &self.browsers {
            if b.ws {
                r.ws += 1;
            } else {
                r.sse += 1;
            }
            if let Some(&sent) = b.confirm_sent.get() {
                r.confirms_sent += 1;
                first_sent = Some(first_sent.map_or(sent, |f| f.min(sent)));
                if let (Some(&got), None) = (b.confirmed_at.get(), b.confirm_retried.get()) {
                    let us = got.saturating_duration_since(sent).as_micros();
                    r.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            if let Some(&ok) = b.confirm_ok_at.get() {
                last_ok = Some(last_ok.map_or(ok, |l| l.max(ok)));
            }
            if let Some(&done) = b.done_at.get() {
                last_done = last_done.max(done);
            }
            match b.held() {
                Some(s) if s.state.as_str() == goal => r.reached_goal += 1,
                Some(s) if s.state.is_final() => r.wrong_final += 1,
                _ => {}
            }
            if let Some(f) = b.failure.get() {
                r.failures += 1;
                if r.samples.len() < 5 {
                    r.samples.push(format!("{}: {f}", b.id));
                }
            }
        }
        if let (Some(f), Some(l)) = (first_sent, last_ok) {
            r.confirm_span_secs = l.saturating_duration_since(f).as_secs_f64();
        }
        r.delivery_secs = last_done.saturating_duration_since(go).as_secs_f64();
        r
    }

    /// Compares every browser's last snapshot with the stored state.
    async fn verify_all(&self, r: &mut WorkerResult) {
        let ctx = &self.ctx;
        let slots = Arc::new(Semaphore::new(self.ctx.plan.connect_concurrency));
        let mut checks = JoinSet::new();
        for b in &self.browsers {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let (ctx, b) = (ctx.clone(), b.clone());
            checks.spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(VERIFY_LIMIT, phone::verify(ctx, b.clone())).await {
                    Ok(v) => (b, v),
                    Err(_) => (b, Err("no answer within the verify limit".to_owned())),
                }
            });
        }
        while let Some(Ok((b, outcome))) = checks.join_next().await {
            match outcome {
                Ok(()) => r.verified += 1,
                Err(e) => {
                    r.verify_mismatches += 1;
                    if r.samples.len() < 10 {
                        r.samples.push(format!("{}: {e}", b.id));
                    }
                }
            }
        }
    }
}

/// Creates a session on edge `home`, retrying what is retryable until
/// `deadline`.
async fn create(ctx: &Ctx, home: usize, deadline: Instant) -> Result<api::Created, String> {
    let clients = &ctx.watch_clients;
    let mut tries = 0usize;
    loop {
        let client = &clients[(home + tries) % clients.len()];
        let outcome = tokio::time::timeout_at(deadline, client.create()).await;
        match outcome {
            Err(_) => return Err("create: phase limit reached".into()),
            Ok(Ok(created)) => return Ok(created),
            Ok(Err(e)) if e.is_retryable() && Instant::now() < deadline => {
                ctx.counters.retries.fetch_add(1, Ordering::Relaxed);
                let wait = Duration::from_millis(50).saturating_mul(1 << tries.min(4) as u32);
                tokio::time::sleep(wait).await;
                tries += 1;
            }
            Ok(Err(e)) => return Err(format!("create: {e}")),
        }
    }
}
