//! One waiting SSE client: a socket bound to the worker's source address,
//! a `GET` of its session's stream, and a read loop with a 1 KiB buffer
//! that times every event carrying a [`Stamp`]. Only an unfinished line is
//! kept between reads, so an idle client costs its socket, its task and
//! that buffer.
//!
//! The response is read as bytes, not de-chunked: Pushpin sends each
//! published item as one chunk, so chunk-size lines sit between events and
//! never start with `data:`. Good enough for a benchmark whose origin and
//! publisher are ours; not a general HTTP client.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Mutex, OnceLock,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::{proto::Stamp, stats::unix_ns};

/// What all clients of a worker share: the round being counted, bytes read,
/// and the samples and errors of the round.
#[derive(Default)]
pub struct Shared {
    pub round: AtomicU32,
    pub rx_bytes: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub open: AtomicUsize,
    pub round_data: Mutex<RoundData>,
}

#[derive(Default)]
pub struct RoundData {
    pub samples_us: Vec<u64>,
    pub errors: BTreeMap<String, u64>,
}

impl Shared {
    pub fn error(&self, key: impl Into<String>) {
        let mut d = self.round_data.lock().unwrap_or_else(|e| e.into_inner());
        *d.errors.entry(key.into()).or_default() += 1;
    }
}

/// Source ports below the kernel's ephemeral range, which no other process
/// gets without asking for them (the load generator does the same: a
/// `bind(ip, 0)` competes with every connection on the host).
struct SourcePorts {
    first: u16,
    count: u32,
    next: AtomicU32,
}

const BIND_ATTEMPTS: usize = 64;

fn source_ports() -> Option<&'static SourcePorts> {
    static PORTS: OnceLock<Option<SourcePorts>> = OnceLock::new();
    PORTS
        .get_or_init(|| {
            let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
            let low: u16 = range.split_whitespace().next()?.parse().ok()?;
            let first = 1024u16;
            let count = u32::from(low.checked_sub(first)?);
            // Start where the process id says, so workers spread out.
            (count >= 4096).then(|| SourcePorts {
                first,
                count,
                next: AtomicU32::new(std::process::id().wrapping_mul(7919) % count),
            })
        })
        .as_ref()
}

fn bound_socket(ip: IpAddr) -> std::io::Result<TcpSocket> {
    if let Some(ports) = source_ports() {
        for _ in 0..BIND_ATTEMPTS {
            let n = ports.next.fetch_add(1, Ordering::Relaxed) % ports.count;
            let socket = TcpSocket::new_v4()?;
            match socket.bind(SocketAddr::new(ip, ports.first + n as u16)) {
                Ok(()) => return Ok(socket),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        }
    }
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(ip, 0))?;
    Ok(socket)
}

/// A stream held by the server, and the bytes read after its `ready` event.
#[derive(Debug)]
pub struct Held {
    stream: TcpStream,
    rest: Vec<u8>,
}

