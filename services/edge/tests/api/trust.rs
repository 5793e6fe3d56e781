//! The edge as auth's authenticated caller: the cluster-wide create limit
//! and a full session store as the browser sees them, TLS and mTLS to
//! auth, and what a browser learns when the edge's credentials are wrong
//! (a fixed text, never the upstream error).

use std::time::Duration;

use qrlogin_auth::testing::{NatsServer, TestAuth, TestKeys, TestTls};
use qrlogin_edge::{config::EdgeConfig, startup::Application};
use reqwest::{header, StatusCode};

use crate::helpers::*;

async fn create_status(cluster_http: &reqwest::Client, edge: &TestEdge) -> reqwest::Response {
    cluster_http
        .post(edge.url("/v1/login-sessions"))
        .header(header::USER_AGENT, "TestBrowser/1.0")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_create_limit_holds_across_edges() {
    // Each edge alone would allow 1000 a minute; auth allows 3 per network
    // whichever edge asks.
    let cluster =
        Cluster::start_with(|a| a.create_limit = 3, |e| e.create_rate_per_ip = 1000).await;
    for edge in [&cluster.edge1, &cluster.edge2, &cluster.edge1] {
        assert_eq!(
            create_status(&cluster.http, edge).await.status(),
            StatusCode::CREATED
        );
    }
    let refused = create_status(&cluster.http, &cluster.edge2).await;
    let retry_after: u64 = refused.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        error_code(refused).await,
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited".into())
    );
}

#[tokio::test]
async fn a_full_session_store_is_503_storage_full() {
    let cluster = Cluster::start_with(
        |a| a.kv_max_bytes = 16 << 10,
        |e| e.create_rate_per_ip = 10_000,
    )
    .await;
    let mut created = 0;
    let refused = loop {
        let r = create_status(&cluster.http, &cluster.edge1).await;
        if r.status() != StatusCode::CREATED {
            break r;
        }
        created += 1;
        assert!(created < 500, "16 KiB never filled up");
    };
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "storage_full", "{body}");
    assert!(!body.to_string().to_lowercase().contains("nats"));
}

/// An edge as `config` describes it, serving in the background; not waited
/// for (its readiness is what some tests look at).
async fn spawn_edge(config: EdgeConfig) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let app = Application::build(config).await.expect("edge builds");
    let addr = app.local_addr();
    let task = tokio::spawn(async move {
        let _ = app.run_until_stopped(std::future::pending()).await;
    });
    (addr, task)
}

/// Polls a create until it gives something other than a connection error
/// or 503; returns the last answer.
async fn create_at(addr: std::net::SocketAddr) -> (StatusCode, serde_json::Value) {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{addr}/v1/login-sessions"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn edge_to_auth_over_mutual_tls() {
    let tls = TestTls::generate();
    let nats = NatsServer::start().await;
    let keys = TestKeys::generate();
    let auth = TestAuth::spawn(&nats, &keys, |a| {
        a.tls_cert_file = Some(tls.path("server.pem"));
        a.tls_key_file = Some(tls.path("server.key"));
        a.tls_client_ca_file = Some(tls.path("ca.pem"));
    })
    .await;
    assert!(auth.url().starts_with("https://"));

    let mut c = edge_config("edge-tls", &auth, &nats);
    c.auth_tls_ca_file = Some(tls.path("ca.pem"));
    c.auth_tls_client_cert_file = Some(tls.path("client.pem"));
    c.auth_tls_client_key_file = Some(tls.path("client.key"));
    let edge = TestEdge::spawn(c.clone()).await;
    let http = reqwest::Client::new();
    let created = create_status(&http, &edge).await;
    assert_eq!(created.status(), StatusCode::CREATED);

    // A client certificate from another CA is refused by auth; the browser
    // gets the fixed unavailable text, nothing about TLS.
    let mut stranger = c.clone();
    stranger.node_name = Some("edge-stranger".into());
    stranger.listen = "127.0.0.1:0".parse().unwrap();
    stranger.auth_tls_client_cert_file = Some(tls.path("stranger.pem"));
    stranger.auth_tls_client_key_file = Some(tls.path("stranger.key"));
    let (addr, task) = spawn_edge(stranger).await;
    let (status, body) = create_at(addr).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    let text = body.to_string().to_lowercase();
    for leak in ["tls", "certificate", "handshake", "transport", "127.0.0.1"] {
        assert!(!text.contains(leak), "{leak} in {body}");
    }
    task.abort();

    // Without a client certificate: refused as well.
    let mut anonymous = c;
    anonymous.node_name = Some("edge-no-cert".into());
    anonymous.auth_tls_client_cert_file = None;
    anonymous.auth_tls_client_key_file = None;
    let (addr, task) = spawn_edge(anonymous).await;
    assert_eq!(create_at(addr).await.0, StatusCode::SERVICE_UNAVAILABLE);
    task.abort();
}

#[tokio::test]
async fn an_edge_without_the_right_service_token_tells_browsers_nothing_more() {
    let cluster = Cluster::start().await;
    let wrong = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(wrong.path(), "w".repeat(64)).unwrap();
    for token in [Some(wrong.path().to_owned()), None] {
        let mut c = edge_config("edge-badtoken", &cluster.auth, &cluster.nats);
        c.auth_service_token_file = token;
        let (addr, task) = spawn_edge(c).await;
        // Readiness does not depend on the token (health is open); wait
        // for the edge to answer at all.
        let deadline = tokio::time::Instant::now() + WAIT;
        let (status, body) = loop {
            if let Ok(r) = reqwest::Client::new()
                .post(format!("http://{addr}/v1/login-sessions"))
                .json(&serde_json::json!({}))
                .send()
                .await
            {
                let status = r.status();
                break (status, r.json::<serde_json::Value>().await.unwrap());
            }
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "unavailable");
        assert!(!body.to_string().contains("token"), "{body}");
        task.abort();
    }
}
