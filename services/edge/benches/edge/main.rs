//! Hand-run benchmarks of the edge, printing figures:
//!
//! ```text
//! cargo bench -p qrlogin-edge --bench edge -- memory  [--n 10000] [--per-session 1] [--transport sse|ws|stomp|grpc]
//! cargo bench -p qrlogin-edge --bench edge -- latency [--logins 1000] [--idle 0] [--rate 500] [--transport sse|ws|stomp]
//! ```
//!
//! `--transport` defaults to SSE and WebSocket (memory; `--transport all`
//! adds STOMP and gRPC) or SSE (latency). A STOMP connection sends CONNECT
//! (no heart-beats) and SUBSCRIBE; a gRPC watch has its own connection, or
//! with `--grpc-streams K` shares one with K-1 others. With
//! `BENCH_KEEPALIVE_ONLY=1`, `memory` opens plain kept-alive connections
//! (one `GET /nope` each, a 404) instead of streams: the cost of an idle hyper
//! connection, for comparison.
//!
//! Heap profile of the edge in the memory benchmark (heaptrack from
//! Debian; the edge runs under it and is stopped with SIGTERM so the
//! profile is complete):
//!
//! ```text
//! BENCH_EDGE_WRAPPER="heaptrack -o /tmp/edge-sse" \
//!   cargo bench -p qrlogin-edge --bench edge -- memory --n 19000 --transport sse
//! heaptrack_print -f /tmp/edge-sse.zst -p 1 -a 0 -T 0 -m 0 -n 25
//! ```
//!
//! `memory`: an edge process (the release binary) holds N idle SSE, then
//! (a fresh process each) N idle WebSocket, STOMP or gRPC connections opened
//! by this process from 127.0.0.2 and 127.0.0.3; prints the edge's RSS
//! growth per connection.
//! `latency`: watchers on edge 1, scan and confirm through edge 2 at a fixed
//! rate; prints median and p99 from the confirm request to the event, and
//! from auth's commit (`updated_at` of the event) to the event.
//!
//! Without `--bench` (as under `cargo test --benches`) it runs a tiny smoke
//! version of both.

mod clients;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clients::{create_sessions, open_held, open_watch, EdgeProcess};
use qrlogin_auth::testing::{NatsServer, TestAuth, TestKeys};
use qrlogin_client::{
    api::{Client, LoginState, Snapshot},
    watch::{AnyWatch, Transport},
};
use tokio::sync::Semaphore;

struct Args {
    mode: String,
    n: usize,
    per_session: usize,
    /// gRPC watches sharing one connection (memory).
    grpc_streams: usize,
    logins: usize,
    idle: usize,
    rate: f64,
    transport: String,
}

fn parse_args() -> Result<Args> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let bench = raw.iter().any(|a| a == "--bench");
    let mut a = Args {
        mode: if bench { "all".into() } else { "smoke".into() },
        n: 10_000,
        per_session: 1,
        grpc_streams: 1,
        logins: 1_000,
        idle: 0,
        rate: 500.0,
        transport: "both".into(),
    };
    let mut it = raw.iter().filter(|a| *a != "--bench");
    while let Some(arg) = it.next() {
        let mut val = || it.next().cloned().context("flag needs a value");
        match arg.as_str() {
            "memory" | "latency" | "all" | "smoke" => a.mode = arg.clone(),
            "--n" => a.n = val()?.parse()?,
            "--per-session" => a.per_session = val()?.parse()?,
            "--grpc-streams" => a.grpc_streams = val()?.parse()?,
            "--logins" => a.logins = val()?.parse()?,
            "--idle" => a.idle = val()?.parse()?,
            "--rate" => a.rate = val()?.parse()?,
            "--transport" => a.transport = val()?,
            other => bail!("unknown argument {other:?}"),
        }
    }
    if a.n > 19_000 {
        bail!("--n at most 19000 (20,000 open files per process)");
    }
    if a.grpc_streams == 0 || a.grpc_streams > 100 {
        bail!("--grpc-streams 1..=100 (QRLOGIN_GRPC_MAX_STREAMS)");
    }
    if a.per_session == 0 || a.per_session > 8 {
        bail!("--per-session 1..=8");
    }
    Ok(a)
}

