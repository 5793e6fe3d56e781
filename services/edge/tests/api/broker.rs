//! The edge's own NATS client against a real nats-server: reconnect after a
//! restart re-subscribes and resyncs, nkey authentication, a permission
//! violation is surfaced, TLS with a throw-away CA, oversize payloads, the
//! commit time of a real bucket write.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering::SeqCst},
        Arc, Mutex,
    },
    time::Duration,
};

use prost::Message as _;
use qrlogin_auth::testing::{
    nats_server_bin, NatsServer, Permissions, TEST_BUCKET, TEST_SUBJECT_PREFIX,
};
use qrlogin_edge::{
    broker::{Broker, BrokerConfig},
    delivery::ports::{BusError, BusEvent, EventBus, Inbox},
    domain::SessionId,
    metrics::Metrics,
};
use qrlogin_proto::events::v1::{LoginEvent, LoginState, StoredSession};

use crate::helpers::{Cluster, WAIT};

#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) events: Mutex<Vec<BusEvent>>,
    pub(crate) resyncs: AtomicUsize,
    /// When each resync came.
    pub(crate) resynced_at: Mutex<Vec<std::time::Instant>>,
}

impl Inbox for Recorder {
    fn event(&self, event: BusEvent) {
        self.events.lock().unwrap().push(event);
    }

    fn resync(&self) {
        self.resynced_at
            .lock()
            .unwrap()
            .push(std::time::Instant::now());
        self.resyncs.fetch_add(1, SeqCst);
    }
}

impl Recorder {
    pub(crate) fn versions(&self) -> Vec<u64> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.snapshot.version)
            .collect()
    }
}

/// Waits (bounded) until `cond` holds.
pub(crate) async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) fn start(config: BrokerConfig) -> (Broker, Arc<Recorder>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let (broker, starter) = Broker::new(&config, metrics.clone()).expect("broker config");
    let recorder = Arc::new(Recorder::default());
    starter.start(recorder.clone());
    (broker, recorder, metrics)
}

fn id() -> SessionId {
    SessionId::parse("q3Zb0Xz2kT9yLw1sJm5HAA").unwrap()
}

