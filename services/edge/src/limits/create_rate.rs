//! The per-client create rate: a token bucket per [`ClientKey`] in a
//! bounded least-recently-used table.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::ClientKey;

/// Client keys the rate limiter remembers. When full, the least recently
/// seen key is forgotten (in O(1)); a forgotten key starts again with a
/// full budget, so the bound trades memory for precision under address
/// churn only.
const MAX_TRACKED_CLIENTS: usize = 65_536;

/// Token bucket per client key: `per_minute` creates in a burst, refilled
/// continuously at `per_minute` per minute. This is the node's own limit;
/// the limit that holds across edges is auth's.
pub struct CreateRateLimiter {
    per_minute: f64,
    buckets: Mutex<Lru>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

const NIL: u32 = u32::MAX;

/// A fixed-capacity least-recently-used map from client key to bucket:
/// a hash map to slot indices plus a doubly linked list threaded through
/// the slots (most recent at `head`). Every operation is O(1); nothing
/// scans the table under the lock.
struct Lru {
    index: HashMap<ClientKey, u32>,
    slots: Vec<Slot>,
    head: u32,
    tail: u32,
    capacity: usize,
}

struct Slot {
    key: ClientKey,
    bucket: Bucket,
    prev: u32,
    next: u32,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Self {
            index: HashMap::new(),
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity: capacity.max(1),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.index.len()
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let s = &mut self.slots[i as usize];
            s.prev = NIL;
            s.next = old;
        }
        match old {
            NIL => self.tail = i,
            o => self.slots[o as usize].prev = i,
        }
        self.head = i;
    }

    /// The bucket of `key`, made the most recent; a new one (`fresh`) when
    /// absent, evicting the least recent key when full.
    fn get_or_insert(&mut self, key: ClientKey, fresh: Bucket) -> &mut Bucket {
        let i = match self.index.get(&key) {
            Some(&i) => {
                self.unlink(i);
                i
            }
            None if self.index.len() >= self.capacity => {
                let i = self.tail;
                self.unlink(i);
                let slot = &mut self.slots[i as usize];
                self.index.remove(&slot.key);
                slot.key = key;
                slot.bucket = fresh;
                self.index.insert(key, i);
                i
            }
            None => {
                let i = self.slots.len() as u32;
                self.slots.push(Slot {
                    key,
                    bucket: fresh,
                    prev: NIL,
                    next: NIL,
                });
                self.index.insert(key, i);
                i
            }
        };
        self.push_front(i);
        &mut self.slots[i as usize].bucket
    }
}

impl CreateRateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self::with_capacity(per_minute, MAX_TRACKED_CLIENTS)
    }

    fn with_capacity(per_minute: u32, max_tracked: usize) -> Self {
        Self {
            per_minute: f64::from(per_minute),
            buckets: Mutex::new(Lru::new(max_tracked)),
        }
    }

    /// Takes one create from the budget of `ip`'s client key, or says how
    /// long to wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let rate = self.per_minute / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.get_or_insert(
            ClientKey::of(ip),
            Bucket {
                tokens: self.per_minute,
                at: now,
            },
        );
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate)
            .min(self.per_minute);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let l = CreateRateLimiter::new(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            l.check_at(ip, t0).unwrap();
        }
        let wait = l.check_at(ip, t0).unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        // Another address has its own budget.
        l.check_at("192.0.2.2".parse().unwrap(), t0).unwrap();
        // 20 s later one create is allowed again.
        l.check_at(ip, t0 + Duration::from_secs(20)).unwrap();
        assert!(l.check_at(ip, t0 + Duration::from_secs(20)).is_err());
    }

    /// Regression: the budget was per exact address, so one IPv6 host (which
    /// owns a /64) had 2^64 budgets; IPv4-mapped addresses were a second
    /// budget for the same IPv4 client.
    #[test]
    fn ipv6_shares_a_budget_per_64_and_mapped_ipv4_is_ipv4() {
        let l = CreateRateLimiter::new(2);
        let t0 = Instant::now();
        l.check_at("2001:db8:1:2::1".parse().unwrap(), t0).unwrap();
        l.check_at("2001:db8:1:2:ffff::9".parse().unwrap(), t0)
            .unwrap();
        assert!(l
            .check_at("2001:db8:1:2:dead:beef:0:1".parse().unwrap(), t0)
            .is_err());
        // The next /64 is another client.
        l.check_at("2001:db8:1:3::1".parse().unwrap(), t0).unwrap();
        l.check_at("192.0.2.7".parse().unwrap(), t0).unwrap();
        l.check_at("::ffff:192.0.2.7".parse().unwrap(), t0).unwrap();
        assert!(l.check_at("192.0.2.7".parse().unwrap(), t0).is_err());
        assert_eq!(
            ClientKey::of("2001:db8:1:2:3:4:5:6".parse().unwrap()).to_string(),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn the_table_stays_bounded_and_forgets_the_least_recent() {
        let l = CreateRateLimiter::with_capacity(1, 4);
        let t0 = Instant::now();
        for i in 0..10u8 {
            let _ = l.check_at(IpAddr::from([10, 0, 0, i]), t0);
        }
        assert_eq!(l.buckets.lock().unwrap().len(), 4);
        // 10.0.0.6..=9 are remembered (empty budgets); touching 6 makes 7
        // the least recent, so a new key evicts 7 and keeps 6.
        assert!(l.check_at(IpAddr::from([10, 0, 0, 6]), t0).is_err());
        l.check_at(IpAddr::from([10, 0, 0, 100]), t0).unwrap();
        assert!(l.check_at(IpAddr::from([10, 0, 0, 6]), t0).is_err());
        assert!(l.check_at(IpAddr::from([10, 0, 0, 7]), t0).is_ok());
    }

    /// Regression: eviction scanned all 65,536 entries under the lock for
    /// every new address once the table was full (O(n) per create). With the
    /// LRU, a million distinct addresses through a full table stay fast.
    #[test]
    fn eviction_is_constant_time() {
        let l = CreateRateLimiter::with_capacity(30, MAX_TRACKED_CLIENTS);
        let t0 = Instant::now();
        let started = Instant::now();
        for i in 0..1_000_000u32 {
            let _ = l.check_at(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert_eq!(l.buckets.lock().unwrap().len(), MAX_TRACKED_CLIENTS);
        // The scanning version needs minutes here (65,536 × 934,464 steps);
        // the LRU needs well under a second even unoptimised.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }
}
