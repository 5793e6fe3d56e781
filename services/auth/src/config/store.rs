//! How auth reaches the session store on a NATS cluster: the server list of
//! QRLOGIN_NATS_URL, how fast a frozen member is noticed (client pings),
//! how long one JetStream request may wait, and how long a store call is
//! retried through a member's death or a leader election (docs/operations.md,
//! "NATS member failures and what auth does"). Flattened into
//! [`super::AuthConfig`]: the same flags and variables.

use async_nats::ServerAddr;
use clap::Args;
use std::time::Duration;

use super::{invalid, ConfigError};

#[derive(Debug, Clone, Args)]
pub struct StoreConfig {
    /// How often auth's NATS client pings a server it heard nothing from;
    /// after three silent intervals (async-nats disconnects at the third
    /// unanswered ping) the client drops the connection and moves to
    /// another member: a frozen member is noticed within three intervals.
    #[arg(long, env = "QRLOGIN_NATS_PING_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub nats_ping_interval: Duration,
    /// Longest wait for the answer to one JetStream request (a read, or the
    /// acknowledgement of a write); a request that times out is retried.
    #[arg(long, env = "QRLOGIN_NATS_REQUEST_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub nats_request_timeout: Duration,
    /// How long one gRPC call retries store operations that failed in a
    /// retryable way (timeouts, no responders, leader elections), never past
    /// the caller's own deadline (`grpc-timeout`) nor QRLOGIN_REQUEST_TIMEOUT
    /// (less a moment to answer); then UNAVAILABLE.
    #[arg(long, env = "QRLOGIN_STORE_RETRY_DEADLINE", default_value = "4s", value_parser = humantime::parse_duration)]
    pub store_retry_deadline: Duration,
}

impl StoreConfig {
    /// Checks the values against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nats_ping_interval < Duration::from_millis(100)
            || self.nats_ping_interval > Duration::from_secs(60)
        {
            return Err(invalid(
                "QRLOGIN_NATS_PING_INTERVAL",
                "must be between 100ms and 60s",
            ));
        }
        if self.nats_request_timeout < Duration::from_millis(100)
            || self.nats_request_timeout > Duration::from_secs(30)
        {
            return Err(invalid(
                "QRLOGIN_NATS_REQUEST_TIMEOUT",
                "must be between 100ms and 30s",
            ));
        }
        if self.store_retry_deadline < self.nats_request_timeout {
            return Err(invalid(
                "QRLOGIN_STORE_RETRY_DEADLINE",
                "must be at least QRLOGIN_NATS_REQUEST_TIMEOUT (one attempt)",
            ));
        }
        if self.store_retry_deadline > Duration::from_secs(300) {
            return Err(invalid(
                "QRLOGIN_STORE_RETRY_DEADLINE",
                "must be at most 5m",
            ));
        }
        Ok(())
    }
}

/// The servers of QRLOGIN_NATS_URL: comma-separated `nats://` or `tls://`
/// URLs (`host:port` alone means `nats://`), each checked here so that a
/// bad one is named at start instead of being retried forever.
pub fn parse_nats_servers(list: &str) -> Result<Vec<ServerAddr>, ConfigError> {
    let parts: Vec<&str> = list.split(',').map(str::trim).collect();
    let count = parts.len();
    let mut servers = Vec::with_capacity(count);
    for (i, part) in parts.into_iter().enumerate() {
        let which = || {
            if count == 1 {
                "the server URL".to_owned()
            } else {
                format!("server {} of {count}", i + 1)
            }
        };
        if part.is_empty() {
            return Err(invalid("QRLOGIN_NATS_URL", format!("{} is empty", which())));
        }
        // Credentials in a URL end up in logs and process listings.
        if part.contains('@') {
            return Err(invalid(
                "QRLOGIN_NATS_URL",
                "must not carry credentials; use QRLOGIN_NATS_NKEY_SEED_FILE",
            ));
        }
        let addr: ServerAddr = part
            .parse()
            .map_err(|e| invalid("QRLOGIN_NATS_URL", format!("{} ({part:?}): {e}", which())))?;
        if !matches!(addr.scheme(), "nats" | "tls") {
            return Err(invalid(
                "QRLOGIN_NATS_URL",
                format!("{} ({part:?}): use nats:// or tls://", which()),
            ));
        }
        servers.push(addr);
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comma_separated_list_gives_every_server() {
        let servers = parse_nats_servers(
            "nats://127.0.0.1:4222, nats://127.0.0.1:4223 ,tls://nats-2.example:4224",
        )
        .unwrap();
        let ports: Vec<u16> = servers.iter().map(|s| s.port()).collect();
        assert_eq!(ports, [4222, 4223, 4224]);
        assert_eq!(servers[1].host(), "127.0.0.1");
        assert!(servers[2].tls_required());
        let one = parse_nats_servers("127.0.0.1:4222").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].port(), 4222);
    }

    #[test]
    fn a_bad_member_is_named() {
        for (list, needle) in [
            (
                "nats://127.0.0.1:4222,nats://127.0.0.1:42x3",
                "server 2 of 2",
            ),
            (
                "nats://127.0.0.1:4222,,nats://127.0.0.1:4224",
                "server 2 of 3 is empty",
            ),
            ("", "the server URL is empty"),
            ("nats://127.0.0.1:99999", "the server URL"),
            ("http://127.0.0.1:4222", "invalid scheme"),
            ("ws://127.0.0.1:4222", "use nats:// or tls://"),
            ("nats://u:p@127.0.0.1:4222", "credentials"),
        ] {
            let err = parse_nats_servers(list).unwrap_err().to_string();
            assert!(err.contains("QRLOGIN_NATS_URL"), "{list}: {err}");
            assert!(err.contains(needle), "{list}: {err}");
        }
    }
}
