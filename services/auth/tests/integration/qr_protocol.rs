//! The QR protocol's defences against someone who sees or relays the QR
//! code, through the real gRPC API against a real nats-server: number
//! matching, rotating payloads, no name before the confirm, per-user
//! limits, the multi-scan count and the proximity hint. Each test plays the
//! attack and checks that it fails with its documented code.

use crate::common::*;
use qrlogin_proto::events::v1::{DenyReason, LoginState};
use std::time::{Duration, Instant};
use tonic::Code;

/// A number among `choices` that is not `code` (what a victim picks who
/// sees no number on their own screen, in the relay attack).
fn wrong_pick(choices: &[u32], code: u32) -> u32 {
    *choices.iter().find(|&&c| c != code).expect("two decoys")
}

#[tokio::test]
async fn a_relayed_qr_code_fails_at_number_matching() {
    // The attacker opens the login page and relays its QR code to the
    // victim's phone; the victim scans and confirms. The number is on the
    // attacker's screen only, so the victim's pick is not it: the session
    // ends DENIED (wrong_match) and the attacker's browser cannot redeem.
    let mut h = Harness::start().await;
    let attacker = create(&mut h.client).await;
    let victim = h.alice();
    let scanned = scan(&mut h.client, &attacker.id, &victim).await.unwrap();
    let choices = scanned.match_choices;
    let code = get(&mut h.client, &attacker.id, &attacker.secret)
        .await
        .unwrap()
        .match_code;
    assert!((10..=99).contains(&code));
    let r = confirm_with(
        &mut h.client,
        &attacker.id,
        &victim,
        wrong_pick(&choices, code),
    )
    .await;
    assert_eq!(reason(&r), "wrong_match");
    assert_code(r, Code::PermissionDenied, "number");
    let fin = get(&mut h.client, &attacker.id, &attacker.secret)
        .await
        .unwrap();
    assert_eq!(state(&fin), LoginState::Denied);
    assert_eq!(fin.deny_reason, DenyReason::WrongMatch as i32);
    assert_eq!(fin.user_display_name, "", "the victim is never named");
    assert_code(
        redeem(&mut h.client, &attacker.id, &attacker.secret).await,
        Code::FailedPrecondition,
        "DENIED",
    );
    // One try: the right number afterwards does not help.
    assert_code(
        confirm_with(&mut h.client, &attacker.id, &victim, code).await,
        Code::FailedPrecondition,
        "DENIED",
    );
    assert_eq!(h.auth.counters().wrong_match, 1);
}

