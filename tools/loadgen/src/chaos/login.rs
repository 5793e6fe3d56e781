//! One whole login, as a browser and a phone play it: the browser creates
//! its session through the balancer and watches it; the phone scans the QR
//! code on screen and confirms, with the number the browser shows, on an
//! edge other than the browser's; the browser sees CONFIRMED pushed and
//! redeems. Every call retries retryable errors (503, 429 after its
//! `Retry-After`, 502/504, the network, `conflict`) until the login's
//! deadline; the push reconnects and resumes (see [`super::browser`]).
//! The phone's side is in [`super::phone`]. The record says how it ended: redeemed, told a final state, refused,
//! still failing with a clear error at the deadline, or hung.

use std::{
    collections::hash_map::DefaultHasher,
    future::Future,
    hash::{Hash, Hasher},
    sync::Arc,
    time::{Duration, SystemTime},
};

use qrlogin_client::api::{ApiError, LoginState, Snapshot};
use tokio::{sync::watch, time::Instant};

use super::{
    browser::{self, api_retryable, Kind, Link, Page, Screen},
    phone::{phone, Step},
    record::{End, LoginRecord},
    Ctx,
};

const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_LAST: Duration = Duration::from_millis(1000);
/// Longest a redeemed login keeps its page open for the REDEEMED push
/// (noted, not required: the page has moved on).
const REDEEMED_PUSH_WAIT: Duration = Duration::from_secs(2);
/// Longest the stored state is read back after a told outcome.
pub(super) const READ_BACK_LIMIT: Duration = Duration::from_secs(10);

/// How a call's retries ended, short of an answer.
pub(super) enum Failed {
    /// An answer that retrying does not change, after `tries` retries.
    Refused { error: ApiError, tries: usize },
    /// The login is over (deadline).
    Over(End),
}

/// Runs login `index` to its end.
pub async fn login(ctx: Arc<Ctx>, index: usize, kind: Kind, started: f64) -> LoginRecord {
    let deadline = ctx.clock.instant(started) + ctx.deadline;
    let mut rec = LoginRecord {
        index,
        transport: kind.label(),
        started,
        deadline: started + ctx.deadline.as_secs_f64(),
        ..Default::default()
    };
    rec.end = match play(&ctx, &mut rec, kind, deadline).await {
        Ok(()) => End::Redeemed,
        Err(end) => end,
    };
    rec
}

