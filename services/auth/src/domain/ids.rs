//! Random identifiers and the browser secret.
//!
//! Session ids carry 128 random bits, browser secrets 256, both as base64url
//! without padding: valid in URLs, in NATS subject tokens and in JetStream
//! key-value keys without escaping.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use std::fmt;
use subtle::ConstantTimeEq as _;

const SESSION_ID_BYTES: usize = 16;
const SESSION_ID_LEN: usize = 22;
const SECRET_BYTES: usize = 32;
const SECRET_LEN: usize = 43;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("session id is empty")]
    EmptySessionId,
    #[error("session id must be 22 base64url characters (128 bits)")]
    MalformedSessionId,
    #[error("browser secret is empty")]
    EmptySecret,
    #[error("browser secret must be 43 base64url characters (256 bits)")]
    MalformedSecret,
}

/// A login session id: 128 random bits, base64url (22 characters).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    pub fn generate() -> Self {
        let mut bytes = [0u8; SESSION_ID_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Parses untrusted input. Decoding (not just a character check) rejects
    /// the non-canonical spellings whose last character carries stray bits.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        if text.is_empty() {
            return Err(IdError::EmptySessionId);
        }
        if text.len() != SESSION_ID_LEN {
            return Err(IdError::MalformedSessionId);
        }
        match URL_SAFE_NO_PAD.decode(text) {
            Ok(bytes) if bytes.len() == SESSION_ID_BYTES => Ok(Self(text.to_owned())),
            _ => Err(IdError::MalformedSessionId),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.0)
    }
}

/// The browser's proof of ownership. Its `Debug` never shows the value, so it
/// cannot leak through a log line by accident.
#[derive(Clone)]
pub struct BrowserSecret(String);

impl BrowserSecret {
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn parse(text: &str) -> Result<Self, IdError> {
        if text.is_empty() {
            return Err(IdError::EmptySecret);
        }
        if text.len() != SECRET_LEN {
            return Err(IdError::MalformedSecret);
        }
        match URL_SAFE_NO_PAD.decode(text) {
            Ok(bytes) if bytes.len() == SECRET_BYTES => Ok(Self(text.to_owned())),
            _ => Err(IdError::MalformedSecret),
        }
    }

    /// The value to hand to the browser, once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for BrowserSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BrowserSecret(<redacted>)")
    }
}

/// SHA-256 of a browser secret, the only form in which it is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// Constant-time comparison, so response timing says nothing about how
    /// much of a guessed secret was right.
    pub fn matches(&self, secret: &BrowserSecret) -> bool {
        self.0.ct_eq(&secret.hash().0).into()
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(s, 16).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_differ() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert_eq!(SessionId::parse(a.as_str()), Ok(a.clone()));
        assert_eq!(a.as_str().len(), 22);
    }

    #[test]
    fn malformed_ids_are_rejected() {
        assert_eq!(SessionId::parse(""), Err(IdError::EmptySessionId));
        for bad in [
            "short",
            "qrlogin.session.abcdefg",
            "aaaaaaaaaaaaaaaaaaaaa*",
            "aaaaaaaaaaaaaaaaaaaaa/",
            "aaaaaaaaaaaaaaaaaaaaaaa",
            "aaaaaaaaaaaaaaaaaaaa==",
        ] {
            assert_eq!(
                SessionId::parse(bad),
                Err(IdError::MalformedSessionId),
                "{bad}"
            );
        }
    }

    #[test]
    fn secret_hash_matches_only_its_secret() {
        let s = BrowserSecret::generate();
        let other = BrowserSecret::generate();
        let h = s.hash();
        assert!(h.matches(&s));
        assert!(!h.matches(&other));
        assert_eq!(SecretHash::from_hex(&h.to_hex()), Some(h));
        assert!(SecretHash::from_hex("zz").is_none());
        assert!(!format!("{s:?}").contains(s.expose()));
        assert_eq!(
            BrowserSecret::parse("x").err(),
            Some(IdError::MalformedSecret)
        );
        assert_eq!(BrowserSecret::parse("").err(), Some(IdError::EmptySecret));
    }
}
