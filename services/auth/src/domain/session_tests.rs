//! The transition table, tested without I/O: every allowed and forbidden
//! transition, deadlines, the QR payload and number-matching steps, and a
//! random walk over all of it.

use super::*;
use crate::domain::Matching;

const T0: UnixMillis = 1_800_000_000_000;

fn alice() -> PhoneUser {
    PhoneUser {
        id: "alice".into(),
        display_name: "Alice".into(),
    }
}

fn bob() -> PhoneUser {
    PhoneUser {
        id: "bob".into(),
        display_name: "Bob".into(),
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
        &Rules::default(),
        None,
    );
    (rec, secret)
}

/// The payload the browser shows at `now`.
fn shown(rec: &SessionRecord, now: UnixMillis) -> Option<String> {
    rec.qr
        .as_ref()
        .map(|k| k.payload_at("http://x", &rec.id, now))
}

const MATCH: Matching = Matching {
    code: 42,
    choices: [17, 42, 88],
};

/// A scan by `user` with the payload on screen at `now`.
fn scan_at(rec: &SessionRecord, user: PhoneUser, now: UnixMillis) -> Action {
    Action::Scan {
        user,
        qr_payload: shown(rec, now),
        matching: Some(MATCH),
    }
}

fn confirm(user: &str, code: u8) -> Action {
    Action::Confirm {
        user_id: user.into(),
        match_code: Some(code),
    }
}

/// A redeem without a proof (the sessions here are not key-bound).
const REDEEM: Action = Action::Redeem { proof: None };

fn write(o: Outcome) -> SessionRecord {
    match o {
        Outcome::Write(r) => r,
        Outcome::Unchanged => panic!("expected a write"),
    }
}

#[test]
fn happy_path_and_deadlines() {
    let d = Rules::default();
    let (rec, secret) = fresh();
    assert!(rec.secret_matches(&secret));
    assert_eq!(rec.expires_at, Some(T0 + 120_000));
    let scanned = write(rec.apply(&scan_at(&rec, alice(), T0), T0 + 1, &d).unwrap());
    assert_eq!(scanned.state, LoginState::Scanned);
    assert_eq!(scanned.expires_at, Some(T0 + 1 + 60_000));
    assert_eq!(scanned.matching, Some(MATCH));
    let again = scanned
        .apply(&scan_at(&rec, alice(), T0), T0 + 2, &d)
        .unwrap();
    assert_eq!(again, Outcome::Unchanged);
    let confirmed = write(scanned.apply(&confirm("alice", 42), T0 + 3, &d).unwrap());
    assert_eq!(confirmed.state, LoginState::Confirmed);
    assert_eq!(confirmed.expires_at, Some(T0 + 3 + 30_000));
    let redeemed = write(confirmed.apply(&REDEEM, T0 + 4, &d).unwrap());
    assert_eq!(redeemed.state, LoginState::Redeemed);
    assert_eq!(redeemed.expires_at, None);
    // A repeat within the window is answered as the first (a retry whose
    // answer was lost); after it, refused.
    assert_eq!(redeemed.apply(&REDEEM, T0 + 5, &d), Ok(Outcome::Unchanged));
    assert_eq!(
        redeemed.apply(&REDEEM, T0 + 4 + 29_999, &d),
        Ok(Outcome::Unchanged)
    );
    assert!(matches!(
        redeemed.apply(&REDEEM, T0 + 4 + 30_000, &d),
        Err(DomainError::NotAllowed {
            state: "REDEEMED",
            ..
        })
    ));
    let never = Rules {
        redeem_retry: Duration::ZERO,
        ..d
    };
    assert!(redeemed.apply(&REDEEM, T0 + 4, &never).is_err());
}

