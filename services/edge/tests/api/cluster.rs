//! The edge's NATS client against three clustered nats-servers, one test per
//! failover path: the member it uses killed (it moves to another from its
//! list), killed when it was the only one configured (it moves to one that
//! INFO announced), frozen (found by the PING timeout: a stopped process
//! keeps its sockets open), in lame duck mode (it leaves at the INFO, before
//! the member goes), every member killed at once; and the bucket's stream
//! leader killed while auth writes. Events are real writes to the session
//! bucket (three replicas) with auth's credential, republished by the
//! cluster as in production. Each test prints what it measured.

use std::{
    sync::{atomic::Ordering::SeqCst, Arc},
    time::Duration,
};

use qrlogin_auth::testing::NatsCluster;
use tokio::time::Instant;

use crate::broker::until;

mod support;
use support::*;

#[tokio::test]
async fn a_killed_member_moves_the_edge_to_the_next_which_resubscribes_and_resyncs() {
    let mut nats = NatsCluster::start(3).await;
    let leader = create_bucket(&mut nats).await;
    // The edge's member is not the stream's leader: only its link is hit.
    let a = (leader + 1) % 3;
    let kv = writer(&nats, leader).await;
    let edge = Edge::start(&nats, "edge-kill", &urls_from(&nats, a)).await;
    assert_eq!(nats.member_of_client(edge.name).await, Some(a));
    let ids = [session(1), session(2), session(3)];
    edge.watch(&mut nats, &ids).await;
    let mut written = write_each(&kv, &ids).await;
    edge.received(&written).await;

    let resyncs = edge.resyncs();
    let t0 = Instant::now();
    nats.kill(a);
    let moved = edge.next_resync(resyncs, t0).await;
    let b = nats.wait_for_client_on_other(edge.name, a).await;
    println!(
        "SIGKILL of {}: re-subscribed on {} and resynced after {moved:?}",
        nats.name(a),
        nats.name(b)
    );
    assert!(moved < Duration::from_secs(5), "moved after {moved:?}");
    assert_eq!(edge.broker.subscriptions(), ids.len());

    // Events written after the move arrive (every session was subscribed
    // again on the new member).
    routed(&mut nats, &ids).await;
    written.extend(write_each(&kv, &ids).await);
    edge.received(&written).await;

    // The member comes back: the edge stays, nothing arrives twice.
    nats.restart(a).await;
    routed(&mut nats, &ids).await;
    written.extend(write_each(&kv, &ids).await);
    edge.received(&written).await;
    assert_delivered_once(&edge.rec, &written);
    assert!(edge.broker.is_connected());
}

#[tokio::test]
async fn an_edge_given_one_member_learns_the_others_from_info_and_moves_to_one() {
    let mut nats = NatsCluster::start(3).await;
    let leader = create_bucket(&mut nats).await;
    let a = (leader + 1) % 3;
    let kv = writer(&nats, leader).await;
    // Only `a` is configured: the others come from INFO's connect_urls.
    let edge = Edge::start(&nats, "edge-learn", &nats.url(a)).await;
    assert_eq!(nats.member_of_client(edge.name).await, Some(a));
    let ids = [session(1), session(2)];
    edge.watch(&mut nats, &ids).await;
    let mut written = write_each(&kv, &ids).await;
    edge.received(&written).await;

    let resyncs = edge.resyncs();
    let t0 = Instant::now();
    nats.kill(a);
    let moved = edge.next_resync(resyncs, t0).await;
    let b = nats.wait_for_client_on_other(edge.name, a).await;
    println!(
        "SIGKILL of the only configured member {}: moved to the learnt {} after {moved:?}",
        nats.name(a),
        nats.name(b)
    );
    assert!(moved < Duration::from_secs(5), "moved after {moved:?}");

    routed(&mut nats, &ids).await;
    written.extend(write_each(&kv, &ids).await);
    edge.received(&written).await;
    assert_delivered_once(&edge.rec, &written);
}

