//! Phone tokens of a real OpenID Provider: panva's oidc-provider (pinned in
//! tools/oidc, installed by tools/bootstrap.sh) runs on 127.0.0.1 and a free
//! port for each test, and auth trusts it by OpenID discovery, beside the
//! development PEM key (two issuers at once, as during a migration).
//!
//! The provider issues JWT access tokens for qrlogin with the
//! client_credentials grant (see tools/oidc/provider.mjs for why), signed
//! with RS256, PS256, ES256 or EdDSA, and rotates or withdraws its keys on
//! command. Waiting is always on a condition (the provider's answer, a
//! token accepted or refused), bounded by a deadline.

use crate::common::*;
use qrlogin_auth::config::AuthConfig;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tonic::Code;

/// oidc-provider in a node process, killed on drop.
struct OidcProvider {
    issuer: String,
    _child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    http: reqwest::Client,
}

fn script() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/oidc");
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "tools/oidc/node_modules is missing: run tools/bootstrap.sh"
    );
    dir.join("provider.mjs")
}

impl OidcProvider {
    async fn start(audience: &str) -> Self {
        let mut child = tokio::process::Command::new("node")
            .arg(script())
            .args(["--audience", audience])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("run node (tools/oidc/provider.mjs)");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), stdout.next_line())
            .await
            .expect("oidc-provider did not start within 60 s")
            .expect("read oidc-provider")
            .expect("oidc-provider exited");
        let hello: serde_json::Value = serde_json::from_str(&first).expect("JSON hello");
        Self {
            issuer: hello["issuer"].as_str().expect("issuer").to_owned(),
            _child: child,
            stdin,
            stdout,
            http: reqwest::Client::new(),
        }
    }

    /// Sends a command; its answer.
    async fn command(&mut self, command: &str) -> serde_json::Value {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("write command");
        self.stdin.flush().await.expect("flush");
        let line = tokio::time::timeout(Duration::from_secs(30), self.stdout.next_line())
            .await
            .expect("oidc-provider answers")
            .expect("read")
            .expect("oidc-provider exited");
        serde_json::from_str(&line).expect("JSON answer")
    }

    async fn jwks_fetches(&mut self) -> u64 {
        self.command("keys").await["jwks_fetches"]
            .as_u64()
            .expect("count")
    }

    /// An access token for `user` (a client of the provider) signed with
    /// `alg` (rs256, ps256, es256, eddsa), from the token endpoint.
    async fn token(&self, user: &str, alg: &str) -> String {
        let answer: serde_json::Value = self
            .http
            .post(format!("{}/token", self.issuer))
            .basic_auth(user, Some(format!("secret-of-{user}")))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", &format!("urn:qrlogin:{alg}")),
            ])
            .send()
            .await
            .expect("token request")
            .json()
            .await
            .expect("token answer");
        answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access token: {answer}"))
            .to_owned()
    }
}

/// The kid in a token's header.
fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid")
}

/// Auth trusting `issuers` (and the test's PEM key), plain HTTP to
/// 127.0.0.1 allowed, the cache settings the test needs.
async fn auth_trusting(issuers: &str, tweak: impl FnOnce(&mut AuthConfig)) -> Harness {
    let issuers = issuers.to_owned();
    Harness::start_with(move |c| {
        c.identity.trusted_issuers = issuers;
        c.identity.dev_allow_http_loopback_issuers = true;
        c.identity.jwks_min_refresh_interval = Duration::from_millis(200);
        tweak(c);
    })
    .await
}

/// A whole login with `token` as the phone's: create, scan, confirm,
/// redeem; the redeem's (user id, display name).
async fn login(h: &mut Harness, token: &str) -> Result<(String, String), tonic::Status> {
    let s = create(&mut h.client).await;
    scan(&mut h.client, &s.id, token).await?;
    confirm(&mut h.client, &s.id, token).await?;
    let r = redeem(&mut h.client, &s.id, &s.secret).await?;
    Ok((r.user_id, r.user_display_name))
}

/// Scans a fresh session with `token`.
async fn scan_fresh(h: &mut Harness, token: &str) -> Result<(), tonic::Status> {
    let s = create(&mut h.client).await;
    scan(&mut h.client, &s.id, token).await.map(|_| ())
}

