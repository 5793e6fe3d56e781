//! The one typed configuration of the auth service: flags, each backed by an
//! environment variable (flags win), defaults in one place. `validate` runs
//! before any port is bound. Key material is read from files whose paths are
//! configured; the keys themselves are never printed.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::{Deadlines, Rules};

mod dev;
mod identity;
mod protocol;
mod store;
pub use dev::{DevKeygenArgs, DevNatsConfigArgs, DevTokenArgs};
pub use identity::{IdentityConfig, IssuerSpec};
pub use protocol::{ProtocolConfig, PRODUCTION_MIN_ROTATION};
pub use store::{parse_nats_servers, StoreConfig};

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
    DevNatsConfig(Box<DevNatsConfigArgs>),
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
    /// NATS server URL(s), comma-separated: auth connects to any of them
    /// and moves to another when one fails.
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
    /// The QR payload is `<base>/m/<session_id>#<epoch>.<tag>`.
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
    /// Key that seals the private part of stored sessions: 32 random bytes,
    /// base64 (`openssl rand -base64 32`). Every auth replica uses the same.
    #[arg(long, env = "QRLOGIN_RECORD_KEY_FILE")]
    pub record_key_file: PathBuf,
    /// The key used before the current one, during a rotation: records it
    /// sealed still open. Drop it once QRLOGIN_SESSION_RETENTION has passed.
    #[arg(long, env = "QRLOGIN_RECORD_PREVIOUS_KEY_FILE")]
    pub record_previous_key_file: Option<PathBuf>,
    /// How long a record stays in the bucket after its last change.
    #[arg(long, env = "QRLOGIN_SESSION_RETENTION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub session_retention: Duration,
    /// PEM Ed25519 public key that verifies phone users' tokens of the
    /// issuer QRLOGIN_USER_TOKEN_ISSUER (one more trusted issuer beside
    /// QRLOGIN_TRUSTED_ISSUERS).
    #[arg(long, env = "QRLOGIN_USER_TOKEN_PUBLIC_KEY_FILE")]
    pub user_token_public_key_file: Option<PathBuf>,
    /// Required `iss` of user tokens verified with the PEM key.
    #[arg(long, env = "QRLOGIN_USER_TOKEN_ISSUER", default_value = "qrlogin-dev")]
    pub user_token_issuer: String,
    /// Required `aud` of user tokens.
    #[arg(long, env = "QRLOGIN_USER_TOKEN_AUDIENCE", default_value = "qrlogin")]
    pub user_token_audience: String,
    /// Longest lifetime (`exp - iat`) a user token may have.
    #[arg(long, env = "QRLOGIN_USER_TOKEN_MAX_LIFETIME", default_value = "24h", value_parser = humantime::parse_duration)]
    pub user_token_max_lifetime: Duration,
    /// PEM Ed25519 private key that signs access tokens issued by redeem.
    #[arg(long, env = "QRLOGIN_ACCESS_TOKEN_PRIVATE_KEY_FILE")]
    pub access_token_private_key_file: PathBuf,
    /// The key that signs next (PEM, Ed25519, public or private): published
    /// in the JWKS ahead of the rotation (docs/operations.md).
    #[arg(long, env = "QRLOGIN_ACCESS_TOKEN_NEXT_KEY_FILE")]
    pub access_token_next_key_file: Option<PathBuf>,
    /// The key that signed before the current one (PEM, Ed25519, public or
    /// private): still published, so its tokens verify until they expire.
    #[arg(long, env = "QRLOGIN_ACCESS_TOKEN_PREVIOUS_KEY_FILE")]
    pub access_token_previous_key_file: Option<PathBuf>,
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
    /// Service tokens the edges (and other trusted backends) present in
    /// `x-qrlogin-service-token`: one per line, at least 32 characters; `#`
    /// starts a comment. Several lines allow a rotation without downtime.
    #[arg(long, env = "QRLOGIN_SERVICE_TOKENS_FILE")]
    pub service_tokens_file: PathBuf,
    /// PEM certificate (chain) of the gRPC server; with the key, auth speaks TLS only.
    #[arg(long, env = "QRLOGIN_AUTH_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of QRLOGIN_AUTH_TLS_CERT_FILE.
    #[arg(long, env = "QRLOGIN_AUTH_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA bundle; when set, callers must present a client certificate it signed (mTLS).
    #[arg(long, env = "QRLOGIN_AUTH_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// A second, plaintext listener serving only grpc.health.v1 (for
    /// probes that cannot speak TLS); unset: none.
    #[arg(long, env = "QRLOGIN_AUTH_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// The operations port: `/metrics`, `/healthz`, `/readyz` over plain
    /// HTTP (never on the gRPC port); unset: none.
    #[arg(long, env = "QRLOGIN_AUTH_OPS_LISTEN")]
    pub ops_listen: Option<SocketAddr>,
    /// Serve gRPC server reflection (what grpcurl uses to list services).
    #[arg(long, env = "QRLOGIN_GRPC_REFLECTION", default_value_t = false, action = clap::ArgAction::Set)]
    pub grpc_reflection: bool,
    /// AuthService calls in progress at once; beyond: RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "QRLOGIN_MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,
    /// Longest an AuthService call may take; beyond: DEADLINE_EXCEEDED.
    #[arg(long, env = "QRLOGIN_REQUEST_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Sessions one client network (IPv4 address, IPv6 /64) may create per
    /// window, counted across every auth replica and edge; 0 turns it off.
    #[arg(long, env = "QRLOGIN_CREATE_LIMIT", default_value_t = 60)]
    pub create_limit: u32,
    /// The fixed window of QRLOGIN_CREATE_LIMIT.
    #[arg(long, env = "QRLOGIN_CREATE_LIMIT_WINDOW", default_value = "60s", value_parser = humantime::parse_duration)]
    pub create_limit_window: Duration,
    /// JetStream key-value bucket of the create counters (created if missing).
    #[arg(long, env = "QRLOGIN_LIMITS_BUCKET", default_value = "qrlogin_limits")]
    pub limits_bucket: String,
    /// Largest size of the session bucket (e.g. 512MiB); when full, creates
    /// are refused (RESOURCE_EXHAUSTED, edge 503 storage_full).
    #[arg(long, env = "QRLOGIN_KV_MAX_BYTES", default_value = "512MiB", value_parser = byte_size)]
    pub kv_max_bytes: u64,
    /// Number matching, rotating QR codes, key binding, per-user limits.
    #[command(flatten)]
    pub protocol: ProtocolConfig,
    /// Trusted issuers of phone tokens, their keys, the user's claims.
    #[command(flatten)]
    pub identity: IdentityConfig,
    /// Client pings, request timeout and retries of the session store.
    #[command(flatten)]
    pub store: StoreConfig,
    /// How long in-flight calls may finish after SIGTERM.
    #[arg(long, env = "QRLOGIN_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Log format.
    #[arg(long, env = "QRLOGIN_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

