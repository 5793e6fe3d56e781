//! Races: compare-and-swap must give exactly one winner, also across two auth
//! instances sharing one NATS.

use crate::common::*;
use futures::future::join_all;
use qrlogin_auth::testing::TestAuth;
use qrlogin_proto::events::v1::LoginState;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_redeems_one_winner() {
    let mut h = Harness::start().await;
    let c = confirmed(&mut h).await;
    let tasks = (0..100).map(|_| {
        let mut client = h.client.clone();
        let (id, secret) = (c.id.clone(), c.secret.clone());
        tokio::spawn(async move { redeem(&mut client, &id, &secret).await })
    });
    let results: Vec<_> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    // One write wins; every other redeem by the same browser is a repeat
    // within QRLOGIN_REDEEM_RETRY_WINDOW and gets the same token (or, after
    // losing too many races, ABORTED): one login, one token.
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert!(!winners.is_empty(), "a redeem succeeds");
    for w in &winners {
        assert_eq!(w.access_token, winners[0].access_token, "one token");
        assert_eq!(
            w.session.as_ref().unwrap().version,
            winners[0].session.as_ref().unwrap().version,
            "one write"
        );
    }
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(r.code(), Code::FailedPrecondition | Code::Aborted),
            "losers fail cleanly: {r:?}"
        );
    }
    let fin = get(&mut h.client, &c.id, &c.secret).await.unwrap();
    assert_eq!(state(&fin), LoginState::Redeemed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_deny_cancel_race_has_one_final_state() {
    let mut h = Harness::start().await;
    let token = h.alice();
    for _ in 0..20 {
        let s = scanned(&mut h).await;
        let (mut a, mut b, mut c) = (h.client.clone(), h.client.clone(), h.client.clone());
        let (ra, rb, rc) = tokio::join!(
            confirm(&mut a, &s.id, &token),
            deny(&mut b, &s.id, &token),
            cancel(&mut c, &s.id, &s.secret),
        );
        let won = |r: &Result<_, tonic::Status>| match r {
            Ok(_) => true,
            Err(e) => {
                assert!(
                    matches!(e.code(), Code::FailedPrecondition | Code::Aborted),
                    "{e:?}"
                );
                false
            }
        };
        let (confirmed, denied, cancelled) = (won(&ra), won(&rb), won(&rc));
        // Confirm and deny exclude each other; cancel may also follow a
        // confirm (the browser's "not you? start over"), never a deny.
        assert!(!(confirmed && denied), "confirm and deny both won");
        assert!(!(denied && cancelled), "deny and cancel both won");
        let expected = if cancelled {
            LoginState::Cancelled
        } else if confirmed {
            LoginState::Confirmed
        } else {
            assert!(denied, "nobody won");
            LoginState::Denied
        };
        let fin = get(&mut h.client, &s.id, &s.secret).await.unwrap();
        assert_eq!(
            state(&fin),
            expected,
            "the stored state is the last winner's"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_auth_instances_share_one_nats() {
    let mut h = Harness::start().await;
    let second = TestAuth::spawn(&h.nats, &h.keys, |_| {}).await;
    let mut other = client(&second).await;
    let token = h.alice();

    // Each step on alternating instances.
    let s = create(&mut h.client).await;
    scan(&mut other, &s.id, &token).await.unwrap();
    confirm(&mut h.client, &s.id, &token).await.unwrap();
    let view = get(&mut other, &s.id, &s.secret).await.unwrap();
    assert_eq!(state(&view), LoginState::Confirmed);

    // Concurrent redeems spread over both instances: one write, one token
    // (the same browser's other redeems are repeats, answered the same).
    let tasks = (0..40).map(|i| {
        let mut client = if i % 2 == 0 {
            h.client.clone()
        } else {
            other.clone()
        };
        let (id, secret) = (s.id.clone(), s.secret.clone());
        tokio::spawn(async move { redeem(&mut client, &id, &secret).await })
    });
    let answers: Vec<_> = join_all(tasks)
        .await
        .into_iter()
        .filter_map(|r| r.unwrap().ok())
        .map(|r| (r.access_token, r.session.unwrap().version))
        .collect();
    assert!(!answers.is_empty(), "a redeem succeeds");
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "one token, one write"
    );

    // Races between instances on many sessions: confirm on one, cancel on the other.
    for _ in 0..10 {
        let s = scanned(&mut h).await;
        let (mut a, mut b) = (h.client.clone(), other.clone());
        let (ra, rb) = tokio::join!(
            confirm(&mut a, &s.id, &token),
            cancel(&mut b, &s.id, &s.secret)
        );
        assert_eq!(ra.is_ok() as u8 + rb.is_ok() as u8, 1);
    }
}
