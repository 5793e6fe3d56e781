//! The key cache of one trusted issuer, and its policy:
//!
//! - a set younger than `max_age` answers every lookup without a fetch;
//! - a lookup of an unknown `kid` (the issuer rotated) or of an old set
//!   fetches again, but never sooner than `min_refresh` after the previous
//!   attempt, successful or not: random `kid`s cost one fetch per interval,
//!   whoever sends them, and one fetch at a time (the others wait for it);
//! - a failed fetch keeps the last good set: known keys keep verifying
//!   while the provider is unreachable, for at most `max_stale` past
//!   `max_age`; then lookups fail closed;
//! - a successful fetch replaces the set whole, so a key the issuer
//!   withdrew stops verifying at the first refresh;
//! - a set holds at most `max_keys` keys (see [`super::jwks::parse`]).
//!
//! Time comes from a [`Clock`] and keys from a [`Fetch`], so the policy is
//! tested without a network and without waiting.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;

use super::jwks::{KeySet, TrustedKey};

/// Where the time comes from (tests move it by hand).
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

/// The monotonic clock of the process.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Where the keys come from.
pub trait Fetch: Send + Sync + 'static {
    fn fetch(&self) -> impl Future<Output = Result<KeySet, String>> + Send;
}

#[derive(Debug, Clone, Copy)]
pub struct CachePolicy {
    pub max_age: Duration,
    pub min_refresh: Duration,
    pub max_stale: Duration,
}

/// Why a lookup found no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The set (fresh, or as fresh as the rate bound allows) has no such key.
    #[error("no key with this kid")]
    UnknownKey,
    /// No usable set: never fetched, or stale past `max_stale`.
    #[error("the issuer's keys are unavailable")]
    Unavailable,
}

#[derive(Default)]
struct State {
    set: Option<Arc<KeySet>>,
    /// When the current set was fetched.
    fetched_at: Option<Instant>,
    /// When the last fetch started (successful or not).
    attempted_at: Option<Instant>,
    /// A fetch is under way: lookups wait for it rather than fail.
    fetching: bool,
}

impl State {
    fn age(&self, now: Instant) -> Option<Duration> {
        self.fetched_at.map(|at| now.saturating_duration_since(at))
    }

    fn may_fetch(&self, now: Instant, policy: &CachePolicy) -> bool {
        self.attempted_at
            .is_none_or(|at| now.saturating_duration_since(at) >= policy.min_refresh)
    }

    /// The key, if the set holding it may still be used at `now`.
    fn lookup(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        now: Instant,
        policy: &CachePolicy,
    ) -> Result<Arc<TrustedKey>, LookupError> {
        let (Some(set), Some(age)) = (&self.set, self.age(now)) else {
            return Err(LookupError::Unavailable);
        };
        if age > policy.max_age.saturating_add(policy.max_stale) {
            return Err(LookupError::Unavailable);
        }
        set.find(kid, alg).ok_or(LookupError::UnknownKey)
    }
}

/// Counts of what the cache did (for metrics and the tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub fetches: u64,
    pub failures: u64,
}

pub struct KeyCache<F> {
    fetcher: F,
    policy: CachePolicy,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    stats: Mutex<CacheStats>,
    /// One fetch at a time; who waited re-checks before fetching again.
    refreshing: tokio::sync::Mutex<()>,
}

