//! The state machine of one login session (see docs/protocol.md): the
//! stored record, the actions, and `apply`, the one place that decides
//! which transitions exist. The QR payload check ([`super::qr`]) and number
//! matching ([`super::matching`]) are steps of it.

use super::matching::Matching;
use super::{qr, BrowserSecret, SecretHash, SessionId, UnixMillis};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LoginState {
    Pending,
    Scanned,
    Confirmed,
    Redeemed,
    Denied,
    Cancelled,
    Expired,
}

impl LoginState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Redeemed | Self::Denied | Self::Cancelled | Self::Expired
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Scanned => "SCANNED",
            Self::Confirmed => "CONFIRMED",
            Self::Redeemed => "REDEEMED",
            Self::Denied => "DENIED",
            Self::Cancelled => "CANCELLED",
            Self::Expired => "EXPIRED",
        }
    }
}

/// Why a session ended DENIED.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// The phone's user refused.
    User,
    /// The phone's user picked a number the browser did not show.
    WrongMatch,
}

/// How long each waiting state lasts before it expires by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    pub pending: Duration,
    pub scanned: Duration,
    pub confirmed: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            pending: Duration::from_secs(120),
            scanned: Duration::from_secs(60),
            confirmed: Duration::from_secs(30),
        }
    }
}

/// What the transition rules depend on besides the record and the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    pub deadlines: Deadlines,
    pub qr: qr::QrRules,
    /// How long after REDEEMED a redeem by the creating browser is taken
    /// for a retry of the one that redeemed (its answer was lost) and
    /// answered the same instead of refused.
    pub redeem_retry: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            deadlines: Deadlines::default(),
            qr: qr::QrRules::default(),
            redeem_retry: Duration::from_secs(30),
        }
    }
}

/// Where the login comes from, recorded at creation and shown to the phone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrowserContext {
    pub ip: String,
    pub user_agent: String,
    pub created_at: UnixMillis,
}

/// The signed-in phone user, taken from a verified token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneUser {
    pub id: String,
    pub display_name: String,
}

/// What a caller asks the session to do.
#[derive(Clone, Debug)]
pub enum Action {
    /// A phone scans: its user, the payload it read, and the number
    /// matching to start (picked by the caller; `None` when it is off).
    Scan {
        user: PhoneUser,
        qr_payload: Option<String>,
        matching: Option<Matching>,
    },
    /// The scanning user confirms, with the number they picked.
    Confirm {
        user_id: String,
        match_code: Option<u8>,
    },
    Deny {
        user_id: String,
    },
    Cancel,
    /// The creating browser redeems; `proof` names the proof of its key
    /// that it sent (a digest, see `proof::fingerprint`), `None` without.
    Redeem {
        proof: Option<String>,
    },
    /// Written by whoever first notices a passed deadline.
    Expire,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Scan { .. } => "scan",
            Self::Confirm { .. } => "confirm",
            Self::Deny { .. } => "deny",
            Self::Cancel => "cancel",
            Self::Redeem { .. } => "redeem",
            Self::Expire => "expire",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DomainError {
    #[error("cannot {action} a login session in state {state}")]
    NotAllowed {
        action: &'static str,
        state: &'static str,
    },
    #[error("cannot {action}: the login session expired (its {state} deadline passed)")]
    Expired {
        action: &'static str,
        state: &'static str,
    },
    #[error("the login session was scanned by another user")]
    WrongUser,
    /// The payload read from the QR code is not one this session showed.
    #[error("{0}")]
    QrInvalid(&'static str),
    /// The payload was shown, but has been replaced since (past the grace).
    #[error("this QR code was replaced by a newer one; scan the code on the screen now")]
    QrReplaced,
    #[error("pick the number shown on the other device (match_code)")]
    MatchRequired,
}

/// One session as stored (sealed) in the key-value bucket, as JSON. The
/// browser secret appears only as its SHA-256, in hex; the browser key only
/// as its thumbprint. Fields added after the first release default to
/// "absent", so records written by an older auth still open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: String,
    pub state: LoginState,
    pub secret_sha256: String,
    pub browser: BrowserContext,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<PhoneUser>,
    pub updated_at: UnixMillis,
    /// Unset in final states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<UnixMillis>,
    /// The rotating QR code's key (base64url of 16 random bytes) and epoch
    /// length; absent in records from before rotating codes, whose scans
    /// need no payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr: Option<qr::QrKey>,
    /// Number matching, started at the scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching: Option<Matching>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_reason: Option<DenyReason>,
    /// RFC 7638 thumbprint of the browser's key; redeem needs a proof by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_thumbprint: Option<String>,
    /// The digest of the proof that redeemed a key-bound session: a repeat
    /// needs a fresh proof, not this one again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redeem_proof: Option<String>,
}

/// The result of applying an action. Returned once per call and never
/// stored, so the size difference of its variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new record to write with compare-and-swap.
    Write(SessionRecord),
    /// Nothing to write: the action is a repeat of the one that made the
    /// record what it is (a retry whose first answer was lost), answered as
    /// the first was. See [`SessionRecord::repeats`].
    Unchanged,
}