#[test]
fn a_repeated_call_is_answered_as_the_first_without_a_write() {
    let d = Rules::default();
    let (rec, _) = fresh();
    let scanned = write(rec.apply(&scan_at(&rec, alice(), T0), T0, &d).unwrap());
    let confirmed = write(scanned.apply(&confirm("alice", 42), T0 + 1, &d).unwrap());
    let unchanged = Ok(Outcome::Unchanged);
    // Confirm by the same user with the number shown, also once redeemed.
    assert_eq!(
        confirmed.apply(&confirm("alice", 42), T0 + 2, &d),
        unchanged
    );
    let redeemed = write(confirmed.apply(&REDEEM, T0 + 3, &d).unwrap());
    assert_eq!(redeemed.apply(&confirm("alice", 42), T0 + 4, &d), unchanged);
    // Not by another user, nor with another number: not a repeat.
    assert!(confirmed.apply(&confirm("bob", 42), T0 + 2, &d).is_err());
    assert!(confirmed.apply(&confirm("alice", 17), T0 + 2, &d).is_err());
    // A wrong pick that denied: repeated, the same refusal.
    let wrong = write(scanned.apply(&confirm("alice", 17), T0 + 1, &d).unwrap());
    assert_eq!(wrong.deny_reason, Some(DenyReason::WrongMatch));
    assert_eq!(wrong.apply(&confirm("alice", 17), T0 + 2, &d), unchanged);
    assert!(wrong.apply(&confirm("alice", 42), T0 + 2, &d).is_err());
    assert!(wrong.apply(&confirm("bob", 17), T0 + 2, &d).is_err());
    // Deny by the user who denied; not a confirm after it.
    let deny = |user: &str| Action::Deny {
        user_id: user.into(),
    };
    let denied = write(scanned.apply(&deny("alice"), T0 + 1, &d).unwrap());
    assert_eq!(denied.apply(&deny("alice"), T0 + 2, &d), unchanged);
    assert!(denied.apply(&deny("bob"), T0 + 2, &d).is_err());
    assert!(denied.apply(&confirm("alice", 42), T0 + 2, &d).is_err());
    assert!(wrong.apply(&deny("alice"), T0 + 2, &d).is_err());
    // Cancel of a cancelled session (the service checked the secret).
    let cancelled = write(confirmed.apply(&Action::Cancel, T0 + 2, &d).unwrap());
    assert_eq!(cancelled.apply(&Action::Cancel, T0 + 3, &d), unchanged);
    assert!(cancelled.apply(&REDEEM, T0 + 3, &d).is_err());
    assert!(cancelled.apply(&confirm("alice", 42), T0 + 3, &d).is_err());
    // A key-bound session: a repeat needs another proof (valid: the
    // service checks it) than the one that redeemed; a proof works once.
    let bound = SessionRecord {
        key_thumbprint: Some("thumbprint".into()),
        ..confirmed.clone()
    };
    let with = |p: &str| Action::Redeem {
        proof: Some(p.into()),
    };
    let redeemed = write(bound.apply(&with("first"), T0 + 3, &d).unwrap());
    assert_eq!(redeemed.redeem_proof.as_deref(), Some("first"));
    assert_eq!(redeemed.apply(&with("second"), T0 + 4, &d), unchanged);
    assert!(redeemed.apply(&with("first"), T0 + 4, &d).is_err());
    assert!(redeemed.apply(&REDEEM, T0 + 4, &d).is_err());
    // An expired session is not cancelled.
    let expired = write(rec.apply(&Action::Expire, T0 + 120_000, &d).unwrap());
    assert!(expired.apply(&Action::Cancel, T0 + 120_001, &d).is_err());
}

#[test]
fn the_browser_sees_the_code_while_scanned_and_the_name_only_after_confirm() {
    let d = Rules::default();
    let (rec, _) = fresh();
    assert!(rec.public_qr().is_some());
    assert_eq!(rec.public_display_name(), None);
    let scanned = write(rec.apply(&scan_at(&rec, alice(), T0), T0, &d).unwrap());
    assert_eq!(scanned.public_match_code(), Some(42));
    assert_eq!(
        scanned.public_display_name(),
        None,
        "no name before confirm"
    );
    assert!(
        scanned.public_qr().is_none(),
        "the QR is gone after the scan"
    );
    let confirmed = write(scanned.apply(&confirm("alice", 42), T0, &d).unwrap());
    assert_eq!(confirmed.public_display_name(), Some("Alice"));
    assert_eq!(confirmed.public_match_code(), None);
    let denied = write(
        scanned
            .apply(
                &Action::Deny {
                    user_id: "alice".into(),
                },
                T0,
                &d,
            )
            .unwrap(),
    );
    assert_eq!(denied.public_display_name(), None, "a refusal names nobody");
    assert_eq!(denied.deny_reason, Some(DenyReason::User));
}

