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

/// Connects and reads up to the origin's first event (`event: ready`):
/// from then on the stream is held by Pushpin's handler.
pub async fn open(
    src: IpAddr,
    target: SocketAddr,
    path: &str,
    shared: &Shared,
    timeout: Duration,
) -> Result<TcpStream, String> {
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
            if find(&seen, b"event: ready").is_some() {
                return Ok(stream);
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
pub async fn hold(mut stream: TcpStream, shared: &Shared) {
    shared.open.fetch_add(1, Ordering::Relaxed);
    let mut line: Vec<u8> = Vec::new();
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
        let now = unix_ns();
        shared.rx_bytes.fetch_add(n as u64, Ordering::Relaxed);
        for &b in &buf[..n] {
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
        if line.capacity() > 4096 {
            line = Vec::new();
        }
    }
    shared.open.fetch_sub(1, Ordering::Relaxed);
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
