//! The attack of the trust-boundary review: write a CONFIRMED record for
//! `admin` into `$KV.qrlogin_sessions.<id>` of a session one created, then
//! redeem it. Before NATS had accounts and the records were sealed, any
//! NATS client could, and redeem signed an access token for `admin` (this
//! test failed on that code). Now: an anonymous client cannot connect, the
//! edge's credential cannot write, and even a client that can write the
//! bucket cannot make auth accept a record it did not seal.

use crate::common::*;
use async_nats::jetstream;
use prost::Message as _;
use qrlogin_auth::testing::Permissions;
use qrlogin_proto::events::v1::{LoginEvent, LoginState, StoredSession};
use sha2::Digest as _;
use std::time::Duration;

/// The record the old code stored (JSON), CONFIRMED by `admin`.
fn forged_json(id: &str, secret: &str) -> Vec<u8> {
    let secret_sha256: String = sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let now = qrlogin_auth::service::now_millis();
    serde_json::to_vec(&serde_json::json!({
        "id": id, "state": "CONFIRMED", "secret_sha256": secret_sha256,
        "browser": {"ip": "203.0.113.7", "user_agent": "x", "created_at": now},
        "user": {"id": "admin", "display_name": "Administrator"},
        "updated_at": now, "expires_at": now + 30_000,
    }))
    .unwrap()
}

/// Today's format with the public part saying CONFIRMED and a sealed part
/// made without auth's key.
fn forged_stored(id: &str, secret: &str) -> Vec<u8> {
    let json = forged_json(id, secret);
    let outsider = qrlogin_auth::sealing::Sealer::from_key(&[42; 32]);
    StoredSession {
        event: Some(LoginEvent {
            session_id: id.into(),
            state: LoginState::Confirmed as i32,
            user_display_name: "Administrator".into(),
            ..Default::default()
        }),
        sealed: outsider.seal(id, &json).unwrap(),
    }
    .encode_to_vec()
}

/// Writes `value` as the session's record with a JetStream publish; true
/// when NATS acknowledged the write.
async fn write(client: async_nats::Client, id: &str, value: Vec<u8>) -> bool {
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(1));
    match js
        .publish(format!("$KV.qrlogin_sessions.{id}"), value.into())
        .await
    {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    }
}

#[track_caller]
fn assert_not_admin(
    redeemed: &Result<qrlogin_proto::auth::v1::RedeemLoginSessionResponse, tonic::Status>,
) {
    assert!(
        redeemed.as_ref().map_or(true, |r| r.user_id != "admin"),
        "signed in as admin with a forged record: {redeemed:?}"
    );
    assert!(
        redeemed.is_err(),
        "redeem of an unconfirmed session succeeded"
    );
}

#[tokio::test]
async fn a_record_forged_on_nats_does_not_sign_anyone_in() {
    let mut h = Harness::start().await;

    // 1. Without credentials there is no connection at all.
    let s = create(&mut h.client).await;
    assert!(async_nats::connect(h.nats.url()).await.is_err());

    // 2. The edge's credential (a compromised edge pod) cannot write.
    let edge = h.nats.connect(&h.nats.edge_seed_file()).await.unwrap();
    assert!(!write(edge.clone(), &s.id, forged_json(&s.id, &s.secret)).await);
    assert!(!write(edge, &s.id, forged_stored(&s.id, &s.secret)).await);
    assert_not_admin(&redeem(&mut h.client, &s.id, &s.secret).await);
    let read = get(&mut h.client, &s.id, &s.secret).await.unwrap();
    assert_eq!(
        state(&read),
        LoginState::Pending,
        "the session is untouched"
    );

    // 3. A client that can write the bucket (a leaked write credential, a
    // mistake in nats.conf) still cannot forge: auth reads only the sealed
    // part, which it alone can make.
    let writer_seed = h
        .nats
        .add_user(
            "bucket-writer",
            Permissions {
                publish: vec!["$KV.qrlogin_sessions.>".into()],
                subscribe: vec!["_INBOX.>".into()],
            },
        )
        .await;
    for forged in [forged_json, forged_stored] {
        let s = create(&mut h.client).await;
        let writer = h.nats.connect(&writer_seed).await.unwrap();
        assert!(write(writer, &s.id, forged(&s.id, &s.secret)).await);
        let redeemed = redeem(&mut h.client, &s.id, &s.secret).await;
        assert_not_admin(&redeemed);
        // A fixed text: nothing about the record or the key reaches the caller.
        assert_code(redeemed, tonic::Code::Internal, "internal error");
    }
}
