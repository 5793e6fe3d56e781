//! Phone users' tokens, beyond signature, issuer and audience: the time
//! claims (`nbf`, `iat`, the lifetime) and the text claims, which the
//! browser shows. Each case is one a lax verifier would let through.

use crate::common::*;
use qrlogin_auth::token::unix_now_secs;
use serde_json::json;
use tonic::Code;

/// Scans a fresh session with `token`; the call's result.
async fn scan_with(h: &mut Harness, token: &str) -> Result<(), tonic::Status> {
    let s = create(&mut h.client).await;
    scan(&mut h.client, &s.id, token).await.map(|_| ())
}

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let now = unix_now_secs();
    let mut base = json!({
        "sub": "alice", "preferred_username": "alice", "name": "Alice",
        "iss": "qrlogin-dev", "aud": "qrlogin",
        "iat": now, "exp": now + 600,
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

#[tokio::test]
async fn time_claims_are_all_checked() {
    let mut h =
        Harness::start_with(|c| c.user_token_max_lifetime = std::time::Duration::from_secs(3600))
            .await;
    let now = unix_now_secs();
    let good = h.keys.user_token_claims(&claims(json!({})));
    scan_with(&mut h, &good).await.expect("a plain token works");

    for (case, extra, needle) in [
        ("nbf in the future", json!({"nbf": now + 600}), "nbf"),
        (
            "iat in the future",
            json!({"iat": now + 600, "exp": now + 900}),
            "future",
        ),
        ("no iat", json!({"iat": null}), "iat"),
        (
            "lifetime above the maximum",
            json!({"exp": now + 7200}),
            "lifetime",
        ),
        (
            "an old token that is still unexpired",
            json!({"iat": now - 30 * 24 * 3600, "exp": now + 60}),
            "lifetime",
        ),
    ] {
        let token = h.keys.user_token_claims(&claims(extra));
        assert_code(
            scan_with(&mut h, &token).await,
            Code::Unauthenticated,
            needle,
        );
        let _ = case;
    }
    // nbf in the past and iat a few seconds ahead (clock skew) are fine.
    let skewed = h
        .keys
        .user_token_claims(&claims(json!({"nbf": now - 10, "iat": now + 2})));
    scan_with(&mut h, &skewed).await.expect("within the leeway");
}

#[tokio::test]
async fn control_and_format_characters_in_names_are_refused() {
    let mut h = Harness::start().await;
    for (field, value) in [
        ("sub", "alice\u{202E}nimda"),
        ("sub", "ali\u{200B}ce"),
        ("sub", "alice\n"),
        ("name", "Alice \u{202E}nimdA"),
        ("name", "Al\u{2066}ice"),
        ("name", "Ali\u{0007}ce"),
    ] {
        let token = h.keys.user_token_claims(&claims(json!({ field: value })));
        assert_code(
            scan_with(&mut h, &token).await,
            Code::Unauthenticated,
            "control or format",
        );
    }
    let token = h
        .keys
        .user_token_claims(&claims(json!({"name": "Zoë Ünal 山田"})));
    scan_with(&mut h, &token)
        .await
        .expect("letters of any script");
}

#[tokio::test]
async fn create_refuses_format_characters_in_the_user_agent() {
    let mut h = Harness::start().await;
    for ua in [
        "Mozilla\u{202E}gpj.exe",
        "Chrome\u{200B}",
        "Safari\u{2067}x",
    ] {
        let r = h
            .client
            .create_login_session(qrlogin_proto::auth::v1::CreateLoginSessionRequest {
                client_ip: "203.0.113.5".into(),
                user_agent: ua.into(),
                browser_key: None,
            })
            .await;
        assert_code(r, Code::InvalidArgument, "user_agent");
    }
}

#[test]
fn a_configuration_where_user_and_access_tokens_look_alike_is_refused() {
    let config = qrlogin_auth::config::AuthConfig::from_flags([
        "--user-token-public-key-file",
        "/k/u.pub",
        "--access-token-private-key-file",
        "/k/a.pem",
        "--record-key-file",
        "/k/r",
        "--service-tokens-file",
        "/k/t",
        "--access-token-issuer",
        "shared",
        "--access-token-audience",
        "everyone",
        "--user-token-issuer",
        "shared",
        "--user-token-audience",
        "everyone",
    ])
    .unwrap();
    let err = config.validate().unwrap_err().to_string();
    assert!(
        err.contains("must not share both issuer and audience"),
        "{err}"
    );
}
