//! What one login did (times on the driver's clock, what the browser was
//! told, the tokens it got) and the verdict on it: completed, told an
//! outcome, lost, or duplicated.

use qrlogin_client::api::LoginState;
use serde::Serialize;

/// One login, as the driver saw it. Times are seconds on the driver's
/// clock; `None`: the step was not reached.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoginRecord {
    pub index: usize,
    /// `sse`, `ws`, `stomp`, `grpc` or `long-poll`.
    pub transport: &'static str,
    pub session_id: Option<String>,
    pub started: f64,
    pub deadline: f64,
    pub created: Option<f64>,
    /// The first snapshot on the browser's push (the QR code on screen).
    pub watching: Option<f64>,
    pub scanned: Option<f64>,
    pub scanned_pushed: Option<f64>,
    /// When the phone started writing its first confirm.
    pub confirm_sent: Option<f64>,
    pub confirm_answered: Option<f64>,
    pub confirmed_pushed: Option<f64>,
    /// When a redeem answered with a token.
    pub redeemed: Option<f64>,
    pub redeemed_pushed: Option<f64>,
    /// Distinct final states pushed to the browser, in order.
    pub finals_pushed: Vec<&'static str>,
    /// Distinct access tokens the redeem answers carried (as digests).
    pub tokens: Vec<String>,
    /// After the browser was told a final state: the session's stored
    /// state read back (state, whether its deadline had passed).
    pub stored_after: Option<(&'static str, bool)>,
    pub end: End,
    /// Push connections the browser opened again (resuming by version).
    pub reconnects: u32,
    /// Calls retried (create, scan, confirm, redeem).
    pub retries: u32,
    /// The first few errors met, for the reader.
    pub errors: Vec<String>,
}

/// Errors kept per login.
const ERRORS_KEPT: usize = 4;

impl LoginRecord {
    pub fn error(&mut self, text: String) {
        if self.errors.len() < ERRORS_KEPT {
            self.errors.push(text);
        }
    }

    pub fn pushed_final(&mut self, state: LoginState) {
        if !self.finals_pushed.contains(&state.as_str()) {
            self.finals_pushed.push(state.as_str());
        }
    }
}