/// Connects and reads up to the end of the origin's first event
/// (`event: ready`): from then on the stream is held by Pushpin's handler.
pub async fn open(
    src: IpAddr,
    target: SocketAddr,
    path: &str,
    shared: &Shared,
    timeout: Duration,
) -> Result<Held, String> {
    let work = async {
        let mut stream = bound_socket(src)
            .map_err(|e| format!("bind: {}", e.kind()))?
            .connect(target)
            .await
            .map_err(|e| format!("connect: {}", e.kind()))?;
        stream.set_nodelay(true).ok();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {target}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {}", e.kind()))?;
        shared
            .tx_bytes
            .fetch_add(request.len() as u64, Ordering::Relaxed);
        let mut seen = Vec::with_capacity(512);
        let mut buf = [0u8; 512];
        loop {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("read: {}", e.kind()))?;
            if n == 0 {
                return Err("closed before the stream was held".to_owned());
            }
            shared.rx_bytes.fetch_add(n as u64, Ordering::Relaxed);
            seen.extend_from_slice(&buf[..n]);
            if !seen.starts_with(b"HTTP/1.1 200") && seen.len() >= 12 {
                let line = seen.split(|b| *b == b'\r').next().unwrap_or_default();
                return Err(format!("status: {}", String::from_utf8_lossy(line)));
            }
            // Whatever follows the ready event (a keep-alive, an early
            // publish) belongs to the stream: hand it over.
            if let Some(p) = find(&seen, b"event: ready") {
                if let Some(q) = find(&seen[p..], b"\n\n") {
                    return Ok(Held {
                        stream,
                        rest: seen[p + q + 2..].to_vec(),
                    });
                }
            }
            if seen.len() > 16 * 1024 {
                return Err("no ready event in 16 KiB".to_owned());
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err("timeout".to_owned()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads the held stream until it ends, timing each stamped event.
pub async fn hold(held: Held, shared: &Shared) {
    let Held { mut stream, rest } = held;
    shared.open.fetch_add(1, Ordering::Relaxed);
    let mut line: Vec<u8> = Vec::new();
    feed(&mut line, &rest, unix_ns(), shared);
    let mut buf = [0u8; 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => {
                shared.error("stream closed by the server");
                break;
            }
            Ok(n) => n,
            Err(e) => {
                shared.error(format!("stream read: {}", e.kind()));
                break;
            }
        };
        shared.rx_bytes.fetch_add(n as u64, Ordering::Relaxed);
        feed(&mut line, &buf[..n], unix_ns(), shared);
        if line.capacity() > 4096 {
            line = Vec::new();
        }
    }
    shared.open.fetch_sub(1, Ordering::Relaxed);
}

/// Splits bytes read at `now` into lines (the unfinished one stays in
/// `line`) and records every `data:` line that carries a stamp.
fn feed(line: &mut Vec<u8>, bytes: &[u8], now: u64, shared: &Shared) {
    for &b in bytes {
        if b != b'\n' {
            line.push(b);
            continue;
        }
        if let Some(json) = line.strip_prefix(b"data: ") {
            match serde_json::from_slice::<Stamp>(json) {
                Ok(stamp) => record(shared, &stamp, now),
                Err(_) => shared.error("unparsable data line"),
            }
        }
        line.clear();
    }
}

fn record(shared: &Shared, stamp: &Stamp, now: u64) {
    if stamp.r != shared.round.load(Ordering::Relaxed) {
        shared.error("event of another round");
        return;
    }
    let us = now.saturating_sub(stamp.t) / 1000;
    let mut d = shared.round_data.lock().unwrap_or_else(|e| e.into_inner());
    d.samples_us.push(us);
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use tokio::{io::AsyncWriteExt, net::TcpListener};

    use super::*;

    /// A stream as Pushpin sends it: head, the origin's `ready` event, then
    /// a published event in its own chunk, split across two writes.
    #[tokio::test]
    async fn a_held_stream_times_its_stamped_event_and_counts_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let stamp = format!(r#"{{"s":"s7","r":1,"t":{}}}"#, unix_ns());
        let event = format!("event: state\ndata: {stamp}\n\n");
        let event_len = event.len() as u64;
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 512];
            let n = tokio::io::AsyncReadExt::read(&mut sock, &mut req)
                .await
                .unwrap();
            assert!(req[..n].starts_with(b"GET /stream/s7 HTTP/1.1\r\n"));
            // Head, ready and half the event in one write: the client reads
            // past its ready event and must not lose what follows.
            let chunk = format!("{:x}\r\n{event}\r\n", event.len());
            let (a, b) = chunk.split_at(chunk.len() / 2);
            let first = format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n19\r\nevent: ready\ndata: s7\n\n\r\n{a}"
            );
            sock.write_all(first.as_bytes()).await.unwrap();
            sock.flush().await.unwrap();
            sock.write_all(b.as_bytes()).await.unwrap();
            sock
        });
        let shared = Arc::new(Shared::default());
        shared.round.store(1, Ordering::Relaxed);
        let stream = open(
            "127.0.0.1".parse().unwrap(),
            target,
            "/stream/s7",
            &shared,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let holder = tokio::spawn({
            let shared = shared.clone();
            async move { hold(stream, &shared).await }
        });
        tokio::time::timeout(Duration::from_secs(5), async {
            while shared.round_data.lock().unwrap().samples_us.is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the event was not recorded");
        assert_eq!(shared.open.load(Ordering::Relaxed), 1);
        drop(server.await.unwrap());
        holder.await.unwrap();
        let d = shared.round_data.lock().unwrap();
        assert_eq!(d.samples_us.len(), 1);
        assert!(d.samples_us[0] < 5_000_000, "{} µs", d.samples_us[0]);
        assert_eq!(d.errors.get("stream closed by the server"), Some(&1));
        assert!(shared.rx_bytes.load(Ordering::Relaxed) > event_len);
    }

    #[tokio::test]
    async fn a_refused_request_reports_its_status() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 512];
            let _ = tokio::io::AsyncReadExt::read(&mut sock, &mut req).await;
            sock.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        let shared = Shared::default();
        let err = open(
            "127.0.0.1".parse().unwrap(),
            target,
            "/stream/x",
            &shared,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(err, "status: HTTP/1.1 502 Bad Gateway");
    }
}
