//! QR rotation from the node's timer queue: a PENDING session's watchers
//! get the next payload at each boundary as a local snapshot (the same
//! version), without any read or write; it stops with the scan; resuming
//! clients get a rotated payload exactly when theirs is older.

use super::*;
use crate::domain::QrCode;

const PERIOD: Duration = Duration::from_secs(25);

impl Fixture {
    /// A PENDING snapshot of session `n` whose QR code starts now.
    fn pending_qr(&self, n: u32, version: u64, ttl: Duration) -> Snapshot {
        let now = self.clock.now();
        Snapshot {
            qr: QrCode::new(&[9; 16], now, PERIOD.as_millis() as u32, "http://x", now),
            ..self.snap(n, version, LoginState::Pending, ttl)
        }
    }
}

async fn next_snapshot(w: &mut Watcher, m: &Metrics) -> Arc<Snapshot> {
    tokio::time::timeout(Duration::from_secs(3600), w.next(m))
        .await
        .expect("an update")
        .expect("open")
}

#[tokio::test(start_paused = true)]
async fn a_pending_session_gets_the_next_payload_at_each_boundary_without_reads() {
    let f = fixture(8);
    f.auth
        .store(SECRET, f.pending_qr(1, 1, Duration::from_secs(120)));
    let mut w = f.watch(1).await;
    let first = next_snapshot(&mut w, &f.metrics).await;
    assert_eq!(first.qr_epoch(), Some(0));
    let reads = f.auth.reads();
    let mut payloads = vec![first.qr_payload().unwrap()];
    for epoch in 1..=4u64 {
        let s = next_snapshot(&mut w, &f.metrics).await;
        assert_eq!((s.state, s.version), (LoginState::Pending, 1));
        assert_eq!(s.qr_epoch(), Some(epoch));
        assert_eq!(s.expires_at, first.expires_at, "the deadline stays");
        let at = f.clock.now();
        let boundary = first.next_rotation().unwrap() + PERIOD * (epoch as u32 - 1);
        assert!(
            at >= boundary && at - boundary < time::Duration::milliseconds(5),
            "rotated at {at}, boundary {boundary}"
        );
        payloads.push(s.qr_payload().unwrap());
    }
    payloads.dedup();
    assert_eq!(payloads.len(), 5, "five different payloads");
    assert_eq!(f.auth.reads(), reads, "rotation reads nothing");
    assert!(f
        .metrics
        .render()
        .contains("qrlogin_edge_qr_rotations_total 4"));
    // At 120 s the deadline comes first: a re-read, then EXPIRED.
    let s = next_snapshot(&mut w, &f.metrics).await;
    assert_eq!(s.state, LoginState::Expired);
    assert_eq!(s.qr_payload(), None);
    assert_eq!(f.auth.reads(), reads + 1);
}

#[tokio::test(start_paused = true)]
async fn the_scan_ends_the_rotation() {
    let f = fixture(8);
    let ttl = Duration::from_secs(120);
    f.auth.store(SECRET, f.pending_qr(1, 1, ttl));
    let mut w = f.watch(1).await;
    next_snapshot(&mut w, &f.metrics).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut scanned = f.snap(1, 2, LoginState::Scanned, Duration::from_secs(60));
    scanned.match_code = Some(42);
    f.commit(scanned, Some(1));
    let s = next_snapshot(&mut w, &f.metrics).await;
    assert_eq!((s.state, s.match_code), (LoginState::Scanned, Some(42)));
    // Past several boundaries, nothing until the SCANNED deadline.
    tokio::time::sleep(Duration::from_secs(55)).await;
    assert!(w.news(&f.metrics).is_none());
    assert!(f
        .metrics
        .render()
        .contains("qrlogin_edge_qr_rotations_total 0"));
}

#[tokio::test(start_paused = true)]
async fn resuming_clients_get_a_newer_payload_and_only_that() {
    let f = fixture(8);
    f.auth
        .store(SECRET, f.pending_qr(1, 1, Duration::from_secs(120)));
    let mut first = f.watch(1).await;
    next_snapshot(&mut first, &f.metrics).await;
    // A long poll holding version 1 and the payload of epoch 0 waits...
    let mut poll = f.watches.watch(&id(1), SECRET, Some(1)).await.unwrap();
    poll.resume_qr(0);
    assert!(poll.news(&f.metrics).is_none());
    // ...until the boundary.
    let s = next_snapshot(&mut poll, &f.metrics).await;
    assert_eq!(s.qr_epoch(), Some(1));
    // A stream resuming from version 1 without saying which payload it
    // holds is sent the current one at once.
    let mut stream = f.watches.watch(&id(1), SECRET, Some(1)).await.unwrap();
    let s = stream
        .news(&f.metrics)
        .expect("the current PENDING snapshot");
    assert_eq!(s.qr_epoch(), Some(1));
    // A long poll that already holds the current payload is not.
    let mut current = f.watches.watch(&id(1), SECRET, Some(1)).await.unwrap();
    current.resume_qr(1);
    assert!(current.news(&f.metrics).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_late_read_or_event_of_the_same_version_does_not_bring_an_old_payload_back() {
    let f = fixture(8);
    let ttl = Duration::from_secs(120);
    let created = f.pending_qr(1, 1, ttl);
    f.auth.store(SECRET, created.clone());
    let mut w = f.watch(1).await;
    next_snapshot(&mut w, &f.metrics).await;
    let rotated = next_snapshot(&mut w, &f.metrics).await;
    assert_eq!(rotated.qr_epoch(), Some(1));
    // The create event, delivered late, shows epoch 0: not news.
    f.bus.publish(created, None);
    settle().await;
    assert!(w.news(&f.metrics).is_none());
    assert_eq!(w.current().unwrap().qr_epoch(), Some(1));
}
