//! A real cluster per test: nats-server on a random port, auth in-process
//! on port 0, two edges on port 0; plus small HTTP, SSE and WebSocket
//! clients that read what a browser would.

use std::{collections::HashMap, net::SocketAddr, sync::Mutex, time::Duration};

use futures::StreamExt;
use qrlogin_auth::{
    config::AuthConfig,
    testing::{NatsServer, TestAuth, TestKeys},
};
use qrlogin_client::sse::{SseItem, SseParser};
use qrlogin_edge::{config::EdgeConfig, startup::Application};
use qrlogin_proto::auth::v1::{
    auth_service_client::AuthServiceClient, GetLoginSessionRequest, LoginSession,
};
use reqwest::{header, StatusCode};
use serde_json::Value;
use tokio::{sync::oneshot, task::JoinHandle};
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, Message},
    MaybeTlsStream, WebSocketStream,
};

/// Longest any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestEdge {
    pub addr: SocketAddr,
    /// The operations address (`/metrics`, `/healthz`, `/readyz`).
    pub ops: SocketAddr,
    /// The gRPC watch port.
    pub grpc: Option<SocketAddr>,
    pub node: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestEdge {
    pub async fn spawn(config: EdgeConfig) -> Self {
        let app = Application::build(config).await.expect("edge builds");
        let addr = app.local_addr();
        let ops = app.ops_addr();
        let grpc = app.grpc_addr();
        let node = app.node().to_owned();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.run_until_stopped(async {
                let _ = rx.await;
            })
            .await
            .expect("edge runs");
        });
        let edge = Self {
            addr,
            ops,
            grpc,
            node,
            stop: Some(tx),
            task: Some(task),
        };
        edge.wait_ready().await;
        edge
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// A URL on the operations port.
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ops)
    }

    /// Polls /readyz (operations port) until it answers 200.
    pub async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(r) = http.get(self.ops_url("/readyz")).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "edge {} never became ready",
                self.node
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends the stop signal (as SIGTERM would); returns the task to await.
    pub fn stop(&mut self) -> JoinHandle<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("edge still running")
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.ops_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The value of one metric line (`name{labels} value`) in a scrape.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

pub fn edge_config(name: &str, auth: &TestAuth, nats: &NatsServer) -> EdgeConfig {
    let mut c = EdgeConfig::defaults();
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.ops_listen = "127.0.0.1:0".parse().unwrap();
    c.grpc.listen = "127.0.0.1:0".parse().unwrap();
    c.grpc.reflection = true;
    c.node_name = Some(name.to_owned());
    c.auth_url = auth.url();
    c.nats_url = nats.url();
    c.nats_nkey_seed_file = Some(nats.edge_seed_file());
    c.auth_service_token_file = Some(auth.service_token_file().to_owned());
    c.web_dir = "/nonexistent-qrlogin-web".into();
    c.drain_deadline = Duration::from_millis(1500);
    // Short-poll tests keep the pace the answers ask for; a short one keeps
    // them quick. The pace test sets the default back.
    c.poll_interval = Duration::from_millis(200);
    c
}

pub struct Cluster {
    pub edge1: TestEdge,
    pub edge2: TestEdge,
    pub auth: TestAuth,
    pub keys: TestKeys,
    pub nats: NatsServer,
    pub http: reqwest::Client,
    /// The secrets of the sessions this cluster's browsers created, so the
    /// phone helpers can read what the browser shows (the QR payload, the
    /// match code) as a person would.
    secrets: Mutex<HashMap<String, String>>,
}

impl Cluster {
    pub async fn start() -> Self {
        Self::start_with(|_| {}, |_| {}).await
    }

    pub async fn start_with(
        auth_tweak: impl FnOnce(&mut AuthConfig),
        edge_tweak: impl Fn(&mut EdgeConfig),
    ) -> Self {
        let nats = NatsServer::start().await;
        let keys = TestKeys::generate();
        let auth = TestAuth::spawn(&nats, &keys, auth_tweak).await;
        let mut c1 = edge_config("edge-1", &auth, &nats);
        edge_tweak(&mut c1);
        let mut c2 = edge_config("edge-2", &auth, &nats);
        edge_tweak(&mut c2);
        let edge1 = TestEdge::spawn(c1).await;
        let edge2 = TestEdge::spawn(c2).await;
        Self {
            edge1,
            edge2,
            auth,
            keys,
            nats,
            http: reqwest::Client::new(),
            secrets: Mutex::default(),
        }
    }