/// Scans until `accepted(result)` holds, at most 20 s.
async fn until(
    h: &mut Harness,
    token: &str,
    what: &str,
    accepted: impl Fn(&Result<(), tonic::Status>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = scan_fresh(h, token).await;
        if accepted(&r) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {r:?} after 20 s");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_real_providers_tokens_sign_in_with_every_allowed_algorithm() {
    let provider = OidcProvider::start("qrlogin").await;
    let mut h = auth_trusting(&provider.issuer, |_| {}).await;
    for (user, alg) in [
        ("alice", "rs256"),
        ("bob", "ps256"),
        ("carol", "es256"),
        ("alice", "eddsa"),
    ] {
        let token = provider.token(user, alg).await;
        let (id, shown) = login(&mut h, &token)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e:?}"));
        assert_eq!(id, user, "{alg}");
        let name = format!("{}{}", user[..1].to_uppercase(), &user[1..]);
        assert_eq!(shown, format!("{name} ({user})"), "{alg}");
    }
    // The development PEM key is trusted at the same time (a migration).
    let pem_token = h.alice();
    let (id, shown) = login(&mut h, &pem_token).await.expect("PEM issuer");
    assert_eq!((id.as_str(), shown.as_str()), ("alice", "Alice (alice)"));
}

#[tokio::test]
async fn the_shown_account_is_configurable_and_masked() {
    let provider = OidcProvider::start("qrlogin").await;
    let mut h = auth_trusting(&provider.issuer, |c| {
        c.identity.user_account_claim = "email".into();
        c.identity.user_account_mask = true;
    })
    .await;
    let token = provider.token("alice", "es256").await;
    let (id, shown) = login(&mut h, &token).await.expect("login");
    assert_eq!(id, "alice");
    assert_eq!(shown, "Alice (a***e@example.test)");
}

#[tokio::test]
async fn keys_rotate_with_an_overlap_and_a_withdrawn_key_is_refused_after_the_refresh() {
    let mut provider = OidcProvider::start("qrlogin").await;
    let mut h = auth_trusting(&provider.issuer, |c| {
        // The set is refreshed when it is a second old, so the withdrawal
        // below is seen within a second or two.
        c.identity.jwks_max_age = Duration::from_secs(1);
    })
    .await;
    let old_rs = provider.token("alice", "rs256").await;
    let old_es = provider.token("bob", "es256").await;
    login(&mut h, &old_rs).await.expect("before the rotation");

    let rotated = provider.command("rotate").await;
    let kids = rotated["kids"].as_array().expect("kids").len();
    assert_eq!(kids, 6, "new and old keys published: {rotated}");
    let new_rs = provider.token("alice", "rs256").await;
    let new_es = provider.token("bob", "es256").await;
    assert_ne!(kid_of(&new_rs), kid_of(&old_rs), "the new key signs");
    // The new kid is unknown to auth's cache: it refreshes (at most once per
    // QRLOGIN_JWKS_MIN_REFRESH_INTERVAL) and accepts it.
    until(&mut h, &new_rs, "token under the new kid", Result::is_ok).await;
    login(&mut h, &new_es).await.expect("new ES256 key");
    // Tokens under the old keys still verify: their keys are still published.
    login(&mut h, &old_rs)
        .await
        .expect("old RS256 key during the overlap");
    login(&mut h, &old_es)
        .await
        .expect("old ES256 key during the overlap");

    let withdrawn = provider.command("withdraw").await;
    assert_eq!(withdrawn["kids"].as_array().expect("kids").len(), 3);
    // Once auth refreshed its set, the old keys are gone.
    until(
        &mut h,
        &old_rs,
        "token under a withdrawn key",
        |r| matches!(r, Err(s) if s.code() == Code::Unauthenticated),
    )
    .await;
    assert_code(
        scan_fresh(&mut h, &old_es).await,
        Code::Unauthenticated,
        "signature",
    );
    login(&mut h, &new_rs)
        .await
        .expect("the current key still verifies");
    login(&mut h, &new_es)
        .await
        .expect("the current key still verifies");
}

#[tokio::test]
async fn random_kids_do_not_make_auth_hammer_the_provider() {
    let mut provider = OidcProvider::start("qrlogin").await;
    let mut h = auth_trusting(&provider.issuer, |c| {
        c.identity.jwks_min_refresh_interval = Duration::from_secs(300);
    })
    .await;
    let token = provider.token("alice", "rs256").await;
    login(&mut h, &token).await.expect("a real token");
    let before = provider.jwks_fetches().await;
    assert!(before >= 1, "auth fetched the keys");
    // The same token with 40 made-up kids: each is unknown.
    let (head, rest) = token.split_once('.').expect("JWT");
    let mut header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, head)
            .expect("b64"),
    )
    .expect("json");
    for i in 0..40 {
        header["kid"] = format!("random-{i}").into();
        let forged = format!(
            "{}.{rest}",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                header.to_string()
            )
        );
        assert_code(
            scan_fresh(&mut h, &forged).await,
            Code::Unauthenticated,
            "no key of the issuer",
        );
    }
    let after = provider.jwks_fetches().await;
    assert!(
        after - before <= 1,
        "40 unknown kids made auth fetch the keys {} times",
        after - before
    );
}

