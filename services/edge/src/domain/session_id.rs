//! Login session identifiers as they appear in URLs and NATS subjects.

use std::fmt;

/// A login session id: 22 characters of unpadded base64url (128 bits).
///
/// Checked at the edge before it goes anywhere, because it becomes a NATS
/// subject token: a `.`, `*` or `>` in it would subscribe to other subjects.
/// Held inline (22 bytes, no allocation): a watched session's id is kept
/// in several tables, and every copy would otherwise be a heap block.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; SessionId::LEN]);

/// Why a text is not a session id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a login session id is 22 base64url characters")]
pub struct SessionIdError;

impl SessionId {
    /// Length of an encoded 128-bit id.
    pub const LEN: usize = 22;

    /// Parses an id, refusing anything but 22 base64url characters.
    pub fn parse(text: &str) -> Result<Self, SessionIdError> {
        let ok = text.len() == Self::LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(SessionIdError);
        }
        let mut bytes = [0u8; Self::LEN];
        bytes.copy_from_slice(text.as_bytes());
        Ok(Self(bytes))
    }

    /// Parses an id given as bytes (a NATS subject token).
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, SessionIdError> {
        std::str::from_utf8(bytes)
            .map_err(|_| SessionIdError)
            .and_then(Self::parse)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `parse`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({:?})", self.as_str())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_base64url_of_the_right_length() {
        let id = SessionId::parse("q3Zb0Xz2kT9yLw1sJm5H-_").unwrap();
        assert_eq!(id.as_str(), "q3Zb0Xz2kT9yLw1sJm5H-_");
    }

    #[test]
    fn refuses_subject_wildcards_and_wrong_lengths() {
        for bad in [
            "",
            "short",
            "q3Zb0Xz2kT9yLw1sJm5H.*",
            "q3Zb0Xz2kT9yLw1sJm5H>A",
            "q3Zb0Xz2kT9yLw1sJm5HAAA",
        ] {
            assert_eq!(SessionId::parse(bad), Err(SessionIdError), "{bad:?}");
        }
    }
}