/// A SCANNED record of `session` as the session bucket stores it.
pub(crate) fn record(session: &SessionId) -> Vec<u8> {
    StoredSession {
        event: Some(LoginEvent {
            session_id: session.to_string(),
            state: LoginState::Scanned as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// [`record`] as the bucket's republish sends it: with the `Nats-Sequence`
/// header (the edge takes nothing else from the subject).
async fn republish(publisher: &async_nats::Client, session: &SessionId, version: u64) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Sequence", version.to_string().as_str());
    publisher
        .publish_with_headers(
            format!("qrlogin.session.{session}"),
            headers,
            record(session).into(),
        )
        .await
        .unwrap();
}

/// A publisher on the session subjects (neither auth's nor the edge's
/// credential is allowed to publish there).
async fn publisher(nats: &NatsServer) -> (std::path::PathBuf, async_nats::Client) {
    let seed = nats
        .add_user(
            "publisher",
            Permissions {
                publish: vec!["qrlogin.session.>".into()],
                subscribe: vec![],
            },
        )
        .await;
    let client = nats.connect(&seed).await.unwrap();
    (seed, client)
}

/// The delivery-delay metric starts at the commit: the republished event's
/// `Nats-Time-Stamp`, which is the time the stream stored auth's write (the
/// KV entry's own time), not auth's clock when it decided the change.
#[tokio::test]
async fn an_event_carries_the_commit_time_of_its_bucket_write() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let id = SessionId::parse(&created.id).unwrap();
    let mut config = BrokerConfig::new(&cluster.nats.url(), TEST_SUBJECT_PREFIX);
    config.nkey_seed_file = Some(cluster.nats.edge_seed_file());
    let (broker, rec, _) = start(config);
    until("connected", || broker.is_connected()).await;
    broker.subscribe(&id).await.unwrap();
    cluster
        .nats
        .wait_for_interest(&format!("{TEST_SUBJECT_PREFIX}.{id}"))
        .await;

    let scan = cluster.phone(&cluster.edge2, &created.id, "scan").await;
    assert!(scan.status().is_success(), "scan: {}", scan.status());
    until("the scan's event", || !rec.versions().is_empty()).await;
    let event = rec.events.lock().unwrap()[0].clone();

    let js = async_nats::jetstream::new(cluster.nats.connect_as_auth().await.unwrap());
    let bucket = js.get_key_value(TEST_BUCKET).await.unwrap();
    let entry = bucket.entry(&created.id).await.unwrap().expect("stored");
    assert_eq!(event.snapshot.version, entry.revision);
    assert_eq!(event.snapshot.changed_at, Some(entry.created));
    assert_ne!(
        event.snapshot.changed_at,
        Some(event.snapshot.updated_at),
        "the commit time is the stream's, not auth's decision time"
    );
}

#[tokio::test]
async fn a_server_restart_resubscribes_and_resyncs() {
    let mut nats = NatsServer::start().await;
    let mut config = BrokerConfig::new(&nats.url(), "qrlogin.session");
    config.nkey_seed_file = Some(nats.edge_seed_file());
    let (broker, rec, _) = start(config);
    until("connected", || broker.is_connected()).await;
    broker.subscribe(&id()).await.unwrap();
    let (seed, publisher) = publisher(&nats).await;
    republish(&publisher, &id(), 1).await;
    publisher.flush().await.unwrap();
    until("first event", || rec.versions() == [1]).await;
    let resyncs = rec.resyncs.load(SeqCst);

    nats.restart().await;
    until("resync after the restart", || {
        rec.resyncs.load(SeqCst) > resyncs
    })
    .await;
    // The resync comes after the server proved the re-subscription: an event
    // published now arrives.
    let publisher = nats.connect(&seed).await.unwrap();
    republish(&publisher, &id(), 2).await;
    publisher.flush().await.unwrap();
    until("event after the restart", || rec.versions() == [1, 2]).await;

    // Unsubscribed: nothing more arrives (a later subscription proves the
    // server processed the UNSUB first).
    broker.unsubscribe(&id());
    let other = SessionId::parse("AAAAAAAAAAAAAAAAAAAAAA").unwrap();
    broker.subscribe(&other).await.unwrap();
    republish(&publisher, &id(), 3).await;
    republish(&publisher, &other, 9).await;
    publisher.flush().await.unwrap();
    until("the other session's event", || rec.versions().contains(&9)).await;
    assert_eq!(rec.versions(), [1, 2, 9]);
}

/// A nats-server run from a config file written by the test.
struct ConfiguredServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl ConfiguredServer {
    async fn start(dir: tempfile::TempDir, config: impl Fn(u16) -> String) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let path = dir.path().join("nats.conf");
        std::fs::write(&path, config(port)).unwrap();
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server");
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for ConfiguredServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_seed(dir: &Path, name: &str, pair: &nkeys::KeyPair) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pair.seed().unwrap()).unwrap();
    path
}

#[tokio::test]
async fn nkey_authentication_and_a_refused_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let edge = nkeys::KeyPair::new_user();
    let seed = write_seed(dir.path(), "edge.nk", &edge);
    let public = edge.public_key();
    let server = ConfiguredServer::start(dir, |port| {
        format!(
            "listen: 127.0.0.1:{port}\n\
             authorization {{ users = [ {{ nkey: {public}, permissions: {{ publish: {{ deny: \">\" }}, subscribe: {{ allow: \"qrlogin.session.*\" }} }} }} ] }}\n"
        )
    })
    .await;
    let url = format!("nats://127.0.0.1:{}", server.port);

    // Without credentials: never connected.
    let (anonymous, _, _) = start(BrokerConfig::new(&url, "qrlogin.session"));

    // With the seed: connected, and the allowed subject subscribes.
    let mut config = BrokerConfig::new(&url, "qrlogin.session");
    config.nkey_seed_file = Some(seed.clone());
    let (allowed, _, _) = start(config);
    until("nkey connection", || allowed.is_connected()).await;
    allowed.subscribe(&id()).await.unwrap();
    assert!(!anonymous.is_connected(), "anonymous clients are refused");

    // A prefix outside the permissions: the refusal reaches the caller.
    let mut config = BrokerConfig::new(&url, "other.session");
    config.nkey_seed_file = Some(seed);
    let (denied, _, metrics) = start(config);
    until("second nkey connection", || denied.is_connected()).await;
    assert_eq!(
        denied.subscribe(&id()).await,
        Err(BusError::PermissionDenied)
    );
    assert!(metrics
        .render()
        .contains("qrlogin_edge_nats_errors_total 1"));
    assert_eq!(denied.subscriptions(), 0);
    assert!(
        denied.is_connected(),
        "a refused SUB does not end the connection"
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl {args:?}");
}

/// A throw-away CA and a server certificate for 127.0.0.1.
fn make_ca(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=qrlogin test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ],
    );
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path());
    let ca = dir.path().join("ca.pem");
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let server = ConfiguredServer::start(dir, |port| {
        format!(
            "listen: 127.0.0.1:{port}\ntls {{ cert_file: \"{}\", key_file: \"{}\" }}\n",
            cert.display(),
            key.display()
        )
    })
    .await;
    let url = format!("tls://127.0.0.1:{}", server.port);
    let mut config = BrokerConfig::new(&url, "qrlogin.session");
    config.tls_ca_file = Some(ca.clone());
    let (broker, rec, _) = start(config);
    until("TLS connection", || broker.is_connected()).await;
    broker.subscribe(&id()).await.unwrap();
    let publisher = async_nats::ConnectOptions::new()
        .add_root_certificates(ca.clone())
        .require_tls(true)
        .connect(&url)
        .await
        .unwrap();
    republish(&publisher, &id(), 4).await;
    publisher.flush().await.unwrap();
    until("event over TLS", || rec.versions() == [4]).await;

    // Without the CA the server's certificate is not trusted: no connection.
    let (untrusted, _, _) = start(BrokerConfig::new(&url, "qrlogin.session"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!untrusted.is_connected());
}

