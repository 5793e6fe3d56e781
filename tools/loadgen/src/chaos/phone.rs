//! The phone's side of a login: it scans the QR code on the browser's
//! screen and confirms with the number shown, on an edge other than the
//! one that pushes to the browser (the phone edges' node names are
//! learned from their answers).

use std::time::Duration;

use qrlogin_client::api::{Client, LoginState, Snapshot};
use tokio::{sync::watch, time::Instant};

use super::{
    browser::{Page, Screen},
    login::{call, refused, Failed, READ_BACK_LIMIT},
    record::{End, LoginRecord},
    Ctx,
};

/// What the phone sends.
#[derive(Clone, Copy)]
pub enum Step {
    Scan,
    Confirm(u32),
}

/// Scan (the payload on screen) or confirm (the number shown) on a phone
/// edge other than the one that pushes to the browser. A refusal after a
/// retry may mean an earlier attempt landed (its answer lost): the page
/// then shows the step done, or the stored state says so. A scan refused
/// as `qr_replaced` (the code rotated between the read and the scan) is
/// made again with the code on screen.
pub async fn phone(
    ctx: &Ctx,
    rec: &mut LoginRecord,
    page: &Page,
    rx: &watch::Receiver<Screen>,
    deadline: Instant,
    step: Step,
) -> Result<(), End> {
    let (name, reached): (&'static str, &[LoginState]) = match step {
        Step::Scan => (
            "scan",
            &[
                LoginState::Scanned,
                LoginState::Confirmed,
                LoginState::Redeemed,
            ],
        ),
        Step::Confirm(_) => ("confirm", &[LoginState::Confirmed, LoginState::Redeemed]),
    };
    let on_screen = || rx.borrow().state().is_some_and(|s| reached.contains(&s));
    let token = ctx.user_token.as_str();
    let mut rescans = 0;
    loop {
        let sent = std::sync::Mutex::new(None::<f64>);
        let result = call(ctx, rec, name, deadline, |tries| {
            let (node, payload) = {
                let screen = rx.borrow();
                let held = screen.held.as_ref();
                (
                    held.and_then(|s| s.node.clone()),
                    held.and_then(|s| s.qr_payload.clone())
                        .unwrap_or_else(|| page.qr_created.clone()),
                )
            };
            let phone = ctx.phone(node.as_deref(), page.spread, tries);
            let landed = tries > 0 && on_screen();
            let sent = &sent;
            async move {
                if landed {
                    return Ok(None);
                }
                let answer = match step {
                    Step::Scan => phone
                        .client
                        .scan(&page.id, token, &payload)
                        .await
                        .map(|a| a.session),
                    Step::Confirm(code) => {
                        phone
                            .client
                            .confirm(&page.id, token, code, || {
                                let mut first = sent.lock().unwrap_or_else(|p| p.into_inner());
                                first.get_or_insert(ctx.clock.now());
                            })
                            .await
                    }
                }?;
                phone.learn(&answer);
                Ok(Some(answer))
            }
        })
        .await;
        if rec.confirm_sent.is_none() {
            rec.confirm_sent = *sent.lock().unwrap_or_else(|p| p.into_inner());
        }
        let (error, tries) = match result {
            Ok(_) => return Ok(()),
            Err(Failed::Refused { error, tries }) => (error, tries),
            Err(f) => return Err(refused(rec, name, f)),
        };
        if error.code() == "qr_replaced" && rescans < 3 {
            rescans += 1;
            rec.error(format!("{name}: qr_replaced, scanning again"));
            tokio::time::sleep(Duration::from_millis(250 * rescans)).await;
            continue;
        }
        if tries > 0 && error.code() == "failed_precondition" {
            if on_screen() {
                return Ok(());
            }
            let limit = (Instant::now() + READ_BACK_LIMIT).min(deadline);
            let read = call(ctx, rec, "read back", limit, |_| {
                ctx.browser.get(&page.id, &page.secret)
            })
            .await;
            if read.is_ok_and(|s| reached.contains(&s.state)) {
                return Ok(());
            }
        }
        return Err(refused(rec, name, Failed::Refused { error, tries }));
    }
}

/// A phone's client of one edge (or the balancer) and the node that last
/// answered through it.
pub struct Phone {
    pub client: Client,
    node: std::sync::Mutex<Option<String>>,
}

impl Phone {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            node: Default::default(),
        }
    }

    fn learn(&self, answer: &Snapshot) {
        if let Some(node) = &answer.node {
            *self.node.lock().unwrap_or_else(|p| p.into_inner()) = Some(node.clone());
        }
    }

    pub fn node(&self) -> Option<String> {
        self.node.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Ctx {
    /// A phone edge for a browser held by `node`: first one that last
    /// answered as another node (spread by `i`), then on each retry the
    /// next of all of them, the browser's own node last (it may be the
    /// only one alive).
    fn phone(&self, node: Option<&str>, i: usize, tries: usize) -> &Phone {
        let elsewhere = |p: &Phone| node.is_none() || p.node().as_deref() != node;
        let n = self.phones.len();
        let rotated = (0..n).map(|k| &self.phones[(i + k) % n]);
        let ordered: Vec<&Phone> = rotated
            .clone()
            .filter(|p| elsewhere(p))
            .chain(rotated.filter(|p| !elsewhere(p)))
            .collect();
        ordered[tries % n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::Clock;

    #[test]
    fn the_phone_goes_elsewhere_first_and_to_every_edge_on_retries() {
        let addr = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let ctx = Ctx {
            clock: Clock::start(),
            browser: Client::new(addr(1), None, 1),
            browser_addr: addr(1),
            grpc_addr: None,
            phones: (2..5)
                .map(|p| Phone::new(Client::new(addr(p), None, 1)))
                .collect(),
            user_token: String::new(),
            deadline: Duration::from_secs(1),
        };
        let port = |p: &Phone| p.client.addr().port();
        // Nothing learned yet: spread by the login's number.
        assert_eq!(port(ctx.phone(Some("edge-1"), 0, 0)), 2);
        assert_eq!(port(ctx.phone(Some("edge-1"), 1, 0)), 3);
        // The edge on port 2 answered as edge-1, the browser's node.
        let answer = |node: &str| Snapshot {
            session_id: "s".into(),
            state: LoginState::Scanned,
            version: 1,
            expires_at: None,
            updated_at: String::new(),
            user_display_name: None,
            qr_payload: None,
            match_code: None,
            deny_reason: None,
            poll_interval_ms: None,
            node: Some(node.into()),
        };
        ctx.phones[0].learn(&answer("edge-1"));
        let tries: Vec<u16> = (0..4)
            .map(|t| port(ctx.phone(Some("edge-1"), 0, t)))
            .collect();
        assert_eq!(
            tries,
            [3, 4, 2, 3],
            "elsewhere first, its own node last, then round"
        );
        assert_eq!(port(ctx.phone(None, 0, 0)), 2);
    }
}
