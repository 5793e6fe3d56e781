//! Key-bound redemption (ideas of RFC 9449, DPoP): the browser makes an
//! ECDSA P-256 key pair at create (WebCrypto, private key not extractable)
//! and sends the public key; auth keeps its RFC 7638 thumbprint. Redeem
//! then needs a fresh proof JWT signed by that key, so a stolen browser
//! secret alone cannot redeem. This file checks keys and proofs; it knows
//! no tonic or NATS.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::time::Duration;

use crate::domain::UnixMillis;

/// Longest proof we read; real ones are about 600 bytes.
const MAX_PROOF_LEN: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("browser_key must be an EC P-256 public key (kty EC, crv P-256, x and y of 32 bytes base64url, a point on the curve)")]
    InvalidKey,
    #[error("this login session is bound to a browser key: redeem needs a proof signed by it")]
    Missing,
    #[error("the proof of the browser key does not verify: {0}")]
    Invalid(&'static str),
}

/// A browser's public key as a JWK's members.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BrowserKey {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub y: String,
}

impl BrowserKey {
    /// The verifying key, when this is a valid P-256 public key.
    fn verifying_key(&self) -> Result<VerifyingKey, ProofError> {
        if self.kty != "EC" || self.crv != "P-256" {
            return Err(ProofError::InvalidKey);
        }
        let coordinate = |text: &str| -> Result<[u8; 32], ProofError> {
            let bytes = URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|_| ProofError::InvalidKey)?;
            bytes.try_into().map_err(|_| ProofError::InvalidKey)
        };
        let (x, y) = (coordinate(&self.x)?, coordinate(&self.y)?);
        let point = p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
        VerifyingKey::from_encoded_point(&point).map_err(|_| ProofError::InvalidKey)
    }

    /// Checks the key and returns its RFC 7638 thumbprint: base64url of the
    /// SHA-256 of the required members in lexicographic order, no spaces.
    pub fn thumbprint(&self) -> Result<String, ProofError> {
        self.verifying_key()?;
        let canonical = format!(
            r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#,
            self.crv, self.kty, self.x, self.y
        );
        Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
    }
}

#[derive(Deserialize)]
struct Header {
    typ: Option<String>,
    alg: Option<String>,
    jwk: Option<HeaderJwk>,
}

/// The header's `jwk`: a public key, and nothing private beside it.
#[derive(Deserialize)]
struct HeaderJwk {
    #[serde(flatten)]
    key: BrowserKey,
    /// A private key's members (EC `d`; RSA's others never parse as P-256):
    /// a client that sends its private key has leaked it.
    d: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Claims {
    htm: Option<String>,
    htu: Option<String>,
    iat: Option<i64>,
    jti: Option<String>,
    sid: Option<String>,
}

/// What a proof must show, besides its key.
pub struct Expected<'a> {
    pub session_id: &'a str,
    pub thumbprint: &'a str,
    pub now: UnixMillis,
    pub max_age: Duration,
}

/// The path every proof's `htu` must have.
pub fn redeem_path(session_id: &str) -> String {
    format!("/v1/login-sessions/{session_id}/redeem")
}

/// The path of an absolute URL, without query or fragment.
fn url_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let path = &rest[rest.find('/')?..];
    Some(path.split(['?', '#']).next().unwrap_or(path))
}

fn part<T: for<'de> Deserialize<'de>>(text: &str, what: &'static str) -> Result<T, ProofError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| ProofError::Invalid(what))?;
    serde_json::from_slice(&bytes).map_err(|_| ProofError::Invalid(what))
}

