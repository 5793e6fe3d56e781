//! Admission limits: the per-IP create rate and the node-wide connection cap.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Client addresses the rate limiter remembers. When full, addresses whose
/// bucket has refilled are forgotten first, then the least recently seen.
const MAX_TRACKED_IPS: usize = 65_536;

/// Token bucket per client IP: `per_minute` creates in a burst, refilled
/// continuously at `per_minute` per minute.
pub struct CreateRateLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    max_tracked: usize,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl CreateRateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self::with_capacity(per_minute, MAX_TRACKED_IPS)
    }

    fn with_capacity(per_minute: u32, max_tracked: usize) -> Self {
        Self {
            per_minute: f64::from(per_minute),
            buckets: Mutex::new(HashMap::new()),
            max_tracked,
        }
    }

    /// Takes one create from `ip`'s budget, or says how long to wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let rate = self.per_minute / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&ip) && buckets.len() >= self.max_tracked {
            let full = self.per_minute;
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < full);
            if buckets.len() >= self.max_tracked {
                if let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| *k) {
                    buckets.remove(&oldest);
                }
            }
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: self.per_minute,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(self.per_minute);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

/// The node-wide cap on concurrent requests and streams.
#[derive(Clone)]
pub struct ConnectionGate {
    permits: Arc<Semaphore>,
}

/// One admitted request or stream; released on drop.
pub type Admission = OwnedSemaphorePermit;

/// The admission of the current request, for handlers that keep the
/// connection past the response (WebSocket) to take over.
#[derive(Clone, Default)]
pub struct AdmissionSlot(pub Arc<Mutex<Option<Admission>>>);

impl AdmissionSlot {
    pub fn take(&self) -> Option<Admission> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl ConnectionGate {
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
        }
    }

    /// Admits one more, or `None` at the cap (the caller answers 503).
    pub fn try_admit(&self) -> Option<Admission> {
        self.permits.clone().try_acquire_owned().ok()
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

    #[test]
    fn the_table_stays_bounded() {
        let l = CreateRateLimiter::with_capacity(1, 4);
        let t0 = Instant::now();
        for i in 0..10u8 {
            let _ = l.check_at(IpAddr::from([10, 0, 0, i]), t0);
        }
        assert!(l.buckets.lock().unwrap().len() <= 4);
    }

    #[test]
    fn gate_refuses_beyond_the_cap() {
        let g = ConnectionGate::new(1);
        let a = g.try_admit().unwrap();
        assert!(g.try_admit().is_none());
        drop(a);
        assert!(g.try_admit().is_some());
    }
}
