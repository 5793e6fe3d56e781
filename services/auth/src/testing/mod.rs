//! Test support (feature `testing`), shared with the edge's tests:
//!
//! - [`NatsServer`]: a real nats-server with JetStream on a random port and a
//!   temporary store, secured with the production accounts and nkey users
//!   (`auth`, `edge`, and throw-away users a test adds), killed on drop;
//!   restartable on the same port and store.
//! - [`NatsCluster`]: three (or more) such servers clustered with JetStream
//!   (routes, one store each), and the faults a test inflicts on a member:
//!   SIGKILL, SIGSTOP/SIGCONT, lame duck mode, restart.
//! - [`TestKeys`]: throw-away Ed25519 keys, user tokens, the record key and
//!   a service token.
//! - [`TestTls`]: a throw-away CA with server and client certificates.
//! - [`TestAuth`]: the auth service in-process on port 0 (reflection on, the
//!   create limit out of the way), stopped on drop.
//!
//! The nats-server binary comes from `$QRLOGIN_NATS_SERVER_BIN`, else the
//! project's pinned copy in `.tools/bin` (installed by `tools/bootstrap.sh`).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::AuthConfig;
pub use crate::nats_accounts::Permissions;
use crate::nats_accounts::{self, ServerSettings, ServerTls, User};

mod cluster;
use crate::sealing::generate_key_text;
use crate::startup::Application;
use crate::token::{generate_key_pair, mint_dev_user_token, unix_now_secs, DevTokenRequest};
pub use cluster::NatsCluster;

/// A GET on a nats-server's monitoring port; the body, if the answer was 200.
pub(crate) async fn monitor_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200")).then(|| body.to_owned())
}

/// Where the pinned nats-server lives.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("QRLOGIN_NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.tools/bin/nats-server")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("nats-server"))
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// The users a test server knows, and where their seeds are.
struct Users {
    dir: tempfile::TempDir,
    list: Vec<User>,
}

impl Users {
    /// `auth` and `edge` with fresh nkeys and the rights `layout` asks for;
    /// their seeds in a new temporary folder.
    fn new(layout: &NatsLayout) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for NATS users");
        let mut list = Vec::new();
        for (name, permissions) in [
            (
                "auth",
                nats_accounts::auth_permissions(&[&layout.bucket, &layout.limits_bucket]),
            ),
            (
                "edge",
                nats_accounts::edge_permissions(&layout.subject_prefix),
            ),
        ] {
            let pair = nkeys::KeyPair::new_user();
            write_seed(dir.path(), name, &pair);
            list.push(User {
                name: name.into(),
                nkey: pair.public_key(),
                permissions,
            });
        }
        Self { dir, list }
    }
}

/// A real nats-server for one test, secured as in production: accounts, the
/// nkey users `auth` and `edge` with their least-privilege permissions
/// ([`crate::nats_accounts`]), no anonymous access.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    /// The monitoring port (`/subsz`), for [`NatsServer::wait_for_interest`].
    monitor_port: u16,
    store: tempfile::TempDir,
    users: Mutex<Users>,
    /// With TLS: the server's certificate and key, and the CA clients trust.
    tls: Option<ServerCerts>,
}

/// The TLS files of a test NATS server.
#[derive(Clone)]
struct ServerCerts {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

/// The session bucket and subject prefix the test server's permissions are
/// written for by default: the services' defaults.
pub const TEST_BUCKET: &str = "qrlogin_sessions";
pub const TEST_LIMITS_BUCKET: &str = "qrlogin_limits";
pub const TEST_SUBJECT_PREFIX: &str = "qrlogin.session";

/// Which bucket and subjects a test server's `auth` and `edge` users are
/// allowed, when a test configures the services otherwise.
#[derive(Debug, Clone)]
pub struct NatsLayout {
    pub bucket: String,
    pub limits_bucket: String,
    pub subject_prefix: String,
}

impl Default for NatsLayout {
    fn default() -> Self {
        Self {
            bucket: TEST_BUCKET.into(),
            limits_bucket: TEST_LIMITS_BUCKET.into(),
            subject_prefix: TEST_SUBJECT_PREFIX.into(),
        }
    }
}

pub(crate) fn write_seed(dir: &Path, name: &str, pair: &nkeys::KeyPair) -> PathBuf {
    let path = dir.join(format!("{name}.seed"));
    std::fs::write(&path, pair.seed().expect("nkey seed")).expect("write seed");
    path
}

impl NatsServer {
    /// Starts nats-server with JetStream and waits until auth's credential
    /// can use JetStream. A port picked by binding 0 can be taken by someone
    /// else before the server binds it, so a failed start is retried on
    /// another port.
    pub async fn start() -> Self {
        Self::start_for(&NatsLayout::default()).await
    }

