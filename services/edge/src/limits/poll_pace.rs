//! The short-poll pace (RFC 8628's `slow_down`, for browsers): the interval
//! every poll answer asks for, and the time of the last poll of each session
//! this node answered, in a bounded least-recently-used table.

use std::{
    hash::BuildHasher,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::lru::Lru;
use crate::domain::SessionId;

/// Sessions whose last poll this node remembers. When full, the least
/// recently polled is forgotten (O(1)); a forgotten session's next poll is
/// answered, so the bound costs precision only under more than this many
/// sessions polled at once on one node (about 5 MB at the bound).
const MAX_TRACKED_SESSIONS: usize = 65_536;

/// The pace of short polls of one session on this node.
///
/// A poll is too early when it comes less than half the interval after the
/// last answered one: timers of a page in a background tab, a retry after a
/// network error and a transport fallback all come early by less than that,
/// a poller that ignores the interval does not. A refused poll does not move
/// the clock, so a client that waits `Retry-After` is answered. Behind a
/// balancer that spreads polls over N edges, each edge sees every N-th poll:
/// per-node enforcement then catches a client polling N·2 times faster than
/// asked (docs/security.md, "Poll pace").
///
/// The pace is kept per session *and browser secret* (a keyed hash of it):
/// the session id is in the QR code, so someone who read it must not be
/// able to slow the real browser's polls down with polls of their own.
pub struct PollPace {
    interval: Duration,
    last: Mutex<Lru<(SessionId, u64), Option<Instant>>>,
    /// Keys the hash of secrets (random per process).
    hasher: std::collections::hash_map::RandomState,
}

impl PollPace {
    pub fn new(interval: Duration) -> Self {
        Self::with_capacity(interval, MAX_TRACKED_SESSIONS)
    }

    fn with_capacity(interval: Duration, max_tracked: usize) -> Self {
        Self {
            interval,
            last: Mutex::new(Lru::new(max_tracked)),
            hasher: Default::default(),
        }
    }

    /// The interval a short-poll client must keep (`poll_interval_ms`).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Records a poll of `id` with `secret` now, or says how long to wait
    /// before the next.
    pub fn check(&self, id: &SessionId, secret: &str) -> Result<(), Duration> {
        self.check_at(id, secret, Instant::now())
    }

    fn check_at(&self, id: &SessionId, secret: &str, now: Instant) -> Result<(), Duration> {
        let key = (id.clone(), self.hasher.hash_one(secret));
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let at = last.get_or_insert(key, None);
        if let Some(previous) = *at {
            let since = now.saturating_duration_since(previous);
            if since < self.interval / 2 {
                return Err(self.interval.saturating_sub(since));
            }
        }
        *at = Some(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> SessionId {
        SessionId::parse(&format!("q3Zb0Xz2kT9yLw1sJm5H{:02}", n)).unwrap()
    }

    #[test]
    fn polls_faster_than_half_the_interval_wait_for_the_rest_of_it() {
        let pace = PollPace::new(Duration::from_secs(2));
        let t0 = Instant::now();
        pace.check_at(&id(1), "s", t0).unwrap();
        let wait = pace
            .check_at(&id(1), "s", t0 + Duration::from_millis(300))
            .unwrap_err();
        assert_eq!(wait, Duration::from_millis(1700));
        // Another session has its own pace, and so has another secret (the
        // id is in the QR code: its readers cannot slow the browser down).
        pace.check_at(&id(2), "s", t0).unwrap();
        pace.check_at(&id(1), "guess", t0 + Duration::from_millis(300))
            .unwrap();
        // The refused poll did not move the clock: one at 1 s is on time.
        pace.check_at(&id(1), "s", t0 + Duration::from_secs(1))
            .unwrap();
        assert!(pace
            .check_at(&id(1), "s", t0 + Duration::from_millis(1900))
            .is_err());
        pace.check_at(&id(1), "s", t0 + Duration::from_secs(3))
            .unwrap();
    }

    #[test]
    fn the_table_stays_bounded_and_a_forgotten_session_is_answered() {
        let pace = PollPace::with_capacity(Duration::from_secs(2), 2);
        let t0 = Instant::now();
        for n in 1..=3 {
            pace.check_at(&id(n), "s", t0).unwrap();
        }
        assert_eq!(pace.last.lock().unwrap().len(), 2);
        // 1 was evicted; 3 is remembered.
        pace.check_at(&id(1), "s", t0).unwrap();
        assert!(pace.check_at(&id(1), "s", t0).is_err());
    }
}
