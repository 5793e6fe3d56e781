//! Test support (feature `testing`), shared with the edge's tests:
//!
//! - [`NatsServer`]: a real nats-server with JetStream on a random port and a
//!   temporary store, killed on drop; restartable on the same port and store.
//! - [`TestKeys`]: throw-away Ed25519 keys and user tokens.
//! - [`TestAuth`]: the auth service in-process on port 0, stopped on drop.
//!
//! The nats-server binary comes from `$QRLOGIN_NATS_SERVER_BIN`, else the
//! project's pinned copy in `.tools/bin` (installed by `tools/bootstrap.sh`).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::AuthConfig;
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

/// A real nats-server for one test.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts nats-server with JetStream and waits until it accepts clients.
    /// A port picked by binding 0 can be taken by someone else before the
    /// server binds it, so a failed start is retried on another port.
    pub async fn start() -> Self {
        for _ in 0..5 {
            let mut server = Self {
                child: None,
                port: free_port(),
                store: tempfile::tempdir().expect("temp dir for JetStream store"),
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

    async fn spawn(&mut self) -> bool {
        let child = Command::new(nats_server_bin())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e} (run tools/bootstrap.sh)",
                    nats_server_bin().display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            if let Ok(client) = async_nats::connect(self.url()).await {
                let js = async_nats::jetstream::new(client);
                if js.query_account().await.is_ok() {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.kill();
        false
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGKILL, as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
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
