//! The one typed configuration of the auth service: flags, each backed by an
//! environment variable (flags win), defaults in one place. `validate` runs
//! before any port is bound. Key material is read from files whose paths are
//! configured; the keys themselves are never printed.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::Deadlines;

#[derive(Debug, Parser)]
#[command(
    name = "qrlogin-auth",
    version,
    about = "qrlogin auth service: login session state on NATS JetStream"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC service.
    Serve(Box<AuthConfig>),
    /// DEVELOPMENT ONLY: write fresh keys: Ed25519 pairs for user and access
    /// tokens, NATS nkey users for auth and edge.
    DevKeygen(DevKeygenArgs),
    /// DEVELOPMENT ONLY: print a nats.conf for one local server with the
    /// qrlogin accounts and the nkey users of a dev-keygen folder.
    DevNatsConfig(DevNatsConfigArgs),
    /// DEVELOPMENT ONLY: print a phone user token signed with a development key.
    DevToken(DevTokenArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KvStorage {
    File,
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct AuthConfig {
    /// gRPC listen address; port 0 picks a free port.
    #[arg(long, env = "QRLOGIN_AUTH_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// NATS server URL(s), comma-separated.
    #[arg(
        long,
        env = "QRLOGIN_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// File holding auth's NATS nkey user seed (`SU...`); never logged.
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
    /// JetStream key-value bucket holding the sessions (created if missing).
    #[arg(long, env = "QRLOGIN_KV_BUCKET", default_value = "qrlogin_sessions")]
    pub kv_bucket: String,
    /// Replicas of the bucket (use 3 on a 3-node NATS cluster).
    #[arg(long, env = "QRLOGIN_KV_REPLICAS", default_value_t = 1)]
    pub kv_replicas: usize,
    /// Storage of the bucket.
    #[arg(long, env = "QRLOGIN_KV_STORAGE", value_enum, default_value = "file")]
    pub kv_storage: KvStorage,
    /// Events go to `<prefix>.<session_id>`.
    #[arg(
        long,
        env = "QRLOGIN_SUBJECT_PREFIX",
        default_value = "qrlogin.session"
    )]
    pub subject_prefix: String,
    /// The QR payload is `<base>/m/<session_id>`.
    #[arg(
        long,
        env = "QRLOGIN_PUBLIC_BASE_URL",
        default_value = "http://localhost:8080"
    )]
    pub public_base_url: String,
    /// Deadline of PENDING.
    #[arg(long, env = "QRLOGIN_PENDING_TTL", default_value = "120s", value_parser = humantime::parse_duration)]
    pub pending_ttl: Duration,
    /// Deadline of SCANNED.
    #[arg(long, env = "QRLOGIN_SCANNED_TTL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub scanned_ttl: Duration,
    /// Deadline of CONFIRMED.
    #[arg(long, env = "QRLOGIN_CONFIRMED_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub confirmed_ttl: Duration,
    /// How long a record stays in the bucket after its last change.
    #[arg(long, env = "QRLOGIN_SESSION_RETENTION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub session_retention: Duration,
    /// PEM Ed25519 public key that verifies phone users' tokens.
    #[arg(long, env = "QRLOGIN_USER_TOKEN_PUBLIC_KEY_FILE")]
    pub user_token_public_key_file: PathBuf,
    /// Required `iss` of user tokens.
    #[arg(long, env = "QRLOGIN_USER_TOKEN_ISSUER", default_value = "qrlogin-dev")]
    pub user_token_issuer: String,
    /// Required `aud` of user tokens.
    #[arg(long, env = "QRLOGIN_USER_TOKEN_AUDIENCE", default_value = "qrlogin")]
    pub user_token_audience: String,
    /// PEM Ed25519 private key that signs access tokens issued by redeem.
    #[arg(long, env = "QRLOGIN_ACCESS_TOKEN_PRIVATE_KEY_FILE")]
    pub access_token_private_key_file: PathBuf,
    /// `iss` of access tokens.
    #[arg(long, env = "QRLOGIN_ACCESS_TOKEN_ISSUER", default_value = "qrlogin")]
    pub access_token_issuer: String,
    /// `aud` of access tokens.
    #[arg(
        long,
        env = "QRLOGIN_ACCESS_TOKEN_AUDIENCE",
        default_value = "qrlogin-web"
    )]
    pub access_token_audience: String,
    /// Lifetime of access tokens.
    #[arg(long, env = "QRLOGIN_ACCESS_TOKEN_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub access_token_ttl: Duration,
    /// How long in-flight calls may finish after SIGTERM.
    #[arg(long, env = "QRLOGIN_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Log format.
    #[arg(long, env = "QRLOGIN_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
}

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

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

/// The longest deadline we accept; longer waits belong to another design.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

