//! The benchmark's clients: the edge as a child process, raw HTTP/SSE,
//! WebSocket and STOMP connections that stay idle, gRPC watches (the shared
//! client's), session creation over gRPC.

use std::{
    net::{IpAddr, SocketAddr},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use qrlogin_auth::testing::{NatsServer, TestAuth};
use qrlogin_proto::auth::v1::{auth_service_client::AuthServiceClient, CreateLoginSessionRequest};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    sync::Semaphore,
};

/// The push transports the benchmark can hold open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sse,
    Ws,
    Stomp,
    Grpc,
}

impl Kind {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "sse" => Self::Sse,
            "ws" | "websocket" => Self::Ws,
            "stomp" => Self::Stomp,
            "grpc" => Self::Grpc,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sse => "SSE",
            Self::Ws => "WebSocket",
            Self::Stomp => "STOMP",
            Self::Grpc => "gRPC",
        }
    }

    /// The `transport` label of the edge's metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sse => "sse",
            Self::Ws => "websocket",
            Self::Stomp => "stomp",
            Self::Grpc => "grpc",
        }
    }
}

/// An edge as a separate process (so its RSS is its own).
pub struct EdgeProcess {
    child: Child,
    pub addr: SocketAddr,
    /// Its gRPC watch port.
    pub grpc: SocketAddr,
    /// The operations address (`/readyz`, `/metrics`).
    pub ops: SocketAddr,
    profiled: bool,
}

