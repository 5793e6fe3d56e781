//! The short-poll pace (RFC 8628's `slow_down`, for browsers): the interval
//! every poll answer asks for, and, for each (session, browser secret) pair
//! this node answered, when it last answered a paced poll and what it
//! answered, in a bounded least-recently-used table.

use std::{
    hash::BuildHasher,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::lru::Lru;
use crate::domain::{SessionId, Snapshot};

/// Pairs this node remembers. When full, the least recently answered is
/// forgotten (O(1)); a forgotten pair's next poll is answered, so the bound
/// costs precision only under more than this many pairs polled at once on
/// one node (about 6 MB at the bound).
const MAX_TRACKED_SESSIONS: usize = 65_536;

/// What a client holds: a version and, while PENDING, the epoch of the QR
/// payload on its screen. Ordered as news is: a later version, or the same
/// version with a later payload (no payload said ranks below any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Held {
    pub version: u64,
    pub qr_epoch: Option<u64>,
}

impl Held {
    fn of(snapshot: &Snapshot) -> Self {
        Self {
            version: snapshot.version,
            qr_epoch: snapshot.qr_epoch(),
        }
    }
}

/// What this node knows of one (session, secret) pair.
#[derive(Debug, Clone, Copy, Default)]
struct Pair {
    /// When a paced poll of the pair was last answered.
    paced_at: Option<Instant>,
    /// The newest snapshot answered to the pair, and whether it was final.
    answered: Option<(Held, bool)>,
}