/// Ends the page's watch task when the login is done with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn play(
    ctx: &Arc<Ctx>,
    rec: &mut LoginRecord,
    kind: Kind,
    deadline: Instant,
) -> Result<(), End> {
    let browser = &ctx.browser;
    let created = call(ctx, rec, "create", deadline, |_| browser.create())
        .await
        .map_err(|f| refused(rec, "create", f))?;
    rec.created = Some(ctx.clock.now());
    rec.session_id = Some(created.id().to_owned());
    let mut nothing = created.snapshot.clone();
    nothing.version = 0;
    nothing.qr_payload = None;
    let page = Arc::new(Page {
        id: created.id().to_owned(),
        secret: created.browser_secret.clone(),
        kind,
        nothing,
        qr_created: created.qr_payload().to_owned(),
        spread: rec.index,
    });
    let (tx, mut rx) = watch::channel(Screen::default());
    let _watch = AbortOnDrop(tokio::spawn(browser::watch(ctx.clone(), page.clone(), tx)));
    let result = async {
        // The QR code on screen.
        let shown = wait_push(ctx, rec, &mut rx, deadline, "first push", |_| true).await?;
        rec.watching = Some(ctx.clock.now());
        if shown.state != LoginState::Pending {
            return Err(told(ctx, rec, &page, shown.state).await);
        }
        phone(ctx, rec, &page, &rx, deadline, Step::Scan).await?;
        rec.scanned = Some(ctx.clock.now());
        let scanned = wait_push(ctx, rec, &mut rx, deadline, "SCANNED push", |s| {
            s != LoginState::Pending
        })
        .await?;
        rec.scanned_pushed = rx.borrow().seen(LoginState::Scanned);
        if scanned.state != LoginState::Scanned && scanned.state != LoginState::Confirmed {
            return Err(told(ctx, rec, &page, scanned.state).await);
        }
        let code = scanned.match_code.unwrap_or_default();
        phone(ctx, rec, &page, &rx, deadline, Step::Confirm(code)).await?;
        rec.confirm_answered = Some(ctx.clock.now());
        let confirmed = wait_push(ctx, rec, &mut rx, deadline, "CONFIRMED push", |s| {
            s == LoginState::Confirmed
        })
        .await?;
        if confirmed.state != LoginState::Confirmed {
            return Err(told(ctx, rec, &page, confirmed.state).await);
        }
        rec.confirmed_pushed = rx.borrow().seen(LoginState::Confirmed);
        redeem(ctx, rec, &page, deadline).await?;
        // The REDEEMED push, if it comes soon (a different final state
        // would be a second outcome).
        let soon = Instant::now() + REDEEMED_PUSH_WAIT;
        let _ = tokio::time::timeout_at(soon, async {
            let _ = rx
                .wait_for(|s| s.state().is_some_and(|s| s.is_final()))
                .await;
        })
        .await;
        Ok(())
    }
    .await;
    let screen = rx.borrow().clone();
    rec.reconnects = screen.reconnects;
    for reason in &screen.reasons {
        rec.error(format!("push reopened: {reason}"));
    }
    for (state, at) in &screen.first_seen {
        if state.is_final() {
            rec.pushed_final(*state);
            if *state == LoginState::Redeemed {
                rec.redeemed_pushed = Some(*at);
            }
        }
    }
    result
}

/// Calls `attempt(tries)` until it answers, retrying retryable errors
/// (after the answer's `Retry-After`, else a doubling backoff) until the
/// deadline.
pub(super) async fn call<T, F, Fut>(
    ctx: &Ctx,
    rec: &mut LoginRecord,
    step: &'static str,
    deadline: Instant,
    mut attempt: F,
) -> Result<T, Failed>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let mut tries = 0usize;
    loop {
        let error = match tokio::time::timeout_at(deadline, attempt(tries)).await {
            Err(_) => return Err(Failed::Over(End::Hung { step })),
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) if api_retryable(&e) => e,
            Ok(Err(error)) => return Err(Failed::Refused { error, tries }),
        };
        let text = describe(&error);
        rec.retries += 1;
        rec.error(format!("{step} at +{:.2}s: {text}", ctx.clock.now()));
        let wait = error.retry_after().unwrap_or_else(|| {
            RETRY_FIRST
                .saturating_mul(1 << tries.min(5))
                .min(RETRY_LAST)
        });
        if Instant::now() + wait >= deadline {
            tokio::time::sleep_until(deadline).await;
            return Err(Failed::Over(End::GaveUp { step, error: text }));
        }
        tokio::time::sleep(wait).await;
        tries += 1;
    }
}

fn describe(e: &ApiError) -> String {
    match e {
        ApiError::Status { status, code, .. } => format!("HTTP {status} {code}"),
        other => other
            .to_string()
            .split(" from ")
            .next()
            .unwrap_or_default()
            .chars()
            .take(120)
            .collect(),
    }
}

pub(super) fn refused(rec: &mut LoginRecord, step: &'static str, f: Failed) -> End {
    match f {
        Failed::Over(end) => end,
        Failed::Refused { error, .. } => {
            let text = describe(&error);
            rec.error(format!("{step}: {text}"));
            End::Refused { step, error: text }
        }
    }
}

