//! The other side of each login: the phone scans and confirms on an edge
//! other than the browser's, and the browser redeems and is checked
//! against the stored state. Every step retries what is safe to retry
//! (network errors, 503, `conflict`) on the next edge, until the stop
//! signal.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use tokio::time::Instant;

use qrlogin_client::api::{self, ApiError, Client};

use crate::{watch::Browser, worker::Ctx};

const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_LAST: Duration = Duration::from_millis(1000);

/// Waits before retry number `tries`; false when the stop signal came.
async fn retry_wait(ctx: &Ctx, tries: usize) -> bool {
    ctx.counters.retries.fetch_add(1, Ordering::Relaxed);
    let wait = RETRY_FIRST
        .saturating_mul(1 << tries.min(5))
        .min(RETRY_LAST);
    tokio::select! {
        _ = ctx.stop.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

fn fail(ctx: &Ctx, b: &Browser, what: String) {
    tracing::warn!(session = %b.id, "{what}");
    ctx.counters.phone_failures.fetch_add(1, Ordering::Relaxed);
    let _ = b.failure.set(what);
}

/// The session's state as an edge stores it (short poll with the secret).
async fn stored_state(ctx: &Ctx, b: &Browser) -> Result<api::Snapshot, ApiError> {
    let clients = &ctx.watch_clients;
    let mut tries = 0;
    loop {
        match clients[(b.home + tries) % clients.len()]
            .get(&b.id, &b.secret)
            .await
        {
            Err(e) if e.is_retryable() && retry_wait(ctx, tries).await => tries += 1,
            other => return other,
        }
    }
}

/// What the phone sends.
#[derive(Clone, Copy)]
enum Step<'a> {
    /// The payload read from the screen.
    Scan(&'a str),
    /// The number the user picked.
    Confirm(u32),
}

impl Step<'_> {
    fn name(self) -> &'static str {
        match self {
            Step::Scan(_) => "scan",
            Step::Confirm(_) => "confirm",
        }
    }

    /// The stored states that show this step landed.
    fn reached(self) -> &'static [api::LoginState] {
        use api::LoginState::*;
        match self {
            Step::Scan(_) => &[Scanned, Confirmed, Redeemed],
            Step::Confirm(_) => &[Confirmed, Redeemed],
        }
    }

    /// One attempt on `client`; `on_send` runs right before the request is
    /// written.
    async fn send(
        self,
        client: &Client,
        id: &str,
        user_token: &str,
        on_send: impl Fn(),
    ) -> Result<(), ApiError> {
        match self {
            Step::Scan(payload) => client.scan(id, user_token, payload).await.map(|_| ()),
            Step::Confirm(code) => client
                .confirm(id, user_token, code, on_send)
                .await
                .map(|_| ()),
        }
    }
}

/// A phone route with retries. A refusal after a retry can mean that an
/// earlier attempt landed and only its answer was lost: then the stored
/// state decides.
async fn phone_step(ctx: &Ctx, b: &Browser, step: Step<'_>) -> Result<(), String> {
    let clients = &ctx.phone_clients;
    let first = (b.home + 1) % clients.len();
    let action = step.name();
    let mut tries = 0;
    loop {
        let client = &clients[(first + tries) % clients.len()];
        let on_send = || {
            let _ = b.confirm_sent.set(Instant::now());
            if tries > 0 {
                let _ = b.confirm_retried.set(());
            }
        };
        match step
            .send(client, &b.id, &ctx.plan.user_token, on_send)
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) if tries > 0 && e.code() == "failed_precondition" => {
                return match stored_state(ctx, b).await {
                    Ok(s) if step.reached().contains(&s.state) => Ok(()),
                    Ok(s) => Err(format!("{action}: {e} (stored state {})", s.state.as_str())),
                    Err(read) => Err(format!("{action}: {e}; reading the state: {read}")),
                };
            }
            Err(e) if e.is_retryable() => {
                if !retry_wait(ctx, tries).await {
                    return Err(format!("{action}: stopped while retrying after {e}"));
                }
                tries += 1;
            }
            Err(e) => return Err(format!("{action}: {e}")),
        }
    }
}

