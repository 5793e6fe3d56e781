//! The edge's one typed configuration: flags, each with an environment
//! variable (flags win), validated before any port is bound.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};
use ipnet::IpNet;

/// Why a configuration was refused; names the variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {reason}")]
    Invalid { var: &'static str, reason: String },
}

pub(crate) fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.into(),
    }
}

/// How an edge subscribes to the session subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NatsInterest {
    /// One subscription per watched session: an edge receives only the
    /// events of sessions it watches.
    PerSession,
    /// One subscription to `<prefix>.*`: every edge receives every event
    /// (small deployments only).
    Wildcard,
}

/// When the redeem and browser-secret cookies get the `Secure` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CookieSecure {
    /// When a trusted proxy says the request came over TLS (`X-Forwarded-Proto: https`).
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A duration setting (`25s`, `500ms`, `1h`); shared by the transports'
/// settings.
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

fn cidr_list(text: &str) -> Result<CidrList, String> {
    let mut nets = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let net = match part.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => part
                .parse::<std::net::IpAddr>()
                .map(IpNet::from)
                .map_err(|_| format!("{part:?} is not a CIDR or an IP address"))?,
        };
        nets.push(net);
    }
    Ok(CidrList(nets))
}

fn origin_list(text: &str) -> Result<OriginList, String> {
    let mut origins = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (scheme, rest) = part
            .split_once("://")
            .ok_or_else(|| format!("{part:?} is not an origin like https://example.com"))?;
        if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains('/') {
            return Err(format!(
                "{part:?} is not an origin like https://example.com"
            ));
        }
        origins.push(part.to_ascii_lowercase());
    }
    Ok(OriginList(origins))
}

/// CIDRs whose X-Forwarded-For and X-Forwarded-Proto headers are believed.
#[derive(Debug, Clone, Default)]
pub struct CidrList(pub Vec<IpNet>);

