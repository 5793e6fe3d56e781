//! The benchmark's side: the edge as a child process, session creation
//! over auth's gRPC API, and the watches it holds, all through the shared
//! client (`qrlogin-client`): SSE, WebSocket, STOMP and gRPC watches, and
//! plain kept-alive HTTP connections.

use std::{
    net::{IpAddr, SocketAddr},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use qrlogin_auth::testing::{NatsServer, TestAuth};
use qrlogin_client::{
    api::Snapshot,
    http::{Conn, Pool},
    watch::{AnyWatch, Transport, WatchOptions},
};
use qrlogin_proto::auth::v1::{auth_service_client::AuthServiceClient, CreateLoginSessionRequest};
use tokio::sync::Semaphore;

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
            if let Ok((200, _)) = http_get(ops, "/readyz").await {
                return Ok(edge);
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
        let (_, text) = http_get(self.ops, "/metrics").await?;
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

/// One HTTP GET; the status and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let r = Pool::new(addr, None, 0)
        .request("GET", path, &[], None, || {})
        .await?;
    Ok((r.head.status, String::from_utf8_lossy(&r.body).into_owned()))
}

/// A login session as its browser knows it after create.
#[derive(Clone)]
pub struct Session {
    pub id: String,
    pub secret: String,
    /// What the QR code shows (the phone scans it).
    pub qr_payload: String,
}

pub async fn create_sessions(auth: &TestAuth, n: usize) -> Result<Vec<Session>> {
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
                browser_key: None,
            });
            request
                .metadata_mut()
                .insert("x-qrlogin-service-token", token.parse()?);
            let r = client.create_login_session(request).await?.into_inner();
            let session = r.session.context("session")?;
            anyhow::Ok(Session {
                id: session.session_id,
                secret: r.browser_secret,
                qr_payload: session.qr_payload,
            })
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

/// An idle connection held by the benchmark.
#[allow(dead_code)]
pub enum Held {
    Watch(Box<AnyWatch>),
    /// A kept-alive HTTP connection that answered one request.
    KeepAlive(Conn),
}

/// Opens a watch of `session` over `transport` from [`source`]`(i)` and
/// waits for its first snapshot (PENDING). STOMP sends no heart-beats (the
/// edge's WebSocket ping, 30 min here, stays the only timer). A gRPC watch
/// uses `channel` when given, else a connection of its own (as a native
/// client holds one).
pub async fn open_watch(
    i: usize,
    edge: &EdgeProcess,
    session: &Session,
    transport: Transport,
    channel: Option<tonic::transport::Channel>,
) -> Result<(AnyWatch, Snapshot)> {
    let options = WatchOptions {
        src: Some(source(i)),
        // `since=0`: the current snapshot comes at once (a WebSocket
        // without it waits for a `resume` message first).
        since: (transport == Transport::Ws).then_some(0),
        stomp_heart_beat: (Duration::ZERO, Duration::ZERO),
        grpc_channel: channel,
    };
    let addr = match transport {
        Transport::Grpc => edge.grpc,
        _ => edge.addr,
    };
    let mut watch = AnyWatch::open(transport, addr, &session.id, &session.secret, &options).await?;
    let first = tokio::time::timeout(Duration::from_secs(30), watch.next_snapshot())
        .await
        .context("no first snapshot within 30 s")??;
    Ok((watch, first))
}

/// Opens an idle connection: a watch (see [`open_watch`]), or with
/// `BENCH_KEEPALIVE_ONLY` set, a kept-alive HTTP connection that got one
/// 404 (`GET /nope`).
pub async fn open_held(
    i: usize,
    edge: &EdgeProcess,
    session: &Session,
    transport: Transport,
    channel: Option<tonic::transport::Channel>,
) -> Result<Held> {
    if std::env::var_os("BENCH_KEEPALIVE_ONLY").is_some() {
        let mut conn = Conn::new(qrlogin_client::net::connect(Some(source(i)), edge.addr).await?);
        let request = qrlogin_client::http::encode_request("GET", edge.addr, "/nope", &[], None);
        let response = conn.exchange(&request).await?;
        if response.head.status != 404 {
            bail!("GET /nope answered {}", response.head.status);
        }
        return Ok(Held::KeepAlive(conn));
    }
    let (watch, _) = open_watch(i, edge, session, transport, channel).await?;
    Ok(Held::Watch(Box::new(watch)))
}