impl<F: Fetch> KeyCache<F> {
    pub fn new(fetcher: F, policy: CachePolicy, clock: Arc<dyn Clock>) -> Self {
        Self {
            fetcher,
            policy,
            clock,
            state: Mutex::default(),
            stats: Mutex::default(),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn stats(&self) -> CacheStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key `kid` for `alg`, fetching the set when the policy allows and
    /// the lookup needs it.
    pub async fn key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<TrustedKey>, LookupError> {
        let now = self.clock.now();
        {
            let state = self.state();
            let fresh = state.age(now).is_some_and(|a| a < self.policy.max_age);
            let found = state.lookup(kid, alg, now, &self.policy);
            if (fresh && found.is_ok()) || !(state.fetching || state.may_fetch(now, &self.policy)) {
                return found;
            }
        }
        let _one_at_a_time = self.refreshing.lock().await;
        let now = self.clock.now();
        {
            // Whoever held the lock before may have fetched what we need.
            let state = self.state();
            let fresh = state.age(now).is_some_and(|a| a < self.policy.max_age);
            let found = state.lookup(kid, alg, now, &self.policy);
            if (fresh && found.is_ok()) || !state.may_fetch(now, &self.policy) {
                return found;
            }
        }
        self.refresh(now).await;
        self.state()
            .lookup(kid, alg, self.clock.now(), &self.policy)
    }

    /// Fetches the set now (at start, and when a lookup needs it).
    pub async fn refresh_now(&self) {
        let _one_at_a_time = self.refreshing.lock().await;
        self.refresh(self.clock.now()).await;
    }

    async fn refresh(&self, started: Instant) {
        {
            let mut state = self.state();
            state.attempted_at = Some(started);
            state.fetching = true;
        }
        let fetched = self.fetcher.fetch().await;
        self.state().fetching = false;
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.fetches += 1;
        match fetched {
            Ok(set) => {
                let mut state = self.state();
                state.set = Some(Arc::new(set));
                state.fetched_at = Some(started);
            }
            Err(e) => {
                stats.failures += 1;
                let age = self.state().age(started);
                tracing::warn!(error = %e, stale_for = ?age, "cannot fetch the issuer's keys; keeping the last set");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::jwks;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct ManualClock(Mutex<Option<Instant>>, Mutex<Duration>);

    impl ManualClock {
        fn advance(&self, by: Duration) {
            *self.1.lock().unwrap() += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            let start = *self.0.lock().unwrap().get_or_insert_with(Instant::now);
            start + *self.1.lock().unwrap()
        }
    }

    /// A provider whose published kids the test sets, which can go away.
    #[derive(Default)]
    struct FakeIssuer {
        kids: Mutex<Vec<String>>,
        down: Mutex<bool>,
        calls: AtomicUsize,
    }

    impl FakeIssuer {
        fn publish(&self, kids: &[&str]) {
            *self.kids.lock().unwrap() = kids.iter().map(|k| k.to_string()).collect();
        }
        fn set_down(&self, down: bool) {
            *self.down.lock().unwrap() = down;
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Fetch for Arc<FakeIssuer> {
        async fn fetch(&self) -> Result<KeySet, String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            // A real fetch waits on the network: let the others run meanwhile.
            tokio::task::yield_now().await;
            if *self.down.lock().unwrap() {
                return Err("connection refused".into());
            }
            let keys: Vec<_> = self
                .kids
                .lock()
                .unwrap()
                .iter()
                .map(|kid| {
                    serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                                   "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})
                })
                .collect();
            jwks::parse(
                serde_json::json!({ "keys": keys }).to_string().as_bytes(),
                4,
            )
            .map_err(|e| e.to_string())
        }
    }

    const POLICY: CachePolicy = CachePolicy {
        max_age: Duration::from_secs(600),
        min_refresh: Duration::from_secs(30),
        max_stale: Duration::from_secs(3600),
    };

    fn cache() -> (KeyCache<Arc<FakeIssuer>>, Arc<FakeIssuer>, Arc<ManualClock>) {
        let issuer = Arc::new(FakeIssuer::default());
        issuer.publish(&["k1"]);
        let clock = Arc::new(ManualClock::default());
        let cache = KeyCache::new(issuer.clone(), POLICY, clock.clone());
        (cache, issuer, clock)
    }

    async fn lookup(c: &KeyCache<Arc<FakeIssuer>>, kid: &str) -> Result<(), LookupError> {
        c.key(Some(kid), Algorithm::EdDSA).await.map(|_| ())
    }

    #[tokio::test]
    async fn known_keys_need_no_fetch_until_the_set_is_old() {
        let (c, issuer, clock) = cache();
        lookup(&c, "k1").await.unwrap();
        for _ in 0..100 {
            lookup(&c, "k1").await.unwrap();
        }
        assert_eq!(issuer.calls(), 1);
        clock.advance(POLICY.max_age);
        lookup(&c, "k1").await.unwrap();
        assert_eq!(issuer.calls(), 2, "an old set is fetched again");
    }

    #[tokio::test]
    async fn unknown_kids_refresh_at_a_bounded_rate() {
        let (c, issuer, clock) = cache();
        lookup(&c, "k1").await.unwrap();
        // A rotation right after the first fetch: within the interval the
        // new kid is refused without asking the issuer.
        issuer.publish(&["k2", "k1"]);
        for i in 0..1000 {
            assert_eq!(
                lookup(&c, &format!("random-{i}")).await,
                Err(LookupError::UnknownKey)
            );
        }
        assert_eq!(lookup(&c, "k2").await, Err(LookupError::UnknownKey));
        assert_eq!(issuer.calls(), 1, "1000 random kids cost no fetch");
        clock.advance(POLICY.min_refresh);
        lookup(&c, "k2")
            .await
            .expect("the new kid after one refresh");
        assert_eq!(issuer.calls(), 2);
        for i in 0..1000 {
            let _ = lookup(&c, &format!("again-{i}")).await;
        }
        assert_eq!(issuer.calls(), 2, "the next refresh waits for the interval");
        lookup(&c, "k1").await.expect("the old key still verifies");
    }

    #[tokio::test]
    async fn concurrent_lookups_share_one_fetch() {
        let (c, issuer, _clock) = cache();
        let c = Arc::new(c);
        let lookups: Vec<_> = (0..50)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(
                    async move { lookup(&c, if i % 2 == 0 { "k1" } else { "nope" }).await },
                )
            })
            .collect();
        let mut known = 0;
        for (i, l) in lookups.into_iter().enumerate() {
            let found = l.await.unwrap();
            if i % 2 == 0 {
                found.expect("a known kid waits for the fetch under way");
                known += 1;
            } else {
                assert_eq!(found, Err(LookupError::UnknownKey));
            }
        }
        assert_eq!(known, 25);
        assert_eq!(issuer.calls(), 1);
    }

    #[tokio::test]
    async fn known_keys_are_served_while_the_issuer_is_down() {
        let (c, issuer, clock) = cache();
        lookup(&c, "k1").await.unwrap();
        issuer.set_down(true);
        clock.advance(POLICY.max_age + Duration::from_secs(1));
        lookup(&c, "k1").await.expect("stale but within max_stale");
        assert_eq!(c.stats().failures, 1);
        // Each lookup of the stale set tries again, but only once per interval.
        for _ in 0..100 {
            lookup(&c, "k1").await.unwrap();
        }
        assert_eq!(issuer.calls(), 2);
        clock.advance(POLICY.max_stale);
        assert_eq!(
            lookup(&c, "k1").await,
            Err(LookupError::Unavailable),
            "past max_stale the cache fails closed"
        );
        issuer.set_down(false);
        clock.advance(POLICY.min_refresh);
        lookup(&c, "k1")
            .await
            .expect("back once the issuer answers");
    }

    #[tokio::test]
    async fn a_withdrawn_key_is_refused_after_the_refresh() {
        let (c, issuer, clock) = cache();
        issuer.publish(&["k2", "k1"]);
        lookup(&c, "k1").await.unwrap();
        issuer.publish(&["k2"]);
        lookup(&c, "k1").await.expect("until the set is refreshed");
        clock.advance(POLICY.max_age);
        assert_eq!(lookup(&c, "k1").await, Err(LookupError::UnknownKey));
        lookup(&c, "k2").await.unwrap();
    }

    #[tokio::test]
    async fn never_fetched_is_unavailable_not_unknown() {
        let (c, issuer, clock) = cache();
        issuer.set_down(true);
        assert_eq!(lookup(&c, "k1").await, Err(LookupError::Unavailable));
        assert_eq!(lookup(&c, "k1").await, Err(LookupError::Unavailable));
        assert_eq!(
            issuer.calls(),
            1,
            "a failing issuer is asked once per interval"
        );
        issuer.set_down(false);
        clock.advance(POLICY.min_refresh);
        lookup(&c, "k1").await.unwrap();
    }

    #[tokio::test]
    async fn the_set_size_is_bounded() {
        let (c, issuer, clock) = cache();
        issuer.publish(&["a", "b", "c", "d", "e", "f"]);
        clock.advance(POLICY.min_refresh);
        lookup(&c, "a").await.unwrap();
        assert_eq!(lookup(&c, "e").await, Err(LookupError::UnknownKey));
        assert_eq!(issuer.calls(), 1);
    }
}