#[tokio::test]
async fn an_oversize_message_ends_the_connection_and_the_client_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = ConfiguredServer::start(dir, |port| {
        format!("listen: 127.0.0.1:{port}\nmax_payload: 4MB\n")
    })
    .await;
    let url = format!("nats://127.0.0.1:{}", server.port);
    let (broker, rec, metrics) = start(BrokerConfig::new(&url, "qrlogin.session"));
    until("connected", || broker.is_connected()).await;
    broker.subscribe(&id()).await.unwrap();
    let resyncs = rec.resyncs.load(SeqCst);
    let publisher = async_nats::connect(&url).await.unwrap();
    let subject = format!("qrlogin.session.{}", id());
    publisher
        .publish(subject.clone(), vec![0u8; 2 << 20].into())
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    until("reconnect after the refusal", || {
        rec.resyncs.load(SeqCst) > resyncs
    })
    .await;
    assert!(metrics
        .render()
        .contains("qrlogin_edge_nats_errors_total 1"));
    republish(&publisher, &id(), 5).await;
    publisher.flush().await.unwrap();
    until("event after the reconnect", || rec.versions() == [5]).await;
}

#[tokio::test]
async fn wildcard_mode_receives_every_session_without_per_session_interest() {
    let nats = NatsServer::start().await;
    let mut config = BrokerConfig::new(&nats.url(), "qrlogin.session");
    config.nkey_seed_file = Some(nats.edge_seed_file());
    config.wildcard = true;
    let (broker, rec, _) = start(config);
    until("resync after connecting", || rec.resyncs.load(SeqCst) > 0).await;
    broker.subscribe(&id()).await.unwrap();
    assert_eq!(broker.subscriptions(), 0, "no per-session interest");
    let (_, publisher) = publisher(&nats).await;
    republish(&publisher, &id(), 7).await;
    publisher.flush().await.unwrap();
    until("event through the wildcard", || rec.versions() == [7]).await;
}