impl CidrList {
    /// Whether `ip` (IPv4-mapped IPv6 read as IPv4) is in one of the CIDRs.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// Exact origins allowed to open a WebSocket; empty means same-origin only.
#[derive(Debug, Clone, Default)]
pub struct OriginList(pub Vec<String>);

/// Configuration of `qrlogin-edge`. See docs/configuration.md, "edge".
#[derive(Debug, Clone, Parser)]
#[command(
    name = "qrlogin-edge",
    version,
    about = "qrlogin edge: browser push and phone routes"
)]
pub struct EdgeConfig {
    /// HTTP listen address (port 0 picks a free port, reported in the log).
    #[arg(long, env = "QRLOGIN_EDGE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Operations address: `/metrics`, `/healthz`, `/readyz` and nothing
    /// else (they are not on the public address).
    #[arg(long, env = "QRLOGIN_OPS_LISTEN", default_value = "0.0.0.0:9090")]
    pub ops_listen: SocketAddr,
    /// Name of this node in `X-Edge-Node` and snapshots; default: host name.
    #[arg(long, env = "QRLOGIN_NODE_NAME")]
    pub node_name: Option<String>,
    /// gRPC address of the auth service.
    #[arg(
        long,
        env = "QRLOGIN_AUTH_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub auth_url: String,
    /// File holding the service token the edge presents to auth
    /// (`x-qrlogin-service-token`); auth refuses browser-side calls without it.
    #[arg(long, env = "QRLOGIN_AUTH_SERVICE_TOKEN_FILE")]
    pub auth_service_token_file: Option<PathBuf>,
    /// PEM CA bundle that verifies auth's certificate; required with an https:// QRLOGIN_AUTH_URL.
    #[arg(long, env = "QRLOGIN_AUTH_TLS_CA_FILE")]
    pub auth_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for auth's mTLS (with QRLOGIN_AUTH_TLS_CLIENT_KEY_FILE).
    #[arg(long, env = "QRLOGIN_AUTH_TLS_CLIENT_CERT_FILE")]
    pub auth_tls_client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, env = "QRLOGIN_AUTH_TLS_CLIENT_KEY_FILE")]
    pub auth_tls_client_key_file: Option<PathBuf>,
    /// Connect and per-request timeout of calls to auth.
    #[arg(long, env = "QRLOGIN_AUTH_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub auth_timeout: Duration,
    /// NATS server(s), comma-separated.
    #[arg(
        long,
        env = "QRLOGIN_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// File holding the edge's NATS nkey user seed (`SU...`); never logged.
    #[arg(long, env = "QRLOGIN_NATS_NKEY_SEED_FILE")]
    pub nats_nkey_seed_file: Option<PathBuf>,
    /// PEM CA bundle that verifies the NATS servers; implies TLS.
    #[arg(long, env = "QRLOGIN_NATS_TLS_CA_FILE")]
    pub nats_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for NATS (with QRLOGIN_NATS_TLS_KEY_FILE).
    #[arg(long, env = "QRLOGIN_NATS_TLS_CERT_FILE")]
    pub nats_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the NATS client certificate.
    #[arg(long, env = "QRLOGIN_NATS_TLS_KEY_FILE")]
    pub nats_tls_key_file: Option<PathBuf>,
    /// Interval of the edge's PINGs to NATS; no PONG to two of them ends
    /// the connection (a frozen server), and the edge moves to another.
    #[arg(long, env = "QRLOGIN_NATS_PING_INTERVAL", default_value = "1s", value_parser = duration)]
    pub nats_ping_interval: Duration,
    /// `per-session` (default) or `wildcard` (small deployments).
    #[arg(
        long,
        env = "QRLOGIN_NATS_INTEREST",
        value_enum,
        default_value = "per-session"
    )]
    pub nats_interest: NatsInterest,
    /// On a NATS cluster, a watched session is read once more this long
    /// after its interest was registered (a new watch, or the sweep after
    /// a reconnect): the other members learn of the interest a little
    /// after the edge's own server proves it, and an event published in
    /// between is not forwarded. 0s: never.
    #[arg(long, env = "QRLOGIN_INTEREST_SETTLE", default_value = "1s", value_parser = duration)]
    pub interest_settle: Duration,
    /// Events are on `<prefix>.<session_id>`; must match auth.
    #[arg(
        long,
        env = "QRLOGIN_SUBJECT_PREFIX",
        default_value = "qrlogin.session"
    )]
    pub subject_prefix: String,
    /// Base of QR payload URLs (`<base>/m/<id>`) for `qr.svg`; must match auth.
    #[arg(
        long,
        env = "QRLOGIN_PUBLIC_BASE_URL",
        default_value = "http://localhost:8080"
    )]
    pub public_base_url: String,
    /// Peers whose X-Forwarded-For / X-Forwarded-Proto are believed.
    #[arg(long, env = "QRLOGIN_TRUSTED_PROXIES", default_value = "127.0.0.0/8,::1/128", value_parser = cidr_list)]
    pub trusted_proxies: CidrList,
    /// Origins allowed to open WebSockets; empty: only the request's own host.
    #[arg(long, env = "QRLOGIN_ALLOWED_ORIGINS", default_value = "", value_parser = origin_list)]
    pub allowed_origins: OriginList,
    /// Concurrent requests and streams; beyond: 503 over_capacity.
    #[arg(long, env = "QRLOGIN_MAX_CONNECTIONS", default_value_t = 18_000)]
    pub max_connections: usize,
    /// Watchers of one session on this node; beyond: 429 too_many_watchers.
    #[arg(long, env = "QRLOGIN_MAX_WATCHERS_PER_SESSION", default_value_t = 8)]
    pub max_watchers_per_session: usize,
    /// Connections that have not sent a complete request head yet, node-wide;
    /// beyond: `503 too_many_connections` and close.
    #[arg(long, env = "QRLOGIN_MAX_PRE_HEAD_CONNECTIONS", default_value_t = 1024)]
    pub max_pre_head_connections: usize,
    /// The same, per client (IPv4 address or IPv6 /64; trusted proxies exempt).
    #[arg(long, env = "QRLOGIN_MAX_PRE_HEAD_PER_CLIENT", default_value_t = 64)]
    pub max_pre_head_per_client: usize,
    /// Requests and streams one client (IPv4 address or IPv6 /64; behind a
    /// trusted proxy, the forwarded address) may have open on this node,
    /// counted from the head (a body still arriving counts); beyond:
    /// `429 too_many_requests`. Trusted proxies themselves are exempt.
    #[arg(long, env = "QRLOGIN_MAX_REQUESTS_PER_CLIENT", default_value_t = 256)]
    pub max_requests_per_client: usize,
    /// A request body must arrive whole within this time of its head;
    /// beyond: `408 body_timeout` and the connection closes. The body is
    /// read before the request is admitted, so a slow body holds no
    /// admission.
    #[arg(long, env = "QRLOGIN_BODY_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub body_timeout: Duration,
    /// A write (response, event, frame, close) that makes no progress for
    /// this long drops the connection: a peer that does not read.
    #[arg(long, env = "QRLOGIN_WRITE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub write_timeout: Duration,
    /// Kernel send buffer of each client connection in bytes (SO_SNDBUF);
    /// 0 leaves the kernel's autotuning (up to `tcp_wmem`'s maximum, 4 MiB
    /// by default). Bounds what a peer that does not read holds in the
    /// kernel before the write timeout starts.
    #[arg(long, env = "QRLOGIN_SOCKET_SEND_BUFFER", default_value_t = 0)]
    pub socket_send_buffer: usize,
    /// Login sessions one client IP may create per minute.
    #[arg(long, env = "QRLOGIN_CREATE_RATE_PER_IP", default_value_t = 30)]
    pub create_rate_per_ip: u32,
    /// Largest accepted request body.
    #[arg(long, env = "QRLOGIN_MAX_BODY_BYTES", default_value_t = 4096)]
    pub max_body_bytes: usize,
    /// The interval short-poll clients must keep (`poll_interval_ms` in
    /// every poll answer); a poll of one session sooner than half of it
    /// after the last one this node answered gets 429 `slow_down`.
    #[arg(long, env = "QRLOGIN_POLL_INTERVAL", default_value = "2s", value_parser = duration)]
    pub poll_interval: Duration,
    /// After the stop signal, the node answers (503) this long, then exits.
    #[arg(long, env = "QRLOGIN_DRAIN_DEADLINE", default_value = "10s", value_parser = duration)]
    pub drain_deadline: Duration,
    /// Directory of the demo pages; missing: those routes 404.
    #[arg(long, env = "QRLOGIN_WEB_DIR", default_value = "web")]
    pub web_dir: PathBuf,
    #[arg(
        long,
        env = "QRLOGIN_COOKIE_SECURE",
        value_enum,
        default_value = "auto"
    )]
    pub cookie_secure: CookieSecure,
    /// `Max-Age` of the browser-secret cookie: at least the longest a login
    /// session can stay open (auth's PENDING + SCANNED + CONFIRMED TTLs).
    #[arg(long, env = "QRLOGIN_SECRET_COOKIE_MAX_AGE", default_value = "5m", value_parser = duration)]
    pub secret_cookie_max_age: Duration,
    /// Development only: Ed25519 PEM private key that enables POST /v1/dev/token.
    #[arg(long, env = "QRLOGIN_DEV_USER_TOKEN_KEY_FILE")]
    pub dev_user_token_key_file: Option<PathBuf>,
    #[arg(long, env = "QRLOGIN_USER_TOKEN_ISSUER", default_value = "qrlogin-dev")]
    pub user_token_issuer: String,
    #[arg(long, env = "QRLOGIN_USER_TOKEN_AUDIENCE", default_value = "qrlogin")]
    pub user_token_audience: String,
    #[arg(long, env = "QRLOGIN_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub long_poll: crate::transport::long_poll::LongPollSettings,
    #[command(flatten)]
    pub sse: crate::transport::sse::SseSettings,
    #[command(flatten)]
    pub ws: crate::transport::ws::WsSettings,
    #[command(flatten)]
    pub grpc: crate::transport::grpc::GrpcSettings,
    #[command(flatten)]
    pub stomp: crate::transport::stomp::StompSettings,
}