/// How a login ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum End {
    /// Still running (never in a finished record).
    #[default]
    Running,
    /// The browser saw CONFIRMED and a redeem answered with a token.
    Redeemed,
    /// The browser was pushed a final state before it redeemed.
    Told { state: &'static str },
    /// A step was refused with an error that is not worth retrying.
    Refused { step: &'static str, error: String },
    /// The deadline passed while the step retried after a clear,
    /// retryable error (the browser or phone was told "try again").
    GaveUp { step: &'static str, error: String },
    /// The deadline passed while the step waited for an answer or a push
    /// that never came: silence.
    Hung { step: &'static str },
}

/// The verdict on a finished login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// CONFIRMED pushed, redeemed once, one token.
    Completed,
    /// Told an outcome: a final state, or a clear error.
    Outcome,
    /// Hung past its deadline.
    Lost,
    /// Two different outcomes, or two different tokens.
    Duplicated,
}

/// Whether the stored state read back contradicts the final state the
/// browser was told. `stored_expired`: the stored state's deadline had
/// passed (an edge may announce EXPIRED before auth stores it).
pub fn contradicts(told: &str, stored: &str, stored_expired: bool) -> bool {
    if told == stored {
        return false;
    }
    // Told EXPIRED for a session whose (non-final) deadline passed: right.
    let stored_final = LoginState::parse(stored).is_some_and(|s| s.is_final());
    !(told == "EXPIRED" && !stored_final && stored_expired)
}

impl LoginRecord {
    /// Why this login counts as duplicated, if it does.
    pub fn duplicate_reason(&self) -> Option<String> {
        if self.tokens.len() > 1 {
            return Some(format!("{} different tokens", self.tokens.len()));
        }
        if self.finals_pushed.len() > 1 {
            return Some(format!("pushed {}", self.finals_pushed.join(" and ")));
        }
        if let Some(told) = self.finals_pushed.first() {
            if self.redeemed.is_some() && *told != "REDEEMED" {
                return Some(format!("redeemed, and pushed {told}"));
            }
            if self.redeemed.is_none() && *told == "REDEEMED" {
                return Some("pushed REDEEMED without a redeem answer".into());
            }
        }
        if let (End::Told { state }, Some((stored, expired))) = (&self.end, self.stored_after) {
            if contradicts(state, stored, expired) {
                return Some(format!("told {state}, stored {stored}"));
            }
        }
        None
    }

    pub fn verdict(&self) -> Verdict {
        if self.duplicate_reason().is_some() {
            return Verdict::Duplicated;
        }
        match &self.end {
            End::Redeemed if self.confirmed_pushed.is_some() && self.tokens.len() == 1 => {
                Verdict::Completed
            }
            End::Told { .. } | End::Refused { .. } | End::GaveUp { .. } => Verdict::Outcome,
            // A redeem without the push or the token: a bug of the driver,
            // counted as lost so that it cannot pass unseen.
            End::Redeemed | End::Hung { .. } | End::Running => Verdict::Lost,
        }
    }

    /// A short description of how it ended, for tallies.
    pub fn end_label(&self) -> String {
        match &self.end {
            End::Running => "running".into(),
            End::Redeemed => "redeemed".into(),
            End::Told { state } => format!("told {state}"),
            End::Refused { step, error } => format!("{step} refused: {error}"),
            End::GaveUp { step, error } => format!("{step} still failing at the deadline: {error}"),
            End::Hung { step } => format!("hung {step}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed() -> LoginRecord {
        LoginRecord {
            confirm_sent: Some(1.0),
            confirmed_pushed: Some(1.002),
            redeemed: Some(1.01),
            tokens: vec!["a".into()],
            end: End::Redeemed,
            ..Default::default()
        }
    }

    #[test]
    fn a_redeemed_login_with_one_token_is_completed() {
        assert_eq!(completed().verdict(), Verdict::Completed);
        // The REDEEMED push may come or not (the page has moved on).
        let mut r = completed();
        r.pushed_final(LoginState::Redeemed);
        r.pushed_final(LoginState::Redeemed);
        assert_eq!(r.finals_pushed, ["REDEEMED"]);
        assert_eq!(r.verdict(), Verdict::Completed);
    }

    #[test]
    fn two_tokens_or_two_final_states_are_duplicates() {
        let mut r = completed();
        r.tokens.push("b".into());
        assert_eq!(r.verdict(), Verdict::Duplicated);
        assert_eq!(r.duplicate_reason().unwrap(), "2 different tokens");
        let mut r = completed();
        r.pushed_final(LoginState::Expired);
        assert_eq!(
            r.duplicate_reason().unwrap(),
            "redeemed, and pushed EXPIRED"
        );
        let mut r = LoginRecord {
            end: End::Told { state: "EXPIRED" },
            ..Default::default()
        };
        r.pushed_final(LoginState::Expired);
        r.pushed_final(LoginState::Redeemed);
        assert_eq!(r.verdict(), Verdict::Duplicated);
        let r = LoginRecord {
            finals_pushed: vec!["REDEEMED"],
            end: End::Refused {
                step: "redeem",
                error: "failed_precondition".into(),
            },
            ..Default::default()
        };
        assert_eq!(r.verdict(), Verdict::Duplicated);
    }

    #[test]
    fn a_told_outcome_must_agree_with_the_stored_state() {
        let told = |stored: (&'static str, bool)| LoginRecord {
            finals_pushed: vec!["EXPIRED"],
            stored_after: Some(stored),
            end: End::Told { state: "EXPIRED" },
            ..Default::default()
        };
        assert_eq!(told(("EXPIRED", true)).verdict(), Verdict::Outcome);
        // Announced at the deadline, before auth stored it.
        assert_eq!(told(("CONFIRMED", true)).verdict(), Verdict::Outcome);
        // Told EXPIRED while the session lives on, or was redeemed.
        assert_eq!(told(("CONFIRMED", false)).verdict(), Verdict::Duplicated);
        assert_eq!(told(("REDEEMED", false)).verdict(), Verdict::Duplicated);
        assert_eq!(told(("REDEEMED", true)).verdict(), Verdict::Duplicated);
        assert!(!contradicts("DENIED", "DENIED", false));
        assert!(contradicts("DENIED", "CANCELLED", true));
    }

    #[test]
    fn silence_is_lost_and_a_clear_error_is_an_outcome() {
        let ended = |end: End| {
            LoginRecord {
                end,
                ..Default::default()
            }
            .verdict()
        };
        assert_eq!(
            ended(End::Hung {
                step: "confirmed push"
            }),
            Verdict::Lost
        );
        assert_eq!(ended(End::Running), Verdict::Lost);
        assert_eq!(
            ended(End::GaveUp {
                step: "create",
                error: "HTTP 503 unavailable".into()
            }),
            Verdict::Outcome
        );
        assert_eq!(
            ended(End::Refused {
                step: "watch",
                error: "permission_denied".into()
            }),
            Verdict::Outcome
        );
        // Redeemed without the push (or with no token) cannot pass unseen.
        let mut r = completed();
        r.confirmed_pushed = None;
        assert_eq!(r.verdict(), Verdict::Lost);
    }
}
