//! Key-bound redemption for clients that are not browsers (docs/protocol.md,
//! "QR protocol"): what `web/qrlogin-key.js` does with WebCrypto,
//! in Rust. Make one ECDSA P-256 key per login, send its public JWK with
//! create, and sign a fresh proof (a JWT in the style of RFC 9449's DPoP)
//! for the one redeem:
//!
//! ```no_run
//! # async fn demo(edge: &qrlogin_client::api::Client, token: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use qrlogin_client::key::BrowserKey;
//! let key = BrowserKey::generate();
//! let created = edge.create_bound(&key).await?;              // {"public_key": <JWK>}
//! // ... the phone scans and confirms ...
//! let login = edge.redeem_bound(created.id(), &created.browser_secret, &key).await?; // DPoP: <proof>
//! # Ok(()) }
//! ```
//!
//! A gRPC client passes `browser_key` to CreateLoginSession and the proof
//! in RedeemLoginSessionRequest.proof. Keep the private key in memory only,
//! for the life of one login.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// An ECDSA P-256 key pair bound to one login session.
pub struct BrowserKey(SigningKey);

impl std::fmt::Debug for BrowserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BrowserKey({})", self.thumbprint())
    }
}

impl BrowserKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Self {
        loop {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            // Fails only for the rare bytes that are not a valid scalar.
            if let Ok(key) = SigningKey::from_bytes(&bytes.into()) {
                return Self(key);
            }
        }
    }

    /// The public key's coordinates, base64url.
    fn coordinates(&self) -> (String, String) {
        let point = self.0.verifying_key().to_encoded_point(false);
        let b64 = |c: Option<&p256::FieldBytes>| {
            URL_SAFE_NO_PAD.encode(c.map(|c| &c[..]).unwrap_or_default())
        };
        (b64(point.x()), b64(point.y()))
    }

    /// The public key as a JWK (only its public members).
    pub fn jwk(&self) -> serde_json::Value {
        let (x, y) = self.coordinates();
        serde_json::json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y })
    }

    /// RFC 7638 thumbprint: what auth binds the session to.
    pub fn thumbprint(&self) -> String {
        let (x, y) = self.coordinates();
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// A proof for redeeming `session_id` at `htu` (the redeem URL; only its
    /// path is compared), issued now.
    pub fn proof(&self, session_id: &str, htu: &str) -> String {
        let iat = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut jti = [0u8; 16];
        rand::rng().fill_bytes(&mut jti);
        let header = serde_json::json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk() });
        let claims = serde_json::json!({
            "htm": "POST",
            "htu": htu,
            "iat": iat,
            "jti": URL_SAFE_NO_PAD.encode(jti),
            "sid": session_id,
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature: Signature = self.0.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_carry_the_public_key_and_the_session() {
        let key = BrowserKey::generate();
        let proof = key.proof(
            "q3Zb0Xz2kT9yLw1sJm5HAA",
            "http://x/v1/login-sessions/q3Zb0Xz2kT9yLw1sJm5HAA/redeem",
        );
        let parts: Vec<&str> = proof.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["jwk"], key.jwk());
        assert!(header["jwk"].get("d").is_none(), "never the private key");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sid"], "q3Zb0Xz2kT9yLw1sJm5HAA");
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
        assert_eq!(key.thumbprint().len(), 43);
        assert_ne!(key.thumbprint(), BrowserKey::generate().thumbprint());
    }
}