impl EdgeConfig {
    /// A configuration with every default, for tests and tools.
    pub fn defaults() -> Self {
        Self::parse_from(["qrlogin-edge"])
    }

    /// The node name: configured, else the host name, else `edge`.
    pub fn node(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "edge".to_owned())
        })
    }

    /// Checks what clap's types cannot; called before anything is bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let node = self.node();
        if node.is_empty() || node.len() > 64 || !node.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "QRLOGIN_NODE_NAME",
                "1..=64 visible ASCII characters",
            ));
        }
        if !(self.auth_url.starts_with("http://") || self.auth_url.starts_with("https://")) {
            return Err(invalid(
                "QRLOGIN_AUTH_URL",
                "must start with http:// or https://",
            ));
        }
        if self.auth_url.parse::<http::Uri>().is_err() {
            return Err(invalid("QRLOGIN_AUTH_URL", "not a valid URL"));
        }
        let https = self.auth_url.starts_with("https://");
        if https && self.auth_tls_ca_file.is_none() {
            return Err(invalid(
                "QRLOGIN_AUTH_TLS_CA_FILE",
                "required with an https:// QRLOGIN_AUTH_URL",
            ));
        }
        if !https && (self.auth_tls_ca_file.is_some() || self.auth_tls_client_cert_file.is_some()) {
            return Err(invalid(
                "QRLOGIN_AUTH_URL",
                "TLS files are set: use an https:// URL",
            ));
        }
        if self.auth_tls_client_cert_file.is_some() != self.auth_tls_client_key_file.is_some() {
            return Err(invalid(
                "QRLOGIN_AUTH_TLS_CLIENT_CERT_FILE",
                "set together with QRLOGIN_AUTH_TLS_CLIENT_KEY_FILE",
            ));
        }
        if self.nats_url.trim().is_empty() {
            return Err(invalid("QRLOGIN_NATS_URL", "must not be empty"));
        }
        // Credentials in a URL end up in logs and process listings.
        if self.nats_url.contains('@') {
            return Err(invalid(
                "QRLOGIN_NATS_URL",
                "must not carry credentials; use QRLOGIN_NATS_NKEY_SEED_FILE",
            ));
        }
        if self.nats_tls_cert_file.is_some() != self.nats_tls_key_file.is_some() {
            return Err(invalid(
                "QRLOGIN_NATS_TLS_CERT_FILE",
                "set together with QRLOGIN_NATS_TLS_KEY_FILE",
            ));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(300))
            .contains(&self.nats_ping_interval)
        {
            return Err(invalid("QRLOGIN_NATS_PING_INTERVAL", "100ms..=5m"));
        }
        if self.interest_settle > Duration::from_secs(60) {
            return Err(invalid("QRLOGIN_INTEREST_SETTLE", "0s..=60s"));
        }
        let prefix_ok = !self.subject_prefix.is_empty()
            && self.subject_prefix.split('.').all(|t| {
                !t.is_empty()
                    && t.bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>')
            });
        if !prefix_ok {
            return Err(invalid(
                "QRLOGIN_SUBJECT_PREFIX",
                "dot-separated NATS tokens without wildcards",
            ));
        }
        if self.public_base_url.parse::<http::Uri>().is_err() {
            return Err(invalid("QRLOGIN_PUBLIC_BASE_URL", "not a valid URL"));
        }
        let positive = [
            ("QRLOGIN_AUTH_TIMEOUT", self.auth_timeout),
            ("QRLOGIN_POLL_INTERVAL", self.poll_interval),
            ("QRLOGIN_WRITE_TIMEOUT", self.write_timeout),
            ("QRLOGIN_BODY_TIMEOUT", self.body_timeout),
            ("QRLOGIN_SECRET_COOKIE_MAX_AGE", self.secret_cookie_max_age),
        ];
        for (var, value) in positive {
            if value.is_zero() {
                return Err(invalid(var, "must be greater than zero"));
            }
        }
        self.long_poll.validate()?;
        self.sse.validate()?;
        self.ws.validate()?;
        if self.max_connections == 0 || self.max_connections > 1_000_000 {
            return Err(invalid("QRLOGIN_MAX_CONNECTIONS", "1..=1000000"));
        }
        if self.max_pre_head_connections == 0 || self.max_pre_head_connections > 1_000_000 {
            return Err(invalid("QRLOGIN_MAX_PRE_HEAD_CONNECTIONS", "1..=1000000"));
        }
        if self.max_pre_head_per_client == 0
            || self.max_pre_head_per_client > self.max_pre_head_connections
        {
            return Err(invalid(
                "QRLOGIN_MAX_PRE_HEAD_PER_CLIENT",
                "1..=QRLOGIN_MAX_PRE_HEAD_CONNECTIONS",
            ));
        }
        if self.max_requests_per_client == 0 || self.max_requests_per_client > 1_000_000 {
            return Err(invalid("QRLOGIN_MAX_REQUESTS_PER_CLIENT", "1..=1000000"));
        }
        if self.body_timeout > Duration::from_secs(300) {
            return Err(invalid("QRLOGIN_BODY_TIMEOUT", "at most 5m"));
        }
        if self.socket_send_buffer != 0 && !(4096..=16 << 20).contains(&self.socket_send_buffer) {
            return Err(invalid(
                "QRLOGIN_SOCKET_SEND_BUFFER",
                "0 or 4096..=16777216",
            ));
        }
        if self.listen.port() != 0 && self.listen == self.ops_listen {
            return Err(invalid(
                "QRLOGIN_OPS_LISTEN",
                "must differ from QRLOGIN_EDGE_LISTEN",
            ));
        }
        if self.max_watchers_per_session == 0 || self.max_watchers_per_session > 1024 {
            return Err(invalid("QRLOGIN_MAX_WATCHERS_PER_SESSION", "1..=1024"));
        }
        if self.create_rate_per_ip == 0 {
            return Err(invalid("QRLOGIN_CREATE_RATE_PER_IP", "must be at least 1"));
        }
        if !(64..=1 << 20).contains(&self.max_body_bytes) {
            return Err(invalid("QRLOGIN_MAX_BODY_BYTES", "64..=1048576"));
        }
        let files = [
            ("QRLOGIN_NATS_NKEY_SEED_FILE", &self.nats_nkey_seed_file),
            ("QRLOGIN_NATS_TLS_CA_FILE", &self.nats_tls_ca_file),
            ("QRLOGIN_NATS_TLS_CERT_FILE", &self.nats_tls_cert_file),
            ("QRLOGIN_NATS_TLS_KEY_FILE", &self.nats_tls_key_file),
        ];
        for (var, path) in files {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(invalid(
                        var,
                        format!("{} is not a readable file", path.display()),
                    ));
                }
            }
        }
        self.grpc.validate()?;
        self.stomp.validate()?;
        if let Some(path) = &self.dev_user_token_key_file {
            if !path.is_file() {
                return Err(invalid(
                    "QRLOGIN_DEV_USER_TOKEN_KEY_FILE",
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_as_documented() {
        let c = EdgeConfig::defaults();
        c.validate().unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.long_poll.max_wait, Duration::from_secs(25));
        assert_eq!(c.trusted_proxies.0.len(), 2);
        assert!(c.allowed_origins.0.is_empty());
        assert_eq!(c.max_connections, 18_000);
        assert_eq!(c.ops_listen, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(c.write_timeout, Duration::from_secs(10));
        assert_eq!(c.max_pre_head_connections, 1024);
        assert_eq!(c.max_pre_head_per_client, 64);
        assert_eq!(c.max_requests_per_client, 256);
        assert_eq!(c.body_timeout, Duration::from_secs(10));
        assert_eq!(c.secret_cookie_max_age, Duration::from_secs(300));
        assert_eq!(
            c.nats_ping_interval,
            crate::broker::DEFAULT_PING_INTERVAL,
            "the flag's default and the broker's agree"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let mut c = EdgeConfig::defaults();
        c.subject_prefix = "qrlogin.*".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("QRLOGIN_SUBJECT_PREFIX"));
        let mut c = EdgeConfig::defaults();
        c.ws.ping = Duration::from_secs(90);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("QRLOGIN_IDLE_TIMEOUT"));
        let mut c = EdgeConfig::defaults();
        c.nats_ping_interval = Duration::from_millis(10);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("QRLOGIN_NATS_PING_INTERVAL"));
        assert!(EdgeConfig::try_parse_from(["e", "--trusted-proxies", "10.0.0.0/33"]).is_err());
        assert!(EdgeConfig::try_parse_from(["e", "--allowed-origins", "example.com"]).is_err());
        let ok = EdgeConfig::try_parse_from([
            "e",
            "--allowed-origins",
            "https://A.example, http://b:8080",
        ])
        .unwrap();
        assert_eq!(
            ok.allowed_origins.0,
            vec!["https://a.example", "http://b:8080"]
        );
    }
}
