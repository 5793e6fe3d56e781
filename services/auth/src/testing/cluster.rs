//! [`NatsCluster`]: real nats-servers clustered with JetStream for one test,
//! each on random ports (client, monitoring, route) with a store of its own,
//! secured with the same accounts and users as [`super::NatsServer`] and
//! rendered by the same rules as the local cluster's and production's
//! (`nats_accounts::render_server`). A test inflicts the faults an operator
//! meets: SIGKILL, SIGSTOP/SIGCONT, lame duck mode and a restart (of one
//! member or all) on the same ports and store. Every member is killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, monitor_get, nats_server_bin, NatsLayout, Users};
use crate::nats_accounts::{self, ClusterSettings, LameDuck, ServerSettings};

/// The cluster's name in every member's configuration.
const CLUSTER_NAME: &str = "qrlogin";
/// Lame duck mode in tests: nats-server's shortest window (30 s) after a
/// short grace period. The server tells its clients at once (INFO `ldm`),
/// so a client that listens moves within the grace period.
const LAME_DUCK: LameDuck = LameDuck {
    duration: Duration::from_secs(30),
    grace_period: Duration::from_millis(500),
};
/// Longest wait for a (re)started member to be healthy.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

struct Member {
    /// `nats-1`, `nats-2`, ...: the server name JetStream reports as leader.
    name: String,
    port: u16,
    monitor_port: u16,
    route_port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
    frozen: bool,
}

/// A JetStream cluster of real nats-server processes on loopback.
pub struct NatsCluster {
    members: Vec<Member>,
    users: Users,
}

impl NatsCluster {
    /// Starts `size` members (3 for a cluster that survives the loss of
    /// one) and waits until each is healthy and the cluster has a
    /// JetStream meta leader. Ports taken by someone else between picking
    /// and binding make the whole start retried on new ports.
    pub async fn start(size: usize) -> Self {
        Self::start_for(size, &NatsLayout::default()).await
    }

    /// Like [`start`](Self::start), with permissions for another bucket or
    /// subject prefix.
    pub async fn start_for(size: usize, layout: &NatsLayout) -> Self {
        assert!(size >= 1, "a cluster has at least one member");
        for _ in 0..3 {
            let members = (1..=size)
                .map(|i| Member {
                    name: format!("nats-{i}"),
                    port: free_port(),
                    monitor_port: free_port(),
                    route_port: free_port(),
                    store: tempfile::tempdir().expect("temp dir for JetStream store"),
                    child: None,
                    frozen: false,
                })
                .collect();
            let mut cluster = Self {
                members,
                users: Users::new(layout),
            };
            for i in 0..size {
                cluster.spawn(i);
            }
            if cluster.wait_all_ready().await {
                return cluster;
            }
            cluster.kill_all();
        }
        panic!(
            "could not start a NATS cluster of {size} ({})",
            nats_server_bin().display()
        );
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The server name of member `i` (`nats-<i+1>`).
    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// The member whose server name is `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    /// `nats://127.0.0.1:<port>` of member `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.members[i].port)
    }