pub(super) fn deadline(now: UnixMillis, ttl: Duration) -> UnixMillis {
    now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

impl SessionRecord {
    /// A new PENDING session with a fresh QR key, bound to the browser key
    /// of thumbprint `key_thumbprint` when one was given.
    pub fn new(
        id: &SessionId,
        secret: &BrowserSecret,
        browser: BrowserContext,
        now: UnixMillis,
        rules: &Rules,
        key_thumbprint: Option<String>,
    ) -> Self {
        Self {
            id: id.as_str().to_owned(),
            state: LoginState::Pending,
            secret_sha256: secret.hash().to_hex(),
            browser,
            user: None,
            updated_at: now,
            expires_at: Some(deadline(now, rules.deadlines.pending)),
            qr: Some(qr::QrKey::generate(&rules.qr, now)),
            matching: None,
            deny_reason: None,
            key_thumbprint,
            redeem_proof: None,
        }
    }

    pub fn secret_matches(&self, secret: &BrowserSecret) -> bool {
        SecretHash::from_hex(&self.secret_sha256).is_some_and(|h| h.matches(secret))
    }

    /// True when a waiting state's deadline has passed.
    pub fn is_past_deadline(&self, now: UnixMillis) -> bool {
        !self.state.is_final() && self.expires_at.is_some_and(|at| now >= at)
    }

    /// The state a reader should see: a waiting state past its deadline is
    /// EXPIRED even before anyone wrote that down.
    pub fn effective_state(&self, now: UnixMillis) -> LoginState {
        if self.is_past_deadline(now) {
            LoginState::Expired
        } else {
            self.state
        }
    }

    /// The same record as it reads at `now` (EXPIRED if past its deadline).
    pub fn as_seen_at(&self, now: UnixMillis) -> Self {
        if self.is_past_deadline(now) {
            let mut seen = self.clone();
            seen.state = LoginState::Expired;
            seen.expires_at = None;
            seen
        } else {
            self.clone()
        }
    }

    /// The display name the browser may see: only once the user confirmed
    /// (an observer who merely scans is never named to the browser).
    pub fn public_display_name(&self) -> Option<&str> {
        match self.state {
            LoginState::Confirmed | LoginState::Redeemed => {
                self.user.as_ref().map(|u| u.display_name.as_str())
            }
            _ => None,
        }
    }

    /// The number the browser shows while SCANNED.
    pub fn public_match_code(&self) -> Option<u8> {
        match self.state {
            LoginState::Scanned => self.matching.as_ref().map(|m| m.code),
            _ => None,
        }
    }

    /// The QR key, while the code is on screen (PENDING).
    pub fn public_qr(&self) -> Option<&qr::QrKey> {
        match self.state {
            LoginState::Pending => self.qr.as_ref(),
            _ => None,
        }
    }

    /// Applies `action` at `now`. The one place that decides which
    /// transitions exist.
    pub fn apply(
        &self,
        action: &Action,
        now: UnixMillis,
        rules: &Rules,
    ) -> Result<Outcome, DomainError> {
        use LoginState::*;
        let deadlines = &rules.deadlines;
        let past = self.is_past_deadline(now);
        if let Action::Expire = action {
            return if past {
                Ok(Outcome::Write(self.moved(Expired, now, None)))
            } else {
                Err(DomainError::NotAllowed {
                    action: action.name(),
                    state: self.state.name(),
                })
            };
        }
        if past {
            return Err(DomainError::Expired {
                action: action.name(),
                state: self.state.name(),
            });
        }
        let not_allowed = || DomainError::NotAllowed {
            action: action.name(),
            state: self.state.name(),
        };
        if self.repeats(action, now, rules) {
            return Ok(Outcome::Unchanged);
        }
        let scanner_is = |user_id: &str| self.user.as_ref().is_some_and(|u| u.id == user_id);
        match (self.state, action) {
            (
                Pending,
                Action::Scan {
                    user,
                    qr_payload,
                    matching,
                },
            ) => {
                if let Some(key) = &self.qr {
                    key.check(&self.id, qr_payload.as_deref(), now, &rules.qr)?;
                }
                let mut next = self.moved(Scanned, now, Some(deadline(now, deadlines.scanned)));
                next.user = Some(user.clone());
                next.matching = *matching;
                Ok(Outcome::Write(next))
            }
            (Scanned, Action::Scan { .. }) => Err(DomainError::WrongUser),
            (Scanned, Action::Confirm { user_id, .. }) | (Scanned, Action::Deny { user_id })
                if !scanner_is(user_id) =>
            {
                Err(DomainError::WrongUser)
            }
            (Scanned, Action::Confirm { match_code, .. }) => match (&self.matching, match_code) {
                (Some(_), None) => Err(DomainError::MatchRequired),
                (Some(m), Some(picked)) if !m.is(*picked) => {
                    let mut next = self.moved(Denied, now, None);
                    next.deny_reason = Some(DenyReason::WrongMatch);
                    Ok(Outcome::Write(next))
                }
                _ => Ok(Outcome::Write(self.moved(
                    Confirmed,
                    now,
                    Some(deadline(now, deadlines.confirmed)),
                ))),
            },
            (Scanned, Action::Deny { .. }) => {
                let mut next = self.moved(Denied, now, None);
                next.deny_reason = Some(DenyReason::User);
                Ok(Outcome::Write(next))
            }
            // After CONFIRMED too: the browser's user refuses the account
            // that confirmed ("not you? start over").
            (Pending | Scanned | Confirmed, Action::Cancel) => {
                Ok(Outcome::Write(self.moved(Cancelled, now, None)))
            }
            (Confirmed, Action::Redeem { proof }) => {
                let mut next = self.moved(Redeemed, now, None);
                next.redeem_proof = self.key_thumbprint.as_ref().and(proof.clone());
                Ok(Outcome::Write(next))
            }
            _ => Err(not_allowed()),
        }
    }

    /// Whether `action` is what made this record what it is, asked again by
    /// the same caller: a retry whose first answer was lost (a NATS member
    /// died between the commit and the acknowledgement, or the answer never
    /// reached the client). Such a retry is answered as the first call was,
    /// without a write:
    ///
    /// - scan by the user who scanned, while SCANNED;
    /// - confirm by the scanning user with the number shown, while CONFIRMED
    ///   (or REDEEMED since); with a wrong number, while DENIED for it;
    /// - deny by the scanning user, while DENIED by them;
    /// - cancel, while CANCELLED (the caller proved to be the creating
    ///   browser before `apply`);
    /// - redeem, while REDEEMED for less than `rules.redeem_retry` (the
    ///   caller proved to be the creating browser, with a valid proof of
    ///   its key when bound, before `apply`; a bound session's repeat needs
    ///   another proof than the one that redeemed: a proof works once; the
    ///   service answers with the same token).
    pub fn repeats(&self, action: &Action, now: UnixMillis, rules: &Rules) -> bool {
        use LoginState::*;
        let scanner_is = |user_id: &str| self.user.as_ref().is_some_and(|u| u.id == user_id);
        let right_pick = |picked: &Option<u8>| match (&self.matching, picked) {
            (Some(m), Some(p)) => m.is(*p),
            (Some(_), None) => false,
            (None, _) => true,
        };
        match (self.state, action) {
            (Scanned, Action::Scan { user, .. }) => scanner_is(&user.id),
            (
                Confirmed | Redeemed,
                Action::Confirm {
                    user_id,
                    match_code,
                },
            ) => scanner_is(user_id) && right_pick(match_code),
            (
                Denied,
                Action::Confirm {
                    user_id,
                    match_code,
                },
            ) => {
                self.deny_reason == Some(DenyReason::WrongMatch)
                    && match_code.is_some()
                    && scanner_is(user_id)
                    && !right_pick(match_code)
            }
            (Denied, Action::Deny { user_id }) => {
                self.deny_reason == Some(DenyReason::User) && scanner_is(user_id)
            }
            (Cancelled, Action::Cancel) => true,
            (Redeemed, Action::Redeem { proof }) => {
                let fresh_proof = self.key_thumbprint.is_none()
                    || proof
                        .as_ref()
                        .is_some_and(|p| Some(p) != self.redeem_proof.as_ref());
                fresh_proof && now < deadline(self.updated_at, rules.redeem_retry)
            }
            _ => false,
        }
    }

    fn moved(
        &self,
        state: LoginState,
        now: UnixMillis,
        expires_at: Option<UnixMillis>,
    ) -> SessionRecord {
        let mut next = self.clone();
        next.state = state;
        next.updated_at = now;
        next.expires_at = expires_at;
        next
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