async fn memory_run(
    auth: &TestAuth,
    nats: &NatsServer,
    n: usize,
    per_session: usize,
    transport: Transport,
    grpc_streams: usize,
) -> Result<f64> {
    let kind = transport.name();
    let sessions = create_sessions(auth, n.div_ceil(per_session)).await?;
    let edge = Arc::new(EdgeProcess::start("bench-mem", auth, nats).await?);
    // Warm up allocator arenas and lazily built state with a few connections.
    let mut warm = Vec::new();
    for i in 0..16.min(n) {
        warm.push(open_held(i, &edge, &sessions[i / per_session], transport, None).await?);
    }
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = edge.rss_kib()?;
    let started = Instant::now();
    // gRPC watches may share connections (a backend multiplexing them).
    let mut channels = Vec::new();
    if transport == Transport::Grpc && grpc_streams > 1 {
        for c in 0..n.div_ceil(grpc_streams) {
            channels
                .push(qrlogin_client::grpc::channel(edge.grpc, Some(clients::source(c))).await?);
        }
    }
    let limit = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let session = sessions[i / per_session].clone();
        let permit = limit.clone().acquire_owned().await?;
        let edge = edge.clone();
        let channel = channels.get(i / grpc_streams).cloned();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            open_held(i, &edge, &session, transport, channel).await
        }));
    }
    let mut held = Vec::with_capacity(n);
    for t in tasks {
        held.push(t.await??);
    }
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = edge.rss_kib()?;
    let label = transport.label();
    let gauge = edge
        .gauge(&format!(
            "qrlogin_edge_connections{{transport=\"{label}\"}}"
        ))
        .await?;
    let subs = edge.gauge("qrlogin_edge_nats_subscriptions").await?;
    let per_conn = (after.saturating_sub(before) as f64 * 1024.0) / n as f64;
    println!(
        "memory {kind}: {n} idle connections ({per_session} per session{}, gauge {gauge}, {subs} NATS subscriptions) opened in {:.1}s; \
         edge RSS {before} KiB -> {after} KiB; {:.0} bytes = {:.2} KiB per connection",
        if channels.is_empty() {
            String::new()
        } else {
            format!(", {grpc_streams} streams per connection")
        },
        opened.as_secs_f64(),
        per_conn,
        per_conn / 1024.0
    );
    drop(held);
    Ok(per_conn)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Reads the watch until a snapshot in `want` arrives (at most 30 s).
async fn until(w: &mut AnyWatch, want: LoginState) -> Result<Snapshot> {
    Ok(tokio::time::timeout(Duration::from_secs(30), w.until(want))
        .await
        .with_context(|| format!("no {want:?} within 30 s"))??)
}

/// When auth committed the snapshot (its `updated_at`).
fn committed_at(s: &Snapshot) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(
        &s.updated_at,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()
}