#[tokio::test]
async fn a_frozen_member_is_found_by_the_ping_timeout_and_its_thaw_changes_nothing() {
    let mut nats = NatsCluster::start(3).await;
    let leader = create_bucket(&mut nats).await;
    let a = (leader + 1) % 3;
    let kv = writer(&nats, leader).await;
    let edge = Edge::start(&nats, "edge-freeze", &urls_from(&nats, a)).await;
    assert_eq!(nats.member_of_client(edge.name).await, Some(a));
    let ids = [session(1), session(2)];
    edge.watch(&mut nats, &ids).await;
    let mut written = write_each(&kv, &ids).await;
    edge.received(&written).await;

    let resyncs = edge.resyncs();
    let t0 = Instant::now();
    nats.freeze(a);
    // Written while the edge still listens on the frozen member: lost to
    // the bus (the resync that follows re-reads it); it must not turn up
    // later, after newer versions.
    write(&kv, &ids[1]).await;
    let moved = edge.next_resync(resyncs, t0).await;
    let b = nats.wait_for_client_on_other(edge.name, a).await;
    println!(
        "SIGSTOP of {}: no PONG to two PINGs ({PING:?} apart); moved to {} and resynced after {moved:?}",
        nats.name(a),
        nats.name(b)
    );
    // Two unanswered PINGs: after at least two intervals (a frozen server
    // closes nothing, so nothing else can tell), at most three, plus the
    // reconnect.
    assert!(moved >= PING * 2 - Duration::from_millis(100), "{moved:?}");
    assert!(moved < PING * 3 + Duration::from_secs(2), "{moved:?}");

    routed(&mut nats, &ids).await;
    written.extend(write_each(&kv, &ids).await);
    edge.received(&written).await;

    // Thawed, the member catches up and flushes what it held for the old
    // connection: nothing of it reaches the edge.
    nats.thaw(a);
    nats.wait_healthy(a).await;
    routed(&mut nats, &ids).await;
    written.extend(write_each(&kv, &ids).await);
    edge.received(&written).await;
    assert_delivered_once(&edge.rec, &written);
    assert_eq!(nats.member_of_client(edge.name).await, Some(b));
}

#[tokio::test]
async fn lame_duck_mode_moves_the_edge_at_the_info_and_the_window_loses_nothing() {
    let mut nats = NatsCluster::start(3).await;
    let leader = create_bucket(&mut nats).await;
    let a = (leader + 1) % 3;
    let kv = writer(&nats, leader).await;
    let edge = Edge::start(&nats, "edge-ldm", &urls_from(&nats, a)).await;
    assert_eq!(nats.member_of_client(edge.name).await, Some(a));
    let ids = [session(1), session(2)];
    edge.watch(&mut nats, &ids).await;
    let mut written = write_each(&kv, &ids).await;
    edge.received(&written).await;
    // Two more clients on `a`: it evicts its clients one by one over its
    // 30 s window and exits after the last, so it stays up meanwhile.
    let _others = (
        nats.connect_as_auth_to(&[a]).await.unwrap(),
        nats.connect_as_auth_to(&[a]).await.unwrap(),
    );

    // A member that leads a Raft group hands it over first and tells its
    // clients a second later.
    let led = nats.meta_leader().await.as_deref() == Some(nats.name(a));
    let resyncs = edge.resyncs();
    let t0 = Instant::now();
    nats.lame_duck(a);
    let moved = edge.next_resync(resyncs, t0).await;
    assert!(
        nats.is_running(a),
        "the edge moved only when the member quit"
    );
    let b = nats.wait_for_client_on_other(edge.name, a).await;
    let reason = nats.closed_reason(a, edge.name).await;
    println!(
        "lame duck mode of {} (meta leader: {led}): moved to {} and resynced after {moved:?}; {} says {reason:?}",
        nats.name(a),
        nats.name(b),
        nats.name(a),
    );
    assert_eq!(
        reason.as_deref(),
        Some("Client Closed"),
        "the edge left at the INFO, it was not evicted"
    );

    // An event during the window arrives once.
    routed(&mut nats, &ids).await;
    written.extend(write_each(&kv, &ids).await);
    edge.received(&written).await;
    assert!(nats.is_running(a), "still in the lame-duck window");
    assert_delivered_once(&edge.rec, &written);
}

