//! The state machine of one login session (see docs/protocol.md).

use super::{BrowserSecret, SecretHash, SessionId, UnixMillis};
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
    Scan(PhoneUser),
    Confirm {
        user_id: String,
    },
    Deny {
        user_id: String,
    },
    Cancel,
    Redeem,
    /// Written by whoever first notices a passed deadline.
    Expire,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Scan(_) => "scan",
            Self::Confirm { .. } => "confirm",
            Self::Deny { .. } => "deny",
            Self::Cancel => "cancel",
            Self::Redeem => "redeem",
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
}

/// One session as stored in the key-value bucket (JSON). The browser secret
/// appears only as its SHA-256, in hex.
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
}

/// The result of applying an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new record to write with compare-and-swap.
    Write(SessionRecord),
    /// Nothing to write: the action was a repeat that already holds (the same
    /// user scanning twice).
    Unchanged,
}

fn deadline(now: UnixMillis, ttl: Duration) -> UnixMillis {
    now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

impl SessionRecord {
    pub fn new(
        id: &SessionId,
        secret: &BrowserSecret,
        browser: BrowserContext,
        now: UnixMillis,
        deadlines: &Deadlines,
    ) -> Self {
        Self {
            id: id.as_str().to_owned(),
            state: LoginState::Pending,
            secret_sha256: secret.hash().to_hex(),
            browser,
            user: None,
            updated_at: now,
            expires_at: Some(deadline(now, deadlines.pending)),
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

    /// Applies `action` at `now`. The one place that decides which
    /// transitions exist.
    pub fn apply(
        &self,
        action: &Action,
        now: UnixMillis,
        deadlines: &Deadlines,
    ) -> Result<Outcome, DomainError> {
        use LoginState::*;
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
        let scanner_is = |user_id: &str| self.user.as_ref().is_some_and(|u| u.id == user_id);
        match (self.state, action) {
            (Pending, Action::Scan(user)) => {
                let mut next = self.moved(Scanned, now, Some(deadline(now, deadlines.scanned)));
                next.user = Some(user.clone());
                Ok(Outcome::Write(next))
            }
            (Scanned, Action::Scan(user)) if scanner_is(&user.id) => Ok(Outcome::Unchanged),
            (Scanned, Action::Scan(_)) => Err(DomainError::WrongUser),
            (Scanned, Action::Confirm { user_id }) | (Scanned, Action::Deny { user_id })
                if !scanner_is(user_id) =>
            {
                Err(DomainError::WrongUser)
            }
            (Scanned, Action::Confirm { .. }) => Ok(Outcome::Write(self.moved(
                Confirmed,
                now,
                Some(deadline(now, deadlines.confirmed)),
            ))),
            (Scanned, Action::Deny { .. }) => Ok(Outcome::Write(self.moved(Denied, now, None))),
            (Pending | Scanned, Action::Cancel) => {
                Ok(Outcome::Write(self.moved(Cancelled, now, None)))
            }
            (Confirmed, Action::Redeem) => Ok(Outcome::Write(self.moved(Redeemed, now, None))),
            _ => Err(not_allowed()),
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
mod tests {
    use super::*;

    const T0: UnixMillis = 1_800_000_000_000;

    fn alice() -> PhoneUser {
        PhoneUser {
            id: "alice".into(),
            display_name: "Alice".into(),
        }
    }

    fn fresh() -> (SessionRecord, BrowserSecret) {
        let secret = BrowserSecret::generate();
        let browser = BrowserContext {
            ip: "192.0.2.1".into(),
            user_agent: "test".into(),
            created_at: T0,
        };
        let rec = SessionRecord::new(
            &SessionId::generate(),
            &secret,
            browser,
            T0,
            &Deadlines::default(),
        );
        (rec, secret)
    }

    fn write(o: Outcome) -> SessionRecord {
        match o {
            Outcome::Write(r) => r,
            Outcome::Unchanged => panic!("expected a write"),
        }
    }

    #[test]
    fn happy_path_and_deadlines() {
        let d = Deadlines::default();
        let (rec, secret) = fresh();
        assert!(rec.secret_matches(&secret));
        assert_eq!(rec.expires_at, Some(T0 + 120_000));
        let scanned = write(rec.apply(&Action::Scan(alice()), T0 + 1, &d).unwrap());
        assert_eq!(scanned.state, LoginState::Scanned);
        assert_eq!(scanned.expires_at, Some(T0 + 1 + 60_000));
        let again = scanned.apply(&Action::Scan(alice()), T0 + 2, &d).unwrap();
        assert_eq!(again, Outcome::Unchanged);
        let confirm = Action::Confirm {
            user_id: "alice".into(),
        };
        let confirmed = write(scanned.apply(&confirm, T0 + 3, &d).unwrap());
        assert_eq!(confirmed.expires_at, Some(T0 + 3 + 30_000));
        let redeemed = write(confirmed.apply(&Action::Redeem, T0 + 4, &d).unwrap());
        assert_eq!(redeemed.state, LoginState::Redeemed);
        assert_eq!(redeemed.expires_at, None);
        assert!(matches!(
            redeemed.apply(&Action::Redeem, T0 + 5, &d),
            Err(DomainError::NotAllowed {
                state: "REDEEMED",
                ..
            })
        ));
    }

    #[test]
    fn every_forbidden_transition_is_refused() {
        let d = Deadlines::default();
        let (pending, _) = fresh();
        let scanned = write(pending.apply(&Action::Scan(alice()), T0, &d).unwrap());
        let confirm = Action::Confirm {
            user_id: "alice".into(),
        };
        let confirmed = write(scanned.apply(&confirm, T0, &d).unwrap());
        let actions = [
            Action::Scan(alice()),
            confirm.clone(),
            Action::Deny {
                user_id: "alice".into(),
            },
            Action::Cancel,
            Action::Redeem,
        ];
        let allowed: &[(LoginState, &str)] = &[
            (LoginState::Pending, "scan"),
            (LoginState::Pending, "cancel"),
            (LoginState::Scanned, "scan"),
            (LoginState::Scanned, "confirm"),
            (LoginState::Scanned, "deny"),
            (LoginState::Scanned, "cancel"),
            (LoginState::Confirmed, "redeem"),
        ];
        let mut finals = Vec::new();
        for (from, action) in [
            (&confirmed, Action::Redeem),
            (
                &scanned,
                Action::Deny {
                    user_id: "alice".into(),
                },
            ),
            (&pending, Action::Cancel),
        ] {
            finals.push(write(from.apply(&action, T0, &d).unwrap()));
        }
        let expired = write(pending.apply(&Action::Expire, T0 + 120_000, &d).unwrap());
        finals.push(expired);
        for rec in [&pending, &scanned, &confirmed]
            .into_iter()
            .chain(finals.iter())
        {
            for action in &actions {
                let ok = allowed.contains(&(rec.state, action.name()));
                let result = rec.apply(action, T0 + 1, &d);
                assert_eq!(result.is_ok(), ok, "{:?} {}", rec.state, action.name());
            }
        }
    }

    #[test]
    fn late_transitions_are_expired() {
        let d = Deadlines::default();
        let (rec, _) = fresh();
        let late = T0 + 120_000;
        assert_eq!(rec.effective_state(late - 1), LoginState::Pending);
        assert_eq!(rec.effective_state(late), LoginState::Expired);
        assert!(matches!(
            rec.apply(&Action::Scan(alice()), late, &d),
            Err(DomainError::Expired {
                state: "PENDING",
                ..
            })
        ));
        assert!(rec.apply(&Action::Expire, late - 1, &d).is_err());
        let seen = rec.as_seen_at(late);
        assert_eq!(seen.state, LoginState::Expired);
        assert_eq!(seen.expires_at, None);
    }

    #[test]
    fn only_the_scanning_user_may_decide() {
        let d = Deadlines::default();
        let (rec, _) = fresh();
        let scanned = write(rec.apply(&Action::Scan(alice()), T0, &d).unwrap());
        let bob = PhoneUser {
            id: "bob".into(),
            display_name: "Bob".into(),
        };
        assert_eq!(
            scanned.apply(&Action::Scan(bob), T0, &d),
            Err(DomainError::WrongUser)
        );
        let confirm_bob = Action::Confirm {
            user_id: "bob".into(),
        };
        assert_eq!(
            scanned.apply(&confirm_bob, T0, &d),
            Err(DomainError::WrongUser)
        );
    }

    #[test]
    fn record_json_round_trips_without_the_secret() {
        let (rec, secret) = fresh();
        let json = serde_json::to_string(&rec).unwrap();
        assert!(!json.contains(secret.expose()));
        let back: SessionRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rec);
    }

    /// Random walks over every action at random times: no panic, a final
    /// state never changes, `expires_at` is set exactly in waiting states,
    /// and time only moves forward in the record.
    #[test]
    fn random_walks_keep_the_invariants() {
        use rand::Rng as _;
        let d = Deadlines {
            pending: Duration::from_millis(50),
            scanned: Duration::from_millis(50),
            confirmed: Duration::from_millis(50),
        };
        let mut rng = rand::rng();
        let bob = PhoneUser {
            id: "bob".into(),
            display_name: "Bob".into(),
        };
        for _ in 0..2000 {
            let (mut rec, _) = fresh();
            let mut now = T0;
            for _ in 0..12 {
                now += rng.random_range(0..40);
                let action = match rng.random_range(0..8) {
                    0 => Action::Scan(alice()),
                    1 => Action::Scan(bob.clone()),
                    2 => Action::Confirm {
                        user_id: "alice".into(),
                    },
                    3 => Action::Confirm {
                        user_id: "bob".into(),
                    },
                    4 => Action::Deny {
                        user_id: "alice".into(),
                    },
                    5 => Action::Cancel,
                    6 => Action::Redeem,
                    _ => Action::Expire,
                };
                let before = rec.clone();
                if let Ok(Outcome::Write(next)) = rec.apply(&action, now, &d) {
                    assert!(
                        !before.state.is_final(),
                        "{:?} left a final state",
                        before.state
                    );
                    assert!(next.updated_at >= before.updated_at);
                    assert_eq!(next.expires_at.is_none(), next.state.is_final());
                    assert_eq!(next.secret_sha256, before.secret_sha256);
                    assert_eq!(next.browser, before.browser);
                    if next.state != LoginState::Scanned && before.user.is_some() {
                        assert_eq!(next.user, before.user, "the scanner never changes");
                    }
                    rec = next;
                }
            }
        }
    }
}
