//! One established connection: the reader (messages straight to
//! delivery, PING answered, PONG proving subscriptions, INFO learning
//! servers, -ERR surfaced) and the writer (our lines, keep-alive PINGs),
//! until either fails.

use std::{sync::Arc, time::Duration};

use bytes::BytesMut;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    time::{Instant, MissedTickBehavior},
};

use super::{
    conn::{parse_info, Conn, ConnError, Io, MAX_PAYLOAD},
    decode::decode,
    proto::{self, Op},
    server::{Pool, Server, Settings},
    Group, Shared,
};
use crate::{
    delivery::ports::{BusError, BusEvent, Inbox},
    domain::SessionId,
    telemetry,
};

/// Longest one write to the server may take before the link counts as dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn write_sub(out: &mut Vec<u8>, subject: &str, sid: u64) {
    out.extend_from_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
}

/// Runs one established connection until it fails; returns why.
pub(super) async fn serve(
    conn: Conn,
    shared: &Arc<Shared>,
    settings: &Settings,
    inbox: &Arc<dyn Inbox>,
    server: &Server,
    pool: &mut Pool,
) -> ConnError {
    let Conn { stream, buf, info } = conn;
    shared.clustered.store(
        !info.connect_urls.is_empty(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let max_payload = match info.max_payload {
        0 => MAX_PAYLOAD,
        n => n.min(MAX_PAYLOAD),
    };
    {
        // Every interest, then one PING: its PONG proves them all and
        // starts the re-read of every watched session.
        let mut st = shared.lock();
        let mut out = std::mem::take(&mut st.out);
        out.clear();
        if shared.wildcard {
            write_sub(&mut out, &format!("{}.*", shared.prefix), 0);
        }
        for (id, sid) in &st.subs {
            write_sub(&mut out, &shared.subject(id), *sid);
        }
        out.extend_from_slice(b"PING\r\n");
        st.out = out;
        st.groups.push_back(Group {
            resync: true,
            ..Group::default()
        });
        st.live = true;
    }
    shared
        .connected
        .store(true, std::sync::atomic::Ordering::Relaxed);
    shared.metrics.nats_reconnect();
    shared.wake.notify_one();
    let (reader, writer) = tokio::io::split(stream);
    tokio::select! {
        e = read_loop(reader, buf, max_payload, shared, inbox, server, pool) => e,
        e = write_loop(writer, shared, settings.ping_interval) => e,
    }
}

async fn read_loop(
    mut reader: tokio::io::ReadHalf<Box<dyn Io>>,
    mut buf: BytesMut,
    max_payload: usize,
    shared: &Arc<Shared>,
    inbox: &Arc<dyn Inbox>,
    server: &Server,
    pool: &mut Pool,
) -> ConnError {
    let mut topic = shared.prefix.clone().into_bytes();
    topic.push(b'.');
    loop {
        loop {
            let op = match proto::parse(&mut buf, max_payload) {
                Ok(Some(op)) => op,
                Ok(None) => break,
                Err(e) => {
                    shared.metrics.nats_error();
                    tracing::error!(error = %e, "NATS protocol error; reconnecting");
                    return e.into();
                }
            };
            match op {
                Op::Msg {
                    subject,
                    headers,
                    payload,
                    ..
                } => {
                    let id = subject
                        .strip_prefix(topic.as_slice())
                        .and_then(|t| SessionId::parse_bytes(t).ok());
                    match id.and_then(|id| decode(&id, headers.as_deref(), &payload)) {
                        Some(event) if telemetry::enabled() => {
                            deliver_traced(inbox, event, headers.as_deref());
                        }
                        Some(event) => inbox.event(event),
                        None => {
                            shared.metrics.undecodable();
                            tracing::warn!(subject = %String::from_utf8_lossy(&subject), bytes = payload.len(), "dropped undecodable event");
                        }
                    }
                }
                Op::Ping => {
                    shared.lock().out.extend_from_slice(b"PONG\r\n");
                    shared.wake.notify_one();
                }
                Op::Pong => on_pong(shared, inbox),
                Op::Info(json) => {
                    if let Ok(info) = parse_info(&json) {
                        pool.learn(&info, server);
                        if !info.connect_urls.is_empty() {
                            shared
                                .clustered
                                .store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        if info.ldm {
                            tracing::warn!(server = %server, "NATS server is shutting down (lame duck)");
                            if pool.has_other(server) {
                                return ConnError::LameDuck;
                            }
                        }
                    }
                }
                Op::Err(text) => {
                    shared.metrics.nats_error();
                    let denied = text
                        .strip_prefix("Permissions Violation for Subscription to")
                        .map(|s| s.trim().trim_matches('"').to_owned());
                    match denied {
                        Some(subject) => {
                            tracing::error!(%subject, "NATS refused a subscription (permissions)");
                            shared.lock().denied.push(subject);
                        }
                        None => {
                            tracing::error!(error = %text, "NATS error");
                            return ConnError::Server(text);
                        }
                    }
                }
                Op::Ok => {}
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(16 * 1024);
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) => return ConnError::Closed,
            Ok(_) => {}
            Err(e) => return e.into(),
        }
    }
}

/// Hands an event over inside a consumer span that continues the bucket
/// write's trace (its `traceparent` rides in the republished headers).
fn deliver_traced(inbox: &Arc<dyn Inbox>, event: BusEvent, headers: Option<&[u8]>) {
    let span = tracing::info_span!(
        "event",
        otel.name = "qrlogin.session deliver",
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "process",
        qrlogin.session.state = event.snapshot.state.as_str(),
        qrlogin.session.version = event.snapshot.version,
    );
    if let Some(block) = headers {
        telemetry::continue_from(&span, &telemetry::NatsHeaderBlock(block));
    }
    span.in_scope(|| inbox.event(event));
}

/// A PONG answers the oldest PING: its subscribers are proven (or
/// refused), and after a (re)connect the resync starts.
fn on_pong(shared: &Shared, inbox: &Arc<dyn Inbox>) {
    let (group, denied) = {
        let mut st = shared.lock();
        let Some(group) = st.groups.pop_front() else {
            return;
        };
        let denied = std::mem::take(&mut st.denied);
        for subject in &denied {
            let id = subject
                .strip_prefix(shared.prefix.as_str())
                .and_then(|t| t.strip_prefix('.'))
                .and_then(|t| SessionId::parse(t).ok());
            if let Some(id) = id {
                if st.subs.remove(&id).is_some() {
                    shared.metrics.subscription_closed();
                }
            }
        }
        (group, denied)
    };
    for w in group.waiters {
        let result = if denied.contains(&w.subject) {
            Err(BusError::PermissionDenied)
        } else {
            Ok(())
        };
        let _ = w.tx.send(result);
    }
    if group.resync {
        inbox.resync();
    }
}

async fn write_loop(
    mut writer: tokio::io::WriteHalf<Box<dyn Io>>,
    shared: &Arc<Shared>,
    ping_interval: Duration,
) -> ConnError {
    let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = ping.tick() => {
                let mut st = shared.lock();
                if st.groups.iter().filter(|g| g.keepalive).count() >= 2 {
                    return ConnError::Stale;
                }
                st.out.extend_from_slice(b"PING\r\n");
                st.groups.push_back(Group { keepalive: true, ..Group::default() });
            }
        }
        let bytes = {
            let mut st = shared.lock();
            if !st.waiting.is_empty() {
                st.out.extend_from_slice(b"PING\r\n");
                let waiters = std::mem::take(&mut st.waiting);
                st.groups.push_back(Group {
                    waiters,
                    ..Group::default()
                });
            }
            std::mem::take(&mut st.out)
        };
        if bytes.is_empty() {
            continue;
        }
        let write = async {
            writer.write_all(&bytes).await?;
            writer.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return e.into(),
            Err(_) => return ConnError::Timeout,
        }
    }
}

/// The connection is gone: nothing is live, and whoever waits for a proof
/// is released (the reconnect re-subscribes and re-reads).
pub(super) fn disconnected(shared: &Shared) {
    shared
        .connected
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let mut st = shared.lock();
    st.live = false;
    st.out.clear();
    st.denied.clear();
    // Dropping the senders releases the waiting subscribers.
    st.groups.clear();
    st.waiting.clear();
}
