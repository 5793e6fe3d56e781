//! For each transport: the watcher is on edge 1, the phone's scan and
//! confirm go to edge 2 (or straight to auth), and the watcher sees SCANNED
//! then CONFIRMED, then redeems: one token, also when the redeem is repeated.

use qrlogin_proto::auth::v1::{auth_service_client::AuthServiceClient, ConfirmLoginSessionRequest};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;

async fn redeem_once(cluster: &Cluster, created: &Created) {
    let r = cluster.redeem(&cluster.edge1, created).await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["user"]["id"], "alice");
    assert_eq!(body["user"]["display_name"], "Alice (alice)");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "a JWT");
    assert!(cookie.starts_with(&format!("qrl_session={token};")));
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/")
    );
    // A repeat on another edge (the first answer lost) gets the same token,
    // not a second one.
    let again = cluster.redeem(&cluster.edge2, created).await;
    assert_eq!(again.status(), StatusCode::OK);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["access_token"].as_str(), Some(token));
}

fn assert_scanned(s: &Value, created: &Created) {
    assert_eq!(s["session_id"], created.id.as_str());
    assert_eq!(s["state"], "SCANNED");
    // The browser sees the number to match, not who scanned.
    assert!((10..=99).contains(&s["match_code"].as_u64().unwrap()));
    assert!(s["user_display_name"].is_null());
    assert!(s["qr_payload"].is_null());
    assert_eq!(s["node"], "edge-1");
}

/// Confirms straight at auth over gRPC, as a phone app may.
async fn confirm_via_grpc(cluster: &Cluster, id: &str) {
    let mut client = AuthServiceClient::connect(cluster.auth.url())
        .await
        .unwrap();
    let code = cluster.shown(id).await.map_or(0, |s| s.match_code);
    let mut req = tonic::Request::new(ConfirmLoginSessionRequest {
        session_id: id.to_owned(),
        match_code: code,
    });
    let token = cluster.keys.user_token("alice", "Alice");
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    client.confirm_login_session(req).await.unwrap();
}

#[tokio::test]
async fn create_answers_the_documented_shape() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let j = &created.json;
    assert_eq!(j["state"], "PENDING");
    assert_eq!(j["node"], "edge-1");
    assert!(j["version"].as_u64().unwrap() > 0);
    assert!(j["user_display_name"].is_null());
    assert!(j["expires_at"].as_str().unwrap().ends_with('Z'));
    let payload = j["qr_payload"].as_str().unwrap();
    let (url, token) = payload.split_once('#').unwrap();
    assert!(url.ends_with(&format!("/m/{}", created.id)));
    assert!(token.starts_with("0.") && token.len() == 18, "{token}");
    assert!(j["qr_svg"].as_str().unwrap().contains("<svg"));
    assert_eq!(created.secret.len(), 43);
    let expected = format!(
        "qrl_bs_{}={}; HttpOnly; SameSite=Strict; Path=/v1/login-sessions/{}; Max-Age=300",
        created.id, created.secret, created.id
    );
    assert_eq!(created.cookie, expected, "no Secure without TLS");
    let qr = cluster
        .browser(Method::GET, &cluster.edge2, &created, "/qr.svg")
        .send()
        .await
        .unwrap();
    assert_eq!(qr.status(), StatusCode::OK);
    assert_eq!(qr.headers()["content-type"], "image/svg+xml");
    assert_eq!(qr.headers()["x-edge-node"], "edge-2");
}

#[tokio::test]
async fn short_polling_sees_scan_and_confirm_from_the_other_edge() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    // A short poller keeps the pace every answer asks for.
    let pace = std::sync::Mutex::new(std::time::Duration::ZERO);
    let poll = || async {
        let wait = *pace.lock().unwrap();
        tokio::time::sleep(wait).await;
        let r = cluster
            .browser(Method::GET, &cluster.edge1, &created, "")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let json = r.json::<Value>().await.unwrap();
        let asked = json["poll_interval_ms"].as_u64().expect("poll_interval_ms");
        *pace.lock().unwrap() = std::time::Duration::from_millis(asked);
        json
    };
    let first = poll().await;
    assert_eq!(first["poll_interval_ms"], 200);
    assert_eq!(first["state"], "PENDING");
    assert_eq!(
        cluster
            .phone(&cluster.edge2, &created.id, "scan")
            .await
            .status(),
        StatusCode::OK
    );
    let scanned = poll().await;
    assert_scanned(&scanned, &created);
    assert!(scanned["version"].as_u64() > first["version"].as_u64());
    assert_eq!(
        cluster
            .phone(&cluster.edge2, &created.id, "confirm")
            .await
            .status(),
        StatusCode::OK
    );
    let confirmed = poll().await;
    assert_eq!(confirmed["state"], "CONFIRMED");
    assert!(confirmed["version"].as_u64() > scanned["version"].as_u64());
    redeem_once(&cluster, &created).await;
}