    /// The session as its browser sees it now, read from auth over gRPC
    /// (not through an edge, so it counts against no poll pace).
    pub async fn shown(&self, id: &str) -> Option<LoginSession> {
        let secret = self.secrets.lock().unwrap().get(id).cloned()?;
        let mut client = AuthServiceClient::connect(self.auth.url()).await.ok()?;
        let mut req = tonic::Request::new(GetLoginSessionRequest {
            session_id: id.to_owned(),
            browser_secret: secret,
        });
        req.metadata_mut().insert(
            "x-qrlogin-service-token",
            self.auth.service_token().parse().unwrap(),
        );
        let r = client.get_login_session(req).await.ok()?;
        r.into_inner().session
    }

    /// Remembers the secret of a session a test created by hand, so that
    /// [`Cluster::phone`] can read what its browser shows.
    pub fn remember(&self, id: &str, secret: &str) {
        self.secrets
            .lock()
            .unwrap()
            .insert(id.to_owned(), secret.to_owned());
    }

    /// Creates a login session through `edge`.
    pub async fn create(&self, edge: &TestEdge) -> Created {
        let r = self
            .http
            .post(edge.url("/v1/login-sessions"))
            .header(header::USER_AGENT, "TestBrowser/1.0")
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "create failed");
        let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
        let json: Value = r.json().await.unwrap();
        let created = Created {
            id: json["session_id"].as_str().unwrap().to_owned(),
            secret: json["browser_secret"].as_str().unwrap().to_owned(),
            cookie,
            json,
        };
        self.secrets
            .lock()
            .unwrap()
            .insert(created.id.clone(), created.secret.clone());
        created
    }

    /// A phone request (scan/confirm/deny) through `edge` as user `alice`,
    /// made as a person would: a scan sends the payload on the browser's
    /// screen, a confirm picks the number the browser shows.
    pub async fn phone(&self, edge: &TestEdge, id: &str, action: &str) -> reqwest::Response {
        let token = self.keys.user_token("alice", "Alice");
        let shown = self.shown(id).await;
        let body = match action {
            "scan" => serde_json::json!({
                "qr_payload": shown.map(|s| s.qr_payload).unwrap_or_default()
            }),
            "confirm" => serde_json::json!({
                "match_code": shown.map(|s| s.match_code).unwrap_or_default()
            }),
            _ => serde_json::json!({}),
        };
        self.phone_with(edge, id, action, &token, &body).await
    }

    /// A phone request with the given user token and body.
    pub async fn phone_with(
        &self,
        edge: &TestEdge,
        id: &str,
        action: &str,
        token: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.http
            .post(edge.url(&format!("/v1/login-sessions/{id}/{action}")))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Browser request with the secret as the cookie the browser holds.
    pub fn browser(
        &self,
        method: reqwest::Method,
        edge: &TestEdge,
        created: &Created,
        suffix: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(
                method,
                edge.url(&format!("/v1/login-sessions/{}{suffix}", created.id)),
            )
            .header(
                header::COOKIE,
                format!("qrl_bs_{}={}", created.id, created.secret),
            )
    }

    /// Opens an SSE watch on `edge` and checks that its first event is PENDING.
    pub async fn sse_pending(&self, edge: &TestEdge, created: &Created) -> SseClient {
        let url = edge.url(&format!("/v1/login-sessions/{}/events", created.id));
        let mut sse = SseClient::open(&self.http, &url, created, None)
            .await
            .expect("SSE request")
            .expect("SSE 200 OK");
        assert_eq!(
            sse.next_snapshot()
                .await
                .expect("first event")
                .event
                .as_deref(),
            Some("PENDING")
        );
        sse
    }

    pub async fn redeem(&self, edge: &TestEdge, created: &Created) -> reqwest::Response {
        self.browser(reqwest::Method::POST, edge, created, "/redeem")
            .send()
            .await
            .unwrap()
    }
}

pub struct Created {
    pub id: String,
    pub secret: String,
    pub cookie: String,
    pub json: Value,
}

/// The error code of an error response.
pub async fn error_code(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// One SSE event as a browser's EventSource sees it (a `retry:` field on
/// its own is an event with only `retry`). Heartbeat comments are not
/// events.
#[derive(Debug, Default, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub retry: Option<u64>,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().unwrap_or("null")).unwrap()
    }
}

