//! Connecting to NATS and keeping the connection: INFO, TLS when asked
//! for, CONNECT (with the nkey signature of the server's nonce), then one
//! reader (messages straight to delivery, PING answered, PONG proving
//! subscriptions, INFO learning servers, -ERR surfaced) and one writer
//! (our lines, keep-alive PINGs) until either fails; then reconnect with
//! jittered backoff over the configured and discovered servers,
//! re-subscribe everything, and start a resync once the server proved it.

use std::{fmt, sync::Arc, time::Duration};

use base64::Engine as _;
use bytes::BytesMut;
use rand::Rng;
use serde::Deserialize;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::{Instant, MissedTickBehavior},
};

use super::{
    decode::decode,
    proto::{self, Op, ParseError},
    tls, BrokerConfig, BrokerError, Group, Shared,
};
use crate::{
    delivery::ports::{BusError, Inbox},
    domain::SessionId,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest one write to the server may take before the link counts as dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message accepted, whatever the server allows; bigger ones end
/// the connection (events are a few hundred bytes).
const MAX_PAYLOAD: usize = 1 << 20;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Servers learnt from INFO are kept up to this many.
const MAX_SERVERS: usize = 64;

/// One NATS server address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Server {
    host: String,
    port: u16,
    tls: bool,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "tls" } else { "nats" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Parses `nats://host:port`, `tls://host:port` or `host[:port]`.
pub(super) fn parse_server(text: &str) -> Result<Server, BrokerError> {
    let text = text.trim();
    let (tls, rest) = if let Some(r) = text.strip_prefix("tls://") {
        (true, r)
    } else if let Some(r) = text.strip_prefix("nats://") {
        (false, r)
    } else if text.contains("://") {
        return Err(BrokerError::Url("only nats:// and tls:// URLs".into()));
    } else {
        (false, text)
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') {
        return Err(BrokerError::Url(
            "credentials in URLs are refused; use QRLOGIN_NATS_NKEY_SEED_FILE".into(),
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| BrokerError::Url("unclosed [".into()))?;
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() || host.contains('/') {
        return Err(BrokerError::Url("a URL needs a host".into()));
    }
    let port = match port {
        Some(p) => p
            .parse()
            .map_err(|_| BrokerError::Url("port must be a number".into()))?,
        None => 4222,
    };
    Ok(Server {
        host: host.to_owned(),
        port,
        tls,
    })
}

/// Checked, loaded connection settings.
pub(super) struct Settings {
    servers: Vec<Server>,
    tls: Option<Arc<rustls::ClientConfig>>,
    nkey: Option<Arc<nkeys::KeyPair>>,
    name: String,
    ping_interval: Duration,
}

impl Settings {
    pub(super) fn from_config(c: &BrokerConfig) -> Result<Self, BrokerError> {
        let servers = c
            .urls
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(parse_server)
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(BrokerError::Url("no server".into()));
        }
        let wants_tls =
            servers.iter().any(|s| s.tls) || c.tls_ca_file.is_some() || c.tls_cert_file.is_some();
        let tls = if wants_tls {
            Some(tls::client_config(
                c.tls_ca_file.as_deref(),
                c.tls_cert_file.as_deref(),
                c.tls_key_file.as_deref(),
            )?)
        } else {
            None
        };
        let nkey = match &c.nkey_seed_file {
            Some(path) => {
                let seed = std::fs::read_to_string(path)
                    .map_err(|e| BrokerError::Seed(format!("{}: {e}", path.display())))?;
                let pair = nkeys::KeyPair::from_seed(seed.trim())
                    .map_err(|_| BrokerError::Seed("not an nkey seed".into()))?;
                Some(Arc::new(pair))
            }
            None => None,
        };
        Ok(Self {
            servers,
            tls,
            nkey,
            name: c.name.clone(),
            ping_interval: c.ping_interval,
        })
    }
}

/// The server's INFO, as much as the client uses.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Info {
    server_id: String,
    max_payload: usize,
    tls_required: bool,
    tls_available: bool,
    nonce: Option<String>,
    connect_urls: Vec<String>,
    ldm: bool,
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Protocol(#[from] ParseError),
    #[error("server said: {0}")]
    Server(String),
    #[error("{0}")]
    Setup(String),
    #[error("no PONG to two PINGs")]
    Stale,
    #[error("server entered lame duck mode")]
    LameDuck,
    #[error("server closed the connection")]
    Closed,
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

struct Conn {
    stream: Box<dyn Io>,
    buf: BytesMut,
    info: Info,
}

/// Keeps a connection for as long as the process runs.
pub(super) async fn run(shared: Arc<Shared>, settings: Settings, inbox: Arc<dyn Inbox>) {
    let mut known = settings.servers.clone();
    let mut next = 0usize;
    let mut rounds = 0u32;
    loop {
        let server = known[next % known.len()].clone();
        next += 1;
        match connect(&server, &settings).await {
            Ok(conn) => {
                rounds = 0;
                learn(&conn.info, &server, &mut known);
                tracing::info!(server = %server, server_id = %conn.info.server_id, "NATS connected");
                let reason = serve(conn, &shared, &settings, &inbox, &server, &mut known).await;
                disconnected(&shared);
                tracing::warn!(server = %server, reason = %reason, "NATS connection lost; reconnecting");
                // A little jitter so that nodes cut off together do not
                // all come back in the same millisecond.
                let pause = Duration::from_millis(rand::rng().random_range(0..50));
                tokio::time::sleep(pause).await;
            }
            Err(e) => {
                tracing::warn!(server = %server, error = %e, "cannot connect to NATS");
                if next % known.len() == 0 {
                    rounds += 1;
                    let base = BACKOFF_MIN
                        .saturating_mul(1 << rounds.min(8))
                        .min(BACKOFF_MAX);
                    let pause = base.mul_f64(rand::rng().random_range(0.5..1.5));
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// Adds the servers that INFO names (`connect_urls`) to those we know.
fn learn(info: &Info, current: &Server, known: &mut Vec<Server>) {
    for url in &info.connect_urls {
        if known.len() >= MAX_SERVERS {
            break;
        }
        if let Ok(mut s) = parse_server(url) {
            s.tls = current.tls;
            if !known.contains(&s) {
                tracing::info!(server = %s, "learnt a NATS server");
                known.push(s);
            }
        }
    }
}

async fn connect(server: &Server, settings: &Settings) -> Result<Conn, ConnError> {
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((server.host.as_str(), server.port)),
    )
    .await
    .map_err(|_| ConnError::Timeout)??;
    tcp.set_nodelay(true)?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut stream: Box<dyn Io> = Box::new(tcp);
    let mut buf = BytesMut::with_capacity(4096);
    let info = loop {
        match read_op(&mut stream, &mut buf, deadline).await? {
            Op::Info(json) => break parse_info(&json)?,
            Op::Err(text) => return Err(ConnError::Server(text)),
            _ => {}
        }
    };
    let use_tls = server.tls || info.tls_required;
    if use_tls {
        let Some(config) = settings.tls.clone() else {
            return Err(ConnError::Setup(
                "the server requires TLS: use a tls:// URL and QRLOGIN_NATS_TLS_CA_FILE".into(),
            ));
        };
        if !info.tls_required && !info.tls_available {
            return Err(ConnError::Setup("the server does not offer TLS".into()));
        }
        let name = rustls::pki_types::ServerName::try_from(server.host.clone())
            .map_err(|e| ConnError::Setup(format!("server name {}: {e}", server.host)))?;
        let tcp = stream;
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = tokio::time::timeout_at(deadline, connector.connect(name, tcp))
            .await
            .map_err(|_| ConnError::Timeout)??;
        stream = Box::new(tls);
        buf.clear();
    }
    let connect = connect_line(&info, settings, use_tls)?;
    stream.write_all(connect.as_bytes()).await?;
    stream.flush().await?;
    loop {
        match read_op(&mut stream, &mut buf, deadline).await? {
            Op::Pong => break,
            Op::Err(text) => return Err(ConnError::Server(text)),
            _ => {}
        }
    }
    Ok(Conn { stream, buf, info })
}

fn parse_info(json: &[u8]) -> Result<Info, ConnError> {
    serde_json::from_slice(json).map_err(|e| ConnError::Setup(format!("bad INFO: {e}")))
}

/// `CONNECT {...}` followed by a PING whose PONG says we are in.
fn connect_line(info: &Info, settings: &Settings, tls: bool) -> Result<String, ConnError> {
    let mut connect = serde_json::json!({
        "verbose": false,
        "pedantic": false,
        "tls_required": tls,
        "name": settings.name,
        "lang": "rust",
        "version": concat!("qrlogin-edge/", env!("CARGO_PKG_VERSION")),
        "protocol": 1,
        "echo": false,
        "headers": true,
        "no_responders": false,
    });
    if let Some(pair) = &settings.nkey {
        connect["nkey"] = pair.public_key().into();
        if let Some(nonce) = &info.nonce {
            let sig = pair
                .sign(nonce.as_bytes())
                .map_err(|e| ConnError::Setup(format!("nkey signature: {e}")))?;
            connect["sig"] = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sig)
                .into();
        }
    }
    Ok(format!("CONNECT {connect}\r\nPING\r\n"))
}

async fn read_op(
    stream: &mut Box<dyn Io>,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<Op, ConnError> {
    loop {
        if let Some(op) = proto::parse(buf, MAX_PAYLOAD)? {
            return Ok(op);
        }
        let n = tokio::time::timeout_at(deadline, stream.read_buf(buf))
            .await
            .map_err(|_| ConnError::Timeout)??;
        if n == 0 {
            return Err(ConnError::Closed);
        }
    }
}

pub(super) fn write_sub(out: &mut Vec<u8>, subject: &str, sid: u64) {
    out.extend_from_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
}

/// Runs one established connection until it fails; returns why.
async fn serve(
    conn: Conn,
    shared: &Arc<Shared>,
    settings: &Settings,
    inbox: &Arc<dyn Inbox>,
    server: &Server,
    known: &mut Vec<Server>,
) -> ConnError {
    let Conn { stream, buf, info } = conn;
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
        e = read_loop(reader, buf, max_payload, shared, inbox, server, known) => e,
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
    known: &mut Vec<Server>,
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
                        learn(&info, server, known);
                        if info.ldm {
                            tracing::warn!(server = %server, "NATS server is shutting down (lame duck)");
                            if known.len() > 1 {
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
fn disconnected(shared: &Shared) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_credentials_are_refused() {
        let s = parse_server("nats://127.0.0.1:4333").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.tls), ("127.0.0.1", 4333, false));
        let s = parse_server("tls://nats.example").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls),
            ("nats.example", 4222, true)
        );
        let s = parse_server("[::1]:4222").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 4222));
        assert_eq!(s.to_string(), "nats://[::1]:4222");
        assert!(parse_server("nats://user:pass@host:4222").is_err());
        assert!(parse_server("http://host").is_err());
        assert!(parse_server("nats://:4222").is_err());
    }
}
