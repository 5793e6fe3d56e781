//! One login step is one trace across three processes: the edge that takes
//! the phone's request, auth, and the edge that delivers the event to the
//! browser. Auth and two edges run as child processes of this test (each
//! with its own OpenTelemetry pipeline, set up by the services' own
//! `telemetry::init`), exporting OTLP over HTTP/protobuf to a receiver in
//! this test that decodes the real OTLP protobuf (opentelemetry-proto).
//! No collector installs from the registries this project uses (the only
//! packaged one is an unofficial re-upload of a prebuilt binary), hence the
//! receiver of our own.
//!
//! The children are this test binary started again with
//! `QRLOGIN_TRACE_TEST_ROLE` set (cargo gives a test only its own
//! package's binaries, and auth is another package); each runs what the
//! service's `main` runs: `telemetry::init`, then the application.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::State, routing::post, Router};
use clap::Parser as _;
use helpers::{Created, SseClient, TestEdge, WAIT};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use qrlogin_auth::testing::{NatsServer, TestAuth, TestKeys};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

const ROLE: &str = "QRLOGIN_TRACE_TEST_ROLE";

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    instance: String,
    trace: String,
    id: String,
    parent: String,
    name: String,
    kind: i32,
}

type Spans = Arc<Mutex<Vec<Got>>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn receive(State(spans): State<Spans>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut got = spans.lock().unwrap();
    for rs in request.resource_spans {
        let attr = |key: &str| {
            rs.resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == key))
                .and_then(|a| a.value.as_ref()?.value.clone())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s,
                    other => format!("{other:?}"),
                })
                .unwrap_or_default()
        };
        let (service, instance) = (attr("service.name"), attr("service.instance.id"));
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            got.push(Got {
                service: service.clone(),
                instance: instance.clone(),
                trace: hex(&span.trace_id),
                id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                name: span.name,
                kind: span.kind,
            });
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

/// An OTLP/HTTP receiver on a free port.
async fn receiver() -> (SocketAddr, Spans) {
    let spans = Spans::default();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, spans)
}

/// A child process of this test in `role`, and the URL it reported.
struct Proc {
    child: Child,
    url: String,
}

async fn start(role: &str, env: &[(&str, String)]) -> Proc {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_process", "--ignored", "--nocapture"])
        .env(ROLE, role)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start child");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("READY ") {
                return url.to_owned();
            }
        }
        panic!("{role} ended before it was ready");
    })
    .await
    .unwrap_or_else(|_| panic!("{role} not ready within {WAIT:?}"));
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Proc { child, url }
}

impl Proc {
    /// Closes its stdin: it stops, exports what it holds, and exits.
    async fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }
}

/// What a child runs: the service, as its `main` would, until stdin closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "started by one_login_step_is_one_trace_across_three_processes"]
async fn child_process() {
    let role = std::env::var(ROLE).expect("run by the trace test only");
    if role == "auth" {
        let _telemetry = qrlogin_auth::telemetry::init(
            qrlogin_auth::config::LogFormat::Pretty,
            "qrlogin-auth",
            Some("auth-1"),
        )
        .unwrap();
        let config = qrlogin_auth::config::AuthConfig::from_flags([
            "--listen",
            "127.0.0.1:0",
            "--kv-storage",
            "memory",
            "--create-limit",
            "0",
        ])
        .unwrap();
        let auth = TestAuth::spawn_config(config).await;
        println!("READY {}", auth.url());
        wait_for_stdin_close().await;
        auth.stop().await;
    } else {
        let config = qrlogin_edge::config::EdgeConfig::try_parse_from(["qrlogin-edge"]).unwrap();
        let _telemetry = qrlogin_edge::telemetry::init(config.log_format, &config.node()).unwrap();
        let mut edge = TestEdge::spawn(config).await;
        println!("READY http://{}", edge.addr);
        wait_for_stdin_close().await;
        let _ = edge.stop().await;
    }
}

/// Returns when the parent closes this process's stdin (or dies).
async fn wait_for_stdin_close() {
    let _ = tokio::task::spawn_blocking(|| {
        use std::io::Read as _;
        let mut buf = [0u8; 64];
        while std::io::stdin().read(&mut buf).is_ok_and(|n| n > 0) {}
    })
    .await;
}

fn edge_env(
    name: &str,
    auth: &str,
    nats: &NatsServer,
    token: PathBuf,
    otlp: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("QRLOGIN_EDGE_LISTEN", "127.0.0.1:0".into()),
        ("QRLOGIN_OPS_LISTEN", "127.0.0.1:0".into()),
        ("QRLOGIN_EDGE_GRPC_LISTEN", "127.0.0.1:0".into()),
        ("QRLOGIN_NODE_NAME", name.into()),
        ("QRLOGIN_AUTH_URL", auth.into()),
        ("QRLOGIN_NATS_URL", nats.url()),
        (
            "QRLOGIN_NATS_NKEY_SEED_FILE",
            nats.edge_seed_file().display().to_string(),
        ),
        (
            "QRLOGIN_AUTH_SERVICE_TOKEN_FILE",
            token.display().to_string(),
        ),
        ("QRLOGIN_WEB_DIR", "/nonexistent-qrlogin-web".into()),
        ("QRLOGIN_DRAIN_DEADLINE", "1s".into()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.into()),
    ]
}

