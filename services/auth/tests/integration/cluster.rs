//! Auth on a three-member NATS cluster (real nats-server processes, the
//! bucket at three replicas): logins go on through the loss of the bucket's
//! leader (auth's own retries hide the election), a frozen member (noticed
//! by the client's pings), a member in lame duck mode; and a call repeated
//! after its answer was lost is answered as the first was, with no second
//! write and no second token.

use crate::common::*;
use qrlogin_auth::testing::{BrowserKeyPair, NatsCluster, TestAuth, TestKeys};
use qrlogin_proto::auth::v1 as pb;
use qrlogin_proto::events::v1::LoginState;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tonic::{Code, Status};

const STREAM: &str = "KV_qrlogin_sessions";
const LIMITS_STREAM: &str = "KV_qrlogin_limits";
/// The name auth's NATS connection gives (the members' `/connz`).
const AUTH_CLIENT: &str = qrlogin_auth::broker::CLIENT_NAME;

/// Auth's log on stderr when QRLOGIN_TEST_LOG holds a filter (e.g.
/// `qrlogin_auth=debug`), to see why a run failed.
fn log_if_asked() {
    if let Ok(filter) = std::env::var("QRLOGIN_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

struct Setup {
    cluster: NatsCluster,
    keys: TestKeys,
    /// Serves until the test ends.
    _auth: TestAuth,
    client: Client,
}

/// A 3-member cluster and auth on all of it (the comma-separated list),
/// the bucket at 3 replicas.
async fn start() -> Setup {
    let cluster = NatsCluster::start(3).await;
    let keys = TestKeys::generate();
    let auth = TestAuth::spawn_config(TestAuth::cluster_config(&cluster, &keys, 3)).await;
    let client = client(&auth).await;
    Setup {
        cluster,
        keys,
        _auth: auth,
        client,
    }
}

/// One login through the gRPC API: create, scan, confirm, redeem; the
/// first refusal ends it. With `retry_unavailable`, a call answered
/// UNAVAILABLE (auth's retryable answer) is sent again, as edges and apps
/// do; otherwise it is a failure.
async fn login(
    c: &mut Client,
    token: &str,
    calls: &Calls,
    retry_unavailable: bool,
) -> Result<(), Status> {
    let s = calls
        .time(retry_unavailable, || {
            let mut c = c.clone();
            async move { create_with(&mut c, create_request(None)).await }
        })
        .await?;
    calls
        .time(retry_unavailable, || {
            let mut c = c.clone();
            let id = s.id.clone();
            async move { scan(&mut c, &id, token).await }
        })
        .await?;
    // The user picks the number the browser shows once it shows SCANNED
    // (a read may come from a replica a moment behind the scan).
    let code = browser_sees(c, &s, LoginState::Scanned, calls, retry_unavailable)
        .await?
        .match_code;
    calls
        .time(retry_unavailable, || {
            let mut c = c.clone();
            let id = s.id.clone();
            async move { confirm_with(&mut c, &id, token, code).await }
        })
        .await?;
    let redeemed = calls
        .time(retry_unavailable, || {
            let mut c = c.clone();
            let (id, secret) = (s.id.clone(), s.secret.clone());
            async move { redeem(&mut c, &id, &secret).await }
        })
        .await?;
    assert_eq!(
        state(redeemed.session.as_ref().unwrap()),
        LoginState::Redeemed
    );
    assert_eq!(redeemed.user_id, "alice");
    Ok(())
}

/// The session as the browser reads it once it is in `want` (reads may
/// lag a write for a moment: read again, as a browser waiting for its
/// event would).
async fn browser_sees(
    c: &Client,
    s: &Created,
    want: LoginState,
    calls: &Calls,
    retry_unavailable: bool,
) -> Result<pb::LoginSession, Status> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = calls
            .time(retry_unavailable, || {
                let mut c = c.clone();
                let (id, secret) = (s.id.clone(), s.secret.clone());
                async move { get(&mut c, &id, &secret).await }
            })
            .await?;
        if state(&seen) == want {
            return Ok(seen);
        }
        assert!(Instant::now() < deadline, "the browser never saw {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// When each call ran and whether it succeeded (UNAVAILABLE answers the
/// client retried are counted, not kept).
#[derive(Default)]
struct Calls {
    done: Mutex<Vec<(Instant, Instant)>>,
    unavailable: AtomicUsize,
}

impl Calls {
    async fn time<T, F, Fut>(&self, retry_unavailable: bool, call: F) -> Result<T, Status>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(60);
        loop {
            match call().await {
                Ok(v) => {
                    self.done.lock().unwrap().push((started, Instant::now()));
                    return Ok(v);
                }
                Err(s) if retry_unavailable && s.code() == Code::Unavailable => {
                    self.unavailable.fetch_add(1, Ordering::SeqCst);
                    assert!(Instant::now() < deadline, "UNAVAILABLE for a minute");
                    // What auth's retry-after says, shortened for the test.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s) => return Err(s),
            }
        }
    }

    /// The longest a call took among those running at `at`.
    fn longest_across(&self, at: Instant) -> Duration {
        self.done
            .lock()
            .unwrap()
            .iter()
            .filter(|(start, end)| *start <= at && *end >= at)
            .map(|(start, end)| *end - *start)
            .max()
            .unwrap_or_default()
    }

    /// How long after `at` the first call that started after it succeeded.
    fn first_success_after(&self, at: Instant) -> Option<Duration> {
        self.done
            .lock()
            .unwrap()
            .iter()
            .filter(|(start, _)| *start >= at)
            .map(|(_, end)| *end - at)
            .min()
    }
}

/// Logins run by `workers` tasks until stopped; each counts its completed
/// logins and records its first failure.
struct Load {
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicUsize>,
    calls: Arc<Calls>,
    tasks: Vec<tokio::task::JoinHandle<Result<usize, Status>>>,
}

impl Load {
    fn start(s: &Setup, workers: usize, retry_unavailable: bool) -> Self {
        Self::start_on(&s.client, &s.keys, workers, retry_unavailable)
    }

    fn start_on(client: &Client, keys: &TestKeys, workers: usize, retry_unavailable: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(Calls::default());
        let tasks = (0..workers)
            .map(|_| {
                let (stop, completed, calls) = (stop.clone(), completed.clone(), calls.clone());
                let mut c = client.clone();
                let token = keys.user_token("alice", "Alice");
                tokio::spawn(async move {
                    let mut mine = 0;
                    while !stop.load(Ordering::SeqCst) {
                        login(&mut c, &token, &calls, retry_unavailable).await?;
                        mine += 1;
                        completed.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(mine)
                })
            })
            .collect();
        Self {
            stop,
            completed,
            calls,
            tasks,
        }
    }

    fn completed(&self) -> usize {
        self.completed.load(Ordering::SeqCst)
    }

    /// Waits until `n` logins in all have completed (a failed worker fails
    /// the test at once).
    async fn wait_for(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.completed() < n {
            if let Some(i) = self.tasks.iter().position(|t| t.is_finished()) {
                let failed = self.tasks.remove(i).await.unwrap();
                panic!("a login worker ended early: {failed:?}");
            }
            assert!(Instant::now() < deadline, "{n} logins not done in 60 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the workers and returns how many logins completed; every
    /// login must have completed without an error.
    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = 0;
        for task in self.tasks {
            total += task.await.unwrap().expect("every login completes");
        }
        total
    }
}

/// (a) Auth starts with the comma-separated list of the members and keeps
/// the bucket at three replicas; logins complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_complete_on_a_three_member_cluster() {
    log_if_asked();
    let mut s = start().await;
    let client = s.cluster.connect_as_auth().await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(STREAM).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    assert_eq!(info.cluster.as_ref().unwrap().replicas.len(), 2);
    let calls = Calls::default();
    let token = s.keys.user_token("alice", "Alice");
    for _ in 0..5 {
        login(&mut s.client, &token, &calls, false).await.unwrap();
    }
    assert!(s.cluster.member_of_client(AUTH_CLIENT).await.is_some());
}

/// (b) SIGKILL of the bucket's stream leader while logins run, with a
/// retry deadline that covers nats-server's election (its followers wait a
/// random 4 to 9 s without heartbeats before they elect, again if a vote
/// splits): every call completes without the client retrying, auth's
/// retries hide the election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_bucket_leader_is_hidden_by_auths_retries() {
    log_if_asked();
    let mut cluster = NatsCluster::start(3).await;
    let keys = TestKeys::generate();
    let mut config = TestAuth::cluster_config(&cluster, &keys, 3);
    config.store.store_retry_deadline = Duration::from_secs(20);
    config.request_timeout = Duration::from_secs(25);
    let auth = TestAuth::spawn_config(config).await;
    let c = client(&auth).await;
    let (killed_at, elected, leader, load) = kill_the_leader(&mut cluster, &c, &keys, false).await;
    let longest = load.calls.longest_across(killed_at);
    let total = load.finish().await;
    println!(
        "leader kill, retry deadline 20 s: new leader after {:.2} s; the longest call across the kill took {:.2} s; {total} logins, no call failed",
        elected.as_secs_f64(),
        longest.as_secs_f64(),
    );
    assert!(longest < Duration::from_secs(20), "{longest:?}");
    // The member comes back and catches up; logins go on.
    cluster.restart(leader).await;
    let token = keys.user_token("alice", "Alice");
    login(&mut c.clone(), &token, &Calls::default(), false)
        .await
        .unwrap();
}

/// (b) The same with the default retry deadline (4 s, inside the edges'
/// 5 s call timeout): a call that outlasts it is answered UNAVAILABLE with
/// `retry-after`, the client retries, and every login completes; logins
/// resume as soon as the new leader is in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_bucket_leader_with_the_default_deadline() {
    log_if_asked();
    let mut cluster = NatsCluster::start(3).await;
    let keys = TestKeys::generate();
    let auth = TestAuth::spawn_config(TestAuth::cluster_config(&cluster, &keys, 3)).await;
    let c = client(&auth).await;
    let (killed_at, elected, _, load) = kill_the_leader(&mut cluster, &c, &keys, true).await;
    let resumed = load
        .calls
        .first_success_after(killed_at + elected)
        .expect("a call after the election");
    let longest = load.calls.longest_across(killed_at);
    let unavailable = load.calls.unavailable.load(Ordering::SeqCst);
    let total = load.finish().await;
    println!(
        "leader kill, default retry deadline: new leader after {:.2} s; a call started then succeeded {:.2} s after the kill; longest call across the kill {:.2} s (client retries included), {unavailable} UNAVAILABLE answers retried; {total} logins completed",
        elected.as_secs_f64(),
        (elected + resumed).as_secs_f64(),
        longest.as_secs_f64(),
    );
    assert!(elected + resumed < Duration::from_secs(15));
}

/// Runs logins, kills the sessions stream's leader, and waits for logins
/// to complete under its successor: when it was killed, how long the
/// election took (as seen by the test), and which member it was.
async fn kill_the_leader(
    cluster: &mut NatsCluster,
    c: &Client,
    keys: &TestKeys,
    retry_unavailable: bool,
) -> (Instant, Duration, usize, Load) {
    let leader = cluster.wait_for_stream_leader(STREAM, None).await;
    let mut load = Load::start_on(c, keys, 2, retry_unavailable);
    load.wait_for(4).await;
    let killed_at = Instant::now();
    cluster.kill(leader);
    cluster.wait_for_stream_leader(STREAM, Some(leader)).await;
    let elected = killed_at.elapsed();
    let after = load.completed();
    load.wait_for(after + 6).await;
    (killed_at, elected, leader, load)
}

/// (c) SIGSTOP of the member auth is connected to (one that leads neither
/// bucket, so that no election is involved: a frozen leader is replaced
/// only after the servers' own election timeout): the client's pings
/// notice it and logins resume within three ping intervals and a request
/// timeout, well inside the bound asserted here. Calls in flight at the
/// freeze may be answered UNAVAILABLE; the client retries those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_member_is_left_within_the_ping_timeout() {
    log_if_asked();
    let mut cluster = NatsCluster::start(3).await;
    let keys = TestKeys::generate();
    let config = TestAuth::cluster_config(&cluster, &keys, 3);
    let ping = config.store.nats_ping_interval;
    let mut auth = TestAuth::spawn_config(config.clone()).await;
    let member = loop {
        let sessions = cluster.wait_for_stream_leader(STREAM, None).await;
        let limits = cluster.wait_for_stream_leader(LIMITS_STREAM, None).await;
        let member = cluster
            .member_of_client(AUTH_CLIENT)
            .await
            .expect("auth is connected");
        if member != sessions && member != limits {
            break member;
        }
        // Auth picks a member at random: start it again, once the old
        // one's connection is gone.
        auth.stop().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while cluster.member_of_client(AUTH_CLIENT).await.is_some() {
            assert!(Instant::now() < deadline, "a stopped auth stays connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        auth = TestAuth::spawn_config(config.clone()).await;
    };
    let c = client(&auth).await;
    let mut load = Load::start_on(&c, &keys, 2, true);
    load.wait_for(4).await;
    let frozen_at = Instant::now();
    cluster.freeze(member);
    let before = load.completed();
    load.wait_for(before + 4).await;
    let moved_to = cluster.wait_for_client_on_other(AUTH_CLIENT, member).await;
    let recovery = load
        .calls
        .first_success_after(frozen_at)
        .expect("a call succeeded after the freeze");
    let target = ping * 3 + config.store.nats_request_timeout;
    println!(
        "freeze of nats-{}: auth moved to nats-{}; the first call started after the freeze succeeded {:.2} s after it (ping interval {:?}, noticed after 3 silent intervals: target {:?}); {} UNAVAILABLE answers retried by the client; longest call across the freeze {:.2} s",
        member + 1,
        moved_to + 1,
        recovery.as_secs_f64(),
        ping,
        target,
        load.calls.unavailable.load(Ordering::SeqCst),
        load.calls.longest_across(frozen_at).as_secs_f64(),
    );
    assert!(recovery < target * 3, "recovery {recovery:?}");
    cluster.thaw(member);
    load.finish().await;
}

/// (d) Lame duck mode of auth's member: auth moves at the notice, and
/// logins go on without an error until the member exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_in_lame_duck_mode_is_left_without_errors() {
    log_if_asked();
    let mut s = start().await;
    let member = s
        .cluster
        .member_of_client(AUTH_CLIENT)
        .await
        .expect("auth is connected");
    let mut load = Load::start(&s, 2, false);
    load.wait_for(4).await;
    s.cluster.lame_duck(member);
    let moved_to = s
        .cluster
        .wait_for_client_on_other(AUTH_CLIENT, member)
        .await;
    let before = load.completed();
    load.wait_for(before + 4).await;
    s.cluster.wait_exit(member).await;
    let after_exit = load.completed();
    load.wait_for(after_exit + 4).await;
    let total = load.finish().await;
    println!(
        "lame duck of nats-{}: auth moved to nats-{}; {total} logins, none failed",
        member + 1,
        moved_to + 1
    );
}

/// (e) A repeated call answers as the first did: confirm, deny, cancel,
/// redeem (the same token, to the same proven key, within the window); a
/// different user or key is still refused, and a redeem after the window
/// is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_calls_answer_as_the_first() {
    log_if_asked();
    let cluster = NatsCluster::start(3).await;
    let keys = TestKeys::generate();
    let mut config = TestAuth::cluster_config(&cluster, &keys, 3);
    config.protocol.redeem_retry_window = Duration::from_secs(2);
    let auth = TestAuth::spawn_config(config).await;
    let mut c = client(&auth).await;
    let alice = keys.user_token("alice", "Alice");
    let bob = keys.user_token("bob", "Bob");

    // Confirm twice, with the number shown: the same answer, one write.
    let browser = BrowserKeyPair::generate();
    let s = create_with(&mut c, create_request(Some(browser_key(&browser))))
        .await
        .unwrap();
    scan(&mut c, &s.id, &alice).await.unwrap();
    let code = get(&mut c, &s.id, &s.secret).await.unwrap().match_code;
    let first = confirm_with(&mut c, &s.id, &alice, code).await.unwrap();
    let again = confirm_with(&mut c, &s.id, &alice, code).await.unwrap();
    assert_eq!(state(&again), LoginState::Confirmed);
    assert_eq!(again.version, first.version, "no second write");
    // Not a repeat: another user, or another number.
    assert_code(
        confirm_with(&mut c, &s.id, &bob, code).await,
        Code::FailedPrecondition,
        "CONFIRMED",
    );
    let wrong = confirm_with(&mut c, &s.id, &alice, if code == 10 { 11 } else { 10 }).await;
    assert_eq!(wrong.unwrap_err().code(), Code::FailedPrecondition);

    // Redeem twice with fresh proofs of the key: the same token.
    let proof = |b: &BrowserKeyPair| b.proof(&s.id, qrlogin_auth::service::now_millis() / 1000);
    let first_proof = proof(&browser);
    let r1 = redeem_with(&mut c, &s.id, &s.secret, &first_proof)
        .await
        .unwrap();
    let r2 = redeem_with(&mut c, &s.id, &s.secret, &proof(&browser))
        .await
        .unwrap();
    assert_eq!(r2.access_token, r1.access_token, "the same token");
    assert_eq!(r2.access_token_expires_at, r1.access_token_expires_at);
    assert_eq!(
        r2.session.as_ref().unwrap().version,
        r1.session.as_ref().unwrap().version,
        "no second write"
    );
    // Another key's proof, or none, gets nothing.
    let thief = BrowserKeyPair::generate();
    let stolen = redeem_with(&mut c, &s.id, &s.secret, &proof(&thief)).await;
    assert_eq!(reason(&stolen), "invalid_proof");
    assert_code(
        redeem(&mut c, &s.id, &s.secret).await,
        Code::FailedPrecondition,
        "REDEEMED",
    );
    // A proof works once: the one that redeemed, presented again, is not
    // a repeat.
    assert_code(
        redeem_with(&mut c, &s.id, &s.secret, &first_proof).await,
        Code::FailedPrecondition,
        "REDEEMED",
    );
    // The phone's confirm repeated after the redeem: still answered.
    let late = confirm_with(&mut c, &s.id, &alice, code).await.unwrap();
    assert_eq!(state(&late), LoginState::Redeemed);
    // After the window: the old refusal.
    let window_ends = Instant::now() + Duration::from_secs(2);
    tokio::time::sleep_until(window_ends).await;
    assert_code(
        redeem_with(&mut c, &s.id, &s.secret, &proof(&browser)).await,
        Code::FailedPrecondition,
        "REDEEMED",
    );
    assert_code(
        redeem(&mut c, &s.id, &s.secret).await,
        Code::FailedPrecondition,
        "REDEEMED",
    );

    // Cancel twice: the same answer, one write.
    let s = create(&mut c).await;
    let first = cancel(&mut c, &s.id, &s.secret).await.unwrap();
    let again = cancel(&mut c, &s.id, &s.secret).await.unwrap();
    assert_eq!(state(&again), LoginState::Cancelled);
    assert_eq!(again.version, first.version);
    // Not with another browser's secret.
    let other = create(&mut c).await;
    let foreign = cancel(&mut c, &s.id, &other.secret).await;
    assert_eq!(foreign.unwrap_err().code(), Code::PermissionDenied);

    // Deny twice by the scanning user; a wrong pick twice, the same refusal.
    let s = create(&mut c).await;
    scan(&mut c, &s.id, &alice).await.unwrap();
    let first = deny(&mut c, &s.id, &alice).await.unwrap();
    let again = deny(&mut c, &s.id, &alice).await.unwrap();
    assert_eq!(again.version, first.version);
    assert_eq!(state(&again), LoginState::Denied);
    let s = create(&mut c).await;
    scan(&mut c, &s.id, &alice).await.unwrap();
    let shown = get(&mut c, &s.id, &s.secret).await.unwrap().match_code;
    let wrong = if shown == 10 { 11 } else { 10 };
    for _ in 0..2 {
        let r = confirm_with(&mut c, &s.id, &alice, wrong).await;
        assert_eq!(reason(&r), "wrong_match");
    }
    let denied = get(&mut c, &s.id, &s.secret).await.unwrap();
    assert_eq!(state(&denied), LoginState::Denied);
}

/// (e) Writes that commit but whose acknowledgement is lost (the member
/// died in between): auth's retry of the same write answers as if the ack
/// had come, without a second write. On three replicas the server
/// recognises the retry's message id; on one it refuses the expected
/// revision first, and auth reads the key back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_acknowledgement_on_three_replicas_is_not_an_error() {
    log_if_asked();
    let cluster = NatsCluster::start(3).await;
    let keys = TestKeys::generate();
    let auth = TestAuth::spawn_config(TestAuth::cluster_config(&cluster, &keys, 3)).await;
    lost_acks_are_hidden(&auth, &keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_acknowledgement_on_one_replica_is_not_an_error() {
    log_if_asked();
    let h = Harness::start().await;
    lost_acks_are_hidden(&h.auth, &h.keys).await;
}

async fn lost_acks_are_hidden(auth: &TestAuth, keys: &TestKeys) {
    let mut c = client(auth).await;
    let alice = keys.user_token("alice", "Alice");
    let s = create(&mut c).await;
    let hook = auth.lose_next_acks(1);
    let scanned = scan(&mut c, &s.id, &alice).await.unwrap();
    assert_eq!(hook.load(Ordering::SeqCst), 0, "an ack was dropped");
    let scanned = scanned.session.unwrap();
    assert_eq!(state(&scanned), LoginState::Scanned);
    assert_eq!(scanned.version, s.version + 1, "one write");
    auth.lose_next_acks(1);
    let confirmed = confirm(&mut c, &s.id, &alice).await.unwrap();
    assert_eq!(state(&confirmed), LoginState::Confirmed);
    let read = get(&mut c, &s.id, &s.secret).await.unwrap();
    assert_eq!(read.version, confirmed.version, "one write");
    auth.lose_next_acks(1);
    let redeemed = redeem(&mut c, &s.id, &s.secret).await.unwrap();
    let version = redeemed.session.as_ref().unwrap().version;
    assert_eq!(version, confirmed.version + 1, "one write");
    let again = redeem(&mut c, &s.id, &s.secret).await.unwrap();
    assert_eq!(again.access_token, redeemed.access_token, "one token");
    // A create whose ack is lost is that session, not another.
    auth.lose_next_acks(1);
    let created = create(&mut c).await;
    let read = get(&mut c, &created.id, &created.secret).await.unwrap();
    assert_eq!(read.version, created.version);
    assert_eq!(state(&read), LoginState::Pending);
}
