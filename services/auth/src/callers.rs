//! Who may call auth. The edges (and other trusted backends) present a
//! service token in the gRPC metadata `x-qrlogin-service-token`; the tokens
//! auth accepts are the lines of QRLOGIN_SERVICE_TOKENS_FILE (several, so a
//! new token can be rolled out before the old one is removed). Comparison
//! is in constant time over SHA-256 digests of every configured token, so
//! neither a token's content nor its length leaks through timing.
//!
//! Browser-side calls (create, get, cancel, redeem) need a valid token.
//! Phone-side calls (scan, confirm, deny) carry the user's JWT and may come
//! without one (a phone backend may call auth directly); a token that is
//! present must still be valid.

use sha2::{Digest as _, Sha256};
use std::path::Path;
use subtle::ConstantTimeEq as _;

/// The metadata key the token travels in.
pub const SERVICE_TOKEN_HEADER: &str = "x-qrlogin-service-token";
/// Shortest token accepted in the file: 32 characters (e.g. `openssl rand -hex 16` is 32).
pub const MIN_TOKEN_LEN: usize = 32;
const MAX_TOKEN_LEN: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("QRLOGIN_SERVICE_TOKENS_FILE: cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("QRLOGIN_SERVICE_TOKENS_FILE: line {line} of {path}: a token is {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} visible ASCII characters")]
    Format { path: String, line: usize },
    #[error("QRLOGIN_SERVICE_TOKENS_FILE: {path} holds no token")]
    Empty { path: String },
}

/// Why a caller was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallerError {
    #[error("this call needs a service token (x-qrlogin-service-token)")]
    Missing,
    #[error("the service token is not valid")]
    Invalid,
}

/// The accepted tokens, as digests. `Debug` shows only how many.
pub struct ServiceTokens {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ServiceTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceTokens({} configured)", self.digests.len())
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl ServiceTokens {
    pub fn from_file(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut digests = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let token = line.split('#').next().unwrap_or("").trim();
            if token.is_empty() {
                continue;
            }
            if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len())
                || !token.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(TokensError::Format {
                    path: path.display().to_string(),
                    line: n + 1,
                });
            }
            digests.push(digest(token.as_bytes()));
        }
        if digests.is_empty() {
            return Err(TokensError::Empty {
                path: path.display().to_string(),
            });
        }
        Ok(Self { digests })
    }

    /// Checks a presented token (`None`: no metadata). Every configured
    /// token is compared, whatever matched.
    pub fn check(&self, presented: Option<&[u8]>) -> Result<(), CallerError> {
        let presented = presented.ok_or(CallerError::Missing)?;
        let presented = digest(presented);
        let mut found = subtle::Choice::from(0u8);
        for known in &self.digests {
            found |= known.ct_eq(&presented);
        }
        if bool::from(found) {
            Ok(())
        } else {
            Err(CallerError::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_a_file_with_comments_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let a = "a".repeat(32);
        let b = "b".repeat(40);
        std::fs::write(&path, format!("# edges\n{a}\n\n{b}  # new one\n")).unwrap();
        let tokens = ServiceTokens::from_file(&path).unwrap();
        assert_eq!(tokens.check(Some(a.as_bytes())), Ok(()));
        assert_eq!(tokens.check(Some(b.as_bytes())), Ok(()));
        assert_eq!(tokens.check(None), Err(CallerError::Missing));
        assert_eq!(
            tokens.check(Some("c".repeat(32).as_bytes())),
            Err(CallerError::Invalid)
        );
        assert_eq!(tokens.check(Some(b"")), Err(CallerError::Invalid));
        assert!(!format!("{tokens:?}").contains(&a));

        std::fs::write(&path, "short\n").unwrap();
        let err = ServiceTokens::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(matches!(
            ServiceTokens::from_file(&path),
            Err(TokensError::Empty { .. })
        ));
    }
}