async fn latency_run(
    auth: &TestAuth,
    nats: &NatsServer,
    keys: &TestKeys,
    logins: usize,
    idle: usize,
    rate: f64,
    transport: Transport,
) -> Result<()> {
    if transport == Transport::Grpc {
        bail!("latency: --transport sse, ws or stomp (gRPC: the client's latency example)");
    }
    let edge1 = EdgeProcess::start("bench-1", auth, nats).await?;
    let edge2 = EdgeProcess::start("bench-2", auth, nats).await?;
    let sessions = create_sessions(auth, logins + idle).await?;
    let token = keys.user_token("alice", "Alice");
    let phone = Arc::new(Client::new(edge2.addr, None, 64));
    // Idle waiting clients that never see an event (load on edge 1).
    let mut idle_watches = Vec::with_capacity(idle);
    for (i, session) in sessions[logins..].iter().enumerate() {
        idle_watches.push(open_watch(i, &edge1, session, transport, None).await?.0);
    }
    // Active watchers, scanned first (unmeasured): the phone scans the
    // payload on screen and the user picks the number the browser shows.
    let mut watchers = Vec::with_capacity(logins);
    for (i, session) in sessions[..logins].iter().enumerate() {
        let (mut w, pending) = open_watch(i, &edge1, session, transport, None).await?;
        let payload = pending.qr_payload.as_deref().unwrap_or(&session.qr_payload);
        phone.scan(&session.id, &token, payload).await?;
        let scanned = until(&mut w, LoginState::Scanned).await?;
        watchers.push((w, scanned.match_code.unwrap_or_default()));
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(logins);
    for (i, (mut w, code)) in watchers.into_iter().enumerate() {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let id = sessions[i].id.clone();
        let (token, phone) = (token.clone(), phone.clone());
        tasks.push(tokio::spawn(async move {
            let sent = std::sync::OnceLock::new();
            let on_send = || {
                let _ = sent.set(Instant::now());
            };
            let read = async {
                let confirmed = until(&mut w, LoginState::Confirmed).await?;
                anyhow::Ok((Instant::now(), time::OffsetDateTime::now_utc(), confirmed))
            };
            let (read, confirm) = tokio::join!(read, phone.confirm(&id, &token, code, on_send));
            confirm?;
            let (received, wall, confirmed) = read?;
            let sent = *sent.get().context("confirm never sent")?;
            let commit_delay =
                committed_at(&confirmed).and_then(|c| Duration::try_from(wall - c).ok());
            anyhow::Ok((received - sent, commit_delay))
        }));
    }
    let mut end_to_end = Vec::with_capacity(logins);
    let mut after_commit = Vec::with_capacity(logins);
    for t in tasks {
        let (e2e, commit) = t.await??;
        end_to_end.push(e2e);
        after_commit.extend(commit);
    }
    let elapsed = started.elapsed();
    end_to_end.sort();
    after_commit.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "latency {}: {logins} logins at {rate}/s target ({:.0}/s achieved), {idle} idle waiting clients on edge 1; \
         confirm request on edge 2 -> event on edge 1: median {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         auth commit -> event: median {:.2} ms, p99 {:.2} ms",
        transport.name(),
        logins as f64 / elapsed.as_secs_f64(),
        ms(percentile(&end_to_end, 0.5)),
        ms(percentile(&end_to_end, 0.99)),
        ms(*end_to_end.last().unwrap_or(&Duration::ZERO)),
        ms(percentile(&after_commit, 0.5)),
        ms(percentile(&after_commit, 0.99)),
    );
    drop(idle_watches);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let nats = NatsServer::start().await;
    let keys = TestKeys::generate();
    let auth = TestAuth::spawn(&nats, &keys, |c| {
        c.pending_ttl = Duration::from_secs(3600);
        c.scanned_ttl = Duration::from_secs(3600);
        c.confirmed_ttl = Duration::from_secs(3600);
        c.session_retention = Duration::from_secs(7200);
        // Every session comes from this one host and every login is one
        // user's: no per-network or per-user limit.
        c.create_limit = 0;
        c.protocol.scan_limit = 0;
        c.protocol.confirm_limit = 0;
    })
    .await;
    let kinds: Vec<Transport> = match args.transport.as_str() {
        "both" => vec![Transport::Sse, Transport::Ws],
        "all" => Transport::ALL.to_vec(),
        one => {
            vec![Transport::parse(one).context("--transport sse, ws, stomp, grpc, both or all")?]
        }
    };
    match args.mode.as_str() {
        "smoke" => {
            for kind in Transport::ALL {
                memory_run(&auth, &nats, 50, 1, kind, 1).await?;
            }
            for kind in [Transport::Sse, Transport::Ws, Transport::Stomp] {
                latency_run(&auth, &nats, &keys, 20, 10, 200.0, kind).await?;
            }
        }
        "memory" => {
            for kind in kinds {
                memory_run(
                    &auth,
                    &nats,
                    args.n,
                    args.per_session,
                    kind,
                    args.grpc_streams,
                )
                .await?;
            }
        }
        "latency" => {
            let kind = if args.transport == "both" {
                Transport::Sse
            } else {
                kinds[0]
            };
            latency_run(&auth, &nats, &keys, args.logins, args.idle, args.rate, kind).await?
        }
        _ => {
            for kind in [Transport::Sse, Transport::Ws] {
                memory_run(&auth, &nats, args.n, args.per_session, kind, 1).await?;
            }
            for kind in [Transport::Sse, Transport::Ws] {
                latency_run(&auth, &nats, &keys, args.logins, args.idle, args.rate, kind).await?;
            }
        }
    }
    Ok(())
}
