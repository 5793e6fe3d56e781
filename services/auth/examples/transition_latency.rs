//! Benchmark: how long from a gRPC call to the auth service until a NATS
//! subscriber holds the resulting `LoginEvent` — create (PENDING) and scan
//! (SCANNED) — against a real nats-server with a file-backed store.
//!
//!     cargo run --release -p qrlogin-auth --features testing \
//!         --example transition_latency -- [iterations, default 2000]
//!
//! Prints median / p90 / p99 / max per transition. Runs sequentially (one
//! login at a time), so it measures latency, not throughput.

use futures::StreamExt as _;
use prost::Message as _;
use qrlogin_auth::testing::{NatsServer, TestAuth, TestKeys};
use qrlogin_proto::auth::v1 as pb;
use qrlogin_proto::auth::v1::auth_service_client::AuthServiceClient;
use qrlogin_proto::events::v1::LoginEvent;
use std::time::{Duration, Instant};

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{name:<28} n={:<6} median={:>8.3} ms  p90={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        samples.len(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.9).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
    );
}

async fn wait_for(events: &mut async_nats::Subscriber, id: &str, state: i32) -> anyhow::Result<()> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("subscription closed"))?;
        let e = LoginEvent::decode(msg.payload.as_ref())?;
        if e.session_id == id && e.state == state {
            return Ok(());
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2000);
    let nats = NatsServer::start().await;
    let keys = TestKeys::generate();
    let auth = TestAuth::spawn(&nats, &keys, |_| {}).await;
    let mut client = AuthServiceClient::connect(auth.url()).await?;
    let bus = async_nats::connect(nats.url()).await?;
    let mut events = bus.subscribe("qrlogin.session.*").await?;
    bus.flush().await?;
    let token = keys.user_token("alice", "Alice");

    // Warm up connections, the bucket and the allocator.
    for _ in 0..50 {
        client
            .create_login_session(pb::CreateLoginSessionRequest {
                client_ip: "10.0.0.1".into(),
                user_agent: "bench".into(),
                browser_key: None,
            })
            .await?;
    }
    while tokio::time::timeout(Duration::from_millis(200), events.next())
        .await
        .is_ok()
    {}

    let mut create = Vec::with_capacity(iterations);
    let mut create_rpc = Vec::with_capacity(iterations);
    let mut scan = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t0 = Instant::now();
        let r = client
            .create_login_session(pb::CreateLoginSessionRequest {
                client_ip: "10.0.0.1".into(),
                user_agent: "bench".into(),
                browser_key: None,
            })
            .await?
            .into_inner();
        create_rpc.push(t0.elapsed());
        let id = r.session.map(|s| s.session_id).unwrap_or_default();
        let qr_payload = r.qr_payload;
        wait_for(&mut events, &id, 1).await?;
        create.push(t0.elapsed());

        let t1 = Instant::now();
        let mut req = tonic::Request::new(pb::ScanLoginSessionRequest {
            session_id: id.clone(),
            qr_payload,
            client_ip: String::new(),
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        client.scan_login_session(req).await?;
        wait_for(&mut events, &id, 2).await?;
        scan.push(t1.elapsed());
    }
    println!("auth transition latency, {iterations} logins, nats-server file store, same host");
    report("create rpc (response)", create_rpc);
    report("create -> event received", create);
    report("scan -> event received", scan);
    Ok(())
}
