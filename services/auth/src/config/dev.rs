//! The arguments of the DEVELOPMENT ONLY subcommands (dev-keygen,
//! dev-nats-config, dev-token).

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct DevKeygenArgs {
    /// Folder to write the keys to (see `dev::FILES` for the names).
    #[arg(long)]
    pub out: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
    /// Write only the keys that are missing; keep the others.
    #[arg(long, conflicts_with = "force")]
    pub keep_existing: bool,
}

#[derive(Debug, Args)]
pub struct DevNatsConfigArgs {
    /// The dev-keygen folder (nats-auth.pub, nats-edge.pub).
    #[arg(long)]
    pub keys: PathBuf,
    /// Client address.
    #[arg(long, default_value = "127.0.0.1:4222")]
    pub listen: SocketAddr,
    /// Monitoring port on the same host.
    #[arg(long)]
    pub http_port: Option<u16>,
    #[arg(long)]
    pub server_name: Option<String>,
    /// JetStream store directory.
    #[arg(long)]
    pub store_dir: PathBuf,
    #[arg(long, env = "QRLOGIN_KV_BUCKET", default_value = "qrlogin_sessions")]
    pub kv_bucket: String,
    #[arg(long, env = "QRLOGIN_LIMITS_BUCKET", default_value = "qrlogin_limits")]
    pub limits_bucket: String,
    #[arg(
        long,
        env = "QRLOGIN_SUBJECT_PREFIX",
        default_value = "qrlogin.session"
    )]
    pub subject_prefix: String,
    /// Server certificate (PEM); with --tls-key, clients must use TLS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA that signs client certificates; with it, clients must present one.
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Join a JetStream cluster of this name (needs --server-name,
    /// --cluster-listen and the members' --route).
    #[arg(long, requires_all = ["cluster_listen", "server_name"])]
    pub cluster_name: Option<String>,
    /// Route listener of this member.
    #[arg(long, requires = "cluster_name")]
    pub cluster_listen: Option<SocketAddr>,
    /// A member's route URL (`nats-route://host:port`), once per member; the
    /// server ignores the route to itself.
    #[arg(long = "route", requires = "cluster_name")]
    pub routes: Vec<String>,
    /// CA of the route certificates: routes then run over mutual TLS with
    /// --tls-cert and --tls-key, which must allow client use too.
    #[arg(long, requires_all = ["cluster_name", "tls_cert"])]
    pub cluster_tls_ca: Option<PathBuf>,
    /// Lame duck mode: how long the server spreads its clients' disconnects
    /// over (nats-server's default: 2 min; at least 30 s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub lame_duck_duration: Option<Duration>,
    /// Lame duck mode: the wait before the first client is closed
    /// (nats-server's default: 10 s).
    #[arg(long, value_parser = humantime::parse_duration, requires = "lame_duck_duration")]
    pub lame_duck_grace_period: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct DevTokenArgs {
    /// Development private key (PEM, Ed25519), e.g. DIR/user-token.pem.
    #[arg(long)]
    pub key: PathBuf,
    /// User id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// Display name (`name`).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, env = "QRLOGIN_USER_TOKEN_ISSUER", default_value = "qrlogin-dev")]
    pub issuer: String,
    #[arg(long, env = "QRLOGIN_USER_TOKEN_AUDIENCE", default_value = "qrlogin")]
    pub audience: String,
    /// Token lifetime.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}
