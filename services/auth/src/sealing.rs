//! Sealing of the auth-only part of a stored session: ChaCha20-Poly1305 with
//! the record key (`QRLOGIN_RECORD_KEY_FILE`), the session id as associated
//! data. Whoever can read the bucket (or its republished events) learns
//! nothing private, and whoever can write it cannot forge a record auth
//! accepts, nor move one record to another session.
//!
//! Sealed bytes: 1-byte key id, 12-byte random nonce, ciphertext with its
//! 16-byte tag. The key id is derived from the key (first byte of a SHA-256
//! over it), so rotating needs no bookkeeping: the new key seals, the
//! previous one (`QRLOGIN_RECORD_PREVIOUS_KEY_FILE`) still opens records
//! written before the switch.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use std::path::Path;

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{var}: cannot read {path}: {source}")]
    Read {
        var: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{var}: {path} must hold 32 random bytes in base64 (e.g. `openssl rand -base64 32`)")]
    Format { var: &'static str, path: String },
    #[error("QRLOGIN_RECORD_PREVIOUS_KEY_FILE: the previous key has the same key id as the current one; generate another current key")]
    SameKeyId,
    /// Wrong key, unknown key id, tampered or truncated bytes: the record
    /// was not sealed by auth for this session.
    #[error("sealed record does not open (unknown key, tampered, or sealed for another session)")]
    Open,
    #[error("sealing failed")]
    Seal,
}

/// One record key and its id.
struct RecordKey {
    id: u8,
    cipher: ChaCha20Poly1305,
}

impl RecordKey {
    fn from_bytes(bytes: &[u8; KEY_BYTES]) -> Self {
        let id = Sha256::new()
            .chain_update(b"qrlogin record key id\0")
            .chain_update(bytes)
            .finalize()[0];
        Self {
            id,
            cipher: ChaCha20Poly1305::new(&Key::from(*bytes)),
        }
    }

    fn from_file(var: &'static str, path: &Path) -> Result<Self, SealError> {
        let text = std::fs::read_to_string(path).map_err(|source| SealError::Read {
            var,
            path: path.display().to_string(),
            source,
        })?;
        let format = || SealError::Format {
            var,
            path: path.display().to_string(),
        };
        let bytes = STANDARD.decode(text.trim()).map_err(|_| format())?;
        let bytes: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| format())?;
        Ok(Self::from_bytes(&bytes))
    }
}

/// Seals with the current key; opens with the current or the previous one.
pub struct Sealer {
    current: RecordKey,
    previous: Option<RecordKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.current.id)
            .field("previous_key_id", &self.previous.as_ref().map(|k| k.id))
            .finish()
    }
}

impl Sealer {
    pub fn from_files(current: &Path, previous: Option<&Path>) -> Result<Self, SealError> {
        let current = RecordKey::from_file("QRLOGIN_RECORD_KEY_FILE", current)?;
        let previous = previous
            .map(|p| RecordKey::from_file("QRLOGIN_RECORD_PREVIOUS_KEY_FILE", p))
            .transpose()?;
        if previous.as_ref().is_some_and(|p| p.id == current.id) {
            return Err(SealError::SameKeyId);
        }
        Ok(Self { current, previous })
    }

    /// A sealer with a key given as bytes (tests, tools).
    pub fn from_key(key: &[u8; KEY_BYTES]) -> Self {
        Self {
            current: RecordKey::from_bytes(key),
            previous: None,
        }
    }

    /// The id byte that starts everything this sealer seals.
    pub fn key_id(&self) -> u8 {
        self.current.id
    }

    /// Seals `plaintext` for the session `session_id`.
    pub fn seal(&self, session_id: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: session_id.as_bytes(),
                },
            )
            .map_err(|_| SealError::Seal)?;
        let mut out = Vec::with_capacity(1 + NONCE_BYTES + ciphertext.len());
        out.push(self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Opens what [`seal`](Self::seal) made for the same session.
    pub fn open(&self, session_id: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 1 + NONCE_BYTES + TAG_BYTES {
            return Err(SealError::Open);
        }
        let (id, rest) = (sealed[0], &sealed[1..]);
        let key = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|k| k.id == id)
            .ok_or(SealError::Open)?;
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| SealError::Open)?;
        key.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: session_id.as_bytes(),
                },
            )
            .map_err(|_| SealError::Open)
    }
}

/// 32 fresh random bytes in base64: the content of a record key file.
pub fn generate_key_text() -> String {
    let mut key = [0u8; KEY_BYTES];
    rand::rng().fill_bytes(&mut key);
    format!("{}\n", STANDARD.encode(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "q3Zb0Xz2kT9yLw1sJm5HAA";

    #[test]
    fn sealed_bytes_open_only_with_the_key_for_the_same_session() {
        let sealer = Sealer::from_key(&[7; 32]);
        let sealed = sealer.seal(ID, b"private").unwrap();
        assert_eq!(sealed[0], sealer.key_id());
        assert_eq!(sealed.len(), 1 + 12 + 7 + 16);
        assert!(!sealed.windows(7).any(|w| w == b"private"));
        assert_eq!(sealer.open(ID, &sealed).unwrap(), b"private");
        // Another session's id, another key, a flipped bit, a cut: refused.
        assert!(sealer.open("AAAAAAAAAAAAAAAAAAAAAA", &sealed).is_err());
        assert!(Sealer::from_key(&[8; 32]).open(ID, &sealed).is_err());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(sealer.open(ID, &flipped).is_err());
        assert!(sealer.open(ID, &sealed[..20]).is_err());
        // Two seals of the same text differ (fresh nonce).
        assert_ne!(sealer.seal(ID, b"private").unwrap(), sealed);
    }

    #[test]
    fn the_previous_key_still_opens_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.key");
        let new = dir.path().join("new.key");
        std::fs::write(&old, generate_key_text()).unwrap();
        std::fs::write(&new, generate_key_text()).unwrap();
        let before = Sealer::from_files(&old, None).unwrap();
        let sealed = before.seal(ID, b"x").unwrap();
        let after = Sealer::from_files(&new, Some(&old)).unwrap();
        assert_eq!(after.open(ID, &sealed).unwrap(), b"x");
        assert_eq!(after.seal(ID, b"y").unwrap()[0], after.key_id());
        // Without the previous key the old record no longer opens.
        assert!(Sealer::from_files(&new, None)
            .unwrap()
            .open(ID, &sealed)
            .is_err());
        // Malformed key files are refused with the variable's name.
        std::fs::write(&old, "short").unwrap();
        let err = Sealer::from_files(&new, Some(&old)).unwrap_err();
        assert!(err.to_string().contains("QRLOGIN_RECORD_PREVIOUS_KEY_FILE"));
    }
}
