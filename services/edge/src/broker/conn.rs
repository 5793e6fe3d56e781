//! Connecting to NATS and keeping the connection: INFO, TLS when asked
//! for, CONNECT (with the nkey signature of the server's nonce); then the
//! link runs ([`super::link`]) until it fails, and the client reconnects
//! with jittered backoff over the configured and discovered servers,
//! re-subscribes everything and starts a resync once the server proved it.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use bytes::BytesMut;
use rand::Rng;
use serde::Deserialize;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

use super::{
    link::{disconnected, serve},
    proto::{self, Op, ParseError},
    server::{Pool, Server, Settings},
    Shared,
};
use crate::delivery::ports::Inbox;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest message accepted, whatever the server allows; bigger ones end
/// the connection (events are a few hundred bytes).
pub(super) const MAX_PAYLOAD: usize = 1 << 20;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The server's INFO, as much as the client uses.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Info {
    pub(super) server_id: String,
    pub(super) max_payload: usize,
    pub(super) tls_required: bool,
    pub(super) tls_available: bool,
    pub(super) nonce: Option<String>,
    pub(super) connect_urls: Vec<String>,
    pub(super) ldm: bool,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ConnError {
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

pub(super) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

pub(super) struct Conn {
    pub(super) stream: Box<dyn Io>,
    pub(super) buf: BytesMut,
    pub(super) info: Info,
}

/// Keeps a connection for as long as the process runs.
pub(super) async fn run(shared: Arc<Shared>, settings: Settings, inbox: Arc<dyn Inbox>) {
    let mut pool = Pool::new(settings.servers.clone());
    let mut rounds = 0u32;
    loop {
        let (server, round_ends) = pool.next();
        match connect(&server, &settings).await {
            Ok(conn) => {
                rounds = 0;
                pool.learn(&conn.info, &server);
                tracing::info!(server = %server, server_id = %conn.info.server_id, "NATS connected");
                let reason = serve(conn, &shared, &settings, &inbox, &server, &mut pool).await;
                disconnected(&shared);
                tracing::warn!(server = %server, reason = %reason, "NATS connection lost; reconnecting");
                // A little jitter so that nodes cut off together do not
                // all come back in the same millisecond.
                let pause = Duration::from_millis(rand::rng().random_range(0..50));
                tokio::time::sleep(pause).await;
            }
            Err(e) => {
                tracing::warn!(server = %server, error = %e, "cannot connect to NATS");
                if round_ends {
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

pub(super) fn parse_info(json: &[u8]) -> Result<Info, ConnError> {
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