/// Waits (bounded) until `want` finds what it looks for among the spans.
async fn wait_for<T>(spans: &Spans, what: &str, want: impl Fn(&[Got]) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = want(&spans.lock().unwrap()) {
            return found;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{what}: not received within {WAIT:?}; got {:#?}",
                spans.lock().unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const SERVER: i32 = 2;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_login_step_is_one_trace_across_three_processes() {
    let (otlp, spans) = receiver().await;
    let otlp = format!("http://{otlp}");
    let nats = NatsServer::start().await;
    let keys = TestKeys::generate();
    let auth = start(
        "auth",
        &[
            ("QRLOGIN_NATS_URL", nats.url()),
            (
                "QRLOGIN_NATS_NKEY_SEED_FILE",
                nats.auth_seed_file().display().to_string(),
            ),
            (
                "QRLOGIN_USER_TOKEN_PUBLIC_KEY_FILE",
                keys.user_public_key_path().display().to_string(),
            ),
            (
                "QRLOGIN_ACCESS_TOKEN_PRIVATE_KEY_FILE",
                keys.access_private_key_path().display().to_string(),
            ),
            (
                "QRLOGIN_RECORD_KEY_FILE",
                keys.record_key_path().display().to_string(),
            ),
            (
                "QRLOGIN_SERVICE_TOKENS_FILE",
                keys.service_tokens_path().display().to_string(),
            ),
            ("QRLOGIN_SHUTDOWN_GRACE", "1s".into()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.clone()),
        ],
    )
    .await;
    let token = keys.service_token_path();
    let edge1 = start(
        "edge",
        &edge_env("edge-1", &auth.url, &nats, token.clone(), &otlp),
    )
    .await;
    let edge2 = start("edge", &edge_env("edge-2", &auth.url, &nats, token, &otlp)).await;

    // The browser creates and watches on edge-1; the phone scans and
    // confirms on edge-2, the confirm carrying a trace context of its own.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/login-sessions", edge1.url))
        .header("user-agent", "TestBrowser/1.0")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let json: serde_json::Value = r.json().await.unwrap();
    let created = Created {
        id: json["session_id"].as_str().unwrap().to_owned(),
        secret: json["browser_secret"].as_str().unwrap().to_owned(),
        cookie: String::new(),
        json,
    };
    let events = format!("{}/v1/login-sessions/{}/events", edge1.url, created.id);
    let mut sse = SseClient::open(&http, &events, &created, None)
        .await
        .unwrap()
        .expect("SSE 200");
    assert_eq!(
        sse.next_snapshot().await.unwrap().event.as_deref(),
        Some("PENDING")
    );
    let user = keys.user_token("alice", "Alice");
    let phone = |action: &str| {
        http.post(format!(
            "{}/v1/login-sessions/{}/{action}",
            edge2.url, created.id
        ))
        .bearer_auth(&user)
    };
    // The phone sends the payload it read; the browser shows the number
    // the phone must pick (number matching is on by default).
    let scan = phone("scan")
        .json(&serde_json::json!({ "qr_payload": created.json["qr_payload"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(scan.status(), 200);
    let scanned = sse.next_snapshot().await.unwrap();
    assert_eq!(scanned.event.as_deref(), Some("SCANNED"));
    let scanned: serde_json::Value =
        serde_json::from_str(scanned.data.as_deref().unwrap()).unwrap();
    let match_code = scanned["match_code"].as_u64().expect("a match code");
    let (trace, caller) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let confirmed = phone("confirm")
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .json(&serde_json::json!({ "match_code": match_code }))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 200);
    assert_eq!(
        sse.next_snapshot().await.unwrap().event.as_deref(),
        Some("CONFIRMED")
    );

    // The confirm: caller → edge-2 (server) → auth (server) → bucket write
    // (producer) → edge-1 (consumer), every link a parent span id.
    let of_trace = |all: &[Got], service: &str, instance: &str, kind: i32| {
        all.iter()
            .find(|s| {
                s.trace == trace && s.service == service && s.instance == instance && s.kind == kind
            })
            .cloned()
    };
    let tree = wait_for(&spans, "the confirm's spans", |all| {
        Some((
            of_trace(all, "qrlogin-edge", "edge-2", SERVER)?,
            of_trace(all, "qrlogin-auth", "auth-1", SERVER)?,
            of_trace(all, "qrlogin-auth", "auth-1", PRODUCER)?,
            of_trace(all, "qrlogin-edge", "edge-1", CONSUMER)?,
        ))
    })
    .await;
    let (http_span, call, write, deliver) = tree;
    assert_eq!(
        http_span.parent, caller,
        "edge-2 continues the caller's context"
    );
    assert_eq!(http_span.name, "POST /v1/login-sessions/{id}/confirm");
    assert_eq!(
        call.parent, http_span.id,
        "auth's call is a child of edge-2's request"
    );
    assert_eq!(call.name, "qrlogin.auth.v1.AuthService/ConfirmLoginSession");
    assert_eq!(
        write.parent, call.id,
        "the bucket write is a child of auth's call"
    );
    assert_eq!(write.name, "kv.put");
    assert_eq!(
        deliver.parent, write.id,
        "edge-1 continues the write's context from the republished event's headers"
    );

    // The scan, which came without a trace context: edge-2 starts one, and
    // it reaches edge-1 the same way.
    let scan = wait_for(&spans, "the scan's spans", |all| {
        let root = all
            .iter()
            .find(|s| s.instance == "edge-2" && s.name == "POST /v1/login-sessions/{id}/scan")?;
        let in_trace: HashMap<&str, &Got> = all
            .iter()
            .filter(|s| s.trace == root.trace)
            .map(|s| (s.id.as_str(), s))
            .collect();
        let deliver = in_trace
            .values()
            .find(|s| s.instance == "edge-1" && s.kind == CONSUMER)?;
        Some((root.clone(), (*deliver).clone(), in_trace.len()))
    })
    .await;
    assert_eq!(scan.0.parent, "", "edge-2 started the scan's trace");
    assert!(scan.1.parent.len() == 16 && scan.2 >= 4, "{scan:?}");

    edge1.stop().await;
    edge2.stop().await;
    auth.stop().await;
}