/// Longest the phone waits for the browser to show the number.
const MATCH_CODE_WAIT: Duration = Duration::from_secs(10);

/// The number the browser shows after the scan: from its pushed snapshot,
/// else (after a bounded wait) from a poll of the stored state.
async fn match_code(ctx: &Ctx, b: &Browser) -> Result<u32, String> {
    let deadline = Instant::now() + MATCH_CODE_WAIT;
    while Instant::now() < deadline && !ctx.stop.is_cancelled() {
        if let Some(code) = b.held().and_then(|s| s.match_code) {
            return Ok(code);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    match stored_state(ctx, b).await {
        Ok(s) => s
            .match_code
            .ok_or_else(|| format!("no number to pick in state {}", s.state.as_str())),
        Err(e) => Err(format!("reading the number to pick: {e}")),
    }
}

/// Scan, then confirm.
pub async fn login(ctx: Arc<Ctx>, b: Arc<Browser>) {
    let step = async {
        // The phone sends the payload it read from the screen, then its
        // user picks the number the browser shows (read here from what the
        // browser was pushed, or polled if the push is late).
        phone_step(&ctx, &b, Step::Scan(&b.qr_on_screen())).await?;
        let code = match_code(&ctx, &b).await?;
        phone_step(&ctx, &b, Step::Confirm(code)).await
    };
    match step.await {
        Ok(()) => {
            let _ = b.confirm_ok_at.set(Instant::now());
            ctx.counters.confirm_ok.fetch_add(1, Ordering::Relaxed);
        }
        Err(what) => fail(&ctx, &b, what),
    }
}

/// The browser redeems its confirmed login (once; a refusal after a lost
/// answer is settled by the stored state).
pub async fn redeem(ctx: Arc<Ctx>, b: Arc<Browser>) {
    let clients = &ctx.watch_clients;
    let mut tries = 0;
    loop {
        let client = &clients[(b.home + tries) % clients.len()];
        match client.redeem(&b.id, &b.secret).await {
            Ok(_) => break,
            Err(e) if tries > 0 && e.code() == "failed_precondition" => {
                match stored_state(&ctx, &b).await {
                    Ok(s) if s.state == api::LoginState::Redeemed => break,
                    Ok(s) => {
                        return fail(
                            &ctx,
                            &b,
                            format!("redeem: {e} (stored {})", s.state.as_str()),
                        )
                    }
                    Err(read) => return fail(&ctx, &b, format!("redeem: {e}; read: {read}")),
                }
            }
            Err(e) if e.is_retryable() => {
                if !retry_wait(&ctx, tries).await {
                    return fail(
                        &ctx,
                        &b,
                        format!("redeem: stopped while retrying after {e}"),
                    );
                }
                tries += 1;
            }
            Err(e) => return fail(&ctx, &b, format!("redeem: {e}")),
        }
    }
    ctx.counters.redeemed.fetch_add(1, Ordering::Relaxed);
}

/// Whether the browser holds exactly the stored state of its session.
pub async fn verify(ctx: Arc<Ctx>, b: Arc<Browser>) -> Result<(), String> {
    let stored = stored_state(&ctx, &b)
        .await
        .map_err(|e| format!("reading the stored state: {e}"))?;
    match b.held() {
        // The state and its version; the QR payload and the writing edge
        // may differ between two reads of the same version.
        Some(held) if (held.state, held.version) == (stored.state, stored.version) => Ok(()),
        Some(held) => Err(format!(
            "holds {} v{}, stored {} v{}",
            held.state.as_str(),
            held.version,
            stored.state.as_str(),
            stored.version
        )),
        None => Err(format!(
            "holds nothing, stored {} v{}",
            stored.state.as_str(),
            stored.version
        )),
    }
}
