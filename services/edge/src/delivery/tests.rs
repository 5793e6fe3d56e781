//! The delivery rules, tested deterministically with the in-memory bus and
//! auth under paused tokio time.

use std::{
    sync::{atomic::Ordering::SeqCst, Arc},
    time::Duration,
};

use time::OffsetDateTime;
use tokio::time::Instant;

use super::{
    memory::{Log, MemoryAuth, MemoryBus},
    Clock, Settings, WatchError, Watcher, Watches,
};
use crate::{
    auth_client::AuthError,
    domain::{LoginState, SessionId, Snapshot},
    metrics::Metrics,
};

const SECRET: &str = "the-right-secret";

struct Fixture {
    log: Log,
    bus: Arc<MemoryBus>,
    auth: Arc<MemoryAuth>,
    metrics: Arc<Metrics>,
    watches: Watches,
    clock: Clock,
}

fn fixture(max_watchers: usize) -> Fixture {
    fixture_with(Settings::new(max_watchers))
}

fn fixture_with(settings: Settings) -> Fixture {
    let log: Log = Default::default();
    let bus = MemoryBus::new(log.clone());
    let auth = MemoryAuth::new(log.clone());
    let metrics = Arc::new(Metrics::default());
    let clock = Clock::Tokio {
        wall: OffsetDateTime::now_utc(),
        at: Instant::now(),
    };
    let watches = Watches::with_clock(
        bus.clone(),
        Arc::new(auth.clone()),
        metrics.clone(),
        settings,
        clock,
    );
    bus.attach(watches.inbox());
    Fixture {
        log,
        bus,
        auth,
        metrics,
        watches,
        clock,
    }
}

fn id(n: u32) -> SessionId {
    SessionId::parse(&format!("session-{n:014}")).unwrap()
}

impl Fixture {
    /// A snapshot of session `n` whose deadline is `ttl` from now.
    fn snap(&self, n: u32, version: u64, state: LoginState, ttl: Duration) -> Snapshot {
        let now = self.clock.now();
        Snapshot {
            session_id: id(n),
            state,
            version,
            expires_at: (!state.is_final()).then(|| now + ttl),
            updated_at: now,
            user_display_name: None,
            changed_at: None,
            qr: None,
            match_code: None,
            deny_reason: None,
        }
    }

    /// Auth commits a write, and the server republishes it.
    fn commit(&self, s: Snapshot, previous: Option<u64>) {
        self.auth.store(SECRET, s.clone());
        self.bus.publish(s, previous);
    }

