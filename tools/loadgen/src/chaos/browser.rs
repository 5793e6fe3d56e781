//! The browser's push, one task per login: a watch over its transport
//! (SSE, WebSocket, STOMP, the gRPC stream, or long polling) through the
//! balancer, that reconnects after a dropped stream or a retryable error
//! and resumes from the version it holds (`Last-Event-ID`, `since`), as a
//! page does without a reload. What the page shows is a [`Screen`] the
//! login's flow reads.

use std::{sync::Arc, time::Duration};

use qrlogin_client::{
    api::{ApiError, Client, LoginState, Snapshot},
    stomp::StompError,
    watch::{AnyWatch, Push, Transport, WatchError, WatchOptions},
};
use rand::Rng;
use tokio::sync::watch;

use super::Ctx;

/// How the browser waits for news.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stream(Transport),
    LongPoll,
}

impl Kind {
    /// `sse`, `ws`, `stomp`, `grpc`, `long-poll`.
    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "long-poll" | "long_poll" => Some(Kind::LongPoll),
            other => Transport::parse(other).map(Kind::Stream),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Stream(Transport::Sse) => "sse",
            Kind::Stream(Transport::Ws) => "ws",
            Kind::Stream(Transport::Stomp) => "stomp",
            Kind::Stream(Transport::Grpc) => "grpc",
            Kind::LongPoll => "long-poll",
        }
    }
}

/// The state of the browser's push connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Link {
    /// Opening a connection (or a long poll being answered).
    #[default]
    Connecting,
    /// Open and waiting for news.
    Open,
    /// Waiting to reconnect after this (clear, retryable) error.
    Waiting(String),
    /// Refused with an error that reconnecting does not cure.
    Refused(String),
}

/// What the page shows: the newest snapshot pushed and when each state
/// first came, the link, and its reconnects.
#[derive(Debug, Clone, Default)]
pub struct Screen {
    pub held: Option<Snapshot>,
    /// Driver time at which each state was first pushed.
    pub first_seen: Vec<(LoginState, f64)>,
    pub link: Link,
    pub reconnects: u32,
    /// Why the push connection was reopened (the first few).
    pub reasons: Vec<String>,
}

impl Screen {
    pub fn seen(&self, state: LoginState) -> Option<f64> {
        self.first_seen
            .iter()
            .find(|(s, _)| *s == state)
            .map(|(_, at)| *at)
    }

    pub fn state(&self) -> Option<LoginState> {
        self.held.as_ref().map(|s| s.state)
    }
}

/// The session a page watches.
pub struct Page {
    pub id: String,
    pub secret: String,
    pub kind: Kind,
    /// What a first long poll says it holds: nothing (`since=0`).
    pub nothing: Snapshot,
    /// The QR payload of the create answer (on screen until one is pushed).
    pub qr_created: String,
    /// Spreads this page's phone calls over the phone edges.
    pub spread: usize,
}

/// Reconnect delay: doubling from the first to the last, jittered.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_LAST: Duration = Duration::from_millis(1000);
/// How long a long poll asks to be held (under the edge's 25 s most).
const LONG_POLL_WAIT: Duration = Duration::from_secs(20);
/// Codes of an error sent on an open stream that mean "reconnect".
const RECONNECT_CODES: [&str; 5] = [
    "draining",
    "unavailable",
    "over_capacity",
    "too_many_connections",
    "storage_full",
];

/// Worth another attempt: the network, a node that is down, draining or
/// over capacity (HTTP 503, 429, and 502/504 from the balancer), a lost
/// concurrent update.
pub fn api_retryable(e: &ApiError) -> bool {
    e.is_retryable() || matches!(e.status(), Some(502 | 504))
}

/// Whether the browser reconnects after `e`: anything but a refusal (an
/// answer that says no: a 4xx, a gRPC refusal, a STOMP or WebSocket error
/// that is not "go elsewhere") and a malformed stream.
pub fn reconnects_after(e: &WatchError) -> bool {
    use tonic::Code;
    match e {
        WatchError::Api(a) => api_retryable(a),
        WatchError::Grpc(s) => !matches!(
            s.code(),
            Code::InvalidArgument
                | Code::NotFound
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::FailedPrecondition
                | Code::AlreadyExists
                | Code::OutOfRange
                | Code::Unimplemented
        ),
        WatchError::Stomp(StompError::Server { message, .. }) => {
            RECONNECT_CODES.contains(&message.as_str())
        }
        WatchError::Server { code, .. } => RECONNECT_CODES.contains(&code.as_str()),
        // The connection ended during the STOMP handshake.
        WatchError::Protocol(text) => text.starts_with("connection ended"),
        WatchError::Stomp(_) | WatchError::Sse(_) => false,
        WatchError::Http(_) | WatchError::Ws(_) | WatchError::GrpcConnect(_) => true,
    }
}