impl AuthConfig {
    /// Builds a configuration from flags alone (defaults for everything not
    /// given), e.g. for tests: `AuthConfig::from_flags(["--nats-url", url, ...])`.
    pub fn from_flags<I, T>(flags: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: AuthConfig,
        }
        let args = std::iter::once(std::ffi::OsString::from("qrlogin-auth"))
            .chain(flags.into_iter().map(Into::into));
        Wrapper::try_parse_from(args).map(|w| w.config)
    }

    pub fn deadlines(&self) -> Deadlines {
        Deadlines {
            pending: self.pending_ttl,
            scanned: self.scanned_ttl,
            confirmed: self.confirmed_ttl,
        }
    }

    /// The base URL without a trailing slash.
    pub fn public_base(&self) -> &str {
        self.public_base_url.trim_end_matches('/')
    }

    /// Checks every value that clap's types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nats_url.split(',').any(|u| u.trim().is_empty()) {
            return Err(invalid("QRLOGIN_NATS_URL", "empty server URL"));
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
        if self.kv_bucket.is_empty()
            || !self
                .kv_bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                "QRLOGIN_KV_BUCKET",
                "use letters, digits, `_` and `-` only",
            ));
        }
        if !(1..=5).contains(&self.kv_replicas) {
            return Err(invalid("QRLOGIN_KV_REPLICAS", "must be 1 to 5"));
        }
        let prefix_ok = !self.subject_prefix.is_empty()
            && self.subject_prefix.split('.').all(|token| {
                !token.is_empty()
                    && token
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        if !prefix_ok {
            return Err(invalid(
                "QRLOGIN_SUBJECT_PREFIX",
                "dot-separated tokens of letters, digits, `_` and `-` (no wildcards)",
            ));
        }
        let base = self.public_base();
        if !(base.starts_with("http://") || base.starts_with("https://"))
            || base.len() <= "https://".len()
            || base.contains(['?', '#', ' '])
        {
            return Err(invalid(
                "QRLOGIN_PUBLIC_BASE_URL",
                "must be an http:// or https:// URL without query or fragment",
            ));
        }
        for (name, ttl) in [
            ("QRLOGIN_PENDING_TTL", self.pending_ttl),
            ("QRLOGIN_SCANNED_TTL", self.scanned_ttl),
            ("QRLOGIN_CONFIRMED_TTL", self.confirmed_ttl),
        ] {
            if ttl < Duration::from_millis(100) || ttl > MAX_TTL {
                return Err(invalid(name, "must be between 100ms and 24h"));
            }
        }
        let longest = self
            .pending_ttl
            .max(self.scanned_ttl)
            .max(self.confirmed_ttl);
        if self.session_retention < longest {
            return Err(invalid(
                "QRLOGIN_SESSION_RETENTION",
                "must be at least the longest state deadline",
            ));
        }
        if self.access_token_ttl < Duration::from_secs(1) {
            return Err(invalid("QRLOGIN_ACCESS_TOKEN_TTL", "must be at least 1s"));
        }
        for (name, value) in [
            ("QRLOGIN_USER_TOKEN_ISSUER", &self.user_token_issuer),
            ("QRLOGIN_USER_TOKEN_AUDIENCE", &self.user_token_audience),
            ("QRLOGIN_ACCESS_TOKEN_ISSUER", &self.access_token_issuer),
            ("QRLOGIN_ACCESS_TOKEN_AUDIENCE", &self.access_token_audience),
        ] {
            if value.trim().is_empty() {
                return Err(invalid(name, "must not be empty"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<&'static str> {
        vec![
            "--user-token-public-key-file",
            "/k/u.pub",
            "--access-token-private-key-file",
            "/k/a.pem",
        ]
    }

    #[test]
    fn defaults_are_valid() {
        let c = AuthConfig::from_flags(base()).unwrap();
        c.validate().unwrap();
        assert_eq!(c.pending_ttl, Duration::from_secs(120));
        assert_eq!(c.listen.port(), 50051);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&[&str], &str)] = &[
            (&["--kv-replicas", "7"], "QRLOGIN_KV_REPLICAS"),
            (&["--subject-prefix", "qrlogin.*"], "QRLOGIN_SUBJECT_PREFIX"),
            (&["--subject-prefix", "a..b"], "QRLOGIN_SUBJECT_PREFIX"),
            (&["--public-base-url", "ftp://x"], "QRLOGIN_PUBLIC_BASE_URL"),
            (&["--pending-ttl", "1ms"], "QRLOGIN_PENDING_TTL"),
            (&["--session-retention", "1s"], "QRLOGIN_SESSION_RETENTION"),
            (&["--kv-bucket", "a.b"], "QRLOGIN_KV_BUCKET"),
        ];
        for (flags, name) in cases {
            let mut args = base();
            args.extend_from_slice(flags);
            let err = AuthConfig::from_flags(args)
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn unparsable_values_are_refused_by_the_parser() {
        let mut args = base();
        args.extend_from_slice(&["--pending-ttl", "soon"]);
        assert!(AuthConfig::from_flags(args).is_err());
        assert!(AuthConfig::from_flags(["--listen", "nowhere"]).is_err());
    }
}