#[tokio::test]
async fn long_polling_is_woken_by_scan_and_confirm_on_the_other_edge() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let v0 = created.json["version"].as_u64().unwrap();
    let waiting = long_poll(&cluster, &cluster.edge1, &created, v0, "20s");
    let scan = async {
        // The poll is parked once edge 1 holds a NATS subscription for it.
        wait_for_subscriptions(&cluster.edge1, 1).await;
        let r = cluster.phone(&cluster.edge2, &created.id, "scan").await;
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["browser"]["user_agent"], "TestBrowser/1.0");
        assert_eq!(body["browser"]["ip"], "127.0.0.1");
        assert_eq!(body["session"]["node"], "edge-2");
    };
    let (scanned, ()) = tokio::join!(waiting, scan);
    assert_scanned(&scanned, &created);
    let v1 = scanned["version"].as_u64().unwrap();
    let waiting = long_poll(&cluster, &cluster.edge1, &created, v1, "20s");
    let confirm = async {
        wait_for_subscriptions(&cluster.edge1, 1).await;
        assert_eq!(
            cluster
                .phone(&cluster.edge2, &created.id, "confirm")
                .await
                .status(),
            StatusCode::OK
        );
    };
    let (confirmed, ()) = tokio::join!(waiting, confirm);
    assert_eq!(confirmed["state"], "CONFIRMED");
    assert!(confirmed["version"].as_u64().unwrap() > v1);
    redeem_once(&cluster, &created).await;
}

#[tokio::test]
async fn sse_streams_scan_then_confirm_in_order() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let url = cluster
        .edge1
        .url(&format!("/v1/login-sessions/{}/events", created.id));
    let mut sse = SseClient::open(&cluster.http, &url, &created, None)
        .await
        .unwrap()
        .unwrap();
    let first = sse.next().await.unwrap();
    assert_eq!(first.retry, Some(2000), "retry: comes first");
    let pending = sse.next_snapshot().await.unwrap();
    assert_eq!(pending.event.as_deref(), Some("PENDING"));
    assert_eq!(pending.id, Some(created.json["version"].to_string()));
    assert_eq!(
        cluster
            .phone(&cluster.edge2, &created.id, "scan")
            .await
            .status(),
        StatusCode::OK
    );
    let scanned = sse.next_snapshot().await.unwrap();
    assert_eq!(scanned.event.as_deref(), Some("SCANNED"));
    assert_scanned(&scanned.json(), &created);
    assert_eq!(scanned.id, Some(scanned.json()["version"].to_string()));
    confirm_via_grpc(&cluster, &created.id).await;
    let confirmed = sse.next_snapshot().await.unwrap();
    assert_eq!(confirmed.event.as_deref(), Some("CONFIRMED"));
    assert!(confirmed.json()["version"].as_u64() > scanned.json()["version"].as_u64());
    redeem_once(&cluster, &created).await;
    let redeemed = sse.next_snapshot().await.unwrap();
    assert_eq!(redeemed.event.as_deref(), Some("REDEEMED"));
    assert!(
        sse.next().await.is_none(),
        "the stream ends after a final state"
    );
}

#[tokio::test]
async fn websocket_streams_scan_then_confirm_in_order() {
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let url = cluster
        .edge1
        .ws_url(&format!("/v1/login-sessions/{}/ws", created.id));
    let origin = format!("http://{}", cluster.edge1.addr);
    let mut ws = ws_connect(&url, &created, Some(&origin)).await.unwrap();
    let pending = ws_state(&mut ws).await;
    assert_eq!(pending["state"], "PENDING");
    assert_eq!(
        cluster
            .phone(&cluster.edge2, &created.id, "scan")
            .await
            .status(),
        StatusCode::OK
    );
    assert_scanned(&ws_state(&mut ws).await, &created);
    assert_eq!(
        cluster
            .phone(&cluster.edge2, &created.id, "confirm")
            .await
            .status(),
        StatusCode::OK
    );
    let confirmed = ws_state(&mut ws).await;
    assert_eq!(confirmed["state"], "CONFIRMED");
    redeem_once(&cluster, &created).await;
    assert_eq!(ws_state(&mut ws).await["state"], "REDEEMED");
    assert!(matches!(ws_next(&mut ws).await, WsEvent::Close(Some(1000))));
}

/// Waits until `edge` holds `n` NATS subscriptions (a watcher is parked).
pub async fn wait_for_subscriptions(edge: &TestEdge, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if metric(&edge.metrics().await, "qrlogin_edge_nats_subscriptions") as u64 >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no watcher parked on {}",
            edge.node
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A WebSocket requested on a connection that already carried a request
/// (served by hyper, not the direct path) works the same.
#[tokio::test]
async fn websocket_on_a_kept_alive_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let cluster = Cluster::start().await;
    let created = cluster.create(&cluster.edge1).await;
    let mut tcp = tokio::net::TcpStream::connect(cluster.edge1.addr)
        .await
        .unwrap();
    tcp.write_all(b"GET /nope/nothing HTTP/1.1\r\nHost: edge\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !seen.ends_with(b"\"no such route\"}}") {
        let mut chunk = [0u8; 512];
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    let url = cluster
        .edge1
        .ws_url(&format!("/v1/login-sessions/{}/ws?since=0", created.id));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", created.secret).parse().unwrap(),
    );
    let (mut ws, response) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(response.headers()["x-edge-node"], "edge-1");
    assert_eq!(ws_state(&mut ws).await["state"], "PENDING");
    assert_eq!(
        cluster
            .phone(&cluster.edge2, &created.id, "scan")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(ws_state(&mut ws).await["state"], "SCANNED");
}