    /// Like [`start`](Self::start), with permissions for another bucket or
    /// subject prefix.
    pub async fn start_for(layout: &NatsLayout) -> Self {
        Self::start_with(layout, None).await
    }

    /// Like [`start`](Self::start), but clients must speak TLS: the server
    /// presents `tls`'s server certificate (`tls://` URLs, `tls.path("ca.pem")`
    /// as the CA).
    pub async fn start_tls(tls: &TestTls) -> Self {
        let certs = ServerCerts {
            cert: tls.path("server.pem"),
            key: tls.path("server.key"),
            ca: tls.path("ca.pem"),
        };
        Self::start_with(&NatsLayout::default(), Some(certs)).await
    }

    async fn start_with(layout: &NatsLayout, tls: Option<ServerCerts>) -> Self {
        for _ in 0..5 {
            let mut server = Self {
                child: None,
                port: free_port(),
                monitor_port: free_port(),
                store: tempfile::tempdir().expect("temp dir for JetStream store"),
                users: Mutex::new(Users::new(layout)),
                tls: tls.clone(),
            };
            if server.spawn().await {
                return server;
            }
        }
        panic!(
            "could not start nats-server ({})",
            nats_server_bin().display()
        );
    }

    fn config_path(&self) -> PathBuf {
        self.users
            .lock()
            .expect("users")
            .dir
            .path()
            .join("nats.conf")
    }

    fn write_config(&self) {
        let users = self.users.lock().expect("users");
        let server = ServerSettings {
            host: "127.0.0.1".into(),
            port: self.port,
            http_port: Some(self.monitor_port),
            store_dir: self.store.path().display().to_string(),
            tls: self.tls.as_ref().map(|t| ServerTls {
                cert_file: t.cert.display().to_string(),
                key_file: t.key.display().to_string(),
                ca_file: None,
                verify_clients: false,
            }),
            ..ServerSettings::default()
        };
        std::fs::write(
            users.dir.path().join("nats.conf"),
            nats_accounts::render_server(&server, &users.list),
        )
        .expect("write nats.conf");
    }