    /// Every member's URL, comma-separated, as `QRLOGIN_NATS_URL` takes them.
    pub fn url_list(&self) -> String {
        (0..self.size())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nkey seed of the `auth` user.
    pub fn auth_seed_file(&self) -> PathBuf {
        self.users.dir.path().join("auth.seed")
    }

    /// The nkey seed of the `edge` user.
    pub fn edge_seed_file(&self) -> PathBuf {
        self.users.dir.path().join("edge.seed")
    }

    fn config_path(&self, i: usize) -> PathBuf {
        self.users
            .dir
            .path()
            .join(format!("{}.conf", self.members[i].name))
    }

    fn write_config(&self, i: usize) {
        let m = &self.members[i];
        let routes = self
            .members
            .iter()
            .map(|o| format!("nats-route://127.0.0.1:{}", o.route_port))
            .collect();
        let server = ServerSettings {
            host: "127.0.0.1".into(),
            port: m.port,
            http_port: Some(m.monitor_port),
            server_name: Some(m.name.clone()),
            store_dir: m.store.path().display().to_string(),
            cluster: Some(ClusterSettings {
                name: CLUSTER_NAME.into(),
                host: "127.0.0.1".into(),
                port: m.route_port,
                routes,
                tls: None,
            }),
            lame_duck: Some(LAME_DUCK),
            ..ServerSettings::default()
        };
        std::fs::write(
            self.config_path(i),
            nats_accounts::render_server(&server, &self.users.list),
        )
        .expect("write member config");
    }

    fn spawn(&mut self, i: usize) {
        self.write_config(i);
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(self.config_path(i))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e} (run tools/bootstrap.sh)",
                    nats_server_bin().display()
                )
            });
        let m = &mut self.members[i];
        m.child = Some(child);
        m.frozen = false;
    }

    /// True while member `i`'s process runs (frozen counts as running).
    pub fn is_running(&mut self, i: usize) -> bool {
        match self.members[i].child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn pid(&self, i: usize) -> u32 {
        self.members[i]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.members[i].name))
            .id()
    }

    /// Member `i` answers `/healthz` (with `js_only`: JetStream is on, else
    /// also every stream and the meta group are current on it).
    async fn healthy(&self, i: usize, js_only: bool) -> bool {
        let path = if js_only {
            "/healthz?js-enabled-only=true"
        } else {
            "/healthz"
        };
        monitor_get(self.members[i].monitor_port, path)
            .await
            .is_some()
    }

    /// Waits until member `i` answers `/healthz` again (after a thaw, say):
    /// back in the cluster with its streams current.
    pub async fn wait_healthy(&self, i: usize) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.healthy(i, false).await {
            assert!(
                Instant::now() < deadline,
                "{} not healthy within {READY_TIMEOUT:?}",
                self.members[i].name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_all_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            for i in 0..self.size() {
                if !self.is_running(i) {
                    // A port clash: the whole start is retried.
                    return false;
                }
            }
            let mut all = true;
            for i in 0..self.size() {
                all &= self.healthy(i, false).await;
            }
            if all && self.meta_leader().await.is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Connects as auth does (its seed and inbox prefix) to the members
    /// listed, in order.
    pub async fn connect_as_auth_to(
        &self,
        members: &[usize],
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        let seed = std::fs::read_to_string(self.auth_seed_file()).expect("read seed");
        let addrs: Vec<async_nats::ServerAddr> = members
            .iter()
            .map(|&i| self.url(i).parse().expect("member URL"))
            .collect();
        async_nats::ConnectOptions::with_nkey(seed.trim().to_owned())
            .custom_inbox_prefix(nats_accounts::AUTH_INBOX_PREFIX)
            .connection_timeout(Duration::from_secs(2))
            .connect(addrs)
            .await
    }

    /// Connects as `auth` to any running, unfrozen member.
    pub async fn connect_as_auth(
        &mut self,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        let live = self.live_members();
        self.connect_as_auth_to(&live).await
    }

    /// Connects as the user whose seed is in `seed_file` to member `i`.
    pub async fn connect(
        &self,
        i: usize,
        seed_file: &Path,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        let seed = std::fs::read_to_string(seed_file).expect("read seed");
        async_nats::ConnectOptions::with_nkey(seed.trim().to_owned())
            .connection_timeout(Duration::from_secs(2))
            .connect(self.url(i))
            .await
    }

    fn live_members(&mut self) -> Vec<usize> {
        (0..self.size())
            .filter(|&i| self.is_running(i) && !self.members[i].frozen)
            .collect()
    }

    /// The server name of the JetStream meta leader, as a live member's
    /// `/jsz` reports it.
    pub async fn meta_leader(&mut self) -> Option<String> {
        for i in self.live_members() {
            let Some(body) = monitor_get(self.members[i].monitor_port, "/jsz").await else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            if let Some(leader) = v["meta_cluster"]["leader"].as_str() {
                if !leader.is_empty() {
                    return Some(leader.to_owned());
                }
            }
        }
        None
    }

    /// The member that leads `stream` (e.g. `KV_qrlogin_sessions`), asked
    /// through JetStream's API; `None` while it has no leader.
    pub async fn stream_leader(&mut self, stream: &str) -> Option<usize> {
        let client = self.connect_as_auth().await.ok()?;
        let mut js = async_nats::jetstream::new(client);
        js.set_timeout(Duration::from_secs(2));
        let mut s = js.get_stream(stream).await.ok()?;
        let info = s.info().await.ok()?;
        let leader = info.cluster.as_ref()?.leader.as_deref()?;
        self.index_of(leader)
    }

    /// Waits until `stream` has a leader other than `not` (after a fault of
    /// `not`), and returns it.
    pub async fn wait_for_stream_leader(&mut self, stream: &str, not: Option<usize>) -> usize {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(i) = self.stream_leader(stream).await {
                if Some(i) != not {
                    return i;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{stream} had no new leader within {READY_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The member that holds a client connection named `client_name` (the
    /// name in CONNECT), from each live member's `/connz`.
    pub async fn member_of_client(&mut self, client_name: &str) -> Option<usize> {
        for i in self.live_members() {
            let Some(body) = monitor_get(self.members[i].monitor_port, "/connz?limit=1024").await
            else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            let found = v["connections"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["name"].as_str() == Some(client_name)));
            if found {
                return Some(i);
            }
        }
        None
    }

    /// Waits until a client named `client_name` is connected to a member
    /// other than `not`, and returns it.
    pub async fn wait_for_client_on_other(&mut self, client_name: &str, not: usize) -> usize {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(i) = self.member_of_client(client_name).await {
                if i != not {
                    return i;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{client_name} did not move off {} within {READY_TIMEOUT:?}",
                self.members[not].name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until some member holds a subscription (in the qrlogin
    /// account) that a message on `subject` would reach.
    pub async fn wait_for_interest(&mut self, subject: &str) {
        let path = format!(
            "/subsz?subs=1&acc={}&test={subject}",
            nats_accounts::ACCOUNT
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for i in self.live_members() {
                let total = monitor_get(self.members[i].monitor_port, &path)
                    .await
                    .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                    .and_then(|v| v["total"].as_u64());
                if total.unwrap_or(0) > 0 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no subscription for {subject} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until every live member routes `subject` to a subscriber,
    /// its own client or one behind a route: whichever member a message is
    /// published on (a stream leader's republish, say), it reaches the
    /// subscription. (`/subsz` lists only a member's own clients' interest,
    /// `/routez` what its peers asked for.)
    pub async fn wait_for_interest_everywhere(&mut self, subject: &str) {
        let local = format!(
            "/subsz?subs=1&acc={}&test={subject}",
            nats_accounts::ACCOUNT
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        'wait: loop {
            assert!(
                Instant::now() < deadline,
                "{subject} not routed by every live member within 10 s"
            );
            for i in self.live_members() {
                let port = self.members[i].monitor_port;
                let json = |body: Option<String>| {
                    body.and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                };
                let mine = json(monitor_get(port, &local).await)
                    .and_then(|v| v["total"].as_u64())
                    .unwrap_or(0)
                    > 0;
                let routed = || async {
                    let v = json(monitor_get(port, "/routez?subs=1").await)?;
                    let found = v["routes"].as_array()?.iter().any(|r| {
                        r["subscriptions_list"].as_array().is_some_and(|subs| {
                            subs.iter()
                                .filter_map(|s| s.as_str())
                                .any(|s| subject_matches(s, subject))
                        })
                    });
                    Some(found)
                };
                if !mine && routed().await != Some(true) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue 'wait;
                }
            }
            return;
        }
    }

    /// Why member `i` closed its last connection from a client named
    /// `client_name` (`/connz?state=closed`): `Client Closed` when the
    /// client left by itself, `Server Shutdown` when the server evicted it.
    pub async fn closed_reason(&self, i: usize, client_name: &str) -> Option<String> {
        let body = monitor_get(
            self.members[i].monitor_port,
            "/connz?state=closed&limit=1024",
        )
        .await?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["connections"]
            .as_array()?
            .iter()
            .rev()
            .find(|c| c["name"].as_str() == Some(client_name))
            .and_then(|c| c["reason"].as_str())
            .map(str::to_owned)
    }

    fn signal(&self, i: usize, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid(i).to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.members[i].name);
    }

    /// SIGKILL of member `i`, as a crash would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.members[i].frozen = false;
    }

    /// SIGSTOP: the member keeps its sockets open and answers nothing.
    pub fn freeze(&mut self, i: usize) {
        self.signal(i, "STOP");
        self.members[i].frozen = true;
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub fn thaw(&mut self, i: usize) {
        self.signal(i, "CONT");
        self.members[i].frozen = false;
    }

    /// Lame duck mode: the member stops accepting clients, closes the ones
    /// it has over a few seconds (telling them first in INFO `ldm`), then
    /// exits. See [`wait_exit`](Self::wait_exit).
    pub fn lame_duck(&self, i: usize) {
        let status = Command::new(nats_server_bin())
            .arg("--signal")
            .arg(format!("ldm={}", self.pid(i)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("nats-server --signal ldm");
        assert!(status.success(), "ldm signal to {}", self.members[i].name);
    }

    /// Waits for member `i`'s process to end by itself (after lame duck:
    /// up to its 30 s window).
    pub async fn wait_exit(&mut self, i: usize) {
        let deadline = Instant::now() + LAME_DUCK.duration + READY_TIMEOUT;
        while self.is_running(i) {
            assert!(
                Instant::now() < deadline,
                "{} did not exit",
                self.members[i].name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.members[i].child = None;
    }

    /// Starts member `i` again (killing it first if it runs) on the same
    /// ports and store, and waits until it is healthy: back in the cluster
    /// with its streams caught up.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        let deadline = Instant::now() + READY_TIMEOUT;
        self.spawn(i);
        loop {
            if !self.is_running(i) {
                // The old process's port may not be free yet.
                assert!(
                    Instant::now() < deadline,
                    "{} did not restart",
                    self.members[i].name
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.spawn(i);
                continue;
            }
            if self.healthy(i, false).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not healthy within {READY_TIMEOUT:?} of its restart",
                self.members[i].name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts every member again (killing those that run) on the same ports
    /// and stores, all at once: a member alone has no JetStream quorum and
    /// never turns healthy. Waits until all are healthy.
    pub async fn restart_all(&mut self) {
        self.kill_all();
        let deadline = Instant::now() + READY_TIMEOUT;
        for i in 0..self.size() {
            self.spawn(i);
        }
        while !self.wait_all_ready().await {
            // An old process's port may not be free yet: start who failed.
            assert!(
                Instant::now() < deadline,
                "the cluster did not restart within {READY_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            for i in 0..self.size() {
                if !self.is_running(i) {
                    self.spawn(i);
                }
            }
        }
    }

    fn kill_all(&mut self) {
        for i in 0..self.size() {
            self.kill(i);
        }
    }
}

/// Whether the subscription `filter` (with `*` and `>` wildcards) takes
/// messages on the literal `subject`.
fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for f in filter.split('.') {
        match (f, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (f, Some(t)) if f == t => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        self.kill_all();
    }
}