    async fn watch(&self, n: u32) -> Watcher {
        self.watches.watch(&id(n), SECRET, None).await.unwrap()
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

async fn next(w: &mut Watcher, m: &Metrics) -> (LoginState, u64) {
    let s = tokio::time::timeout(Duration::from_secs(3600), w.next(m))
        .await
        .expect("an update")
        .expect("open");
    (s.state, s.version)
}

/// Lets every spawned task run until it waits on something.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_read_starts_only_after_the_subscription_is_proven() {
    let f = fixture(8);
    f.auth.store(
        SECRET,
        f.snap(1, 1, LoginState::Pending, Duration::from_secs(120)),
    );
    f.bus.hold_proofs(true);
    let watches = f.watches.clone();
    let join = tokio::spawn(async move { watches.watch(&id(1), SECRET, None).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(f.auth.reads(), 0, "no read before the proof");
    assert!(f.bus.is_subscribed(&id(1)));
    f.bus.prove();
    let mut w = join.await.unwrap().unwrap();
    assert_eq!(next(&mut w, &f.metrics).await, (LoginState::Pending, 1));
    let s = id(1).to_string();
    assert_eq!(
        f.log(),
        [
            format!("subscribe {s}"),
            format!("proven {s}"),
            format!("read {s}")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_watcher_gets_only_the_newest_snapshot() {
    let f = fixture(8);
    let ttl = Duration::from_secs(120);
    f.auth.store(SECRET, f.snap(1, 1, LoginState::Pending, ttl));
    let mut w = f.watch(1).await;
    assert_eq!(next(&mut w, &f.metrics).await, (LoginState::Pending, 1));
    f.commit(f.snap(1, 2, LoginState::Scanned, ttl), Some(1));
    f.commit(f.snap(1, 3, LoginState::Confirmed, ttl), Some(2));
    f.commit(f.snap(1, 4, LoginState::Redeemed, ttl), Some(3));
    assert_eq!(next(&mut w, &f.metrics).await, (LoginState::Redeemed, 4));
    assert!(f
        .metrics
        .render()
        .contains("qrlogin_edge_coalesced_updates_total 2"));
    assert!(w.finished());
}

#[tokio::test(start_paused = true)]
async fn versions_order_events_and_reads() {
    let f = fixture(8);
    let ttl = Duration::from_secs(120);
    f.auth.store(SECRET, f.snap(1, 5, LoginState::Scanned, ttl));
    let mut w = f.watch(1).await;
    assert_eq!(next(&mut w, &f.metrics).await, (LoginState::Scanned, 5));
    // A late event older than the read, and a duplicate: neither is news.
    f.bus.publish(f.snap(1, 4, LoginState::Pending, ttl), None);
    f.bus.publish(f.snap(1, 5, LoginState::Scanned, ttl), None);
    f.commit(f.snap(1, 6, LoginState::Confirmed, ttl), Some(5));
    assert_eq!(next(&mut w, &f.metrics).await, (LoginState::Confirmed, 6));
    // A watcher resuming from version 6 is not sent 6 again.
    let mut resumed = f.watches.watch(&id(1), SECRET, Some(6)).await.unwrap();
    assert!(resumed.news(&f.metrics).is_none());
}

#[tokio::test(start_paused = true)]
async fn at_the_deadline_auth_is_asked_first_then_expired_is_announced() {
    let f = fixture(8);
    let ttl = Duration::from_secs(120);
    f.auth.store(SECRET, f.snap(1, 1, LoginState::Pending, ttl));
    f.auth.store(SECRET, f.snap(2, 1, LoginState::Pending, ttl));
    let mut lost = f.watch(1).await;
    let mut idle = f.watch(2).await;
    next(&mut lost, &f.metrics).await;
    next(&mut idle, &f.metrics).await;
    // Session 1 was confirmed but its event never came (an older auth
    // that died between its write and its publish).
    f.auth.store(
        SECRET,
        f.snap(1, 2, LoginState::Confirmed, Duration::from_secs(300)),
    );
    let reads = f.auth.reads();
    tokio::time::sleep(Duration::from_secs(119)).await;
    assert_eq!(f.auth.reads(), reads, "no read before the deadline");
    assert_eq!(
        next(&mut lost, &f.metrics).await,
        (LoginState::Confirmed, 2)
    );
    assert_eq!(next(&mut idle, &f.metrics).await, (LoginState::Expired, 1));
    assert_eq!(f.auth.reads(), reads + 2, "one read per deadline");
}

#[tokio::test(start_paused = true)]
async fn no_expired_while_stale_and_failed_rereads_retry_with_backoff() {
    let f = fixture(8);
    f.auth.store(
        SECRET,
        f.snap(1, 1, LoginState::Pending, Duration::from_secs(10)),
    );
    let mut w = f.watch(1).await;
    next(&mut w, &f.metrics).await;
    // NATS drops; a confirm lands meanwhile (its event is lost); NATS comes
    // back while auth is down.
    f.bus.set_connected(false);
    f.auth.store(
        SECRET,
        f.snap(1, 2, LoginState::Confirmed, Duration::from_secs(30)),
    );
    f.auth.set_down(true);
    let start = Instant::now();
    let before = f.auth.reads();
    f.bus.resync();
    // Past the PENDING deadline: stale, so no EXPIRED.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(w.news(&f.metrics).is_none(), "no EXPIRED while stale");
    let times: Vec<Duration> = f.auth.read_times.lock().unwrap()[before..]
        .iter()
        .map(|t| *t - start)
        .collect();
    assert!(times.len() >= 6 && times.len() <= 10, "{times:?}");
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[0] >= Duration::from_millis(200) && gaps[0] <= Duration::from_millis(300),
        "{gaps:?}"
    );
    assert!(gaps[1] > gaps[0], "backoff grows: {gaps:?}");
    assert!(
        gaps.iter().all(|g| *g <= Duration::from_secs(6)),
        "capped: {gaps:?}"
    );
    // Auth is back: the next retry finds the confirm.
    f.auth.set_down(false);
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(next(&mut w, &f.metrics).await, (LoginState::Confirmed, 2));
}

#[tokio::test(start_paused = true)]
async fn auth_down_while_nats_is_up_still_announces_the_deadline_on_time() {
    let f = fixture(8);
    f.auth.store(
        SECRET,
        f.snap(1, 1, LoginState::Pending, Duration::from_secs(10)),
    );
    let mut w = f.watch(1).await;
    next(&mut w, &f.metrics).await;
    f.auth.set_down(true);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(next(&mut w, &f.metrics).await, (LoginState::Expired, 1));
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_rereads_every_session_with_bounded_concurrency() {
    let f = fixture(8);
    let n = 1000;
    let ttl = Duration::from_secs(3600);
    let mut watchers = Vec::new();
    for i in 0..n {
        f.auth.store(SECRET, f.snap(i, 1, LoginState::Pending, ttl));
        watchers.push(f.watch(i).await);
    }
    *f.auth.delay.lock().unwrap() = Duration::from_millis(10);
    f.auth.max_in_flight.store(0, SeqCst);
    let before = f.auth.reads();
    let start = Instant::now();
    f.bus.resync();
    while f.auth.reads() < before + n as usize {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        f.auth.reads(),
        before + n as usize,
        "exactly one re-read each"
    );
    let max = f.auth.max_in_flight.load(SeqCst);
    assert!((32..=64).contains(&max), "in flight at most 64, was {max}");
    // 1000 reads of 10 ms, 64 at a time: spread over about 160 ms.
    assert!(Instant::now() - start >= Duration::from_millis(150));
    // Nothing more: no periodic re-read follows.
    let after = f.auth.reads();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(f.auth.reads(), after, "no periodic re-read");
}

#[tokio::test(start_paused = true)]
async fn a_gap_is_counted_and_reread() {
    let f = fixture(8);
    let ttl = Duration::from_secs(120);
    f.auth.store(SECRET, f.snap(1, 3, LoginState::Pending, ttl));
    let mut w = f.watch(1).await;
    next(&mut w, &f.metrics).await;
    let reads = f.auth.reads();
    // In order: no gap.
    f.commit(f.snap(1, 4, LoginState::Scanned, ttl), Some(3));
    settle().await;
    assert_eq!(f.auth.reads(), reads);
    // Version 5 never arrived: 6 says its predecessor was 5.
    f.auth
        .store(SECRET, f.snap(1, 6, LoginState::Confirmed, ttl));
    f.bus
        .publish(f.snap(1, 6, LoginState::Confirmed, ttl), Some(5));
    settle().await;
    assert_eq!(f.auth.reads(), reads + 1);
    assert!(f
        .metrics
        .render()
        .contains("qrlogin_edge_event_gaps_total 1"));
    assert_eq!(next(&mut w, &f.metrics).await, (LoginState::Confirmed, 6));
}

#[tokio::test(start_paused = true)]
async fn the_last_watcher_leaving_unsubscribes() {
    let f = fixture(8);
    f.auth.store(
        SECRET,
        f.snap(1, 1, LoginState::Pending, Duration::from_secs(120)),
    );
    let a = f.watch(1).await;
    let b = f.watch(1).await;
    assert_eq!(f.auth.reads(), 1, "the second watcher is checked locally");
    assert_eq!(f.bus.subscriptions(), 1);
    drop(a);
    assert!(f.bus.is_subscribed(&id(1)));
    drop(b);
    assert!(!f.bus.is_subscribed(&id(1)));
    assert!(f.watches.hub().is_empty());
    // Watching again subscribes again.
    let _c = f.watch(1).await;
    assert!(f.bus.is_subscribed(&id(1)));
}

/// Regression: a request with a wrong secret used to join the hub and take
/// one of the session's watcher slots before auth refused it, so anyone
/// who saw the QR code could hold the slots. Only an authorized request
/// may take a slot.
#[tokio::test(start_paused = true)]
async fn a_wrong_secret_never_takes_a_watcher_slot() {
    let f = fixture(1);
    f.auth.store(
        SECRET,
        f.snap(1, 1, LoginState::Pending, Duration::from_secs(120)),
    );
    // The wrong secret's read hangs at auth for as long as the test wants.
    *f.auth.hold_wrong.lock().unwrap() = true;
    let watches = f.watches.clone();
    let wrong = tokio::spawn(async move { watches.watch(&id(1), "wrong", None).await });
    settle().await;
    assert_eq!(
        f.auth.in_flight.load(SeqCst),
        1,
        "the wrong read is pending"
    );
    // The one slot is still free for the browser that holds the secret.
    let mut w = f.watch(1).await;
    assert_eq!(next(&mut w, &f.metrics).await, (LoginState::Pending, 1));
    f.auth.released.notify_waiters();
    assert!(matches!(
        wrong.await.unwrap(),
        Err(WatchError::Auth(AuthError::PermissionDenied(_)))
    ));
    // Once a secret is accepted, a wrong one is refused here, without a read.
    let reads = f.auth.reads();
    assert!(matches!(
        f.watches.watch(&id(1), "wrong", None).await,
        Err(WatchError::Auth(AuthError::PermissionDenied(_)))
    ));
    assert_eq!(f.auth.reads(), reads);
    // The slot limit still holds for authorized watchers.
    assert!(matches!(
        f.watches.watch(&id(1), SECRET, None).await,
        Err(WatchError::TooManyWatchers)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_refused_first_read_leaves_nothing_behind() {
    let f = fixture(8);
    f.auth.store(
        SECRET,
        f.snap(1, 1, LoginState::Pending, Duration::from_secs(120)),
    );
    assert!(f.watches.watch(&id(1), "wrong", None).await.is_err());
    assert!(
        f.watches.watch(&id(2), SECRET, None).await.is_err(),
        "unknown session"
    );
    assert!(f.watches.hub().is_empty());
    assert_eq!(f.bus.subscriptions(), 0);
}

#[path = "rotation_tests.rs"]
mod rotation;

/// On a NATS cluster the edge's own server proves the interest, but the
/// member that publishes learns of it a little later: a write committed in
/// between is never forwarded. The read owed `interest_settle` after the
/// subscription delivers it.
#[tokio::test(start_paused = true)]
async fn on_a_cluster_a_write_published_before_the_interest_spread_arrives_by_the_settle_read() {
    let f = fixture(8);
    f.bus.set_clustered(true);
    f.auth.store(
        SECRET,
        f.snap(1, 1, LoginState::Pending, Duration::from_secs(120)),
    );
    let mut w = f.watch(1).await;
    assert_eq!(next(&mut w, &f.metrics).await, (LoginState::Pending, 1));
    // Committed, but published where the interest has not arrived yet.
    f.auth.store(
        SECRET,
        f.snap(1, 2, LoginState::Scanned, Duration::from_secs(60)),
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    settle().await;
    assert_eq!(f.auth.reads(), 1, "nothing read before the settle delay");
    let started = Instant::now();
    assert_eq!(next(&mut w, &f.metrics).await, (LoginState::Scanned, 2));
    assert!(started.elapsed() <= Duration::from_millis(150));
    assert_eq!(f.auth.reads(), 2);
    // Once: nothing more is read until the state's own deadline.
    tokio::time::sleep(Duration::from_secs(30)).await;
    settle().await;
    assert_eq!(f.auth.reads(), 2);
}

#[tokio::test(start_paused = true)]
async fn on_one_server_or_with_the_settle_read_off_nothing_more_is_read() {
    for (clustered, settle_for) in [(false, Duration::from_secs(1)), (true, Duration::ZERO)] {
        let f = fixture_with(Settings {
            interest_settle: settle_for,
            ..Settings::new(8)
        });
        f.bus.set_clustered(clustered);
        f.auth.store(
            SECRET,
            f.snap(1, 1, LoginState::Pending, Duration::from_secs(120)),
        );
        let _w = f.watch(1).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        settle().await;
        assert_eq!(
            f.auth.reads(),
            1,
            "clustered {clustered}, settle {settle_for:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn on_a_cluster_the_sweep_after_a_reconnect_is_followed_by_a_settle_read() {
    let f = fixture(8);
    f.bus.set_clustered(true);
    f.auth.store(
        SECRET,
        f.snap(1, 1, LoginState::Pending, Duration::from_secs(120)),
    );
    let mut w = f.watch(1).await;
    assert_eq!(next(&mut w, &f.metrics).await, (LoginState::Pending, 1));
    tokio::time::sleep(Duration::from_secs(5)).await;
    settle().await;
    assert_eq!(f.auth.reads(), 2, "the watch's settle read");
    f.bus.resync();
    settle().await;
    assert_eq!(f.auth.reads(), 3, "the sweep");
    // Written after the sweep's read, published before the interest spread.
    f.auth.store(
        SECRET,
        f.snap(1, 2, LoginState::Scanned, Duration::from_secs(60)),
    );
    assert_eq!(next(&mut w, &f.metrics).await, (LoginState::Scanned, 2));
    assert_eq!(f.auth.reads(), 4, "the sweep's settle read");
}
