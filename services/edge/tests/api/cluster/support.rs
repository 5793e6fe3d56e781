//! What the cluster tests share: the session bucket as auth makes and
//! writes it, one edge's NATS client with what it received, and the check
//! that nothing was lost or delivered twice.

use std::{
    sync::{atomic::Ordering::SeqCst, Arc},
    time::Duration,
};

use async_nats::jetstream::{self, kv, stream};
use qrlogin_auth::testing::{NatsCluster, TEST_BUCKET, TEST_SUBJECT_PREFIX};
use qrlogin_edge::{
    broker::{Broker, BrokerConfig},
    delivery::ports::EventBus,
    domain::SessionId,
};
use tokio::time::Instant;

pub(super) use crate::broker::record;
use crate::broker::{start, until, Recorder};

/// The edge's PING interval here: a frozen member is found after two
/// unanswered PINGs, 0.8 to 1.2 s.
pub(super) const PING: Duration = Duration::from_millis(400);
/// The session bucket's stream.
pub(super) const STREAM: &str = "KV_qrlogin_sessions";

pub(super) fn session(n: u32) -> SessionId {
    SessionId::parse(&format!("clusterTestSession{n:04}")).unwrap()
}

pub(super) fn subject(id: &SessionId) -> String {
    format!("{TEST_SUBJECT_PREFIX}.{id}")
}

/// The members' URLs, member `first` first: the edge connects to it.
pub(super) fn urls_from(nats: &NatsCluster, first: usize) -> String {
    (0..nats.size())
        .map(|k| nats.url((first + k) % nats.size()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Creates the session bucket as auth does (three replicas, the republish
/// rule) and returns the member that leads its stream.
pub(super) async fn create_bucket(nats: &mut NatsCluster) -> usize {
    let js = jetstream::new(nats.connect_as_auth().await.expect("auth connects"));
    let config = kv::Config {
        bucket: TEST_BUCKET.into(),
        history: 1,
        num_replicas: 3,
        republish: Some(stream::Republish {
            source: format!("$KV.{TEST_BUCKET}.>"),
            destination: format!("{TEST_SUBJECT_PREFIX}.>"),
            headers_only: false,
        }),
        ..Default::default()
    };
    // A new R3 stream needs its members to agree; on a busy machine that
    // can outlast one API request's timeout. Creating it again with the
    // same configuration is a no-op once it exists.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match js.create_key_value(config.clone()).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "session bucket: {e:?}"),
        }
    }
    nats.wait_for_stream_leader(STREAM, None).await
}

/// auth's handle on the bucket, through member `member` (and the members
/// its INFO announces, should that one go).
pub(super) async fn writer(nats: &NatsCluster, member: usize) -> kv::Store {
    let client = nats
        .connect_as_auth_to(&[member])
        .await
        .expect("auth connects");
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(1));
    js.get_key_value(TEST_BUCKET).await.expect("session bucket")
}

/// Writes a new revision of `id`'s record, as auth's transitions do;
/// retries while the stream has no leader. The revision is the version
/// the edge must deliver.
pub(super) async fn write(kv: &kv::Store, id: &SessionId) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match kv.put(id.as_str(), record(id).into()).await {
            Ok(revision) => return revision,
            Err(e) => assert!(Instant::now() < deadline, "write {id}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One edge's NATS client, named so that the cluster's `/connz` finds it.
pub(super) struct Edge {
    pub(super) broker: Broker,
    pub(super) rec: Arc<Recorder>,
    pub(super) name: &'static str,
}

impl Edge {
    pub(super) async fn start(nats: &NatsCluster, name: &'static str, urls: &str) -> Self {
        let mut config = BrokerConfig::new(urls, TEST_SUBJECT_PREFIX);
        config.nkey_seed_file = Some(nats.edge_seed_file());
        config.name = name.to_owned();
        config.ping_interval = PING;
        let (broker, rec, _) = start(config);
        until("connected", || rec.resyncs.load(SeqCst) > 0).await;
        Self { broker, rec, name }
    }

    /// Subscribes to `ids`, and waits until every live member routes their
    /// events here.
    pub(super) async fn watch(&self, nats: &mut NatsCluster, ids: &[SessionId]) {
        for id in ids {
            self.broker.subscribe(id).await.expect("subscribed");
        }
        routed(nats, ids).await;
    }

    pub(super) fn resyncs(&self) -> usize {
        self.rec.resyncs.load(SeqCst)
    }

    /// Waits until the next resync (a reconnect proven by the server) and
    /// returns how long after `since` it came.
    pub(super) async fn next_resync(&self, after: usize, since: Instant) -> Duration {
        until("a resync", || self.resyncs() > after).await;
        let at = self.rec.resynced_at.lock().unwrap()[after];
        at.duration_since(since.into_std())
    }

    pub(super) async fn received(&self, versions: &[u64]) {
        until("every version written", || {
            let got = self.rec.versions();
            versions.iter().all(|v| got.contains(v))
        })
        .await;
    }
}

pub(super) async fn routed(nats: &mut NatsCluster, ids: &[SessionId]) {
    for id in ids {
        nats.wait_for_interest_everywhere(&subject(id)).await;
    }
}

/// Writes one revision of each session; returns the revisions.
pub(super) async fn write_each(kv: &kv::Store, ids: &[SessionId]) -> Vec<u64> {
    let mut written = Vec::new();
    for id in ids {
        written.push(write(kv, id).await);
    }
    written
}

/// Nothing lost, nothing twice: every written version arrived exactly
/// once, and each session's versions in increasing order.
pub(super) fn assert_delivered_once(rec: &Recorder, written: &[u64]) {
    assert_delivered(rec, written, &[]);
}

/// As [`assert_delivered_once`], except that the versions in `replayable`
/// may arrive again (never after a newer one of their session).
pub(super) fn assert_delivered(rec: &Recorder, written: &[u64], replayable: &[u64]) {
    let events = rec.events.lock().unwrap();
    let versions: Vec<u64> = events.iter().map(|e| e.snapshot.version).collect();
    for v in written {
        let n = versions.iter().filter(|x| *x == v).count();
        let ok = n == 1 || (n > 1 && replayable.contains(v));
        assert!(ok, "version {v} arrived {n} times: {versions:?}");
    }
    for (i, e) in events.iter().enumerate() {
        let (id, v) = (&e.snapshot.session_id, e.snapshot.version);
        for o in events[..i].iter().filter(|o| &o.snapshot.session_id == id) {
            let before = o.snapshot.version;
            assert!(
                before < v || (before == v && replayable.contains(&v)),
                "{id}: version {v} after {before}: {versions:?}"
            );
        }
    }
}
