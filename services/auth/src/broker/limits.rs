//! The limits that hold across every edge and auth replica: one counter per
//! subject and fixed window in a small key-value bucket
//! (QRLOGIN_LIMITS_BUCKET), incremented with compare-and-swap. Keys expire
//! with the bucket's `max_age` (two of the longest window), so it holds
//! only the subjects seen lately. Subjects: a client network for creates
//! (an IPv4 address or an IPv6 /64: one host owns a whole /64), a phone
//! user for scans and confirms (a hash of the user id, so that any id
//! makes a valid key and none is stored in clear).
//!
//! When the counters cannot be kept (bucket full, NATS trouble in the
//! middle of a count) the call goes through and is logged: a counter
//! bucket in trouble must not stop every login (it is held in memory, so a
//! single server's restart empties it), and the session bucket's size cap
//! still bounds what an abuser can store.
//!
//! Scans and confirms are counted before their write, beside the session's
//! first read (no round trip added): each attempt takes one compare-and-swap
//! on the counter, so concurrent calls of one user cannot pass the limit
//! together, and refused attempts count too.

use async_nats::jetstream::{self, kv};
use std::net::IpAddr;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

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
}

/// One limit: what is counted, how many per window, and the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The subject part of the counter key (`v4-…`, `scan-u-…`).
    pub subject: String,
    pub limit: u32,
    pub window: Duration,
}

impl Limit {
    /// Creates from the network of `ip`.
    pub fn network(ip: IpAddr, limit: u32, window: Duration) -> Self {
        Self {
            subject: network_key(ip),
            limit,
            window,
        }
    }

    /// `action` (`scan`, `confirm`) by the phone user `user_id`.
    pub fn user(action: &str, user_id: &str, limit: u32, window: Duration) -> Self {
        let digest = Sha256::new()
            .chain_update(b"qrlogin user limit\0")
            .chain_update(user_id.as_bytes())
            .finalize();
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            subject: format!("{action}-u-{hex}"),
            limit,
            window,
        }
    }

    /// The counter's key at `now` and how long until its window ends.
    fn key_at(&self, now: UnixMillis) -> (String, Duration) {
        let window_ms = i64::try_from(self.window.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let index = now.div_euclid(window_ms);
        let left = Duration::from_millis(u64::try_from((index + 1) * window_ms - now).unwrap_or(0));
        (format!("{index}.{}", self.subject), left)
    }
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
            description:
                "qrlogin counters: creates per client network, scans and confirms per user".into(),
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
        Ok(Self { kv })
    }

    /// The same bucket through `js` (another request timeout).
    pub(super) async fn reopen(&self, js: &jetstream::Context) -> Result<Self, BrokerError> {
        let kv = js
            .get_key_value(self.kv.name.as_str())
            .await
            .map_err(unavailable)?;
        Ok(Self { kv })
    }

    /// Counts one call of `what` at `now` against its limit, bounded by the
    /// call's `deadline` like every store operation.
    pub async fn count(
        &self,
        what: &Limit,
        now: UnixMillis,
        deadline: tokio::time::Instant,
    ) -> Result<Decision, BrokerError> {
        tokio::time::timeout_at(deadline, self.count_once(what, now))
            .await
            .unwrap_or_else(|_| Err(BrokerError::Unavailable("timed out".into())))
    }

    async fn count_once(&self, what: &Limit, now: UnixMillis) -> Result<Decision, BrokerError> {
        let (key, retry_after) = what.key_at(now);
        let limit = what.limit;
        for _ in 0..MAX_ATTEMPTS {
            let entry = self.kv.entry(key.as_str()).await.map_err(unavailable)?;
            let written = match entry {
                Some(e) if e.operation == kv::Operation::Put => {
                    let count = parse_count(&e.value);
                    if count >= limit {
                        return Ok(Decision::Limited { retry_after });
                    }
                    self.kv
                        .update(key.as_str(), (count + 1).to_string().into(), e.revision)
                        .await
                        .map(|_| ())
                        .map_err(|e| match e.kind() {
                            // Lost the race, or no answer in time (the
                            // write may have committed: counting again errs
                            // towards the limit).
                            kv::UpdateErrorKind::WrongLastRevision
                            | kv::UpdateErrorKind::TimedOut => None,
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
                // Someone else counted in between, or the write timed out:
                // read again.
                Err(None) => continue,
                Err(Some(detail)) => {
                    tracing::warn!(error = %detail, subject = %what.subject, "counter not kept; letting the call through");
                    return Ok(Decision::Allowed);
                }
            }
        }
        Ok(Decision::Limited {
            retry_after: Duration::from_secs(1),
        })
    }
}

fn parse_count(value: &[u8]) -> u32 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
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

    #[test]
    fn user_subjects_are_valid_keys_for_any_user_id() {
        let w = Duration::from_secs(60);
        let a = Limit::user("scan", "alice@example.com/ü", 5, w);
        assert!(a.subject.starts_with("scan-u-"));
        assert!(a
            .subject
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        assert_ne!(a.subject, Limit::user("scan", "bob", 5, w).subject);
        assert_ne!(
            a.subject,
            Limit::user("confirm", "alice@example.com/ü", 5, w).subject
        );
        let (key, left) = a.key_at(90_000);
        assert_eq!(key, format!("1.{}", a.subject));
        assert_eq!(left, Duration::from_secs(30));
    }
}