#[tokio::test]
async fn confirm_needs_a_pick_and_the_right_one_confirms() {
    let mut h = Harness::start().await;
    let token = h.alice();
    let s = scanned(&mut h).await;
    let r = confirm_with(&mut h.client, &s.id, &token, 0).await;
    assert_eq!(reason(&r), "match_required");
    assert_code(r, Code::InvalidArgument, "pick the number");
    let still = get(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(
        state(&still),
        LoginState::Scanned,
        "a missing pick changes nothing"
    );
    let confirmed = confirm_with(&mut h.client, &s.id, &token, still.match_code)
        .await
        .unwrap();
    assert_eq!(state(&confirmed), LoginState::Confirmed);
}

#[tokio::test]
async fn number_matching_can_be_turned_off() {
    let mut h = Harness::start_with(|c| c.protocol.number_matching = false).await;
    let token = h.alice();
    let s = create(&mut h.client).await;
    let scanned = scan(&mut h.client, &s.id, &token).await.unwrap();
    assert!(scanned.match_choices.is_empty());
    let shown = get(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(shown.match_code, 0);
    let confirmed = confirm_with(&mut h.client, &s.id, &token, 0).await.unwrap();
    assert_eq!(state(&confirmed), LoginState::Confirmed);
}

/// Waits (bounded) until the session shows a payload of at least `epoch`.
async fn payload_of_epoch(c: &mut Client, s: &Created, epoch: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let p = get(c, &s.id, &s.secret).await.unwrap().qr_payload;
        let shown: u64 = p
            .rsplit_once('#')
            .and_then(|(_, f)| f.split_once('.'))
            .and_then(|(e, _)| e.parse().ok())
            .expect("an epoch in the payload");
        if shown >= epoch {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "the payload never reached epoch {epoch}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_replayed_old_qr_code_is_refused_and_the_current_one_scans() {
    // A photo of the screen taken a rotation ago is worth nothing.
    let mut h = Harness::start_with(|c| {
        c.protocol.qr_rotation = Duration::from_secs(1);
        c.protocol.qr_grace = Duration::from_millis(200);
    })
    .await;
    let token = h.alice();
    let s = create(&mut h.client).await;
    let old = s.qr_payload.clone();
    let current = payload_of_epoch(&mut h.client, &s, 2).await;
    assert_ne!(old, current);
    let r = scan_with(&mut h.client, &s.id, &token, &old, "").await;
    assert_eq!(reason(&r), "qr_replaced");
    assert_code(r, Code::FailedPrecondition, "replaced");
    assert_eq!(h.auth.counters().qr_replaced, 1);
    let still = get(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(state(&still), LoginState::Pending);
    // The session id and its deadline stayed; only the payload moved.
    assert!(current.contains(&format!("/m/{}#", s.id)));
    let fresh = payload_of_epoch(&mut h.client, &s, 0).await;
    let scanned = scan_with(&mut h.client, &s.id, &token, &fresh, "")
        .await
        .unwrap();
    assert_eq!(state(&scanned.session.unwrap()), LoginState::Scanned);
}

#[tokio::test]
async fn a_missing_forged_or_foreign_payload_is_invalid() {
    let mut h = Harness::start().await;
    let token = h.alice();
    let s = create(&mut h.client).await;
    let other = create(&mut h.client).await;
    let (head, _) = s.qr_payload.rsplit_once('.').unwrap();
    let forged = format!("{head}.AAAAAAAAAAAAAAAA");
    let foreign = other.qr_payload.clone();
    for (payload, needle) in [
        ("", "required"),
        (
            "http://localhost:8080/m/not-a-session",
            "not a qrlogin QR payload",
        ),
        (forged.as_str(), "not issued for this login session"),
        (foreign.as_str(), "another login session"),
    ] {
        let r = scan_with(&mut h.client, &s.id, &token, payload, "").await;
        assert_eq!(reason(&r), "qr_invalid", "{payload}");
        assert_code(r, Code::InvalidArgument, needle);
    }
    assert_eq!(h.auth.counters().qr_invalid, 4);
    let still = get(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(state(&still), LoginState::Pending);
}

#[tokio::test]
async fn an_observer_who_scans_first_is_not_named_and_the_browser_can_start_over() {
    // Mallory saw the QR code and scans before Alice: the browser shows
    // SCANNED and a code, never Mallory's name; Alice's browser cancels.
    let mut h = Harness::start().await;
    let mallory = h.keys.user_token("mallory", "Mallory");
    let s = create(&mut h.client).await;
    scan(&mut h.client, &s.id, &mallory).await.unwrap();
    let shown = get(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(state(&shown), LoginState::Scanned);
    assert_eq!(shown.user_display_name, "");
    // Alice's phone now scans too: refused and counted.
    let alice = h.alice();
    assert_code(
        scan(&mut h.client, &s.id, &alice).await,
        Code::PermissionDenied,
        "another user",
    );
    assert_eq!(h.auth.counters().multi_scan, 1);
    // If Mallory confirms, the name is shown only now, and the browser's
    // user can refuse it: cancel after CONFIRMED.
    confirm(&mut h.client, &s.id, &mallory).await.unwrap();
    let shown = get(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(
        shown.user_display_name, "Mallory (mallory)",
        "the account that confirmed, not only the name it chose"
    );
    let cancelled = cancel(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(state(&cancelled), LoginState::Cancelled);
}

#[tokio::test]
async fn per_user_limits_hold_scans_and_confirms() {
    let mut h = Harness::start_with(|c| {
        c.protocol.scan_limit = 2;
        c.protocol.confirm_limit = 1;
    })
    .await;
    let mallory = h.keys.user_token("mallory", "Mallory");
    let a = create(&mut h.client).await;
    let b = create(&mut h.client).await;
    let c = create(&mut h.client).await;
    scan(&mut h.client, &a.id, &mallory).await.unwrap();
    scan(&mut h.client, &b.id, &mallory).await.unwrap();
    let r = scan(&mut h.client, &c.id, &mallory).await;
    let retry_after = r
        .as_ref()
        .err()
        .and_then(|s| s.metadata().get("retry-after"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(retry_after.is_some_and(|s| (1..=60).contains(&s)), "{r:?}");
    assert_eq!(reason(&r), "rate_limited");
    assert_code(r, Code::ResourceExhausted, "scans");
    // Another user is not affected.
    let alice = h.alice();
    scan(&mut h.client, &c.id, &alice).await.unwrap();
    confirm(&mut h.client, &a.id, &mallory).await.unwrap();
    let r = confirm(&mut h.client, &b.id, &mallory).await;
    assert_eq!(reason(&r), "rate_limited");
    assert_code(r, Code::ResourceExhausted, "confirms");
    let still = get(&mut h.client, &b.id, &b.secret).await.unwrap();
    assert_eq!(state(&still), LoginState::Scanned);
    assert_eq!(h.auth.counters().user_limited, 2);
}

/// Finding: a limit read before the write and counted after it let a burst
/// of concurrent scans by one user through together. Each attempt now takes
/// the counter by compare-and-swap before its write: of twelve concurrent
/// scans of twelve sessions with a limit of five, exactly five scan.
#[tokio::test]
async fn concurrent_scans_of_one_user_cannot_pass_the_limit_together() {
    let mut h = Harness::start_with(|c| c.protocol.scan_limit = 5).await;
    let mallory = h.keys.user_token("mallory", "Mallory");
    let mut sessions = Vec::new();
    for _ in 0..12 {
        sessions.push(create(&mut h.client).await);
    }
    let scans = sessions.iter().map(|s| {
        let mut client = h.client.clone();
        let (id, payload, token) = (s.id.clone(), s.qr_payload.clone(), mallory.clone());
        async move { scan_with(&mut client, &id, &token, &payload, "").await }
    });
    let results = futures::future::join_all(scans).await;
    let scanned = results.iter().filter(|r| r.is_ok()).count();
    let limited = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
        .count();
    assert_eq!((scanned, limited), (5, 7), "{results:?}");
    assert_eq!(h.auth.counters().user_limited, 7);
}

/// Refused attempts count: a user guessing QR payloads spends the limit.
#[tokio::test]
async fn refused_scans_count_against_the_limit() {
    let mut h = Harness::start_with(|c| c.protocol.scan_limit = 2).await;
    let mallory = h.keys.user_token("mallory", "Mallory");
    let s = create(&mut h.client).await;
    let guess = format!("http://localhost:8080/m/{}#0.AAAAAAAAAAAAAAAA", s.id);
    for _ in 0..2 {
        let r = scan_with(&mut h.client, &s.id, &mallory, &guess, "").await;
        assert_eq!(
            r.as_ref().err().map(|e| e.code()),
            Some(Code::InvalidArgument),
            "{r:?}"
        );
    }
    let r = scan(&mut h.client, &s.id, &mallory).await;
    assert_eq!(reason(&r), "rate_limited");
    let still = get(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(state(&still), LoginState::Pending);
}

/// A per-user counter that cannot be read lets the call through, as for
/// creates: the counter bucket is held in memory (a single server's restart
/// empties it), and a counter in trouble must not stop every login. Here
/// the limits bucket's direct reads are turned off under auth, which reads
/// counters that way; the session bucket is untouched.
#[tokio::test]
async fn an_unreadable_user_counter_lets_the_scan_through() {
    let mut h = Harness::start_with(|c| c.protocol.scan_limit = 1).await;
    let alice = h.alice();
    let first = create(&mut h.client).await;
    scan(&mut h.client, &first.id, &alice).await.unwrap();
    let js = async_nats::jetstream::new(h.nats.connect_as_auth().await.unwrap());
    let mut stream = js
        .get_stream(format!("KV_{}", qrlogin_auth::testing::TEST_LIMITS_BUCKET))
        .await
        .unwrap();
    let config = stream.info().await.unwrap().config.clone();
    js.update_stream(async_nats::jetstream::stream::Config {
        allow_direct: false,
        ..config.clone()
    })
    .await
    .unwrap();
    let second = create(&mut h.client).await;
    scan(&mut h.client, &second.id, &alice).await.unwrap();
    // Readable again: the limit holds again.
    js.update_stream(config).await.unwrap();
    let third = create(&mut h.client).await;
    assert_eq!(
        reason(&scan(&mut h.client, &third.id, &alice).await),
        "rate_limited"
    );
}

#[tokio::test]
async fn the_phone_learns_whether_the_browser_shares_its_network() {
    let mut h = Harness::start().await;
    let token = h.alice();
    // The browser came from 203.0.113.7 (see create_request).
    for (phone, same) in [
        ("203.0.113.200", Some(true)),
        ("203.0.114.7", Some(false)),
        ("2001:db8::1", Some(false)),
        ("", None),
    ] {
        let s = create(&mut h.client).await;
        let r = scan_with(&mut h.client, &s.id, &token, &s.qr_payload, phone)
            .await
            .unwrap();
        assert_eq!(r.same_network, same, "{phone}");
    }
    let s = create(&mut h.client).await;
    assert_code(
        scan_with(&mut h.client, &s.id, &token, &s.qr_payload, "nowhere").await,
        Code::InvalidArgument,
        "client_ip",
    );
}
