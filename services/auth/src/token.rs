//! Tokens: the errors of phone users' JWTs (verified by
//! [`crate::identity`]) and signing the access tokens that redemption
//! issues (EdDSA, Ed25519).
//!
//! Also the development helpers `dev-keygen` and `dev-token` use: they make
//! keys and user tokens for demos and tests, never for production.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

use crate::domain::{PhoneUser, UnixMillis};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("missing user token: send `authorization: Bearer <JWT>`")]
    Missing,
    #[error("malformed authorization header: expected `Bearer <JWT>`")]
    MalformedHeader,
    #[error("user token expired")]
    Expired,
    #[error("invalid user token: {0}")]
    Invalid(String),
    /// The token's issuer is trusted, but none of its keys can be had (never
    /// fetched, or stale past QRLOGIN_JWKS_MAX_STALE).
    #[error("the keys of the token's issuer are unavailable; retry later")]
    KeysUnavailable,
}

impl TokenError {
    /// A short, fixed name of the failure (metrics label).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::MalformedHeader => "malformed",
            Self::Expired => "expired",
            Self::Invalid(_) => "invalid",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} is not an Ed25519 PEM key: {reason}")]
    Parse { path: String, reason: String },
    #[error("cannot sign token: {0}")]
    Sign(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct UserClaims {
    sub: String,
    /// The account the browser shows (QRLOGIN_USER_ACCOUNT_CLAIM's default).
    preferred_username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    iss: String,
    aud: String,
    exp: u64,
    /// Required: the lifetime is measured from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct AccessClaims {
    sub: String,
    name: String,
    iss: String,
    aud: String,
    exp: u64,
    iat: u64,
    jti: String,
    /// The login session that issued this token.
    sid: String,
    /// RFC 9449: the thumbprint of the browser key the login was bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cnf: Option<Confirmation>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Confirmation {
    jkt: String,
}

fn read_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn parse_err(path: &Path, e: impl std::fmt::Display) -> KeyError {
    KeyError::Parse {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Signs the access tokens handed out by redemption.
#[derive(Clone)]
pub struct AccessTokenSigner {
    key: EncodingKey,
    /// The key's RFC 7638 thumbprint, in every token's header.
    kid: String,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl std::fmt::Debug for AccessTokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokenSigner")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A signed access token and when it expires.
pub struct AccessToken {
    pub token: String,
    pub expires_at: UnixMillis,
}

impl AccessTokenSigner {
    pub fn from_pem_file(
        path: &Path,
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<Self, KeyError> {
        let pem = read_key(path)?;
        let key = EncodingKey::from_ed_pem(&pem).map_err(|e| parse_err(path, e))?;
        // Fail at start, not at the first redeem, if the key cannot sign.
        encode(&Header::new(Algorithm::EdDSA), &serde_json::json!({}), &key)
            .map_err(|e| parse_err(path, e))?;
        let kid = crate::signing::PublicKey::from_pem(&String::from_utf8_lossy(&pem))
            .map_err(|e| parse_err(path, e))?
            .kid;
        Ok(Self {
            key,
            kid,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
        })
    }

    /// The access token of the login `session_id` redeemed by `user` at
    /// `redeemed_at`; `jkt`: the thumbprint of the browser key the login was
    /// bound to, if it was (`cnf.jkt`). A pure function of these and the
    /// signing key: Ed25519 signatures are deterministic, the header's `kid`
    /// is the key's thumbprint and every claim comes from the arguments,
    /// `jti` included, so signing again for a retried redeem gives the very
    /// same token, not a second one.
    pub fn sign(
        &self,
        user: &PhoneUser,
        session_id: &str,
        redeemed_at: UnixMillis,
        jkt: Option<&str>,
    ) -> Result<AccessToken, KeyError> {
        use sha2::{Digest as _, Sha256};
        let iat = u64::try_from(redeemed_at / 1000).unwrap_or(0);
        let exp = iat.saturating_add(self.ttl.as_secs().max(1));
        // Unique per token: one REDEEMED per session, and session ids are
        // 128 random bits.
        let digest = Sha256::new()
            .chain_update(b"qrlogin access token jti\0")
            .chain_update(session_id.as_bytes())
            .chain_update(redeemed_at.to_be_bytes())
            .finalize();
        let jti = &digest[..16];
        let claims = AccessClaims {
            sub: user.id.clone(),
            name: user.display_name.clone(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp,
            iat,
            jti: URL_SAFE_NO_PAD.encode(jti),
            sid: session_id.to_owned(),
            cnf: jkt.map(|jkt| Confirmation {
                jkt: jkt.to_owned(),
            }),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let token =
            encode(&header, &claims, &self.key).map_err(|e| KeyError::Sign(e.to_string()))?;
        Ok(AccessToken {
            token,
            expires_at: i64::try_from(exp).unwrap_or(i64::MAX).saturating_mul(1000),
        })
    }
}

/// A freshly generated Ed25519 key pair as PEM text.
pub struct DevKeyPair {
    pub private_pem: String,
    pub public_pem: String,
}

/// Generates an Ed25519 key pair (PKCS#8 private, SPKI public).
pub fn generate_key_pair() -> Result<DevKeyPair, KeyError> {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let private_pem = signing
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Sign(e.to_string()))?
        .to_string();
    let public_pem = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::Sign(e.to_string()))?;
    Ok(DevKeyPair {
        private_pem,
        public_pem,
    })
}

/// What a development user token says.
#[derive(Debug, Clone)]
pub struct DevTokenRequest<'a> {
    pub user_id: &'a str,
    pub display_name: &'a str,
    pub issuer: &'a str,
    pub audience: &'a str,
    pub ttl: Duration,
    /// Seconds since the epoch to use as `iat` (tests mint expired tokens).
    pub issued_at: u64,
}

/// Mints a phone user token with a development key. For demos and tests.
pub fn mint_dev_user_token(
    private_pem: &[u8],
    req: &DevTokenRequest<'_>,
) -> Result<String, KeyError> {
    let key = EncodingKey::from_ed_pem(private_pem).map_err(|e| KeyError::Sign(e.to_string()))?;
    let claims = UserClaims {
        sub: req.user_id.to_owned(),
        preferred_username: req.user_id.to_owned(),
        name: Some(req.display_name.to_owned()),
        iss: req.issuer.to_owned(),
        aud: req.audience.to_owned(),
        iat: Some(req.issued_at),
        exp: req.issued_at.saturating_add(req.ttl.as_secs()),
        nbf: None,
    };
    encode(&Header::new(Algorithm::EdDSA), &claims, &key).map_err(|e| KeyError::Sign(e.to_string()))
}

/// Seconds since the Unix epoch, for `iat`.
pub fn unix_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_token_is_a_function_of_the_redeemed_record() {
        let pair = generate_key_pair().unwrap();
        let path = std::env::temp_dir().join(format!(
            "qrlogin-token-test-{}-{}.pem",
            std::process::id(),
            unix_now_secs()
        ));
        std::fs::write(&path, &pair.private_pem).unwrap();
        let signer = AccessTokenSigner::from_pem_file(
            &path,
            "qrlogin",
            "qrlogin-web",
            Duration::from_secs(3600),
        )
        .unwrap();
        std::fs::remove_file(&path).unwrap();
        let alice = PhoneUser {
            id: "alice".into(),
            display_name: "Alice".into(),
        };
        let at = 1_800_000_000_123;
        let thumbprint = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
        let jkt = Some(thumbprint);
        let first = signer.sign(&alice, "session-1", at, jkt).unwrap();
        let again = signer.sign(&alice, "session-1", at, jkt).unwrap();
        assert_eq!(first.token, again.token, "a retry gets the same token");
        assert_eq!(first.expires_at, again.expires_at);
        let part = |t: &str, i: usize| -> serde_json::Value {
            let b64 = t.split('.').nth(i).unwrap();
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(b64).unwrap()).unwrap()
        };
        let public = crate::signing::PublicKey::from_pem(&pair.public_pem).unwrap();
        assert_eq!(part(&first.token, 0)["kid"], public.kid.as_str());
        assert_eq!(part(&first.token, 1)["cnf"]["jkt"], thumbprint);
        let unbound = signer.sign(&alice, "session-1", at, None).unwrap();
        assert!(part(&unbound.token, 1).get("cnf").is_none());
        let jti = |t: &str| part(t, 1)["jti"].as_str().unwrap().to_owned();
        let other_session = signer.sign(&alice, "session-2", at, jkt).unwrap();
        let later = signer.sign(&alice, "session-1", at + 1, jkt).unwrap();
        assert_ne!(jti(&first.token), jti(&other_session.token));
        assert_ne!(jti(&first.token), jti(&later.token));
    }
}
