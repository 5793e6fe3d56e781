//! Login session identifiers as they appear in URLs and NATS subjects.

use std::fmt;

/// A login session id: 22 characters of unpadded base64url (128 bits).
///
/// Checked at the edge before it goes anywhere, because it becomes a NATS
/// subject token: a `.`, `*` or `>` in it would subscribe to other subjects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

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
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(SessionIdError)
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