#[test]
fn a_wrong_pick_denies_the_session_and_a_missing_one_changes_nothing() {
    let d = Rules::default();
    let (rec, _) = fresh();
    let scanned = write(rec.apply(&scan_at(&rec, alice(), T0), T0, &d).unwrap());
    let none = Action::Confirm {
        user_id: "alice".into(),
        match_code: None,
    };
    assert_eq!(
        scanned.apply(&none, T0, &d),
        Err(DomainError::MatchRequired)
    );
    let denied = write(scanned.apply(&confirm("alice", 17), T0, &d).unwrap());
    assert_eq!(denied.state, LoginState::Denied);
    assert_eq!(denied.deny_reason, Some(DenyReason::WrongMatch));
    // One try: the right number afterwards is too late.
    assert!(matches!(
        denied.apply(&confirm("alice", 42), T0, &d),
        Err(DomainError::NotAllowed {
            state: "DENIED",
            ..
        })
    ));
    // Without number matching (the setting is off) confirm needs no pick.
    let plain = Action::Scan {
        user: alice(),
        qr_payload: shown(&rec, T0),
        matching: None,
    };
    let scanned = write(rec.apply(&plain, T0, &d).unwrap());
    assert_eq!(scanned.public_match_code(), None);
    let confirmed = write(scanned.apply(&none, T0, &d).unwrap());
    assert_eq!(confirmed.state, LoginState::Confirmed);
}

#[test]
fn a_scan_needs_the_payload_on_screen() {
    let d = Rules::default();
    let (rec, _) = fresh();
    let stale = Action::Scan {
        user: alice(),
        qr_payload: shown(&rec, T0),
        matching: Some(MATCH),
    };
    // 25 s rotation, 3 s grace: at 40 s the first payload is replaced.
    assert_eq!(
        rec.apply(&stale, T0 + 40_000, &d),
        Err(DomainError::QrReplaced)
    );
    let bare = Action::Scan {
        user: alice(),
        qr_payload: None,
        matching: None,
    };
    assert!(matches!(
        rec.apply(&bare, T0, &d),
        Err(DomainError::QrInvalid(_))
    ));
    let current = scan_at(&rec, alice(), T0 + 40_000);
    assert!(rec.apply(&current, T0 + 40_000, &d).is_ok());
    // A record from before rotating codes scans without a payload.
    let legacy = SessionRecord {
        qr: None,
        ..rec.clone()
    };
    assert!(legacy.apply(&bare, T0, &d).is_ok());
}

#[test]
fn every_forbidden_transition_is_refused() {
    let d = Rules::default();
    let (pending, _) = fresh();
    let scanned = write(
        pending
            .apply(&scan_at(&pending, alice(), T0), T0, &d)
            .unwrap(),
    );
    let confirmed = write(scanned.apply(&confirm("alice", 42), T0, &d).unwrap());
    let actions = [
        scan_at(&pending, alice(), T0),
        confirm("alice", 42),
        Action::Deny {
            user_id: "alice".into(),
        },
        Action::Cancel,
        REDEEM,
    ];
    let allowed: &[(LoginState, &str)] = &[
        (LoginState::Pending, "scan"),
        (LoginState::Pending, "cancel"),
        (LoginState::Scanned, "scan"),
        (LoginState::Scanned, "confirm"),
        (LoginState::Scanned, "deny"),
        (LoginState::Scanned, "cancel"),
        (LoginState::Confirmed, "redeem"),
        (LoginState::Confirmed, "cancel"),
        // Repeats of what made the record, answered without a write.
        (LoginState::Confirmed, "confirm"),
        (LoginState::Redeemed, "confirm"),
        (LoginState::Redeemed, "redeem"),
        (LoginState::Denied, "deny"),
        (LoginState::Cancelled, "cancel"),
    ];
    let mut finals = Vec::new();
    for (from, action) in [
        (&confirmed, REDEEM),
        (
            &scanned,
            Action::Deny {
                user_id: "alice".into(),
            },
        ),
        (&pending, Action::Cancel),
        (&confirmed, Action::Cancel),
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
            if rec.state.is_final() {
                assert!(
                    !matches!(result, Ok(Outcome::Write(_))),
                    "{:?} was written after {}",
                    rec.state,
                    action.name()
                );
            }
        }
    }
}