/// A short, low-cardinality description of a watch error.
pub fn describe(e: &WatchError) -> String {
    let text = match e {
        WatchError::Api(a) => format!("HTTP {} {}", a.status().unwrap_or(0), a.code()),
        WatchError::Grpc(s) => format!("gRPC {:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    };
    text.split(" from ")
        .next()
        .unwrap_or(&text)
        .chars()
        .take(120)
        .collect()
}

/// Watches until a final state is pushed or the watch is refused; the
/// login's flow ends the task when it is done with the page.
pub async fn watch(ctx: Arc<Ctx>, page: Arc<Page>, tx: watch::Sender<Screen>) {
    let mut failures = 0u32;
    loop {
        tx.send_modify(|s| s.link = Link::Connecting);
        let before = tx.borrow().held.as_ref().map(|s| s.version);
        let ended = match page.kind {
            Kind::Stream(transport) => stream_once(&ctx, &page, transport, &tx).await,
            Kind::LongPoll => long_poll_once(&ctx, &page, &tx).await,
        };
        let reason = match ended {
            Ok(true) => return,
            Ok(false) => "the stream ended".to_owned(),
            Err(e) if reconnects_after(&e) => describe(&e),
            Err(e) => {
                tx.send_modify(|s| s.link = Link::Refused(describe(&e)));
                return;
            }
        };
        if tx.borrow().held.as_ref().map(|s| s.version) != before {
            failures = 0;
        }
        failures += 1;
        tx.send_modify(|s| {
            s.reconnects += 1;
            if s.reasons.len() < 4 {
                s.reasons.push(reason.clone());
            }
            s.link = Link::Waiting(reason);
        });
        let backoff = BACKOFF_FIRST
            .saturating_mul(1 << failures.min(4))
            .min(BACKOFF_LAST)
            .mul_f64(rand::rng().random_range(0.5..1.0));
        tokio::time::sleep(backoff).await;
    }
}

/// Takes a pushed snapshot; true when it is final (the stream ends).
fn apply(
    ctx: &Ctx,
    page: &Page,
    tx: &watch::Sender<Screen>,
    snap: Snapshot,
) -> Result<bool, WatchError> {
    if snap.session_id != page.id {
        return Err(WatchError::Protocol(format!(
            "a snapshot of session {} on the watch of {}",
            snap.session_id, page.id
        )));
    }
    let now = ctx.clock.now();
    let is_final = snap.state.is_final();
    tx.send_if_modified(|s| {
        if !snap.is_newer_than(s.held.as_ref()) {
            return false;
        }
        if s.seen(snap.state).is_none() {
            s.first_seen.push((snap.state, now));
        }
        s.held = Some(snap);
        true
    });
    Ok(is_final)
}

/// One stream connection, resuming from the version held (`since=0` on
/// the first: the current snapshot comes at once). `Ok(true)`: a final
/// state; `Ok(false)`: the server ended the stream.
async fn stream_once(
    ctx: &Ctx,
    page: &Page,
    transport: Transport,
    tx: &watch::Sender<Screen>,
) -> Result<bool, WatchError> {
    let since = tx.borrow().held.as_ref().map_or(0, |s| s.version);
    let options = WatchOptions {
        since: Some(since),
        ..WatchOptions::default()
    };
    let addr = match transport {
        Transport::Grpc => ctx
            .grpc_addr
            .ok_or_else(|| WatchError::Protocol("a gRPC watch without --grpc-url".into()))?,
        _ => ctx.browser_addr,
    };
    let mut w = AnyWatch::open(transport, addr, &page.id, &page.secret, &options).await?;
    tx.send_modify(|s| s.link = Link::Open);
    loop {
        match w.next().await? {
            Push::Snapshot(snap) => {
                if apply(ctx, page, tx, snap)? {
                    return Ok(true);
                }
            }
            Push::Retry(_) => {}
            Push::Closed(_) | Push::End => return Ok(false),
        }
    }
}

/// Long polls in a row on one keep-alive connection, each saying what the
/// page holds (`since`, and the QR epoch while PENDING).
async fn long_poll_once(
    ctx: &Ctx,
    page: &Page,
    tx: &watch::Sender<Screen>,
) -> Result<bool, WatchError> {
    let client = Client::new(ctx.browser_addr, None, 1);
    loop {
        let held = tx.borrow().held.clone();
        tx.send_modify(|s| s.link = Link::Open);
        let snap = client
            .long_poll(
                &page.id,
                &page.secret,
                held.as_ref().unwrap_or(&page.nothing),
                LONG_POLL_WAIT,
            )
            .await?;
        if apply(ctx, page, tx, snap)? {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qrlogin_client::api::status_error;

    #[test]
    fn transports_parse_by_their_flag_names() {
        for name in ["sse", "ws", "stomp", "grpc", "long-poll"] {
            assert_eq!(Kind::parse(name).unwrap().label(), name);
        }
        assert_eq!(Kind::parse("websocket"), Some(Kind::Stream(Transport::Ws)));
        assert_eq!(Kind::parse("short-poll"), None);
    }

    #[test]
    fn the_browser_reconnects_unless_refused() {
        let api = |status, code: &str| {
            let body = format!(r#"{{"error":{{"code":"{code}","message":"x"}}}}"#);
            WatchError::Api(status_error(status, body.as_bytes()))
        };
        assert!(reconnects_after(&api(503, "unavailable")));
        assert!(reconnects_after(&api(429, "too_many_watchers")));
        assert!(
            reconnects_after(&api(502, "unknown")),
            "HAProxy's bad gateway"
        );
        assert!(!reconnects_after(&api(403, "permission_denied")));
        assert!(!reconnects_after(&api(404, "not_found")));
        let stomp = |message: &str| {
            WatchError::Stomp(StompError::Server {
                message: message.into(),
                body: String::new(),
            })
        };
        assert!(reconnects_after(&stomp("draining")));
        assert!(!reconnects_after(&stomp("permission_denied")));
        assert!(reconnects_after(&WatchError::Grpc(
            tonic::Status::unavailable("x")
        )));
        assert!(reconnects_after(&WatchError::Grpc(tonic::Status::unknown(
            "h2"
        ))));
        assert!(!reconnects_after(&WatchError::Grpc(
            tonic::Status::permission_denied("x")
        )));
        assert!(reconnects_after(&WatchError::Protocol(
            "connection ended: End".into()
        )));
        assert!(!reconnects_after(&WatchError::Protocol("bad JSON".into())));
        assert_eq!(describe(&api(503, "unavailable")), "HTTP 503 unavailable");
    }
}
