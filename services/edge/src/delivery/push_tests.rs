//! The delivery policy ([`Delivery::next_push`]) with the in-memory bus and
//! auth under paused tokio time: news, coalescing, a final state ends it,
//! drain, keep-alive timing, holding, resume and the metrics.

use std::{sync::Arc, time::Duration};

use time::OffsetDateTime;
use tokio::time::Instant;

use super::{Delivery, Leave, Push};
use crate::{
    delivery::{
        memory::{Log, MemoryAuth, MemoryBus},
        Clock, Settings, Watches,
    },
    domain::{LoginState, SessionId, Snapshot},
    metrics::{Metrics, Transport},
    shutdown::Drain,
};

const SECRET: &str = "the-right-secret";
const HINT: Duration = Duration::from_secs(2);

/// A delivery core on the in-memory bus and auth (also for the
/// transports' tests).
pub(crate) struct Fixture {
    bus: Arc<MemoryBus>,
    auth: Arc<MemoryAuth>,
    metrics: Arc<Metrics>,
    watches: Watches,
    pub(crate) drain: Drain,
    clock: Clock,
}

fn id() -> SessionId {
    SessionId::parse("q3Zb0Xz2kT9yLw1sJm5HAA").unwrap()
}

pub(crate) fn fixture() -> Fixture {
    let log: Log = Default::default();
    let bus = MemoryBus::new(log.clone());
    let auth = MemoryAuth::new(log);
    let metrics = Arc::new(Metrics::default());
    let clock = Clock::Tokio {
        wall: OffsetDateTime::now_utc(),
        at: Instant::now(),
    };
    let watches = Watches::with_clock(
        bus.clone(),
        Arc::new(auth.clone()),
        metrics.clone(),
        Settings::new(8),
        clock,
    );
    bus.attach(watches.inbox());
    Fixture {
        bus,
        auth,
        metrics,
        watches,
        drain: Drain::default(),
        clock,
    }
}

impl Fixture {
    fn snap(&self, version: u64, state: LoginState, ttl: Duration) -> Snapshot {
        let now = self.clock.now();
        Snapshot {
            session_id: id(),
            state,
            version,
            expires_at: (!state.is_final()).then(|| now + ttl),
            updated_at: now,
            user_display_name: None,
            changed_at: None,
        }
    }

    /// Auth commits a write and the server republishes it.
    pub(crate) fn commit(&self, version: u64, state: LoginState) {
        let s = self.snap(version, state, Duration::from_secs(120));
        self.auth.store(SECRET, s.clone());
        self.bus.publish(s, None);
    }

    pub(crate) async fn delivery(&self, since: Option<u64>) -> Delivery {
        let watcher = self.watches.watch(&id(), SECRET, since).await.unwrap();
        Delivery::new(
            watcher,
            self.drain.listener(),
            self.metrics.connection(Transport::Sse),
            HINT,
        )
    }
}

/// The next push, failing the test if none comes within an hour of paused time.
async fn next(d: &mut Delivery) -> Push {
    tokio::time::timeout(Duration::from_secs(3600), d.next_push())
        .await
        .expect("a push")
}

