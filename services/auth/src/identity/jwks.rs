//! JSON Web Key Sets (RFC 7517) as auth trusts them: which algorithms a
//! phone token may use (a closed allowlist: RS256, PS256, ES256, EdDSA; never
//! `none`, HMAC or anything else), and the public signing keys of a set,
//! each tied to the algorithms its type allows. Keys that cannot verify one
//! of those algorithms (encryption keys, symmetric keys, other curves, RSA
//! below 2048 bits) are left out of the set, so no token can pick them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use std::sync::Arc;

/// The algorithms a phone token may be signed with, at most.
pub const ALLOWED: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// The names of [`ALLOWED`], as configured and as in a JWS header.
pub fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RS256 => "RS256",
        Algorithm::PS256 => "PS256",
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        _ => "other",
    }
}

/// One of [`ALLOWED`] by name; anything else (`none`, `HS256`, `ES384`...)
/// is `None`.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    ALLOWED
        .into_iter()
        .find(|alg| algorithm_name(*alg) == name.trim())
}

/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS: usize = 256;

/// What kind of key this is, which decides the algorithms it verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    P256,
    Ed25519,
}

impl KeyKind {
    fn verifies(self, alg: Algorithm) -> bool {
        matches!(
            (self, alg),
            (Self::Rsa, Algorithm::RS256 | Algorithm::PS256)
                | (Self::P256, Algorithm::ES256)
                | (Self::Ed25519, Algorithm::EdDSA)
        )
    }
}

/// A public key that may verify phone tokens.
#[derive(Clone)]
pub struct TrustedKey {
    /// `kid`; `None` only for a key given as PEM (one key, no choice).
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The JWK's `alg`, when it names one: then only that one.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl TrustedKey {
    /// Whether this key may verify a token signed with `alg`.
    pub fn verifies(&self, alg: Algorithm) -> bool {
        self.kind.verifies(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// The usable keys of one fetched set, at most the configured number.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Arc<TrustedKey>>,
    /// Keys of the document left out (unusable or over the bound).
    pub skipped: usize,
}

impl KeySet {
    /// The key named `kid` that verifies `alg`.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<TrustedKey>> {
        self.keys
            .iter()
            .find(|k| k.kid.as_deref() == kid && k.verifies(alg))
            .cloned()
    }

    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().filter_map(|k| k.kid.clone()).collect()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    #[error("not a JSON Web Key Set: {0}")]
    NotASet(String),
}

/// Parses a JWK Set document, keeping at most `max_keys` usable signing keys
/// with a `kid` (the first ones; a `kid` seen twice keeps its first key).
pub fn parse(document: &[u8], max_keys: usize) -> Result<KeySet, JwksError> {
    let doc: Value =
        serde_json::from_slice(document).map_err(|e| JwksError::NotASet(e.to_string()))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| JwksError::NotASet("no `keys` array".into()))?;
    let mut set = KeySet::default();
    for jwk in keys {
        match key_of(jwk) {
            Some(key)
                if set.keys.len() < max_keys && !set.keys.iter().any(|k| k.kid == key.kid) =>
            {
                set.keys.push(Arc::new(key))
            }
            _ => set.skipped += 1,
        }
    }
    Ok(set)
}

fn text<'a>(jwk: &'a Value, name: &str) -> Option<&'a str> {
    jwk.get(name).and_then(Value::as_str)
}

