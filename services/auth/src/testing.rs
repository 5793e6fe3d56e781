//! Test support (feature `testing`), shared with the edge's tests:
//!
//! - [`NatsServer`]: a real nats-server with JetStream on a random port and a
//!   temporary store, secured with the production accounts and nkey users
//!   (`auth`, `edge`, and throw-away users a test adds), killed on drop;
//!   restartable on the same port and store.
//! - [`TestKeys`]: throw-away Ed25519 keys and user tokens.
//! - [`TestAuth`]: the auth service in-process on port 0, stopped on drop.
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
use crate::nats_accounts::{self, ServerSettings, User};
use crate::startup::Application;
use crate::token::{generate_key_pair, mint_dev_user_token, unix_now_secs, DevTokenRequest};

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

fn free_port() -> u16 {
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

/// A real nats-server for one test, secured as in production: accounts, the
/// nkey users `auth` and `edge` with their least-privilege permissions
/// ([`crate::nats_accounts`]), no anonymous access.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    users: Mutex<Users>,
}

/// The session bucket and subject prefix the test server's permissions are
/// written for by default: the services' defaults.
pub const TEST_BUCKET: &str = "qrlogin_sessions";
pub const TEST_SUBJECT_PREFIX: &str = "qrlogin.session";

/// Which bucket and subjects a test server's `auth` and `edge` users are
/// allowed, when a test configures the services otherwise.
#[derive(Debug, Clone)]
pub struct NatsLayout {
    pub bucket: String,
    pub subject_prefix: String,
}

impl Default for NatsLayout {
    fn default() -> Self {
        Self {
            bucket: TEST_BUCKET.into(),
            subject_prefix: TEST_SUBJECT_PREFIX.into(),
        }
    }
}

fn write_seed(dir: &Path, name: &str, pair: &nkeys::KeyPair) -> PathBuf {
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
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir for NATS users");
            let mut list = Vec::new();
            for (name, permissions) in [
                (
                    "auth",
                    nats_accounts::auth_permissions(&[&layout.bucket], &layout.subject_prefix),
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
            let mut server = Self {
                child: None,
                port: free_port(),
                store: tempfile::tempdir().expect("temp dir for JetStream store"),
                users: Mutex::new(Users { dir, list }),
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
            store_dir: self.store.path().display().to_string(),
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

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
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
        async_nats::ConnectOptions::with_nkey(seed.trim().to_owned())
            .connection_timeout(Duration::from_secs(2))
            .connect(self.url())
            .await
    }

    /// Connects as auth does (its seed and inbox prefix), e.g. to inspect or
    /// change the bucket's stream.
    pub async fn connect_as_auth(&self) -> Result<async_nats::Client, async_nats::ConnectError> {
        let seed = std::fs::read_to_string(self.auth_seed_file()).expect("read seed");
        async_nats::ConnectOptions::with_nkey(seed.trim().to_owned())
            .custom_inbox_prefix(nats_accounts::AUTH_INBOX_PREFIX)
            .connection_timeout(Duration::from_secs(2))
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

    /// A valid phone user token for 1 hour.
    pub fn user_token(&self, sub: &str, name: &str) -> String {
        self.user_token_with(sub, name, TEST_ISSUER, TEST_AUDIENCE, unix_now_secs(), 3600)
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

/// The auth service running in-process on 127.0.0.1, port 0.
pub struct TestAuth {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestAuth {
    /// The configuration `spawn` starts from (memory storage, short retention).
    pub fn config(nats: &NatsServer, keys: &TestKeys) -> AuthConfig {
        let user_pub = keys.user_public_key_path();
        let access = keys.access_private_key_path();
        AuthConfig::from_flags([
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--nats-url".into(),
            nats.url(),
            "--nats-nkey-seed-file".into(),
            nats.auth_seed_file().display().to_string(),
            "--kv-storage".into(),
            "file".into(),
            "--user-token-public-key-file".into(),
            user_pub.display().to_string(),
            "--access-token-private-key-file".into(),
            access.display().to_string(),
            "--shutdown-grace".into(),
            "1s".into(),
        ])
        .expect("test config")
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

    pub async fn spawn_config(config: AuthConfig) -> Self {
        let app = Application::build(config).await.expect("auth builds");
        let addr = app.local_addr();
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
            stop: Some(tx),
            task: Some(task),
        };
        auth.wait_serving().await;
        auth
    }

    async fn wait_serving(&self) {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let channel = tonic::transport::Channel::from_shared(self.url())
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

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
