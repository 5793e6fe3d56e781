//! Key-bound redemption through the real gRPC API: a session created with
//! the browser's public key redeems only with a fresh proof signed by that
//! key, so whoever stole the browser secret (and not the key) cannot.

use crate::common::*;
use qrlogin_auth::testing::BrowserKeyPair;
use qrlogin_proto::events::v1::LoginState;
use tonic::Code;

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A key-bound session taken to CONFIRMED by alice.
async fn confirmed_with_key(h: &mut Harness, key: &BrowserKeyPair) -> Created {
    let s = create_with(&mut h.client, create_request(Some(browser_key(key))))
        .await
        .unwrap();
    let token = h.alice();
    scan(&mut h.client, &s.id, &token).await.unwrap();
    confirm(&mut h.client, &s.id, &token).await.unwrap();
    s
}

#[tokio::test]
async fn a_stolen_secret_without_the_key_cannot_redeem() {
    let mut h = Harness::start().await;
    let key = BrowserKeyPair::generate();
    let thief = BrowserKeyPair::generate();
    let s = confirmed_with_key(&mut h, &key).await;

    let r = redeem(&mut h.client, &s.id, &s.secret).await;
    assert_eq!(reason(&r), "proof_required");
    assert_code(r, Code::Unauthenticated, "proof");
    for (proof, why) in [
        (thief.proof(&s.id, now_s()), "another key"),
        (key.proof(&s.id, now_s() - 3600), "iat"),
        (key.proof("AAAAAAAAAAAAAAAAAAAAAA", now_s()), "htu"),
        ("not.a.jwt".to_owned(), "malformed"),
    ] {
        let r = redeem_with(&mut h.client, &s.id, &s.secret, &proof).await;
        assert_eq!(reason(&r), "invalid_proof", "{why}");
        assert_code(r, Code::Unauthenticated, why);
    }
    assert_eq!(h.auth.counters().proof_refused, 5);
    // None of it moved the session; the real browser still redeems.
    let still = get(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(state(&still), LoginState::Confirmed);
    let proof = key.proof(&s.id, now_s());
    let redeemed = redeem_with(&mut h.client, &s.id, &s.secret, &proof)
        .await
        .unwrap();
    assert_eq!(redeemed.user_id, "alice");
    // The same proof again: the session is REDEEMED, so it is worth nothing.
    assert_code(
        redeem_with(&mut h.client, &s.id, &s.secret, &proof).await,
        Code::FailedPrecondition,
        "REDEEMED",
    );
}

#[tokio::test]
async fn create_answers_the_thumbprint_and_refuses_keys_that_are_not_p256() {
    let mut h = Harness::start().await;
    let key = BrowserKeyPair::generate();
    let r = h
        .client
        .create_login_session(create_request(Some(browser_key(&key))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.key_thumbprint, key.public().thumbprint().unwrap());
    let mut bad = browser_key(&key);
    bad.y = bad.x.clone();
    let r = create_with(&mut h.client, create_request(Some(bad))).await;
    assert_eq!(reason(&r), "invalid_key");
    assert_code(r, Code::InvalidArgument, "P-256");
}

#[tokio::test]
async fn without_a_key_the_secret_redeems_unless_binding_is_required() {
    let mut h = Harness::start().await;
    let s = confirmed(&mut h).await;
    redeem(&mut h.client, &s.id, &s.secret).await.unwrap();

    let mut strict = Harness::start_with(|c| c.protocol.require_key_binding = true).await;
    let r = create_with(&mut strict.client, create_request(None)).await;
    assert_eq!(reason(&r), "key_required");
    assert_code(r, Code::InvalidArgument, "browser_key");
    let key = BrowserKeyPair::generate();
    let s = confirmed_with_key(&mut strict, &key).await;
    assert_code(
        redeem(&mut strict.client, &s.id, &s.secret).await,
        Code::Unauthenticated,
        "proof",
    );
    let proof = key.proof(&s.id, now_s());
    redeem_with(&mut strict.client, &s.id, &s.secret, &proof)
        .await
        .unwrap();
}