    async fn spawn(&mut self) -> bool {
        self.write_config();
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(self.config_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e} (run tools/bootstrap.sh)",
                    nats_server_bin().display()
                )
            });
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            if let Ok(client) = self.connect_as_auth().await {
                // The port might belong to another test's server that was
                // started a moment earlier: only ours knows our auth key.
                let js = async_nats::jetstream::new(client);
                if js.query_account().await.is_ok() && self.is_ours(pid) {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.kill();
        false
    }

    /// True while our child (with `pid`) is still running.
    fn is_ours(&mut self, pid: u32) -> bool {
        match self.child.as_mut() {
            Some(child) => child.id() == pid && matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// `nats://127.0.0.1:<port>`, or `tls://` for a server started with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA a client needs when the server speaks TLS.
    pub fn tls_ca_file(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|t| t.ca.clone())
    }

    /// Options that trust this server's CA when it speaks TLS.
    fn client_options(&self, seed: &str) -> async_nats::ConnectOptions {
        let mut options = async_nats::ConnectOptions::with_nkey(seed.trim().to_owned())
            .connection_timeout(Duration::from_secs(2));
        if let Some(tls) = &self.tls {
            options = options
                .add_root_certificates(tls.ca.clone())
                .require_tls(true);
        }
        options
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn seed_file(&self, name: &str) -> PathBuf {
        self.users
            .lock()
            .expect("users")
            .dir
            .path()
            .join(format!("{name}.seed"))
    }

    /// The nkey seed of the `auth` user (for `QRLOGIN_NATS_NKEY_SEED_FILE`).
    pub fn auth_seed_file(&self) -> PathBuf {
        self.seed_file("auth")
    }

    /// The nkey seed of the `edge` user.
    pub fn edge_seed_file(&self) -> PathBuf {
        self.seed_file("edge")
    }

    /// Connects as the user whose seed is in `seed_file`.
    pub async fn connect(
        &self,
        seed_file: &Path,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        let seed = std::fs::read_to_string(seed_file).expect("read seed");
        self.client_options(&seed).connect(self.url()).await
    }

    /// Waits until the server holds a subscription (in the qrlogin account)
    /// that a message on `subject` (a literal subject) would reach.
    ///
    /// async-nats's `flush` only writes the client's buffer to the socket:
    /// when it returns, the server may not have read the SUB yet, and a
    /// message published meanwhile from another connection is not delivered.
    /// A test that subscribes and then makes something publish waits here
    /// first.
    pub async fn wait_for_interest(&self, subject: &str) {
        let path = format!(
            "/subsz?subs=1&acc={}&test={subject}",
            nats_accounts::ACCOUNT
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(body) = monitor_get(self.monitor_port, &path).await {
                if let Some(total) = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["total"].as_u64())
                {
                    if total > 0 {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no subscription for {subject} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Connects as auth does (its seed and inbox prefix), e.g. to inspect or
    /// change the bucket's stream.
    pub async fn connect_as_auth(&self) -> Result<async_nats::Client, async_nats::ConnectError> {
        let seed = std::fs::read_to_string(self.auth_seed_file()).expect("read seed");
        self.client_options(&seed)
            .custom_inbox_prefix(nats_accounts::AUTH_INBOX_PREFIX)
            .connect(self.url())
            .await
    }

    /// Adds a throw-away user with the given rights (a test's attacker, or a
    /// subscriber on another prefix), reloads the server and returns the
    /// user's seed file once the server accepts it.
    pub async fn add_user(&self, name: &str, permissions: Permissions) -> PathBuf {
        let pair = nkeys::KeyPair::new_user();
        let seed = {
            let mut users = self.users.lock().expect("users");
            let seed = write_seed(users.dir.path(), name, &pair);
            users.list.push(User {
                name: name.into(),
                nkey: pair.public_key(),
                permissions,
            });
            seed
        };
        self.write_config();
        let pid = self
            .child
            .as_ref()
            .expect("nats-server is running")
            .id()
            .to_string();
        let status = Command::new(nats_server_bin())
            .arg("--signal")
            .arg(format!("reload={pid}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("nats-server --signal reload");
        assert!(
            status.success(),
            "nats-server did not take the reload signal"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.connect(&seed).await.is_ok() {
                return seed;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("nats-server did not accept the new user {name}");
    }

    /// Stops the server (SIGKILL, as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store and users.
    pub async fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.spawn().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("nats-server did not restart on port {}", self.port);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Throw-away keys: one pair for phone user tokens, one for access tokens.
pub struct TestKeys {
    dir: tempfile::TempDir,
}

pub const TEST_ISSUER: &str = "qrlogin-dev";
pub const TEST_AUDIENCE: &str = "qrlogin";

impl TestKeys {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for keys");
        for (key, public) in [
            ("user-token.pem", "user-token.pub.pem"),
            ("access-token.pem", "access-token.pub.pem"),
        ] {
            let pair = generate_key_pair().expect("key generation");
            std::fs::write(dir.path().join(key), pair.private_pem).expect("write key");
            std::fs::write(dir.path().join(public), pair.public_pem).expect("write key");
        }
        std::fs::write(dir.path().join("record.key"), generate_key_text()).expect("write key");
        let token = crate::dev::generate_service_token();
        std::fs::write(dir.path().join("service-tokens"), format!("{token}\n"))
            .expect("write token");
        std::fs::write(dir.path().join("service-token"), &token).expect("write token");
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn user_private_key_path(&self) -> PathBuf {
        self.dir.path().join("user-token.pem")
    }

    pub fn user_public_key_path(&self) -> PathBuf {
        self.dir.path().join("user-token.pub.pem")
    }

    pub fn access_private_key_path(&self) -> PathBuf {
        self.dir.path().join("access-token.pem")
    }

    pub fn access_public_key_path(&self) -> PathBuf {
        self.dir.path().join("access-token.pub.pem")
    }

    /// auth's list of accepted service tokens (one token).
    pub fn service_tokens_path(&self) -> PathBuf {
        self.dir.path().join("service-tokens")
    }

    /// The file an edge reads its service token from.
    pub fn service_token_path(&self) -> PathBuf {
        self.dir.path().join("service-token")
    }

    /// The record key auth seals stored sessions with.
    pub fn record_key_path(&self) -> PathBuf {
        self.dir.path().join("record.key")
    }

    /// A valid phone user token for 1 hour.
    pub fn user_token(&self, sub: &str, name: &str) -> String {
        self.user_token_with(sub, name, TEST_ISSUER, TEST_AUDIENCE, unix_now_secs(), 3600)
    }

    /// A token signed with the user-token key whose claims are exactly
    /// `claims` (for tests of malformed or hostile tokens).
    pub fn user_token_claims(&self, claims: &serde_json::Value) -> String {
        let pem = std::fs::read(self.user_private_key_path()).expect("read key");
        let key = jsonwebtoken::EncodingKey::from_ed_pem(&pem).expect("Ed25519 key");
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
            claims,
            &key,
        )
        .expect("sign")
    }

    /// A user token with every claim chosen by the test.
    pub fn user_token_with(
        &self,
        sub: &str,
        name: &str,
        issuer: &str,
        audience: &str,
        issued_at: u64,
        ttl_secs: u64,
    ) -> String {
        let pem = std::fs::read(self.user_private_key_path()).expect("read key");
        mint_dev_user_token(
            &pem,
            &DevTokenRequest {
                user_id: sub,
                display_name: name,
                issuer,
                audience,
                ttl: Duration::from_secs(ttl_secs),
                issued_at,
            },
        )
        .expect("mint token")
    }
}

/// Throw-away TLS material: a CA, a server certificate for `localhost` and
/// 127.0.0.1 signed by it, a client certificate signed by it, and a client
/// certificate signed by another CA (which a server must refuse).
pub struct TestTls {
    dir: tempfile::TempDir,
}

impl TestTls {
    pub fn generate() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = tempfile::tempdir().expect("temp dir for TLS");
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text).expect("write TLS file");
        };
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let key = KeyPair::generate().expect("CA key");
            let cert = params.self_signed(&key).expect("CA certificate");
            (cert, key)
        };
        let (ca_cert, ca_key) = ca("qrlogin test CA");
        let (other_cert, other_key) = ca("some other CA");
        write("ca.pem", ca_cert.pem());
        for (name, sans, issuer, issuer_key) in [
            (
                "server",
                vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
                &ca_cert,
                &ca_key,
            ),
            ("client", vec!["qrlogin-edge".to_owned()], &ca_cert, &ca_key),
            (
                "stranger",
                vec!["qrlogin-edge".to_owned()],
                &other_cert,
                &other_key,
            ),
        ] {
            let params = CertificateParams::new(sans).expect("certificate params");
            let key = KeyPair::generate().expect("key");
            let cert = params
                .signed_by(&key, issuer, issuer_key)
                .expect("certificate");
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Self { dir }
    }

    /// A file of this set: `ca.pem`, `server.pem`/`.key`, `client.pem`/`.key`,
    /// `stranger.pem`/`.key`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The auth service running in-process on 127.0.0.1, port 0.
pub struct TestAuth {
    addr: SocketAddr,
    /// Where its health answers in plaintext (the main port may be TLS).
    health_addr: SocketAddr,
    /// The operations port (`/metrics`, `/healthz`, `/readyz`), if configured.
    ops_addr: Option<SocketAddr>,
    tls: bool,
    service_token: String,
    service_token_file: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    counters: std::sync::Arc<crate::counters::Counters>,
    broker: crate::service::BrokerSlot,
}

/// A browser's key pair that signs redeem proofs (what web/qrlogin-key.js
/// does in a browser).
pub use crate::proof::signer::KeyPair as BrowserKeyPair;

impl TestAuth {
    /// The configuration `spawn` starts from (memory storage, short retention).
    pub fn config(nats: &NatsServer, keys: &TestKeys) -> AuthConfig {
        let mut config =
            AuthConfig::from_flags(Self::flags(nats.url(), &nats.auth_seed_file(), keys))
                .expect("test config");
        config.nats_tls_ca_file = nats.tls_ca_file();
        config
    }

    /// The configuration of auth on every member of `cluster` (the
    /// comma-separated list) with the bucket at `replicas` replicas;
    /// otherwise as [`config`](Self::config).
    pub fn cluster_config(cluster: &NatsCluster, keys: &TestKeys, replicas: usize) -> AuthConfig {
        let mut flags = Self::flags(cluster.url_list(), &cluster.auth_seed_file(), keys);
        flags.extend(["--kv-replicas".to_owned(), replicas.to_string()]);
        AuthConfig::from_flags(flags).expect("cluster test config")
    }

    fn flags(nats_url: String, seed: &Path, keys: &TestKeys) -> Vec<String> {
        let path = |p: PathBuf| p.display().to_string();
        [
            "--listen",
            "127.0.0.1:0",
            "--nats-url",
            &nats_url,
            "--nats-nkey-seed-file",
            &seed.display().to_string(),
            "--kv-storage",
            "file",
            "--user-token-public-key-file",
            &path(keys.user_public_key_path()),
            "--access-token-private-key-file",
            &path(keys.access_private_key_path()),
            "--record-key-file",
            &path(keys.record_key_path()),
            "--service-tokens-file",
            &path(keys.service_tokens_path()),
            "--grpc-reflection",
            "true",
            // Every test client comes from one address; tests of the limit
            // set their own.
            "--create-limit",
            "1000000",
            "--scan-limit",
            "1000000",
            "--confirm-limit",
            "1000000",
            "--shutdown-grace",
            "1s",
            "--ops-listen",
            "127.0.0.1:0",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Starts auth against `nats` and waits until it serves (bucket ready).
    pub async fn spawn(
        nats: &NatsServer,
        keys: &TestKeys,
        tweak: impl FnOnce(&mut AuthConfig),
    ) -> Self {
        let mut config = Self::config(nats, keys);
        tweak(&mut config);
        Self::spawn_config(config).await
    }

    /// Starts auth from `config` as it is. Its first service token becomes
    /// [`service_token`](Self::service_token); with TLS on, a plaintext
    /// health listener on port 0 is added for the readiness wait.
    pub async fn spawn_config(mut config: AuthConfig) -> Self {
        let tls = config.tls_cert_file.is_some();
        if tls && config.health_listen.is_none() {
            config.health_listen = Some("127.0.0.1:0".parse().expect("address"));
        }
        let tokens = std::fs::read_to_string(&config.service_tokens_file).expect("read tokens");
        let service_token = tokens
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .find(|l| !l.is_empty())
            .expect("a service token")
            .to_owned();
        let service_token_file = config.service_tokens_file.with_file_name("service-token");
        if !service_token_file.exists() {
            std::fs::write(&service_token_file, &service_token).expect("write token");
        }
        let app = Application::build(config).await.expect("auth builds");
        let addr = app.local_addr();
        let health_addr = app.health_addr().unwrap_or(addr);
        let ops_addr = app.ops_addr();
        let counters = app.counters().clone();
        let broker = app.broker_slot();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = app
                .run_until_stopped(async {
                    let _ = rx.await;
                })
                .await;
        });
        let auth = Self {
            addr,
            health_addr,
            ops_addr,
            tls,
            service_token,
            service_token_file,
            stop: Some(tx),
            task: Some(task),
            counters,
            broker,
        };
        auth.wait_serving().await;
        auth
    }

    async fn wait_serving(&self) {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let channel =
                tonic::transport::Channel::from_shared(format!("http://{}", self.health_addr))
                    .expect("valid url")
                    .connect()
                    .await;
            if let Ok(channel) = channel {
                let mut client = HealthClient::new(channel);
                let req = HealthCheckRequest {
                    service: "qrlogin.auth.v1.AuthService".into(),
                };
                if let Ok(resp) = client.check(req).await {
                    if resp.into_inner().status == ServingStatus::Serving as i32 {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("auth at {} did not become SERVING", self.addr);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The operations port's address (`/metrics`, `/healthz`, `/readyz`).
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops_addr
    }

    /// `http://` or, with TLS, `https://localhost:<port>` (the name the
    /// test certificate carries).
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// What the service counted (refused QR-protocol abuse).
    pub fn counters(&self) -> crate::counters::Snapshot {
        self.counters.snapshot()
    }

    /// Makes the next `n` session writes commit but drop their
    /// acknowledgement, as when the NATS member dies between the two; the
    /// returned counter goes back to 0 as they are dropped.
    pub fn lose_next_acks(&self, n: usize) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        let hook = self
            .broker
            .get()
            .expect("auth is serving, so its broker is ready")
            .lose_acks();
        hook.store(n, std::sync::atomic::Ordering::SeqCst);
        hook
    }

    /// A service token auth accepts (for `x-qrlogin-service-token`).
    pub fn service_token(&self) -> &str {
        &self.service_token
    }

    /// A file holding [`service_token`](Self::service_token), for an edge's
    /// QRLOGIN_AUTH_SERVICE_TOKEN_FILE.
    pub fn service_token_file(&self) -> &Path {
        &self.service_token_file
    }

    /// Stops the service and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestAuth {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Where the pinned grpcurl lives (`$QRLOGIN_GRPCURL_BIN` overrides).
pub fn grpcurl_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("QRLOGIN_GRPCURL_BIN") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.tools/bin/grpcurl")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("grpcurl"))
}
