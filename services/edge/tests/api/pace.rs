//! The poll pace against polls that get around it: long polls that ask
//! again for what they were answered (answered at once, so a short poll in
//! all but name), and guessed secrets, which must be refused as wrong and
//! leave nothing behind.

use std::time::Duration;

use reqwest::{header, Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;

/// A pace long enough that every poll of a test comes within half of it
/// (10 s); the long polls here wait 15 s, so only replays are paced.
async fn paced_cluster() -> Cluster {
    Cluster::start_with(|_| {}, |c| c.poll_interval = Duration::from_secs(20)).await
}

/// Regression: `?since=0` is answered at once every time, and long polls
/// were never paced, so `slow_down` was one query parameter away.
#[tokio::test]
async fn a_long_poll_for_what_was_already_answered_is_paced() {
    let cluster = paced_cluster().await;
    let created = cluster.create(&cluster.edge1).await;
    let get = |suffix: String| {
        cluster
            .browser(Method::GET, &cluster.edge1, &created, &suffix)
            .send()
    };
    let r = get(String::new()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let pending: Value = r.json().await.unwrap();
    let v1 = pending["version"].as_u64().unwrap();
    // Right after the short poll, a long poll that holds nothing.
    let r = get("?since=0&wait=15s".into()).await.unwrap();
    let retry: u64 = r.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((19..=20).contains(&retry), "{retry}");
    let (status, code) = error_code(r).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "slow_down")
    );
    // So is one that holds the version but not the QR code on screen.
    let r = get(format!("?since={v1}&wait=15s")).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // A client that follows its answers is held and answered as before,
    // however soon after its last poll the news comes.
    let held = long_poll(&cluster, &cluster.edge1, &created, v1, "15s");
    let scan = async {
        // The long poll is held before the scan (readable in the metrics).
        let deadline = tokio::time::Instant::now() + WAIT;
        while metric(
            &cluster.edge1.metrics().await,
            "qrlogin_edge_connections{transport=\"long_poll\"}",
        ) < 1.0
        {
            assert!(tokio::time::Instant::now() < deadline, "never held");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            cluster
                .phone(&cluster.edge2, &created.id, "scan")
                .await
                .status(),
            StatusCode::OK
        );
    };
    let (scanned, ()) = tokio::join!(held, scan);
    assert_eq!(scanned["state"], "SCANNED");
    let v2 = scanned["version"].as_u64().unwrap();
    // Asking again for the SCANNED answer (or anything older) is paced.
    let r = get(format!("?since={v1}&wait=15s")).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = get("?since=0&wait=15s".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // The next news, right away, is answered.
    let confirm = cluster.phone(&cluster.edge2, &created.id, "confirm");
    let (confirmed, r) = tokio::join!(
        long_poll(&cluster, &cluster.edge1, &created, v2, "15s"),
        confirm
    );
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(confirmed["state"], "CONFIRMED");
    let refused = metric(
        &cluster.edge1.metrics().await,
        "qrlogin_edge_rejected_requests_total{reason=\"slow_down\"}",
    );
    assert_eq!(refused, 4.0);
}

/// Regression: the pace was recorded before auth checked the secret, so a
/// second poll with a guessed secret was answered `429 slow_down` (as if
/// the secret were right) instead of `403`, and every guess took a place
/// in the table, pushing real browsers' pace out.
#[tokio::test]
async fn a_guessed_secret_is_refused_as_wrong_every_time() {
    let cluster = paced_cluster().await;
    let created = cluster.create(&cluster.edge1).await;
    let guess = Created {
        secret: "A".repeat(43),
        ..created
    };
    for suffix in ["", "", "?since=0&wait=10ms", ""] {
        let r = cluster
            .browser(Method::GET, &cluster.edge1, &guess, suffix)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r).await,
            (StatusCode::FORBIDDEN, "permission_denied".into()),
            "poll {suffix:?} with a guessed secret"
        );
    }
    let m = cluster.edge1.metrics().await;
    assert_eq!(
        metric(
            &m,
            "qrlogin_edge_rejected_requests_total{reason=\"slow_down\"}"
        ),
        0.0
    );
}