/// One JWK as a trusted key, if it is a public signing key of a kind we
/// verify with, and has a `kid`.
fn key_of(jwk: &Value) -> Option<TrustedKey> {
    let kid = text(jwk, "kid").filter(|k| !k.is_empty() && k.len() <= 256)?;
    if text(jwk, "use").is_some_and(|u| u != "sig") {
        return None;
    }
    if let Some(ops) = jwk.get("key_ops").and_then(Value::as_array) {
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return None;
        }
    }
    // A private member means someone published a private key: trust none of it.
    if jwk.get("d").is_some() {
        return None;
    }
    let alg = match text(jwk, "alg") {
        None => None,
        Some(name) => Some(parse_algorithm(name)?),
    };
    let (kind, key) = match (text(jwk, "kty")?, text(jwk, "crv")) {
        ("RSA", _) => {
            let n = text(jwk, "n")?;
            let modulus = URL_SAFE_NO_PAD.decode(n).ok()?;
            let significant = modulus.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_MODULUS {
                return None;
            }
            let key = DecodingKey::from_rsa_components(n, text(jwk, "e")?).ok()?;
            (KeyKind::Rsa, key)
        }
        ("EC", Some("P-256")) => {
            let key = DecodingKey::from_ec_components(text(jwk, "x")?, text(jwk, "y")?).ok()?;
            (KeyKind::P256, key)
        }
        ("OKP", Some("Ed25519")) => {
            let x = text(jwk, "x")?;
            if URL_SAFE_NO_PAD.decode(x).ok()?.len() != 32 {
                return None;
            }
            (KeyKind::Ed25519, DecodingKey::from_ed_components(x).ok()?)
        }
        _ => return None,
    };
    if alg.is_some_and(|a| !kind.verifies(a)) {
        return None;
    }
    Some(TrustedKey {
        kid: Some(kid.to_owned()),
        kind,
        alg,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ec_key(kid: &str) -> Value {
        // A valid P-256 point (the generator).
        json!({"kty": "EC", "crv": "P-256", "kid": kid,
               "x": "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
               "y": "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"})
    }

    fn ed_key(kid: &str) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
               "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})
    }

    #[test]
    fn only_the_allowlist_parses() {
        for name in ["RS256", "PS256", "ES256", "EdDSA"] {
            assert!(parse_algorithm(name).is_some(), "{name}");
        }
        for name in ["none", "HS256", "HS512", "ES384", "RS512", "", "rs256"] {
            assert!(parse_algorithm(name).is_none(), "{name}");
        }
    }

    #[test]
    fn unusable_keys_are_left_out() {
        let doc = json!({"keys": [
            ec_key("ec-1"),
            ed_key("ed-1"),
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
            json!({"use": "enc"}).as_object().unwrap().iter()
                .chain(ec_key("enc").as_object().unwrap().iter())
                .map(|(k, v)| (k.clone(), v.clone())).collect::<serde_json::Map<_, _>>(),
            {"kty": "RSA", "kid": "small", "n": URL_SAFE_NO_PAD.encode([0xc3u8; 128]), "e": "AQAB"},
            {"kty": "EC", "crv": "P-256", "x": "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
             "y": "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "wrong-alg", "alg": "ES256",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            ec_key("ec-1"),
        ]});
        let set = parse(doc.to_string().as_bytes(), 10).unwrap();
        assert_eq!(set.kids(), ["ec-1", "ed-1"]);
        assert_eq!(set.skipped, 7);
        assert!(set.find(Some("ec-1"), Algorithm::ES256).is_some());
        assert!(
            set.find(Some("ec-1"), Algorithm::RS256).is_none(),
            "an EC key never verifies RS256"
        );
        assert!(set.find(Some("ed-1"), Algorithm::EdDSA).is_some());
        assert!(set.find(None, Algorithm::ES256).is_none(), "kid required");
    }

    #[test]
    fn the_set_is_bounded() {
        let keys: Vec<Value> = (0..50).map(|i| ec_key(&format!("k{i}"))).collect();
        let set = parse(json!({ "keys": keys }).to_string().as_bytes(), 8).unwrap();
        assert_eq!(set.keys.len(), 8);
        assert_eq!(set.skipped, 42);
    }

    #[test]
    fn a_document_without_keys_is_refused() {
        assert!(parse(b"{}", 8).is_err());
        assert!(parse(b"<html>", 8).is_err());
    }
}
