//! Confirm→event latency per transport through any address: an edge, or a
//! load balancer in front of edges (which is how users run it).
//!
//! ```sh
//! cargo run --release -p qrlogin-client --example latency -- \
//!     --watch=127.0.0.1:8080 --grpc=127.0.0.1:50060 \
//!     --phone=127.0.0.1:8081,127.0.0.1:8082 \
//!     --transports=sse,ws,stomp,grpc,longpoll --samples=200
//! ```
//!
//! `--grpc`: where the gRPC watch goes (an edge's gRPC port, or a balancer
//! in front of them); sessions are still created through `--watch`.
//!
//! For each sample: create a session and open a watch through `--watch`,
//! wait for its first snapshot, scan through `--phone`, wait for SCANNED,
//! then confirm through `--phone`; the latency runs from the moment the
//! confirm request is written to the moment the watch reads CONFIRMED.
//! With several `--phone` edges, the confirm goes to one that does not hold
//! the watch (known from the first snapshot's `node`), so every SSE,
//! WebSocket, STOMP and gRPC sample crosses nodes; a long poll's holder is known only from
//! its answer, so its confirms rotate over the phone edges and the output
//! says how many crossed.
//! Samples run one after another (an idle machine's figure, not a load
//! test). The phone token comes from `--token` (one user for every sample:
//! auth's QRLOGIN_CONFIRM_LIMIT, 10 a minute, then applies) or, one user per
//! sample, from the development endpoint `POST /v1/dev/token` of `--phone`
//! (the local cluster has it).
//!
//! A long poll is given 50 ms to be held by the edge before the confirm (a
//! probe, not a test: nothing else tells a client its poll is held).

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Context};
use qrlogin_client::{
    api::{Client, LoginState, Snapshot},
    watch::{AnyWatch, Transport, WatchOptions},
};
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(30);

struct Args {
    watch: SocketAddr,
    grpc: Option<SocketAddr>,
    phone: Vec<SocketAddr>,
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
        grpc: None,
        phone: vec![addr("127.0.0.1:8082")?],
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
            "--grpc" => a.grpc = Some(addr(value)?),
            "--phone" => a.phone = value.split(',').map(addr).collect::<Result<_, _>>()?,
            "--transports" => a.transports = value.split(',').map(str::to_owned).collect(),
            "--samples" => a.samples = value.parse().context("--samples")?,
            "--token" => a.token = Some(value.to_owned()),
            _ => {
                bail!("unknown option {name} (--watch, --grpc, --phone, --transports, --samples, --token)")
            }
        }
    }
    if a.samples == 0 {
        bail!("--samples must be at least 1");
    }
    for t in &a.transports {
        if !["sse", "ws", "stomp", "grpc", "longpoll"].contains(&t.as_str()) {
            bail!("transport {t:?} is one of sse, ws, stomp, grpc, longpoll");
        }
        if t == "grpc" && a.grpc.is_none() {
            bail!("transport grpc needs --grpc=ADDR (an edge's gRPC port or a balancer's)");
        }
    }
    Ok(a)
}

/// When a snapshot in `want` arrived, and the snapshot (its `node` is the
/// edge that sent it).
async fn next_state(w: &mut AnyWatch, want: LoginState) -> anyhow::Result<(Instant, Snapshot)> {
    let s = w.until(want).await?;
    Ok((Instant::now(), s))
}

/// The phone edges, each with the node name it answers with.
struct Phones(Vec<(Client, String)>);

impl Phones {
    /// One that is not `node` when there is one, else the `i`-th.
    fn other_than(&self, node: Option<&str>, i: usize) -> &(Client, String) {
        self.0
            .iter()
            .find(|(_, n)| Some(n.as_str()) != node && node.is_some())
            .unwrap_or(&self.0[i % self.0.len()])
    }
}

