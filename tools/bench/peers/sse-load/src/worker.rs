//! A worker process: reads commands from stdin, holds its clients, answers
//! on stdout. It ends when its stdin closes (the coordinator is gone).

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    sync::Semaphore,
};

use crate::{
    client::{self, Shared},
    proto::{Collected, Command, ConnectPlan, Connected, Progress, RoundStarted},
};

/// Attempts per client before it counts as failed, and the pause before a
/// retry (times the attempt number).
const CONNECT_ATTEMPTS: u32 = 5;
const RETRY_PAUSE: Duration = Duration::from_millis(100);

pub async fn run() -> anyhow::Result<()> {
    let shared = Arc::new(Shared::default());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    while let Some(line) = lines.next_line().await? {
        let answer = match serde_json::from_str::<Command>(&line)? {
            Command::Connect(plan) => serde_json::to_string(&connect(plan, &shared).await)?,
            Command::Round { round } => {
                let mut d = shared.round_data.lock().unwrap_or_else(|e| e.into_inner());
                d.samples_us.clear();
                shared.round.store(round, Ordering::Relaxed);
                shared.rx_bytes.store(0, Ordering::Relaxed);
                serde_json::to_string(&RoundStarted {
                    open: shared.open.load(Ordering::Relaxed),
                    errors: std::mem::take(&mut d.errors),
                })?
            }
            Command::Progress => {
                let d = shared.round_data.lock().unwrap_or_else(|e| e.into_inner());
                serde_json::to_string(&Progress {
                    delivered: d.samples_us.len(),
                })?
            }
            Command::Collect => {
                let mut d = shared.round_data.lock().unwrap_or_else(|e| e.into_inner());
                serde_json::to_string(&Collected {
                    samples_us: std::mem::take(&mut d.samples_us),
                    rx_bytes: shared.rx_bytes.load(Ordering::Relaxed),
                    open: shared.open.load(Ordering::Relaxed),
                    errors: std::mem::take(&mut d.errors),
                })?
            }
        };
        out.write_all(answer.as_bytes()).await?;
        out.write_all(b"\n").await?;
        out.flush().await?;
    }
    Ok(())
}

/// Opens every client of the plan, at most `concurrency` at a time; each
/// held client keeps running in its own task.
async fn connect(plan: ConnectPlan, shared: &Arc<Shared>) -> Connected {
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let held = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let finished = Arc::new(AtomicUsize::new(0));
    let timeout = Duration::from_millis(plan.timeout_ms);
    for i in plan.first..plan.first + plan.count {
        let permit = match permits.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => break,
        };
        let path = format!("{}{}{}", plan.path_prefix, plan.channel_prefix, i);
        let (shared, held, done, finished) =
            (shared.clone(), held.clone(), done.clone(), finished.clone());
        let (src, target, count) = (plan.src, plan.target, plan.count);
        tokio::spawn(async move {
            // A refused attempt (Pushpin answers 500/502 to some requests
            // of a connect burst) is counted and retried after a pause.
            let deadline = tokio::time::Instant::now() + timeout;
            let mut attempt = 1;
            let opened = loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match client::open(src, target, &path, &shared, left).await {
                    Ok(s) => break Ok(s),
                    Err(e) if attempt < CONNECT_ATTEMPTS && !left.is_zero() => {
                        shared.error(format!("connect attempt refused, retried: {e}"));
                        attempt += 1;
                        tokio::time::sleep(RETRY_PAUSE * attempt).await;
                    }
                    Err(e) => break Err(e),
                }
            };
            drop(permit);
            let stream = match opened {
                Ok(s) => {
                    held.fetch_add(1, Ordering::Relaxed);
                    Some(s)
                }
                Err(e) => {
                    shared.error(format!("connect: {e}"));
                    None
                }
            };
            if finished.fetch_add(1, Ordering::Relaxed) + 1 == count {
                done.notify_one();
            }
            if let Some(s) = stream {
                client::hold(s, &shared).await;
            }
        });
    }
    let _ = tokio::time::timeout(timeout + Duration::from_secs(5), async {
        while finished.load(Ordering::Relaxed) < plan.count {
            done.notified().await;
        }
    })
    .await;
    let held = held.load(Ordering::Relaxed);
    let errors = {
        let mut d = shared.round_data.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut d.errors)
    };
    Connected {
        held,
        failed: plan.count - held,
        secs: started.elapsed().as_secs_f64(),
        rx_bytes: shared.rx_bytes.load(Ordering::Relaxed),
        tx_bytes: shared.tx_bytes.load(Ordering::Relaxed),
        errors,
    }
}
