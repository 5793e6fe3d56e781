//! The keys of the tokens auth issues, as relying parties see them: each
//! key's `kid` (its RFC 7638 thumbprint, the same on every replica without
//! any setting), and the JWK Set to publish: the current key (signs now),
//! the next one (published ahead, so caches know it before it signs) and
//! the previous ones (no longer sign; their tokens verify until they
//! expire). The rotation procedure is in docs/operations.md.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::path::Path;

use crate::token::KeyError;

/// An Ed25519 public key as a relying party sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The raw key, base64url (the JWK's `x`).
    pub x: String,
    /// The RFC 7638 thumbprint: base64url(SHA-256 of the canonical JWK).
    pub kid: String,
}

impl PublicKey {
    fn from_bytes(bytes: &[u8; 32]) -> Self {
        let x = URL_SAFE_NO_PAD.encode(bytes);
        // RFC 7638 §3.2: the required members in lexicographic order, no spaces.
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        Self { x, kid }
    }

    /// The public key of a PEM file holding an Ed25519 private key
    /// (PKCS#8) or public key (SPKI).
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pem(&pem).map_err(|reason| KeyError::Parse {
            path: path.display().to_string(),
            reason,
        })
    }

    pub fn from_pem(pem: &str) -> Result<Self, String> {
        if pem.contains("PRIVATE KEY") {
            let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|e| e.to_string())?;
            Ok(Self::from_bytes(key.verifying_key().as_bytes()))
        } else {
            let key =
                ed25519_dalek::VerifyingKey::from_public_key_pem(pem).map_err(|e| e.to_string())?;
            Ok(Self::from_bytes(key.as_bytes()))
        }
    }

    /// The JWK relying parties verify with.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "OKP", "crv": "Ed25519", "x": self.x,
            "kid": self.kid, "use": "sig", "alg": "EdDSA",
        })
    }
}

/// The published keys: current first, then next, then previous ones.
#[derive(Debug, Clone)]
pub struct PublishedKeys {
    pub current: PublicKey,
    pub next: Option<PublicKey>,
    pub previous: Vec<PublicKey>,
}

impl PublishedKeys {
    /// From the configured files: the current private key, the next and
    /// the previous keys (public or private PEM).
    pub fn load(
        current: &Path,
        next: Option<&Path>,
        previous: Option<&Path>,
    ) -> Result<Self, KeyError> {
        let current = PublicKey::from_pem_file(current)?;
        let next = next.map(PublicKey::from_pem_file).transpose()?;
        let previous = previous
            .map(PublicKey::from_pem_file)
            .transpose()?
            .into_iter()
            .collect();
        Ok(Self {
            current,
            next,
            previous,
        })
    }

    /// The JWK Set document (each key once).
    pub fn jwks(&self) -> Value {
        let mut keys: Vec<&PublicKey> = vec![&self.current];
        for key in self.next.iter().chain(&self.previous) {
            if !keys.iter().any(|k| k.kid == key.kid) {
                keys.push(key);
            }
        }
        json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kid_is_the_rfc7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of its Ed25519 example key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        let key = PublicKey::from_bytes(&x.try_into().unwrap());
        assert_eq!(key.kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn private_and_public_pem_name_the_same_key() {
        let pair = crate::token::generate_key_pair().unwrap();
        let private = PublicKey::from_pem(&pair.private_pem).unwrap();
        let public = PublicKey::from_pem(&pair.public_pem).unwrap();
        assert_eq!(private, public);
        assert!(PublicKey::from_pem("garbage").is_err());
    }
}