impl EdgeProcess {
    pub async fn start(name: &str, auth: &TestAuth, nats: &NatsServer) -> Result<Self> {
        let free = || -> Result<SocketAddr> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
        };
        let (addr, ops, grpc) = (free()?, free()?, free()?);
        // `BENCH_EDGE_WRAPPER` (e.g. `heaptrack -o /tmp/edge`) runs the edge
        // under a profiler; the edge then gets its own process group so the
        // whole group can be stopped with SIGTERM (the profiler writes its
        // data when the edge exits cleanly).
        let wrapper = std::env::var("BENCH_EDGE_WRAPPER").ok();
        let mut words: Vec<String> = wrapper
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        words.push(env!("CARGO_BIN_EXE_qrlogin-edge").to_owned());
        let mut command = Command::new(&words[0]);
        command.args(&words[1..]);
        if wrapper.is_some() {
            use std::os::unix::process::CommandExt;
            command.process_group(0);
        }
        let child = command
            .env("QRLOGIN_DRAIN_DEADLINE", "1s")
            .env("QRLOGIN_EDGE_LISTEN", addr.to_string())
            .env("QRLOGIN_OPS_LISTEN", ops.to_string())
            .env("QRLOGIN_EDGE_GRPC_LISTEN", grpc.to_string())
            .env("QRLOGIN_GRPC_MAX_CONNECTIONS", "19500")
            .env("QRLOGIN_NODE_NAME", name)
            .env("QRLOGIN_AUTH_URL", auth.url())
            .env("QRLOGIN_NATS_URL", nats.url())
            .env("QRLOGIN_NATS_NKEY_SEED_FILE", nats.edge_seed_file())
            .env("QRLOGIN_AUTH_SERVICE_TOKEN_FILE", auth.service_token_file())
            .env("QRLOGIN_MAX_CONNECTIONS", "19500")
            .env("QRLOGIN_CREATE_RATE_PER_IP", "1000000")
            .env("QRLOGIN_WS_PING", "30m")
            .env("QRLOGIN_GRPC_KEEPALIVE", "30m")
            .env("QRLOGIN_IDLE_TIMEOUT", "1h")
            .env("QRLOGIN_WEB_DIR", "/nonexistent")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("spawn qrlogin-edge")?;
        let edge = Self {
            child,
            addr,
            grpc,
            ops,
            profiled: wrapper.is_some(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(body) = http_get(ops, "/readyz").await {
                if body.starts_with("HTTP/1.1 200") {
                    return Ok(edge);
                }
            }
            if Instant::now() > deadline {
                bail!("edge {name} did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("no VmRSS")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("VmRSS value")?
            .parse()?)
    }

    pub async fn gauge(&self, series: &str) -> Result<f64> {
        let text = http_get(self.ops, "/metrics").await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0))
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        if self.profiled {
            // The group this benchmark started (the profiler and the edge).
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
            let _ = self.child.wait();
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One-shot HTTP/1.1 GET with `Connection: close`; returns the raw answer.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

pub async fn create_sessions(auth: &TestAuth, n: usize) -> Result<Vec<(String, String)>> {
    let client = AuthServiceClient::connect(auth.url()).await?;
    let limit = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let mut client = client.clone();
        let token = auth.service_token().to_owned();
        let permit = limit.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let mut request = tonic::Request::new(CreateLoginSessionRequest {
                client_ip: "127.0.0.2".into(),
                user_agent: "bench".into(),
            });
            request
                .metadata_mut()
                .insert("x-qrlogin-service-token", token.parse()?);
            let r = client.create_login_session(request).await?.into_inner();
            anyhow::Ok((r.session.context("session")?.session_id, r.browser_secret))
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// 127.0.0.2 or 127.0.0.3, alternately (spreading source ports).
pub fn source(i: usize) -> IpAddr {
    if i % 2 == 0 {
        [127, 0, 0, 2].into()
    } else {
        [127, 0, 0, 3].into()
    }
}

/// Connects from 127.0.0.2 or 127.0.0.3 (spreading source ports).
pub async fn connect_from(i: usize, to: SocketAddr) -> Result<TcpStream> {
    let source = source(i);
    // Earlier runs leave many ports of these addresses in TIME_WAIT; with
    // SO_REUSEADDR binding stays fast, and the rare port whose 4-tuple is
    // still taken is retried on another port.
    let mut last = None;
    for _ in 0..16 {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::new(source, 0))?;
        match socket.connect(to).await {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last
        .map(Into::into)
        .unwrap_or_else(|| anyhow::anyhow!("no source port")))
}

/// Reads until `needle` appears; returns what was read.
pub async fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) -> Result<()> {
    let mut chunk = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !buf.windows(needle.len()).any(|w| w == needle) {
        let n = tokio::time::timeout_at(deadline.into(), s.read(&mut chunk)).await??;
        if n == 0 {
            bail!(
                "closed before {:?}: {}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(buf)
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// A client WebSocket text frame (masked, as clients must; a zero mask key
/// leaves the payload as it is).
fn ws_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x81];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
    out
}

/// An idle push watch held by the benchmark (only kept open, never read).
#[allow(dead_code)]
pub enum Held {
    Socket(TcpStream),
    Grpc(Box<qrlogin_client::grpc::GrpcWatch>),
}

/// Opens an idle watcher of any kind and waits for its first snapshot. A
/// gRPC watch uses `channel` when given, else a connection of its own (as
/// a native client holds one).
pub async fn open_held(
    i: usize,
    edge: &EdgeProcess,
    id: &str,
    secret: &str,
    kind: Kind,
    channel: Option<tonic::transport::Channel>,
) -> Result<Held> {
    if kind != Kind::Grpc {
        return Ok(Held::Socket(
            open_watcher(i, edge.addr, id, secret, kind).await?,
        ));
    }
    let channel = match channel {
        Some(c) => c,
        None => qrlogin_client::grpc::channel(edge.grpc, Some(source(i))).await?,
    };
    let mut watch = qrlogin_client::grpc::GrpcWatch::open(channel, id, secret, None).await?;
    match watch.next().await? {
        qrlogin_client::watch::Push::Snapshot(_) => Ok(Held::Grpc(Box::new(watch))),
        other => bail!("gRPC watch ended before its first snapshot: {other:?}"),
    }
}

/// Opens an idle watcher on a socket and waits for its first snapshot.
pub async fn open_watcher(
    i: usize,
    edge: SocketAddr,
    id: &str,
    secret: &str,
    kind: Kind,
) -> Result<TcpStream> {
    let mut s = connect_from(i, edge).await?;
    if std::env::var_os("BENCH_KEEPALIVE_ONLY").is_some() {
        s.write_all(b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        read_until(&mut s, &mut buf, b"no such route\"}}").await?;
        return Ok(s);
    }
    let upgrade = |path: &str, extra: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}Authorization: Bearer {secret}\r\n\r\n"
        )
    };
    let req = match kind {
        Kind::Ws => upgrade(&format!("/v1/login-sessions/{id}/ws?since=0"), ""),
        Kind::Stomp => upgrade(
            &format!("/v1/login-sessions/{id}/stomp"),
            "Sec-WebSocket-Protocol: v12.stomp\r\n",
        ),
        Kind::Sse | Kind::Grpc => format!("GET /v1/login-sessions/{id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {secret}\r\n\r\n"),
    };
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    if kind == Kind::Stomp {
        // CONNECT without heart-beats (the edge's WebSocket ping, 30 min
        // here, stays the only timer), then SUBSCRIBE.
        read_until(&mut s, &mut buf, b"\r\n\r\n").await?;
        let frames = format!(
            "CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0SUBSCRIBE\nid:0\ndestination:/topic/login-sessions.{id}\n\n\0"
        );
        s.write_all(&ws_text_frame(frames.as_bytes())).await?;
    }
    read_until(&mut s, &mut buf, b"PENDING").await?;
    Ok(s)
}
