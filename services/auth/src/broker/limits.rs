//! The create limit that holds across every edge and auth replica: one
//! counter per client network and fixed window in a small key-value bucket
//! (QRLOGIN_LIMITS_BUCKET), incremented with compare-and-swap. Keys expire
//! with the bucket's `max_age` (two windows), so it holds only the networks
//! seen lately.
//!
//! A client network is an IPv4 address or an IPv6 /64 (one host owns a
//! whole /64). When the counters cannot be kept (bucket full, NATS trouble
//! in the middle of a count), the count lets the create through and logs:
//! the session bucket's size cap still bounds what an abuser can store.

use async_nats::jetstream::{self, kv};
use std::net::IpAddr;
use std::time::Duration;

use super::{ensure_bucket, unavailable, BrokerError, BrokerSettings};
use crate::domain::UnixMillis;

/// Concurrent increments of one counter that may lose the race before the
/// caller is told to come back (only a flood from one network gets there).
const MAX_ATTEMPTS: usize = 8;
/// Room for the counters: ~100 bytes per network and window.
const MAX_BYTES: i64 = 64 << 20;

/// What a count decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Over the limit until the window ends.
    Limited {
        retry_after: Duration,
    },
}

pub struct Counters {
    kv: kv::Store,
    window: Duration,
}

/// The counter key of a client address: `v4-198-51-100-4`, or for IPv6 the
/// /64 in hex, `v6-20010db8000000aa`.
pub fn network_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("v4-{a}-{b}-{c}-{d}")
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network_key(IpAddr::V4(v4)),
            None => {
                let prefix: String = v6.octets()[..8]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!("v6-{prefix}")
            }
        },
    }
}

impl Counters {
    pub(super) async fn open(
        js: &jetstream::Context,
        settings: &BrokerSettings,
    ) -> Result<Self, BrokerError> {
        let window = settings.limits_window;
        let want = kv::Config {
            bucket: settings.limits_bucket.clone(),
            description: "qrlogin create counters per client network".into(),
            history: 1,
            max_age: window * 2,
            max_bytes: MAX_BYTES,
            // Counters may be lost with a restart; the sessions may not.
            storage: jetstream::stream::StorageType::Memory,
            num_replicas: settings.replicas,
            ..Default::default()
        };
        let kv = ensure_bucket(js, want, |config| {
            config.max_age = window * 2;
        })
        .await?;
        Ok(Self { kv, window })
    }

    /// Counts one create from `ip` at `now` against `limit` per window.
    pub async fn count(
        &self,
        ip: IpAddr,
        limit: u32,
        now: UnixMillis,
    ) -> Result<Decision, BrokerError> {
        let window_ms = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        let index = now.div_euclid(window_ms);
        let key = format!("{index}.{}", network_key(ip));
        let retry_after =
            Duration::from_millis(u64::try_from((index + 1) * window_ms - now).unwrap_or(0));
        for _ in 0..MAX_ATTEMPTS {
            let entry = self.kv.entry(key.as_str()).await.map_err(unavailable)?;
            let written = match entry {
                Some(e) if e.operation == kv::Operation::Put => {
                    let count: u32 = std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0);
                    if count >= limit {
                        return Ok(Decision::Limited { retry_after });
                    }
                    self.kv
                        .update(key.as_str(), (count + 1).to_string().into(), e.revision)
                        .await
                        .map(|_| ())
                        .map_err(|e| match e.kind() {
                            kv::UpdateErrorKind::WrongLastRevision => None,
                            _ => Some(e.to_string()),
                        })
                }
                _ => self
                    .kv
                    .create(key.as_str(), "1".into())
                    .await
                    .map(|_| ())
                    .map_err(|e| match e.kind() {
                        kv::CreateErrorKind::AlreadyExists => None,
                        _ => Some(e.to_string()),
                    }),
            };
            match written {
                Ok(()) => return Ok(Decision::Allowed),
                // Someone else counted in between: read again.
                Err(None) => continue,
                Err(Some(detail)) => {
                    tracing::warn!(error = %detail, "create counter not kept; letting the create through");
                    return Ok(Decision::Allowed);
                }
            }
        }
        Ok(Decision::Limited {
            retry_after: Duration::from_secs(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_ipv4_addresses_and_ipv6_64s() {
        let key = |s: &str| network_key(s.parse().unwrap());
        assert_eq!(key("198.51.100.4"), "v4-198-51-100-4");
        assert_eq!(
            key("2001:db8:0:aa::1"),
            key("2001:db8:0:aa:ffff:ffff:ffff:ffff")
        );
        assert_eq!(key("2001:db8:0:aa::1"), "v6-20010db8000000aa");
        assert_ne!(key("2001:db8:0:aa::1"), key("2001:db8:0:ab::1"));
        assert_eq!(key("::ffff:198.51.100.4"), "v4-198-51-100-4");
    }
}