/// `512MiB`, `1GiB`, `64KiB` or a plain number of bytes.
pub fn byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 512MiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(format!("{text:?}: use B, KiB, MiB or GiB")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
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

    /// The transition rules: deadlines and the QR code's rotation.
    pub fn rules(&self) -> Rules {
        Rules {
            deadlines: self.deadlines(),
            qr: self.protocol.qr_rules(),
            redeem_retry: self.protocol.redeem_retry_window,
        }
    }

    /// The servers of QRLOGIN_NATS_URL (see [`parse_nats_servers`]).
    pub fn nats_servers(&self) -> Result<Vec<async_nats::ServerAddr>, ConfigError> {
        parse_nats_servers(&self.nats_url)
    }

    /// The base URL without a trailing slash.
    pub fn public_base(&self) -> &str {
        self.public_base_url.trim_end_matches('/')
    }

    /// Every trusted issuer of phone tokens: QRLOGIN_TRUSTED_ISSUERS, and
    /// QRLOGIN_USER_TOKEN_ISSUER with the PEM key when one is configured.
    pub fn trusted_issuers(&self) -> Result<Vec<IssuerSpec>, ConfigError> {
        let mut issuers = self.identity.issuers(&self.user_token_audience)?;
        if let Some(pem) = &self.user_token_public_key_file {
            if issuers.iter().any(|i| i.issuer == self.user_token_issuer) {
                return Err(invalid(
                    "QRLOGIN_TRUSTED_ISSUERS",
                    "lists QRLOGIN_USER_TOKEN_ISSUER, whose key is QRLOGIN_USER_TOKEN_PUBLIC_KEY_FILE",
                ));
            }
            issuers.push(IssuerSpec {
                issuer: self.user_token_issuer.clone(),
                audience: self.user_token_audience.clone(),
                source: crate::identity::discovery::KeySource::PemFile(pem.clone()),
            });
        }
        Ok(issuers)
    }

    /// Checks every value that clap's types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.nats_servers()?;
        if self.nats_tls_cert_file.is_some() != self.nats_tls_key_file.is_some() {
            return Err(invalid(
                "QRLOGIN_NATS_TLS_CERT_FILE",
                "set together with QRLOGIN_NATS_TLS_KEY_FILE",
            ));
        }
        for (name, bucket) in [
            ("QRLOGIN_KV_BUCKET", &self.kv_bucket),
            ("QRLOGIN_LIMITS_BUCKET", &self.limits_bucket),
        ] {
            if bucket.is_empty()
                || !bucket
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(name, "use letters, digits, `_` and `-` only"));
            }
        }
        if self.limits_bucket == self.kv_bucket {
            return Err(invalid(
                "QRLOGIN_LIMITS_BUCKET",
                "must differ from QRLOGIN_KV_BUCKET",
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(invalid(
                "QRLOGIN_AUTH_TLS_CERT_FILE",
                "set together with QRLOGIN_AUTH_TLS_KEY_FILE",
            ));
        }
        if self.tls_client_ca_file.is_some() && self.tls_cert_file.is_none() {
            return Err(invalid(
                "QRLOGIN_AUTH_TLS_CLIENT_CA_FILE",
                "client certificates need TLS: set QRLOGIN_AUTH_TLS_CERT_FILE and _KEY_FILE",
            ));
        }
        if self
            .health_listen
            .is_some_and(|h| h.port() != 0 && h == self.listen)
        {
            return Err(invalid(
                "QRLOGIN_AUTH_HEALTH_LISTEN",
                "must differ from QRLOGIN_AUTH_LISTEN",
            ));
        }
        if let Some(ops) = self.ops_listen.filter(|o| o.port() != 0) {
            if ops == self.listen || Some(ops) == self.health_listen {
                return Err(invalid(
                    "QRLOGIN_AUTH_OPS_LISTEN",
                    "must differ from QRLOGIN_AUTH_LISTEN and QRLOGIN_AUTH_HEALTH_LISTEN",
                ));
            }
        }
        if !(1..=100_000).contains(&self.max_concurrent_requests) {
            return Err(invalid(
                "QRLOGIN_MAX_CONCURRENT_REQUESTS",
                "must be 1 to 100000",
            ));
        }
        if self.request_timeout < Duration::from_millis(100)
            || self.request_timeout > Duration::from_secs(300)
        {
            return Err(invalid(
                "QRLOGIN_REQUEST_TIMEOUT",
                "must be between 100ms and 5m",
            ));
        }
        if self.create_limit_window < Duration::from_secs(1) || self.create_limit_window > MAX_TTL {
            return Err(invalid(
                "QRLOGIN_CREATE_LIMIT_WINDOW",
                "must be between 1s and 24h",
            ));
        }
        if self.kv_max_bytes < 16 << 10 {
            return Err(invalid("QRLOGIN_KV_MAX_BYTES", "must be at least 16KiB"));
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
            .max(self.confirmed_ttl)
            .max(self.protocol.redeem_retry_window);
        if self.session_retention < longest {
            return Err(invalid(
                "QRLOGIN_SESSION_RETENTION",
                "must be at least the longest state deadline and QRLOGIN_REDEEM_RETRY_WINDOW",
            ));
        }
        if self.access_token_ttl < Duration::from_secs(1) {
            return Err(invalid("QRLOGIN_ACCESS_TOKEN_TTL", "must be at least 1s"));
        }
        if self.user_token_max_lifetime < Duration::from_secs(60) {
            return Err(invalid(
                "QRLOGIN_USER_TOKEN_MAX_LIFETIME",
                "must be at least 1m",
            ));
        }
        self.identity.validate()?;
        let issuers = self.trusted_issuers()?;
        if issuers.is_empty() {
            return Err(invalid(
                "QRLOGIN_TRUSTED_ISSUERS",
                "no issuer of phone tokens is trusted: set it or QRLOGIN_USER_TOKEN_PUBLIC_KEY_FILE",
            ));
        }
        // Otherwise an access token auth issued could pass where a user
        // token is expected, should the keys ever be shared too.
        if issuers.iter().any(|i| {
            i.issuer == self.access_token_issuer && i.audience == self.access_token_audience
        }) {
            return Err(invalid(
                "QRLOGIN_ACCESS_TOKEN_AUDIENCE",
                "user and access tokens must not share both issuer and audience",
            ));
        }
        self.protocol.validate()?;
        self.store.validate()?;
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
            "--record-key-file",
            "/k/record.key",
            "--service-tokens-file",
            "/k/service-tokens",
        ]
    }

    #[test]
    fn defaults_are_valid() {
        let c = AuthConfig::from_flags(base()).unwrap();
        c.validate().unwrap();
        assert_eq!(c.pending_ttl, Duration::from_secs(120));
        assert_eq!(c.listen.port(), 50051);
        assert!(!c.grpc_reflection, "reflection is off unless asked for");
        assert_eq!(c.kv_max_bytes, 512 << 20);
        assert!(
            c.protocol.number_matching,
            "number matching is on by default"
        );
        assert_eq!(c.protocol.qr_rotation, Duration::from_secs(25));
        assert!(!c.protocol.require_key_binding);
        assert_eq!(c.protocol.scan_limit, 30);
        assert_eq!(c.protocol.redeem_retry_window, Duration::from_secs(30));
        assert_eq!(c.store.nats_ping_interval, Duration::from_secs(1));
        assert_eq!(c.store.store_retry_deadline, Duration::from_secs(4));
        assert!(c.store.store_retry_deadline < c.request_timeout);
        assert_eq!(byte_size("64KiB"), Ok(65536));
        assert!(byte_size("12 parsecs").is_err());
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
            (
                &["--limits-bucket", "qrlogin_sessions"],
                "QRLOGIN_LIMITS_BUCKET",
            ),
            (&["--tls-cert-file", "/c.pem"], "QRLOGIN_AUTH_TLS_CERT_FILE"),
            (
                &["--tls-client-ca-file", "/ca.pem"],
                "QRLOGIN_AUTH_TLS_CLIENT_CA_FILE",
            ),
            (
                &["--max-concurrent-requests", "0"],
                "QRLOGIN_MAX_CONCURRENT_REQUESTS",
            ),
            (&["--request-timeout", "1ms"], "QRLOGIN_REQUEST_TIMEOUT"),
            (
                &["--user-token-algorithms", "RS256,HS256"],
                "QRLOGIN_USER_TOKEN_ALGORITHMS",
            ),
            (
                &["--user-token-algorithms", "none"],
                "QRLOGIN_USER_TOKEN_ALGORITHMS",
            ),
            (
                &["--user-account-claim", "name"],
                "QRLOGIN_USER_ACCOUNT_CLAIM",
            ),
            (&["--jwks-max-keys", "0"], "QRLOGIN_JWKS_MAX_KEYS"),
            (
                &["--jwks-min-refresh-interval", "1ms"],
                "QRLOGIN_JWKS_MIN_REFRESH_INTERVAL",
            ),
            (
                &["--trusted-issuers", "http://sso.example.com"],
                "QRLOGIN_TRUSTED_ISSUERS",
            ),
            (
                &["--trusted-issuers", "https://a.example flavour=x"],
                "QRLOGIN_TRUSTED_ISSUERS",
            ),
            (
                &["--trusted-issuers", "qrlogin-dev"],
                "QRLOGIN_TRUSTED_ISSUERS",
            ),
            (
                &["--nats-url", "nats://127.0.0.1:4222,nats://127.0.0.1:x"],
                "QRLOGIN_NATS_URL",
            ),
            (
                &["--nats-url", "nats://a:b@127.0.0.1:4222"],
                "QRLOGIN_NATS_URL",
            ),
            (
                &["--nats-ping-interval", "10ms"],
                "QRLOGIN_NATS_PING_INTERVAL",
            ),
            (
                &["--nats-request-timeout", "50ms"],
                "QRLOGIN_NATS_REQUEST_TIMEOUT",
            ),
            (
                &["--store-retry-deadline", "6m"],
                "QRLOGIN_STORE_RETRY_DEADLINE",
            ),
            (
                &["--store-retry-deadline", "500ms"],
                "QRLOGIN_STORE_RETRY_DEADLINE",
            ),
            (
                &["--redeem-retry-window", "10m"],
                "QRLOGIN_REDEEM_RETRY_WINDOW",
            ),
            (&["--kv-max-bytes", "1KiB"], "QRLOGIN_KV_MAX_BYTES"),
            (&["--qr-rotation", "31s"], "QRLOGIN_QR_ROTATION"),
            (&["--qr-rotation", "500ms"], "QRLOGIN_QR_ROTATION"),
            (&["--qr-grace", "11s"], "QRLOGIN_QR_GRACE"),
            (&["--proof-max-age", "1s"], "QRLOGIN_PROOF_MAX_AGE"),
            (&["--user-limit-window", "0s"], "QRLOGIN_USER_LIMIT_WINDOW"),
            (
                &["--user-token-max-lifetime", "10s"],
                "QRLOGIN_USER_TOKEN_MAX_LIFETIME",
            ),
            (
                &[
                    "--access-token-issuer",
                    "qrlogin-dev",
                    "--access-token-audience",
                    "qrlogin",
                ],
                "QRLOGIN_ACCESS_TOKEN_AUDIENCE",
            ),
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