/// The pace of polls of one session on this node.
///
/// A paced poll is too early when it comes less than half the interval
/// after the last answered one: timers of a page in a background tab, a
/// retry after a network error and a transport fallback all come early by
/// less than that, a poller that ignores the interval does not. A refused
/// poll does not move the clock, so a client that waits `Retry-After` is
/// answered. Behind a balancer that spreads polls over N edges, each edge
/// sees every N-th poll: per-node enforcement then catches a client polling
/// N·2 times faster than asked (docs/security.md, "Poll pace").
///
/// Paced are short polls, long polls held less than half the interval
/// (the route decides those two), and long polls that are replays
/// ([`PollPace::is_replay`]): a long poll for what the client was already
/// given is answered at once, so `?since=0` over and over would be a short
/// poll without the pace.
///
/// The table is keyed per session *and browser secret* (a keyed hash of
/// it): the session id is in the QR code, so someone who read it must not
/// be able to slow the real browser's polls down with polls of their own.
/// A pair is written only once auth accepted the secret
/// ([`PollPace::answered`]); before that it is only read
/// ([`PollPace::check`]), so guessed secrets neither push real pairs out of
/// the table nor get paced as if they were right.
pub struct PollPace {
    interval: Duration,
    pairs: Mutex<Lru<(SessionId, u64), Pair>>,
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
            pairs: Mutex::new(Lru::new(max_tracked)),
            hasher: Default::default(),
        }
    }

    /// The interval a short-poll client must keep (`poll_interval_ms`).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn key(&self, id: &SessionId, secret: &str) -> (SessionId, u64) {
        (id.clone(), self.hasher.hash_one(secret))
    }

    /// Whether a long poll that says it holds `held` asks for what this
    /// node already answered the pair with: an older version or QR payload,
    /// or anything after a final state (which is news every time). Such a
    /// poll is answered at once; a client that follows its answers never
    /// sends one.
    pub fn is_replay(&self, id: &SessionId, secret: &str, held: Held) -> bool {
        let pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        pairs
            .peek(&self.key(id, secret))
            .and_then(|pair| pair.answered)
            .is_some_and(|(answered, finished)| finished || held < answered)
    }

    /// Whether a paced poll of `id` with `secret` would be on time now, or
    /// how long to wait. Records nothing: the secret is not checked yet.
    pub fn check(&self, id: &SessionId, secret: &str) -> Result<(), Duration> {
        self.check_at(id, secret, Instant::now())
    }

    fn check_at(&self, id: &SessionId, secret: &str, now: Instant) -> Result<(), Duration> {
        let pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        match pairs.peek(&self.key(id, secret)) {
            Some(pair) => self.on_time(pair, now),
            None => Ok(()),
        }
    }

    fn on_time(&self, pair: &Pair, now: Instant) -> Result<(), Duration> {
        if let Some(previous) = pair.paced_at {
            let since = now.saturating_duration_since(previous);
            if since < self.interval / 2 {
                return Err(self.interval.saturating_sub(since));
            }
        }
        Ok(())
    }

    /// Records that a poll of `id` with `secret`, which auth accepted, is
    /// answered with `snapshot`. A paced one moves the clock, or, when
    /// another poll of the pair was answered meanwhile, is refused with how
    /// long to wait.
    pub fn answered(
        &self,
        id: &SessionId,
        secret: &str,
        snapshot: &Snapshot,
        paced: bool,
    ) -> Result<(), Duration> {
        self.answered_at(id, secret, snapshot, paced, Instant::now())
    }

    fn answered_at(
        &self,
        id: &SessionId,
        secret: &str,
        snapshot: &Snapshot,
        paced: bool,
        now: Instant,
    ) -> Result<(), Duration> {
        let key = self.key(id, secret);
        let mut pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        let pair = pairs.get_or_insert(key, Pair::default());
        if paced {
            self.on_time(pair, now)?;
            pair.paced_at = Some(now);
        }
        let this = (Held::of(snapshot), snapshot.state.is_final());
        pair.answered = Some(pair.answered.map_or(this, |before| before.max(this)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{LoginState, QrCode};

    fn id(n: u8) -> SessionId {
        SessionId::parse(&format!("q3Zb0Xz2kT9yLw1sJm5H{:02}", n)).unwrap()
    }

    /// A snapshot; while PENDING, showing the QR payload of epoch 10.
    fn snapshot(n: u8, version: u64, state: LoginState) -> Snapshot {
        let start = time::OffsetDateTime::UNIX_EPOCH;
        let now = start + Duration::from_secs(10 * 25);
        Snapshot {
            session_id: id(n),
            state,
            version,
            expires_at: None,
            updated_at: now,
            user_display_name: None,
            changed_at: None,
            qr: QrCode::new(&[5; 16], start, 25_000, "http://x", now),
            match_code: None,
            deny_reason: None,
        }
    }

    /// A paced poll: checked, then answered (auth accepted its secret).
    fn poll(pace: &PollPace, n: u8, secret: &str, at: Instant) -> Result<(), Duration> {
        pace.check_at(&id(n), secret, at)?;
        pace.answered_at(
            &id(n),
            secret,
            &snapshot(n, 3, LoginState::Pending),
            true,
            at,
        )
    }

    #[test]
    fn polls_faster_than_half_the_interval_wait_for_the_rest_of_it() {
        let pace = PollPace::new(Duration::from_secs(2));
        let t0 = Instant::now();
        poll(&pace, 1, "s", t0).unwrap();
        let wait = poll(&pace, 1, "s", t0 + Duration::from_millis(300)).unwrap_err();
        assert_eq!(wait, Duration::from_millis(1700));
        // Another session has its own pace, and so has another secret (the
        // id is in the QR code: its readers cannot slow the browser down).
        poll(&pace, 2, "s", t0).unwrap();
        poll(&pace, 1, "guess", t0 + Duration::from_millis(300)).unwrap();
        // The refused poll did not move the clock: one at 1 s is on time.
        poll(&pace, 1, "s", t0 + Duration::from_secs(1)).unwrap();
        assert!(poll(&pace, 1, "s", t0 + Duration::from_millis(1900)).is_err());
        poll(&pace, 1, "s", t0 + Duration::from_secs(3)).unwrap();
    }

    /// Regression: the pair was written before auth checked the secret, so
    /// guesses filled the table (pushing real pairs out) and a second
    /// guess was answered `slow_down` instead of being refused as wrong.
    #[test]
    fn checking_records_nothing() {
        let pace = PollPace::with_capacity(Duration::from_secs(2), 2);
        let t0 = Instant::now();
        poll(&pace, 1, "s", t0).unwrap();
        for guess in 0..10 {
            pace.check_at(&id(1), &format!("guess-{guess}"), t0)
                .unwrap();
            pace.check_at(&id(1), "guess", t0).unwrap();
        }
        assert_eq!(pace.pairs.lock().unwrap().len(), 1);
        assert!(
            poll(&pace, 1, "s", t0).is_err(),
            "the real pair was pushed out"
        );
    }

    #[test]
    fn a_paced_poll_answered_meanwhile_is_refused() {
        let pace = PollPace::new(Duration::from_secs(2));
        let t0 = Instant::now();
        // Two polls pass the check before either is answered.
        pace.check_at(&id(1), "s", t0).unwrap();
        pace.check_at(&id(1), "s", t0).unwrap();
        let s = snapshot(1, 3, LoginState::Pending);
        pace.answered_at(&id(1), "s", &s, true, t0).unwrap();
        assert!(pace.answered_at(&id(1), "s", &s, true, t0).is_err());
        // Long polls that were not paced never are.
        pace.answered_at(&id(1), "s", &s, false, t0).unwrap();
    }

    #[test]
    fn asking_again_for_what_was_answered_is_a_replay() {
        let pace = PollPace::new(Duration::from_secs(2));
        let t0 = Instant::now();
        let held = |version, qr_epoch| Held { version, qr_epoch };
        // Nothing answered yet: nothing to replay.
        assert!(!pace.is_replay(&id(1), "s", held(0, None)));
        let mut pending = snapshot(1, 3, LoginState::Pending);
        let epoch = pending.qr_epoch().unwrap();
        pace.answered_at(&id(1), "s", &pending, false, t0).unwrap();
        // The client follows its answer: no replay.
        assert!(!pace.is_replay(&id(1), "s", held(3, Some(epoch))));
        assert!(!pace.is_replay(&id(1), "s", held(4, None)));
        // `since=0`, an older version, or the version without the payload
        // held (answered at once every time): replays.
        assert!(pace.is_replay(&id(1), "s", held(0, None)));
        assert!(pace.is_replay(&id(1), "s", held(2, Some(epoch + 5))));
        assert!(pace.is_replay(&id(1), "s", held(3, None)));
        assert!(pace.is_replay(&id(1), "s", held(3, Some(epoch - 1))));
        // Another secret has its own record.
        assert!(!pace.is_replay(&id(1), "guess", held(0, None)));
        // An older answer does not lower the record.
        pending.version = 2;
        pace.answered_at(&id(1), "s", &pending, false, t0).unwrap();
        assert!(pace.is_replay(&id(1), "s", held(2, Some(epoch))));
        // After a final state, every long poll is answered at once.
        let done = snapshot(1, 5, LoginState::Redeemed);
        pace.answered_at(&id(1), "s", &done, false, t0).unwrap();
        assert!(pace.is_replay(&id(1), "s", held(5, None)));
        assert!(pace.is_replay(&id(1), "s", held(6, None)));
    }

    #[test]
    fn the_table_stays_bounded_and_a_forgotten_session_is_answered() {
        let pace = PollPace::with_capacity(Duration::from_secs(2), 2);
        let t0 = Instant::now();
        for n in 1..=3 {
            poll(&pace, n, "s", t0).unwrap();
        }
        assert_eq!(pace.pairs.lock().unwrap().len(), 2);
        // 1 was evicted; 3 is remembered.
        poll(&pace, 1, "s", t0).unwrap();
        assert!(poll(&pace, 1, "s", t0).is_err());
    }
}
