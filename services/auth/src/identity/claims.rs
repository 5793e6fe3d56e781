//! Who a verified token names, and what the browser will show of them.
//!
//! The user id is one claim (`sub` by default). What the browser shows must
//! tell two accounts apart and be something the provider vouches for: a
//! free-text `name` alone lets an observer who scans first appear as
//! "Alice". So the shown text is always built around an account claim
//! (`sub`, `preferred_username`, or `email` when `email_verified` is true),
//! optionally masked, with the free-text name in front of it when one is
//! configured: `Alice (alice@example.com)`.

use serde_json::{Map, Value};

use crate::domain::{text, PhoneUser};

/// Longest accepted text claim, in bytes.
pub const MAX_CLAIM_LEN: usize = 128;

/// The claims that may name the account the browser shows.
pub const ACCOUNT_CLAIMS: [&str; 3] = ["sub", "preferred_username", "email"];

/// How claims become a [`PhoneUser`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    /// The claim holding the user id.
    pub id_claim: String,
    /// One of [`ACCOUNT_CLAIMS`]: shown always, tells accounts apart.
    pub account_claim: String,
    /// A free-text name shown in front of the account (`None`: none).
    pub name_claim: Option<String>,
    /// Show the account masked (`a***e@example.com`).
    pub mask_account: bool,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            id_claim: "sub".into(),
            account_claim: "preferred_username".into(),
            name_claim: Some("name".into()),
            mask_account: false,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClaimError {
    #[error("missing claim `{0}`")]
    Missing(String),
    #[error("`{0}` must be a string of 1..={MAX_CLAIM_LEN} bytes")]
    Length(String),
    #[error("`{0}` contains control or format characters")]
    Undisplayable(String),
    #[error("`email` is not vouched for by the provider (`email_verified` is not true)")]
    EmailNotVerified,
}

/// A text claim, checked: 1..=128 bytes, no control or format characters.
fn text_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, ClaimError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() || s.len() > MAX_CLAIM_LEN => {
            Err(ClaimError::Length(name.into()))
        }
        Some(Value::String(s)) if !text::is_displayable(s) => {
            Err(ClaimError::Undisplayable(name.into()))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ClaimError::Length(name.into())),
    }
}

/// `alice@example.com` → `a***e@example.com`; `alice` → `a***e`.
pub fn mask(account: &str) -> String {
    let (local, domain) = match account.rsplit_once('@') {
        Some((local, domain)) => (local, Some(domain)),
        None => (account, None),
    };
    let chars: Vec<char> = local.chars().collect();
    let masked = match chars.as_slice() {
        [] => String::new(),
        [one] => format!("{one}***"),
        [first, .., last] => format!("{first}***{last}"),
    };
    match domain {
        Some(d) => format!("{masked}@{d}"),
        None => masked,
    }
}

impl ClaimMapping {
    pub fn user(&self, claims: &Map<String, Value>) -> Result<PhoneUser, ClaimError> {
        let id = text_claim(claims, &self.id_claim)?
            .ok_or_else(|| ClaimError::Missing(self.id_claim.clone()))?;
        let account = text_claim(claims, &self.account_claim)?
            .ok_or_else(|| ClaimError::Missing(self.account_claim.clone()))?;
        if self.account_claim == "email" && claims.get("email_verified") != Some(&Value::Bool(true))
        {
            return Err(ClaimError::EmailNotVerified);
        }
        let account = if self.mask_account {
            mask(&account)
        } else {
            account
        };
        let name = match &self.name_claim {
            Some(claim) => text_claim(claims, claim)?.filter(|n| !n.trim().is_empty()),
            None => None,
        };
        let display_name = match name {
            Some(name) if name != account => format!("{name} ({account})"),
            _ => account,
        };
        Ok(PhoneUser { id, display_name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_free_text_name_is_never_shown_alone() {
        let m = ClaimMapping {
            account_claim: "sub".into(),
            ..ClaimMapping::default()
        };
        let alice = m
            .user(&claims(json!({"sub": "alice", "name": "Alice"})))
            .unwrap();
        let mallory = m
            .user(&claims(json!({"sub": "mallory", "name": "Alice"})))
            .unwrap();
        assert_eq!(alice.display_name, "Alice (alice)");
        assert_ne!(alice.display_name, mallory.display_name);
        let bare = m.user(&claims(json!({"sub": "bob"}))).unwrap();
        assert_eq!(bare.display_name, "bob");
    }

    #[test]
    fn the_account_claim_is_configurable_and_maskable() {
        let m = ClaimMapping {
            account_claim: "email".into(),
            mask_account: true,
            ..ClaimMapping::default()
        };
        let user = m
            .user(&claims(json!({"sub": "f81d4fae", "name": "Alice",
                                 "email": "alice@example.com", "email_verified": true})))
            .unwrap();
        assert_eq!(user.id, "f81d4fae");
        assert_eq!(user.display_name, "Alice (a***e@example.com)");
        assert_eq!(
            m.user(&claims(json!({"sub": "x", "email": "alice@example.com"}))),
            Err(ClaimError::EmailNotVerified)
        );
        assert_eq!(
            m.user(&claims(
                json!({"sub": "x", "email": "a@b", "email_verified": "true"})
            )),
            Err(ClaimError::EmailNotVerified)
        );
        let by_username = ClaimMapping {
            account_claim: "preferred_username".into(),
            name_claim: None,
            ..ClaimMapping::default()
        };
        let user = by_username
            .user(&claims(
                json!({"sub": "1", "preferred_username": "alice", "name": "Alice"}),
            ))
            .unwrap();
        assert_eq!(user.display_name, "alice");
        assert_eq!(
            by_username.user(&claims(json!({"sub": "1"}))),
            Err(ClaimError::Missing("preferred_username".into()))
        );
    }

    #[test]
    fn text_claims_are_checked() {
        let m = ClaimMapping {
            account_claim: "sub".into(),
            ..ClaimMapping::default()
        };
        for bad in [
            json!({"sub": "alice\u{202E}nimda"}),
            json!({"sub": ""}),
            json!({"sub": "x".repeat(129)}),
            json!({"sub": 42}),
            json!({"sub": "a", "name": "Al\u{2066}ice"}),
        ] {
            assert!(m.user(&claims(bad.clone())).is_err(), "{bad}");
        }
        assert_eq!(
            m.user(&claims(json!({"name": "x"}))),
            Err(ClaimError::Missing("sub".into()))
        );
    }

    #[test]
    fn masking() {
        assert_eq!(mask("alice@example.com"), "a***e@example.com");
        assert_eq!(mask("al"), "a***l");
        assert_eq!(mask("a"), "a***");
        assert_eq!(mask("Zoë"), "Z***ë");
    }
}