/// Reads an SSE response as the browser's cookie holder, with the shared
/// client's SSE parser (reqwest underneath, so tests can check the
/// response's headers and cookies).
pub struct SseClient {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    parser: SseParser,
    ready: std::collections::VecDeque<SseItem>,
}

impl SseClient {
    pub async fn open(
        http: &reqwest::Client,
        url: &str,
        created: &Created,
        last_event_id: Option<u64>,
    ) -> reqwest::Result<Result<Self, reqwest::Response>> {
        let mut req = http
            .get(url)
            .header(
                header::COOKIE,
                format!("qrl_bs_{}={}", created.id, created.secret),
            )
            .header(header::ACCEPT, "text/event-stream");
        if let Some(v) = last_event_id {
            req = req.header("Last-Event-ID", v.to_string());
        }
        let r = req.send().await?;
        if r.status() != StatusCode::OK {
            return Ok(Err(r));
        }
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/event-stream");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(r.headers()["x-accel-buffering"], "no");
        Ok(Ok(Self {
            body: r.bytes_stream().boxed(),
            parser: SseParser::default(),
            ready: Default::default(),
        }))
    }

    /// The next event or `retry:`; `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            match self.ready.pop_front() {
                Some(SseItem::Retry(ms)) => {
                    return Some(SseEvent {
                        retry: Some(ms),
                        ..SseEvent::default()
                    })
                }
                Some(SseItem::Event(e)) => {
                    return Some(SseEvent {
                        id: e.id,
                        event: e.event,
                        data: Some(e.data),
                        retry: None,
                    })
                }
                None => {}
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("SSE stalled")?;
            let items = self.parser.feed(&chunk.ok()?).expect("well-formed SSE");
            self.ready.extend(items);
        }
    }

    /// The next snapshot event, skipping `retry:` blocks and heartbeats.
    pub async fn next_snapshot(&mut self) -> Option<SseEvent> {
        loop {
            let ev = self.next().await?;
            if ev.data.is_some() {
                return Some(ev);
            }
        }
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Anything a WebSocket client can run over.
pub trait WsIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> WsIo for T {}

/// Opens a WebSocket with the browser cookie and an Origin header.
pub async fn ws_connect(
    url: &str,
    created: &Created,
    origin: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        header::COOKIE,
        format!("qrl_bs_{}={}", created.id, created.secret)
            .parse()
            .unwrap(),
    );
    if let Some(o) = origin {
        req.headers_mut().insert(header::ORIGIN, o.parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    Ok(ws)
}

/// What the server sent next: a JSON message or a close code.
#[derive(Debug)]
pub enum WsEvent {
    Json(Value),
    Close(Option<u16>),
}

pub async fn ws_next<S: WsIo>(ws: &mut WebSocketStream<S>) -> WsEvent {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("WebSocket stalled");
        match msg {
            Some(Ok(Message::Text(t))) => return WsEvent::Json(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(frame))) => return WsEvent::Close(frame.map(|f| f.code.into())),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return WsEvent::Close(None),
        }
    }
}

/// The next `state` message's snapshot.
pub async fn ws_state<S: WsIo>(ws: &mut WebSocketStream<S>) -> Value {
    match ws_next(ws).await {
        WsEvent::Json(v) if v["type"] == "state" => v["session"].clone(),
        other => panic!("expected a state message, got {other:?}"),
    }
}

/// The epoch of the QR payload the create answer shows (after `#`).
pub fn qr_epoch(created: &Created) -> u64 {
    created.json["qr_payload"]
        .as_str()
        .and_then(|p| p.rsplit_once('#'))
        .and_then(|(_, f)| f.split_once('.'))
        .and_then(|(e, _)| e.parse().ok())
        .expect("a QR payload with an epoch")
}

/// Long poll: `GET ?since=V&qr=E&wait=W`, holding the payload of create.
pub async fn long_poll(
    cluster: &Cluster,
    edge: &TestEdge,
    created: &Created,
    since: u64,
    wait: &str,
) -> Value {
    let r = cluster
        .browser(
            reqwest::Method::GET,
            edge,
            created,
            &format!("?since={since}&qr={}&wait={wait}", qr_epoch(created)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-edge-node"], edge.node.as_str());
    r.json().await.unwrap()
}