#[test]
fn late_transitions_are_expired() {
    let d = Rules::default();
    let (rec, _) = fresh();
    let late = T0 + 120_000;
    assert_eq!(rec.effective_state(late - 1), LoginState::Pending);
    assert_eq!(rec.effective_state(late), LoginState::Expired);
    assert!(matches!(
        rec.apply(&scan_at(&rec, alice(), late), late, &d),
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
    let d = Rules::default();
    let (rec, _) = fresh();
    let scanned = write(rec.apply(&scan_at(&rec, alice(), T0), T0, &d).unwrap());
    assert_eq!(
        scanned.apply(&scan_at(&rec, bob(), T0), T0, &d),
        Err(DomainError::WrongUser)
    );
    assert_eq!(
        scanned.apply(&confirm("bob", 42), T0, &d),
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

#[test]
fn records_of_the_previous_format_still_open() {
    let old = r#"{"id":"q3Zb0Xz2kT9yLw1sJm5HAA","state":"SCANNED","secret_sha256":"00","browser":{"ip":"192.0.2.1","user_agent":"t","created_at":1},"user":{"id":"alice","display_name":"Alice"},"updated_at":2,"expires_at":3}"#;
    let rec: SessionRecord = serde_json::from_str(old).unwrap();
    assert_eq!(rec.qr, None);
    assert_eq!(rec.matching, None);
    assert_eq!(rec.key_thumbprint, None);
}

/// Random walks over every action at random times: no panic, a final
/// state never changes, `expires_at` is set exactly in waiting states,
/// time only moves forward in the record, and nobody but the scanner
/// ever gets a session CONFIRMED, and never with a wrong pick. Every write
/// repeated at once by the same caller (a retry after a lost answer) is
/// answered without a write, and nothing else is: an unchanged answer is
/// always a repeat of what made the record.
#[test]
fn random_walks_keep_the_invariants() {
    use rand::Rng as _;
    let d = Rules {
        deadlines: Deadlines {
            pending: Duration::from_millis(50),
            scanned: Duration::from_millis(50),
            confirmed: Duration::from_millis(50),
        },
        qr: crate::domain::QrRules {
            rotation: Duration::from_millis(20),
            grace: Duration::from_millis(5),
        },
        redeem_retry: Duration::from_millis(30),
    };
    let mut rng = rand::rng();
    for _ in 0..2000 {
        let (mut rec, _) = fresh();
        rec.qr = Some(crate::domain::QrKey::generate(&d.qr, T0));
        let first = rec.clone();
        let mut now = T0;
        for _ in 0..12 {
            now += rng.random_range(0..40);
            let read_at = now - rng.random_range(0..30);
            let action = match rng.random_range(0..10) {
                0 => scan_at(&first, alice(), read_at),
                1 => scan_at(&first, bob(), read_at),
                2 => confirm("alice", 42),
                3 => confirm("alice", 17),
                4 => confirm("bob", 42),
                5 => Action::Deny {
                    user_id: "alice".into(),
                },
                6 => Action::Cancel,
                7 => REDEEM,
                8 => Action::Scan {
                    user: alice(),
                    qr_payload: None,
                    matching: Some(MATCH),
                },
                _ => Action::Expire,
            };
            let before = rec.clone();
            let outcome = rec.apply(&action, now, &d);
            if let Ok(Outcome::Unchanged) = outcome {
                assert!(
                    before.repeats(&action, now, &d),
                    "{action:?} unchanged in {:?} without being a repeat",
                    before.state
                );
                let by_scanner =
                    |user_id: &str| before.user.as_ref().is_some_and(|u| u.id == user_id);
                match &action {
                    Action::Scan { user, .. } => assert!(by_scanner(&user.id)),
                    Action::Confirm { user_id, .. } | Action::Deny { user_id } => {
                        assert!(by_scanner(user_id))
                    }
                    Action::Redeem { .. } => assert!(
                        before.state == LoginState::Redeemed && now < before.updated_at + 30
                    ),
                    Action::Cancel => assert_eq!(before.state, LoginState::Cancelled),
                    Action::Expire => panic!("an expiry is never a repeat"),
                }
            }
            if let Ok(Outcome::Write(next)) = outcome {
                if !matches!(action, Action::Expire) {
                    assert_eq!(
                        next.apply(&action, now, &d),
                        Ok(Outcome::Unchanged),
                        "{action:?} repeated at once after it moved {:?} to {:?}",
                        before.state,
                        next.state
                    );
                }
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
                if next.state == LoginState::Confirmed {
                    let scanner = before.user.as_ref().map(|u| u.id.as_str());
                    assert!(
                        matches!(&action, Action::Confirm { user_id, match_code: Some(42) } if Some(user_id.as_str()) == scanner),
                        "confirmed by {action:?}, scanned by {scanner:?}"
                    );
                }
                if next.deny_reason == Some(DenyReason::WrongMatch) {
                    assert!(matches!(
                        &action,
                        Action::Confirm {
                            match_code: Some(17),
                            ..
                        }
                    ));
                }
                rec = next;
            }
        }
    }
}
