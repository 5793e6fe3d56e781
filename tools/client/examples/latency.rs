//! Confirm→event latency per transport through any address: an edge, or a
//! load balancer in front of edges (which is how users run it).
//!
//! ```sh
//! cargo run --release -p qrlogin-client --example latency -- \
//!     --watch=127.0.0.1:8080 --phone=127.0.0.1:8082 \
//!     --transports=sse,ws,longpoll --samples=200
//! ```
//!
//! For each sample: create a session and open a watch through `--watch`,
//! wait for its first snapshot, scan through `--phone`, wait for SCANNED,
//! then confirm through `--phone`; the latency runs from the moment the
//! confirm request is written to the moment the watch reads CONFIRMED.
//! Samples run one after another (an idle machine's figure, not a load
//! test). The phone token comes from `--token` or the development endpoint
//! `POST /v1/dev/token` of `--phone` (the local cluster has it).
//!
//! A long poll is given 50 ms to be held by the edge before the confirm (a
//! probe, not a test: nothing else tells a client its poll is held).

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Context};
use qrlogin_client::{
    api::{Client, LoginState},
    sse::SseWatch,
    watch::Push,
    ws::WsWatch,
};
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(30);

struct Args {
    watch: SocketAddr,
    phone: SocketAddr,
    transports: Vec<String>,
    samples: usize,
    token: Option<String>,
}

fn addr(text: &str) -> anyhow::Result<SocketAddr> {
    let bare = text.trim_start_matches("http://").trim_end_matches('/');
    bare.parse()
        .with_context(|| format!("{text:?} is not like 127.0.0.1:8080"))
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        watch: addr("127.0.0.1:8080")?,
        phone: addr("127.0.0.1:8082")?,
        transports: vec!["sse".into(), "ws".into(), "longpoll".into()],
        samples: 100,
        token: None,
    };
    for arg in std::env::args().skip(1) {
        let (name, value) = arg
            .split_once('=')
            .with_context(|| format!("{arg:?}: use --name=value"))?;
        match name {
            "--watch" => a.watch = addr(value)?,
            "--phone" => a.phone = addr(value)?,
            "--transports" => a.transports = value.split(',').map(str::to_owned).collect(),
            "--samples" => a.samples = value.parse().context("--samples")?,
            "--token" => a.token = Some(value.to_owned()),
            _ => {
                bail!("unknown option {name} (--watch, --phone, --transports, --samples, --token)")
            }
        }
    }
    if a.samples == 0 {
        bail!("--samples must be at least 1");
    }
    for t in &a.transports {
        if !["sse", "ws", "longpoll"].contains(&t.as_str()) {
            bail!("transport {t:?} is one of sse, ws, longpoll");
        }
    }
    Ok(a)
}

/// A watch of any kind, reduced to "the next snapshot".
enum Watch {
    Sse(SseWatch),
    Ws(WsWatch),
}

impl Watch {
    async fn next_state(&mut self, want: LoginState) -> anyhow::Result<Instant> {
        loop {
            let push = match self {
                Watch::Sse(w) => w.next().await?,
                Watch::Ws(w) => w.next().await?,
            };
            match push {
                Push::Snapshot(s) if s.state == want => return Ok(Instant::now()),
                Push::Snapshot(_) | Push::Retry(_) => continue,
                other => bail!("the watch ended before {want:?}: {other:?}"),
            }
        }
    }
}

async fn sample(
    args: &Args,
    transport: &str,
    watch: &Client,
    phone: &Client,
    token: &str,
) -> anyhow::Result<Duration> {
    let created = watch.create().await?;
    let (id, secret) = (created.id().to_owned(), created.browser_secret.clone());
    if transport == "longpoll" {
        let first = watch.get(&id, &secret).await?;
        phone.scan(&id, token).await?;
        let scanned = watch.long_poll(&id, &secret, first.version, WAIT).await?;
        if scanned.state != LoginState::Scanned {
            bail!("long poll answered {:?}", scanned.state);
        }
        let held = {
            let (id, secret, addr) = (id.clone(), secret.clone(), args.watch);
            tokio::spawn(async move {
                let r = Client::new(addr, None, 1)
                    .long_poll(&id, &secret, scanned.version, WAIT)
                    .await;
                (r, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent = std::sync::OnceLock::new();
        phone
            .confirm(&id, token, || {
                let _ = sent.set(Instant::now());
            })
            .await?;
        let (answer, at) = timeout(WAIT, held).await??;
        if answer?.state != LoginState::Confirmed {
            bail!("long poll did not answer CONFIRMED");
        }
        return Ok(at - *sent.get().context("confirm never sent")?);
    }
    let mut w = match transport {
        "sse" => Watch::Sse(SseWatch::open(args.watch, None, &id, &secret, None).await?),
        _ => Watch::Ws(WsWatch::open(args.watch, None, &id, &secret, None, None).await?),
    };
    timeout(WAIT, w.next_state(LoginState::Pending)).await??;
    phone.scan(&id, token).await?;
    timeout(WAIT, w.next_state(LoginState::Scanned)).await??;
    let sent = std::sync::OnceLock::new();
    let confirmed = async {
        phone
            .confirm(&id, token, || {
                let _ = sent.set(Instant::now());
            })
            .await
    };
    let (answer, at) = tokio::join!(
        confirmed,
        timeout(WAIT, w.next_state(LoginState::Confirmed))
    );
    answer?;
    let at = at??;
    Ok(at - *sent.get().context("confirm never sent")?)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let watch = Client::new(args.watch, None, 4);
    let phone = Client::new(args.phone, None, 4);
    let token = match &args.token {
        Some(t) => t.clone(),
        None => phone
            .dev_token("alice", "Alice")
            .await
            .context("no --token and no development token endpoint")?,
    };
    println!(
        "confirm→event latency, watch via {}, phone via {}, {} samples each",
        args.watch, args.phone, args.samples
    );
    println!(
        "{:<9} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "transport", "n", "median", "p90", "p99", "max"
    );
    for transport in &args.transports {
        let mut got = Vec::with_capacity(args.samples);
        for _ in 0..args.samples {
            got.push(sample(&args, transport, &watch, &phone, &token).await?);
        }
        got.sort();
        let at = |q: f64| ms(got[((got.len() as f64 * q).ceil() as usize).clamp(1, got.len()) - 1]);
        println!(
            "{:<9} {:>8} {:>6.2}ms {:>6.2}ms {:>6.2}ms {:>6.2}ms",
            transport,
            got.len(),
            at(0.5),
            at(0.9),
            at(0.99),
            ms(*got.last().unwrap_or(&Duration::ZERO))
        );
    }
    Ok(())
}