/// One sample: the latency and whether the confirm crossed nodes.
async fn sample(
    args: &Args,
    transport: &str,
    watch: &Client,
    phones: &Phones,
    i: usize,
    token: &str,
) -> anyhow::Result<(Duration, bool)> {
    let created = watch.create().await?;
    let (id, secret) = (created.id().to_owned(), created.browser_secret.clone());
    let sent = std::sync::OnceLock::new();
    let on_send = || {
        let _ = sent.set(Instant::now());
    };
    if transport == "longpoll" {
        let first = watch.get(&id, &secret).await?;
        let (phone, phone_node) = phones.other_than(None, i);
        phone
            .scan(&id, token, first.qr_payload.as_deref().unwrap_or_default())
            .await?;
        let scanned = watch.long_poll(&id, &secret, &first, WAIT).await?;
        if scanned.state != LoginState::Scanned {
            bail!("long poll answered {:?}", scanned.state);
        }
        let code = scanned.match_code.unwrap_or_default();
        let held = {
            let (id, secret, addr) = (id.clone(), secret.clone(), args.watch);
            tokio::spawn(async move {
                let r = Client::new(addr, None, 1)
                    .long_poll(&id, &secret, &scanned, WAIT)
                    .await;
                (r, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        phone.confirm(&id, token, code, on_send).await?;
        let (answer, at) = timeout(WAIT, held).await??;
        let answer = answer?;
        if answer.state != LoginState::Confirmed {
            bail!("long poll did not answer CONFIRMED");
        }
        let cross = answer.node.as_deref() != Some(phone_node.as_str());
        return Ok((at - *sent.get().context("confirm never sent")?, cross));
    }
    let transport = Transport::parse(transport).context("unknown transport")?;
    // A gRPC watch opens a fresh connection per sample, as a client would
    // hold its own, so that a balancer picks an edge each time.
    let addr = match transport {
        Transport::Grpc => args.grpc.context("--grpc")?,
        _ => args.watch,
    };
    let mut w = AnyWatch::open(transport, addr, &id, &secret, &WatchOptions::default()).await?;
    let (_, pending) = timeout(WAIT, next_state(&mut w, LoginState::Pending)).await??;
    let (phone, phone_node) = phones.other_than(pending.node.as_deref(), i);
    // The phone reads the QR code on screen; the user picks the number shown.
    let payload = pending
        .qr_payload
        .unwrap_or_else(|| created.qr_payload().to_owned());
    phone.scan(&id, token, &payload).await?;
    let (_, scanned) = timeout(WAIT, next_state(&mut w, LoginState::Scanned)).await??;
    let code = scanned.match_code.unwrap_or_default();
    let (answer, at) = tokio::join!(
        phone.confirm(&id, token, code, on_send),
        timeout(WAIT, next_state(&mut w, LoginState::Confirmed))
    );
    answer?;
    let (at, confirmed) = at??;
    let cross = confirmed.node.as_deref() != Some(phone_node.as_str());
    Ok((at - *sent.get().context("confirm never sent")?, cross))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let watch = Client::new(args.watch, None, 4);
    let mut phones = Vec::new();
    for addr in &args.phone {
        let client = Client::new(*addr, None, 4);
        let node = client.create().await?.snapshot.node.unwrap_or_default();
        phones.push((client, node));
    }
    let phones = Phones(phones);
    println!(
        "confirm→event latency, watch via {}, phone via {:?}, {} samples each",
        args.watch, args.phone, args.samples
    );
    println!(
        "{:<9} {:>5} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "transport", "n", "median", "p90", "p99", "max", "cross"
    );
    for transport in &args.transports {
        let mut got = Vec::with_capacity(args.samples);
        let mut cross = 0;
        for i in 0..args.samples {
            // Auth limits confirms per phone user (QRLOGIN_CONFIRM_LIMIT, 10 a
            // minute by default): without --token every sample is a user of
            // its own, minted before the clock starts.
            let token = match &args.token {
                Some(t) => t.clone(),
                None => phones.0[0]
                    .0
                    .dev_token(&format!("latency-{transport}-{i}"), "Latency")
                    .await
                    .context("no --token and no development token endpoint")?,
            };
            let (latency, crossed) = sample(&args, transport, &watch, &phones, i, &token).await?;
            got.push(latency);
            cross += usize::from(crossed);
        }
        got.sort();
        let at = |q: f64| ms(got[((got.len() as f64 * q).ceil() as usize).clamp(1, got.len()) - 1]);
        println!(
            "{:<9} {:>5} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>6}",
            transport,
            got.len(),
            at(0.5),
            at(0.9),
            at(0.99),
            ms(*got.last().unwrap_or(&Duration::ZERO)),
            cross
        );
    }
    Ok(())
}
