//! The tokens auth issues, as a relying party checks them: every access
//! token names its key (`kid`, the key's RFC 7638 thumbprint) and verifies
//! with the JWK Set of GetSigningKeys; a key-bound login's token says so
//! (`cnf.jkt`, RFC 9449); and the key rotates with an overlap (next key
//! published first, previous key kept until its tokens expired), the
//! procedure of docs/operations.md, with auth restarted at each step as a
//! rolling deployment would.

use crate::common::*;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use qrlogin_auth::testing::{BrowserKeyPair, TestAuth};
use qrlogin_proto::auth::v1 as pb;

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn jwks(c: &mut Client) -> JwkSet {
    let r = c
        .get_signing_keys(pb::GetSigningKeysRequest {})
        .await
        .expect("GetSigningKeys")
        .into_inner();
    serde_json::from_str(&r.jwks).expect("a JWK Set")
}

/// Verifies `token` as a relying party would: the key its `kid` names in
/// `set`, EdDSA, qrlogin's issuer and audience. The claims, or why not.
fn verify(token: &str, set: &JwkSet) -> Result<serde_json::Value, String> {
    let kid = decode_header(token)
        .map_err(|e| e.to_string())?
        .kid
        .ok_or("no kid")?;
    let jwk = set
        .find(&kid)
        .ok_or(format!("kid {kid} is not published"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_issuer(&["qrlogin"]);
    v.set_audience(&["qrlogin-web"]);
    decode::<serde_json::Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

/// A whole login by alice; the access token.
async fn access_token(c: &mut Client, alice: &str) -> String {
    let s = create(c).await;
    scan(c, &s.id, alice).await.expect("scan");
    confirm(c, &s.id, alice).await.expect("confirm");
    redeem(c, &s.id, &s.secret)
        .await
        .expect("redeem")
        .access_token
}

#[tokio::test]
async fn access_tokens_name_their_key_and_a_bound_login_says_so() {
    let mut h = Harness::start().await;
    let alice = h.alice();
    let set = jwks(&mut h.client).await;
    assert_eq!(set.keys.len(), 1, "the current key only");

    let token = access_token(&mut h.client, &alice).await;
    let claims = verify(&token, &set).expect("verifies with the published key");
    assert_eq!(claims["sub"], "alice");
    assert!(claims.get("cnf").is_none(), "an unbound login has no cnf");

    let key = BrowserKeyPair::generate();
    let s = create_with(&mut h.client, create_request(Some(browser_key(&key))))
        .await
        .expect("create");
    let thumbprint = {
        let r = h
            .client
            .create_login_session(create_request(Some(browser_key(&key))))
            .await
            .expect("create")
            .into_inner();
        r.key_thumbprint
    };
    assert!(!thumbprint.is_empty());
    scan(&mut h.client, &s.id, &alice).await.expect("scan");
    confirm(&mut h.client, &s.id, &alice)
        .await
        .expect("confirm");
    let proof = key.proof(&s.id, now_s());
    let redeemed = redeem_with(&mut h.client, &s.id, &s.secret, &proof)
        .await
        .expect("redeem with the proof");
    let claims = verify(&redeemed.access_token, &set).expect("verifies");
    assert_eq!(
        claims["cnf"]["jkt"], thumbprint,
        "cnf.jkt is the browser key's thumbprint"
    );
    // A retry after a lost answer, with a new proof of the same key: the
    // very same token, kid and cnf.jkt included.
    let proof = key.proof(&s.id, now_s());
    let again = redeem_with(&mut h.client, &s.id, &s.secret, &proof)
        .await
        .expect("the repeated redeem");
    assert_eq!(again.access_token, redeemed.access_token, "one token");
}

#[tokio::test]
async fn the_key_rotates_with_an_overlap() {
    let mut h = Harness::start().await;
    let alice = h.alice();
    let dir = tempfile::tempdir().unwrap();
    let next = qrlogin_auth::token::generate_key_pair().unwrap();
    let (next_private, next_public) = (dir.path().join("next.pem"), dir.path().join("next.pub"));
    std::fs::write(&next_private, &next.private_pem).unwrap();
    std::fs::write(&next_public, &next.public_pem).unwrap();
    let old_private = h.keys.access_private_key_path();

    let old_token = access_token(&mut h.client, &alice).await;
    let old_kid = decode_header(&old_token).unwrap().kid.unwrap();

    // 1. The next key is published ahead; the current one still signs.
    let step1 = TestAuth::spawn(&h.nats, &h.keys, |c| {
        c.access_token_next_key_file = Some(next_public.clone());
    })
    .await;
    let mut c1 = client(&step1).await;
    let set = jwks(&mut c1).await;
    assert_eq!(set.keys.len(), 2, "current and next");
    let token = access_token(&mut c1, &alice).await;
    assert_eq!(decode_header(&token).unwrap().kid.unwrap(), old_kid);
    verify(&old_token, &set).expect("the current key verifies");
    step1.stop().await;

    // 2. The next key signs; the previous one stays published.
    let step2 = TestAuth::spawn(&h.nats, &h.keys, |c| {
        c.access_token_private_key_file = next_private.clone();
        c.access_token_previous_key_file = Some(old_private.clone());
    })
    .await;
    let mut c2 = client(&step2).await;
    let set = jwks(&mut c2).await;
    assert_eq!(set.keys.len(), 2, "current and previous");
    let new_token = access_token(&mut c2, &alice).await;
    let new_kid = decode_header(&new_token).unwrap().kid.unwrap();
    assert_ne!(new_kid, old_kid, "the new key signs");
    assert_eq!(
        set.keys[0].common.key_id.as_deref(),
        Some(new_kid.as_str()),
        "the current key comes first"
    );
    verify(&new_token, &set).expect("the new key verifies");
    verify(&old_token, &set).expect("an old token verifies during the overlap");
    step2.stop().await;

    // 3. Once old tokens expired, the previous key is dropped.
    let step3 = TestAuth::spawn(&h.nats, &h.keys, |c| {
        c.access_token_private_key_file = next_private.clone();
    })
    .await;
    let mut c3 = client(&step3).await;
    let set = jwks(&mut c3).await;
    assert_eq!(set.keys.len(), 1);
    verify(&new_token, &set).expect("the current key verifies");
    let refused = verify(&old_token, &set).expect_err("the old key is gone");
    assert!(refused.contains("not published"), "{refused}");
}