/// Waits until the page shows a state `want` accepts, or a final state
/// (then returned too, for the caller to judge). At the deadline: gave up
/// when the push was reconnecting after a clear error, else hung.
async fn wait_push(
    ctx: &Ctx,
    rec: &mut LoginRecord,
    rx: &mut watch::Receiver<Screen>,
    deadline: Instant,
    step: &'static str,
    want: impl Fn(LoginState) -> bool,
) -> Result<Snapshot, End> {
    let waited = tokio::time::timeout_at(deadline, async {
        rx.wait_for(|s| {
            matches!(s.link, Link::Refused(_))
                || s.state().is_some_and(|st| want(st) || st.is_final())
        })
        .await
        .map(|_| ())
    })
    .await;
    let screen = rx.borrow().clone();
    match (waited, screen.held) {
        (Ok(Ok(_)), Some(held)) if want(held.state) || held.state.is_final() => Ok(held),
        (Ok(_), _) => {
            let error = match screen.link {
                Link::Refused(e) => e,
                _ => "the watch task ended".into(),
            };
            rec.error(format!("{step}: push refused: {error}"));
            Err(End::Refused { step, error })
        }
        (Err(_), _) => {
            let _ = ctx;
            Err(match screen.link {
                Link::Waiting(error) => End::GaveUp { step, error },
                _ => End::Hung { step },
            })
        }
    }
}

/// The browser was pushed `state`, a final state, before it could redeem:
/// its outcome. The stored state is read back to check that it agrees.
async fn told(ctx: &Ctx, rec: &mut LoginRecord, page: &Page, state: LoginState) -> End {
    let limit = Instant::now() + READ_BACK_LIMIT;
    if let Ok(stored) = call(ctx, rec, "read back", limit, |_| {
        ctx.browser.get(&page.id, &page.secret)
    })
    .await
    {
        rec.stored_after = Some((stored.state.as_str(), deadline_passed(&stored)));
    }
    End::Told {
        state: state.as_str(),
    }
}

/// Whether the snapshot's own deadline (`expires_at`) has passed.
fn deadline_passed(s: &Snapshot) -> bool {
    s.expires_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
        .is_some_and(|at| at <= SystemTime::now())
}

/// Redeems once; retries that answer must carry the same token.
async fn redeem(
    ctx: &Ctx,
    rec: &mut LoginRecord,
    page: &Page,
    deadline: Instant,
) -> Result<(), End> {
    let result = call(ctx, rec, "redeem", deadline, |_| {
        ctx.browser.redeem(&page.id, &page.secret)
    })
    .await;
    match result {
        Ok(redeemed) => {
            let mut h = DefaultHasher::new();
            redeemed.access_token.hash(&mut h);
            let digest = format!("{:016x}", h.finish());
            if !rec.tokens.contains(&digest) {
                rec.tokens.push(digest);
            }
            rec.redeemed = Some(ctx.clock.now());
            Ok(())
        }
        Err(Failed::Refused { error, tries })
            if tries > 0 && error.code() == "failed_precondition" =>
        {
            // An earlier attempt redeemed, and its answer (the token) was
            // lost: the browser is told an error, and the session is spent.
            let limit = Instant::now() + READ_BACK_LIMIT;
            let stored = call(ctx, rec, "read back", limit, |_| {
                ctx.browser.get(&page.id, &page.secret)
            })
            .await
            .map(|s| s.state.as_str())
            .unwrap_or("unknown");
            let text = format!(
                "{} after a retry (stored {stored}): the token was lost",
                describe(&error)
            );
            rec.error(format!("redeem: {text}"));
            Err(End::Refused {
                step: "redeem",
                error: text,
            })
        }
        Err(f) => Err(refused(rec, "redeem", f)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_read_from_the_snapshot() {
        let snap = |expires_at: &str| Snapshot {
            session_id: "s".into(),
            state: LoginState::Confirmed,
            version: 3,
            expires_at: Some(expires_at.into()),
            updated_at: String::new(),
            user_display_name: None,
            qr_payload: None,
            match_code: None,
            deny_reason: None,
            poll_interval_ms: None,
            node: None,
        };
        assert!(deadline_passed(&snap("2020-01-01T00:00:00.000Z")));
        assert!(!deadline_passed(&snap("2999-01-01T00:00:00.000Z")));
        assert!(!deadline_passed(&snap("not a time")));
    }
}