#[tokio::test]
async fn events_written_across_a_stream_leader_kill_reach_the_edge_once_a_new_leader_exists() {
    let mut nats = NatsCluster::start(3).await;
    let leader = create_bucket(&mut nats).await;
    // Neither the edge nor the writer is on the leader: only the stream
    // loses its leader.
    let (e, w) = ((leader + 1) % 3, (leader + 2) % 3);
    let kv = writer(&nats, w).await;
    let edge = Edge::start(&nats, "edge-leader", &urls_from(&nats, e)).await;
    let ids = [session(1), session(2)];
    edge.watch(&mut nats, &ids).await;
    let before = write_each(&kv, &ids).await;
    edge.received(&before).await;

    // auth writes on, one session after the other, while the leader dies.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(u64, Instant)>::new()));
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writes = tokio::spawn({
        let (kv, ids) = (kv.clone(), ids.clone());
        let (stop, acked, refused) = (stop.clone(), acked.clone(), refused.clone());
        async move {
            for n in 0.. {
                if stop.load(SeqCst) {
                    break;
                }
                let id = &ids[n % ids.len()];
                match kv.put(id.as_str(), record(id).into()).await {
                    Ok(revision) => acked.lock().unwrap().push((revision, Instant::now())),
                    Err(_) => {
                        refused.fetch_add(1, SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    until("writes before the kill", || {
        acked.lock().unwrap().len() >= 4
    })
    .await;
    let t0 = Instant::now();
    nats.kill(leader);
    let new = nats.wait_for_stream_leader(STREAM, Some(leader)).await;
    let elected = t0.elapsed();
    until("writes acknowledged by the new leader", || {
        acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at)| *at > t0)
            .count()
            >= 6
    })
    .await;
    stop.store(true, SeqCst);
    writes.await.unwrap();

    let acked: Vec<(u64, Instant)> = acked.lock().unwrap().clone();
    let first_after = acked
        .iter()
        .find(|(_, at)| *at > t0)
        .map(|(_, at)| *at - t0);
    println!(
        "SIGKILL of the stream leader {}: {} led after {elected:?}; first write acknowledged {first_after:?} after the kill; {} writes refused meanwhile",
        nats.name(leader),
        nats.name(new),
        refused.load(SeqCst)
    );
    let mut written = before;
    written.extend(acked.iter().map(|(v, _)| *v));
    edge.received(&written).await;
    assert_delivered_once(&edge.rec, &written);
    assert_eq!(
        nats.member_of_client(edge.name).await,
        Some(e),
        "the edge's own link was not touched"
    );
}

#[tokio::test]
async fn every_member_killed_and_restarted_ends_connected_and_resynced() {
    let mut nats = NatsCluster::start(3).await;
    let leader = create_bucket(&mut nats).await;
    let edge = Edge::start(&nats, "edge-storm", &nats.url_list()).await;
    let ids = [session(1), session(2)];
    edge.watch(&mut nats, &ids).await;
    let kv = writer(&nats, leader).await;
    let before = write_each(&kv, &ids).await;
    edge.received(&before).await;

    let resyncs = edge.resyncs();
    for i in 0..nats.size() {
        nats.kill(i);
    }
    until("disconnected", || !edge.broker.is_connected()).await;
    let t0 = Instant::now();
    nats.restart_all().await;
    let healthy = t0.elapsed();
    let back = edge.next_resync(resyncs, t0).await;
    println!(
        "every member killed: the cluster healthy {healthy:?} after the restart began, the edge resynced after {back:?}"
    );
    // Retrying over every member with a backoff of at most 1.5 s.
    assert!(back < healthy + Duration::from_secs(3), "{back:?}");

    let leader = nats.wait_for_stream_leader(STREAM, None).await;
    let kv = writer(&nats, leader).await;
    routed(&mut nats, &ids).await;
    let after = write_each(&kv, &ids).await;
    edge.received(&after).await;
    let versions = edge.rec.versions();
    println!("versions delivered: {versions:?} (written {before:?}, then {after:?})");
    // A restarted stream may republish what it had stored before (NATS
    // delivers at least once; delivery drops a version it has): the writes
    // from before the kill may come again, those after once.
    let written: Vec<u64> = before.iter().chain(&after).copied().collect();
    assert_delivered(&edge.rec, &written, &before);
    // One reconnect, not a storm of them, while the cluster settled.
    assert_eq!(edge.resyncs() - resyncs, 1);
}