#[tokio::test]
async fn known_keys_keep_verifying_while_the_provider_is_away() {
    let provider = OidcProvider::start("qrlogin").await;
    let mut h = auth_trusting(&provider.issuer, |_| {}).await;
    let token = provider.token("alice", "es256").await;
    let other = provider.token("bob", "rs256").await;
    login(&mut h, &token)
        .await
        .expect("while the provider is up");
    drop(provider);
    login(&mut h, &token)
        .await
        .expect("the cached key verifies without the provider");
    login(&mut h, &other)
        .await
        .expect("every key of the cached set verifies");
}

/// An unsigned (`alg: none`) or HMAC token, whatever its claims.
fn forged(alg: &str, claims: &serde_json::Value, hmac_key: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    use hmac::Mac as _;
    let header = serde_json::json!({"alg": alg, "typ": "JWT", "kid": "whatever"});
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let signature = if alg == "none" {
        String::new()
    } else {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(hmac_key).expect("key");
        mac.update(input.as_bytes());
        B64.encode(mac.finalize().into_bytes())
    };
    format!("{input}.{signature}")
}

#[tokio::test]
async fn tokens_auth_must_not_trust_are_refused() {
    let provider = OidcProvider::start("qrlogin").await;
    // Another real provider, trusted, whose tokens are for another audience.
    let elsewhere = OidcProvider::start("someone-else").await;
    let untrusted = OidcProvider::start("qrlogin").await;
    let trusted = format!("{}, {}", provider.issuer, elsewhere.issuer);
    let mut h = auth_trusting(&trusted, |c| {
        // EdDSA stays for the harness's PEM key.
        c.identity.user_token_algorithms = "RS256,ES256,EdDSA".into();
    })
    .await;
    let good = provider.token("alice", "rs256").await;
    login(&mut h, &good).await.expect("the trusted provider");

    let claims: serde_json::Value =
        jsonwebtoken::dangerous::insecure_decode_claims(&good).expect("claims");
    let jwks: serde_json::Value = reqwest::get(format!("{}/jwks", provider.issuer))
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    // The classic confusion: the provider's public key as an HMAC secret.
    let public_n = jwks["keys"][0]["n"]
        .as_str()
        .expect("n")
        .as_bytes()
        .to_vec();
    for (case, token, needle) in [
        ("alg none", forged("none", &claims, b""), "algorithm"),
        (
            "HS256 with the public key",
            forged("HS256", &claims, &public_n),
            "algorithm",
        ),
        (
            "another audience",
            elsewhere.token("alice", "rs256").await,
            "audience",
        ),
        (
            "an issuer auth does not trust",
            untrusted.token("alice", "rs256").await,
            "issuer",
        ),
        (
            "PS256 while only RS256 and ES256 are allowed",
            provider.token("alice", "ps256").await,
            "algorithm",
        ),
    ] {
        let r = scan_fresh(&mut h, &token).await;
        assert!(
            matches!(&r, Err(s) if s.code() == Code::Unauthenticated
                && s.message().to_lowercase().contains(needle)),
            "{case}: {r:?}"
        );
    }
}

#[test]
fn plain_http_issuers_are_refused_outside_development() {
    let flags = [
        "--access-token-private-key-file",
        "/k/a.pem",
        "--record-key-file",
        "/k/r",
        "--service-tokens-file",
        "/k/t",
    ];
    let config = |issuers: &str, dev: bool| {
        let mut c = AuthConfig::from_flags(flags).expect("flags");
        c.identity.trusted_issuers = issuers.into();
        c.identity.dev_allow_http_loopback_issuers = dev;
        c.validate().map_err(|e| e.to_string())
    };
    config("https://id.example.com/realms/main", false).expect("https");
    for (issuers, dev) in [
        ("http://id.example.com", false),
        ("http://127.0.0.1:8080", false),
        (
            "https://id.example.com jwks_uri=http://id.example.com/keys",
            false,
        ),
        ("http://10.1.2.3:8080", true),
    ] {
        let err = config(issuers, dev).expect_err(issuers);
        assert!(err.contains("https://"), "{issuers}: {err}");
    }
    config("http://127.0.0.1:8080", true).expect("loopback in development");
    let err = config("", false).expect_err("no issuer at all");
    assert!(err.contains("QRLOGIN_TRUSTED_ISSUERS"), "{err}");
    let err = config(
        "https://a.example, https://a.example jwks_file=/k/a.json",
        false,
    )
    .expect_err("twice");
    assert!(err.contains("twice"), "{err}");
}