fn snapshot(push: Push) -> (LoginState, u64) {
    match push {
        Push::Snapshot(s) => (s.state, s.version),
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

/// Whether `d` has a push ready without time passing.
async fn ready(d: &mut Delivery) -> Option<Push> {
    tokio::time::timeout(Duration::ZERO, d.next_push())
        .await
        .ok()
}

#[tokio::test(start_paused = true)]
async fn news_in_order_and_a_final_state_ends_the_delivery() {
    let f = fixture();
    f.commit(1, LoginState::Pending);
    let mut d = f.delivery(None).await;
    assert_eq!(snapshot(next(&mut d).await), (LoginState::Pending, 1));
    assert!(ready(&mut d).await.is_none(), "nothing new yet");
    f.commit(2, LoginState::Scanned);
    assert_eq!(snapshot(next(&mut d).await), (LoginState::Scanned, 2));
    f.commit(2, LoginState::Scanned);
    assert!(ready(&mut d).await.is_none(), "a repeat is not news");
    f.commit(3, LoginState::Cancelled);
    assert_eq!(snapshot(next(&mut d).await), (LoginState::Cancelled, 3));
    assert_eq!(next(&mut d).await, Push::Leave(Leave::Finished));
    assert_eq!(
        next(&mut d).await,
        Push::Leave(Leave::Finished),
        "and stays so"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_client_gets_only_the_newest_snapshot() {
    let f = fixture();
    f.commit(1, LoginState::Pending);
    let mut d = f.delivery(None).await;
    assert_eq!(snapshot(next(&mut d).await), (LoginState::Pending, 1));
    f.commit(2, LoginState::Scanned);
    f.commit(3, LoginState::Confirmed);
    assert_eq!(snapshot(next(&mut d).await), (LoginState::Confirmed, 3));
    assert!(f
        .metrics
        .render()
        .contains("qrlogin_edge_coalesced_updates_total 1"));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_pushed_as_expired_and_ends_the_delivery() {
    let f = fixture();
    let s = f.snap(4, LoginState::Scanned, Duration::from_secs(60));
    f.auth.store(SECRET, s);
    let mut d = f.delivery(None).await;
    assert_eq!(snapshot(next(&mut d).await), (LoginState::Scanned, 4));
    let started = Instant::now();
    assert_eq!(snapshot(next(&mut d).await), (LoginState::Expired, 4));
    assert!(started.elapsed() >= Duration::from_secs(60));
    assert_eq!(next(&mut d).await, Push::Leave(Leave::Finished));
}

#[tokio::test(start_paused = true)]
async fn keep_alive_comes_after_a_quiet_period_and_news_resets_it() {
    let f = fixture();
    f.commit(1, LoginState::Pending);
    let mut d = f.delivery(None).await;
    d.keep_alive(Some(Duration::from_secs(15)));
    let t0 = Instant::now();
    assert_eq!(snapshot(next(&mut d).await), (LoginState::Pending, 1));
    assert_eq!(next(&mut d).await, Push::KeepAlive);
    assert_eq!(t0.elapsed(), Duration::from_secs(15));
    assert_eq!(next(&mut d).await, Push::KeepAlive);
    assert_eq!(t0.elapsed(), Duration::from_secs(30));
    // A snapshot at 40 s: the next keep-alive is 15 s after it.
    tokio::time::sleep(Duration::from_secs(10)).await;
    f.commit(2, LoginState::Scanned);
    assert_eq!(snapshot(next(&mut d).await), (LoginState::Scanned, 2));
    assert_eq!(next(&mut d).await, Push::KeepAlive);
    assert_eq!(t0.elapsed(), Duration::from_secs(55));
    // Turned off: the next push is the deadline (the commit at 40 s had
    // 120 s), with no keep-alive in between.
    d.keep_alive(None);
    assert_eq!(snapshot(next(&mut d).await), (LoginState::Expired, 2));
    assert_eq!(t0.elapsed(), Duration::from_secs(160));
}

#[tokio::test(start_paused = true)]
async fn drain_ends_the_delivery_with_a_jittered_hint_even_when_news_is_waiting() {
    let f = fixture();
    f.commit(1, LoginState::Pending);
    let mut d = f.delivery(None).await;
    assert_eq!(snapshot(next(&mut d).await), (LoginState::Pending, 1));
    f.commit(2, LoginState::Scanned);
    f.drain.start();
    let Push::Leave(Leave::Draining { reconnect_after }) = next(&mut d).await else {
        panic!("drain first");
    };
    assert!(
        reconnect_after >= HINT / 2 && reconnect_after < HINT * 2,
        "{reconnect_after:?}"
    );
    assert!(matches!(
        next(&mut d).await,
        Push::Leave(Leave::Draining { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn held_deliveries_push_nothing_but_drain_and_keep_alive() {
    let f = fixture();
    f.commit(1, LoginState::Pending);
    let mut d = f.delivery(None).await;
    d.hold(true);
    d.keep_alive(Some(Duration::from_secs(10)));
    assert_eq!(next(&mut d).await, Push::KeepAlive);
    d.hold(false);
    assert_eq!(snapshot(next(&mut d).await), (LoginState::Pending, 1));
    d.hold(true);
    f.commit(2, LoginState::Scanned);
    f.drain.start();
    assert!(matches!(
        next(&mut d).await,
        Push::Leave(Leave::Draining { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn resume_skips_what_the_client_holds_and_rewind_starts_over() {
    let f = fixture();
    f.commit(5, LoginState::Scanned);
    let mut d = f.delivery(None).await;
    d.resume_from(5);
    assert!(ready(&mut d).await.is_none(), "the client holds version 5");
    f.commit(6, LoginState::Confirmed);
    assert_eq!(snapshot(next(&mut d).await), (LoginState::Confirmed, 6));
    d.rewind(None);
    assert_eq!(
        snapshot(next(&mut d).await),
        (LoginState::Confirmed, 6),
        "a new start gets the current snapshot"
    );
    d.rewind(Some(6));
    assert!(ready(&mut d).await.is_none());
    // Given at the start, `since` works the same.
    let mut late = f.delivery(Some(6)).await;
    assert!(ready(&mut late).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn metrics_count_the_open_delivery_and_each_pushed_snapshot() {
    let f = fixture();
    f.commit(1, LoginState::Pending);
    let mut d = f.delivery(None).await;
    assert_eq!(f.metrics.open_connections(Transport::Sse), 1);
    assert_eq!(snapshot(next(&mut d).await), (LoginState::Pending, 1));
    // An event committed 300 ms ago (by the wall clock the metric uses).
    let mut event = f.snap(2, LoginState::Scanned, Duration::from_secs(60));
    event.changed_at = Some(OffsetDateTime::now_utc() - Duration::from_millis(300));
    f.auth.store(SECRET, event.clone());
    f.bus.publish(event, None);
    assert_eq!(snapshot(next(&mut d).await), (LoginState::Scanned, 2));
    let text = f.metrics.render();
    assert!(
        text.contains("qrlogin_edge_events_delivered_total{transport=\"sse\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("qrlogin_edge_delivery_delay_seconds_count 1"),
        "only the event has a delay"
    );
    assert!(text.contains("qrlogin_edge_delivery_delay_seconds_bucket{le=\"0.25\"} 0"));
    assert!(text.contains("qrlogin_edge_delivery_delay_seconds_bucket{le=\"1\"} 1"));
    drop(d);
    assert_eq!(f.metrics.open_connections(Transport::Sse), 0);
}