/// A short name of a proof (a digest of its text), kept in the redeemed
/// record so that the same proof cannot be presented twice. Naming an
/// unverified proof is harmless: only a verified one is ever accepted.
pub fn fingerprint(proof: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"qrlogin redeem proof\0")
        .chain_update(proof.as_bytes())
        .finalize();
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// Verifies a proof JWT (compact form) against `expected`.
pub fn verify(proof: &str, expected: &Expected<'_>) -> Result<(), ProofError> {
    use subtle::ConstantTimeEq as _;
    if proof.is_empty() {
        return Err(ProofError::Missing);
    }
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::Invalid("too long"));
    }
    let mut parts = proof.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProofError::Invalid("not a compact JWS"));
    };
    let header: Header = part(h, "malformed header")?;
    if header.typ.as_deref() != Some("dpop+jwt") {
        return Err(ProofError::Invalid("typ must be dpop+jwt"));
    }
    if header.alg.as_deref() != Some("ES256") {
        return Err(ProofError::Invalid("alg must be ES256"));
    }
    let jwk = header
        .jwk
        .ok_or(ProofError::Invalid("the header carries no jwk"))?;
    if jwk.d.is_some() {
        return Err(ProofError::Invalid(
            "the header's jwk carries a private key (d)",
        ));
    }
    let jwk = jwk.key;
    let thumbprint = jwk
        .thumbprint()
        .map_err(|_| ProofError::Invalid("the header's jwk is not a P-256 key"))?;
    if !bool::from(thumbprint.as_bytes().ct_eq(expected.thumbprint.as_bytes())) {
        return Err(ProofError::Invalid(
            "signed by another key than the session's",
        ));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or(ProofError::Invalid("malformed signature"))?;
    let key = jwk.verifying_key()?;
    let signed = &proof[..h.len() + 1 + c.len()];
    key.verify(signed.as_bytes(), &signature)
        .map_err(|_| ProofError::Invalid("bad signature"))?;
    let claims: Claims = part(c, "malformed claims")?;
    if claims.htm.as_deref() != Some("POST") {
        return Err(ProofError::Invalid("htm must be POST"));
    }
    let want = redeem_path(expected.session_id);
    if claims.htu.as_deref().and_then(url_path) != Some(want.as_str()) {
        return Err(ProofError::Invalid(
            "htu must be the redeem URL of this session",
        ));
    }
    if claims.sid.as_deref() != Some(expected.session_id) {
        return Err(ProofError::Invalid("sid must name this session"));
    }
    let iat = claims.iat.ok_or(ProofError::Invalid("iat is required"))?;
    // Saturating: an iat near i64's ends must be refused, not overflow.
    let age_ms = expected.now.saturating_sub(iat.saturating_mul(1000));
    let max_ms = u64::try_from(expected.max_age.as_millis()).unwrap_or(u64::MAX);
    if age_ms.unsigned_abs() > max_ms {
        return Err(ProofError::Invalid("iat is not within the allowed window"));
    }
    match claims.jti.as_deref() {
        Some(j) if (16..=128).contains(&j.len()) => Ok(()),
        _ => Err(ProofError::Invalid("jti must be 16 to 128 characters")),
    }
}

/// The client side, for tests: a key pair that makes proofs the way the
/// browser client does (web/qrlogin-key.js) and the Rust client crate does.
#[cfg(any(test, feature = "testing"))]
pub mod signer {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::SigningKey;
    use rand::RngCore as _;

    pub struct KeyPair(SigningKey);

    impl KeyPair {
        pub fn generate() -> Self {
            loop {
                let mut bytes = [0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                if let Ok(key) = SigningKey::from_bytes(&bytes.into()) {
                    return Self(key);
                }
            }
        }

        pub fn public(&self) -> BrowserKey {
            let point = self.0.verifying_key().to_encoded_point(false);
            let b64 = |b: Option<&p256::FieldBytes>| {
                URL_SAFE_NO_PAD.encode(b.map(|b| &b[..]).unwrap_or_default())
            };
            BrowserKey {
                kty: "EC".into(),
                crv: "P-256".into(),
                x: b64(point.x()),
                y: b64(point.y()),
            }
        }

        /// A proof with the given header and claims (tests tamper with them).
        pub fn sign(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
            let h = URL_SAFE_NO_PAD.encode(header.to_string());
            let c = URL_SAFE_NO_PAD.encode(claims.to_string());
            let signed = format!("{h}.{c}");
            let signature: Signature = self.0.sign(signed.as_bytes());
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
        }

        pub fn header(&self) -> serde_json::Value {
            let k = self.public();
            serde_json::json!({"typ": "dpop+jwt", "alg": "ES256",
                "jwk": {"kty": k.kty, "crv": k.crv, "x": k.x, "y": k.y}})
        }

        /// The proof a browser sends to redeem `session_id` at `iat` (seconds).
        pub fn proof(&self, session_id: &str, iat: i64) -> String {
            let mut jti = [0u8; 16];
            rand::rng().fill_bytes(&mut jti);
            let claims = serde_json::json!({
                "htm": "POST",
                "htu": format!("http://localhost:8080{}", redeem_path(session_id)),
                "iat": iat,
                "jti": URL_SAFE_NO_PAD.encode(jti),
                "sid": session_id,
            });
            self.sign(&self.header(), &claims)
        }
    }
}

#[cfg(test)]
#[path = "proof_tests.rs"]
mod tests;
