//! The use cases: create, read and move login sessions. Every transition is
//! read → decide (domain) → compare-and-swap, retried a bounded number of
//! times when another writer wins the race in between. Events need no step
//! of ours: NATS republishes every committed write on the session's subject.
//!
//! Every call carries a deadline (see [`Settings::deadline`]): the store
//! retries transient NATS failures until then, and a call repeated by its
//! caller after a lost answer is answered as the first was (the domain's
//! [`SessionRecord::repeats`]; a repeated redeem gets the same token).
//!
//! - this file: the service, its errors, the browser side (create, get,
//!   cancel, redeem) and the transition loop;
//! - [`phone`]: the phone side (scan, confirm, deny) with number matching,
//!   the QR payload check, per-user limits and the proximity hint.

mod phone;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::broker::limits::{self, Decision, Limit};
use crate::broker::{Broker, BrokerError, ReadFrom};
use crate::config::AuthConfig;
use crate::counters::Counters;
use crate::domain::{
    text, Action, BrowserContext, BrowserSecret, DomainError, IdError, LoginState, Outcome,
    PhoneUser, Rules, SessionId, SessionRecord, UnixMillis,
};
use crate::identity::UserTokens;
use crate::metrics::AuthMetrics;
use crate::proof::{self, BrowserKey, ProofError};
use crate::token::{AccessToken, AccessTokenSigner, KeyError, TokenError};

pub use phone::Scanned;

/// Attempts of one transition before answering ABORTED. Each lost race means
/// another writer made progress, so this bounds work, not correctness.
const MAX_CAS_ATTEMPTS: usize = 8;
/// Longest accepted User-Agent, in bytes.
pub const MAX_USER_AGENT: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no login session with this id (it may have expired and been removed)")]
    NotFound,
    #[error("browser_secret is required")]
    MissingSecret,
    #[error("wrong browser secret for this login session")]
    WrongSecret,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The pick was wrong: the session was moved to DENIED.
    #[error("the number picked is not the one shown on the other device; this login was refused")]
    WrongMatch,
    #[error(
        "QRLOGIN_REQUIRE_KEY_BINDING is on: create needs the browser's public key (browser_key)"
    )]
    KeyRequired,
    #[error(transparent)]
    Proof(#[from] ProofError),
    #[error("the login session changed concurrently {0} times; retry")]
    Aborted(usize),
    /// The detail is for the log; callers get a fixed text.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    #[error("too many login sessions created from this network; retry later")]
    RateLimited { retry_after: Duration },
    #[error("too many {action}s by this user; retry later")]
    UserLimited {
        action: &'static str,
        retry_after: Duration,
    },
    #[error("the session store is full; retry later")]
    StorageFull,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// The outcome label of a transition that failed this way (metrics).
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "invalid",
            Self::NotFound => "not_found",
            Self::MissingSecret | Self::WrongSecret => "wrong_secret",
            Self::Token(_) => "unauthenticated",
            Self::Domain(DomainError::WrongUser) => "wrong_user",
            Self::Domain(DomainError::Expired { .. }) => "expired",
            Self::Domain(_) => "refused",
            Self::Aborted(_) => "aborted",
            Self::Unavailable(_) => "unavailable",
            Self::RateLimited { .. } => "rate_limited",
            Self::UserLimited { .. } => "user_limited",
            Self::WrongMatch => "wrong_match",
            Self::KeyRequired => "key_required",
            Self::Proof(_) => "invalid_proof",
            Self::StorageFull => "storage_full",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<BrokerError> for ServiceError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::Unavailable(m) => Self::Unavailable(m),
            BrokerError::Full => Self::StorageFull,
            BrokerError::Conflict => Self::Aborted(1),
            BrokerError::Corrupt(e) => Self::Internal(format!("session record refused: {e}")),
        }
    }
}

impl From<KeyError> for ServiceError {
    fn from(e: KeyError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<IdError> for ServiceError {
    fn from(e: IdError) -> Self {
        match e {
            IdError::EmptySecret => Self::MissingSecret,
            IdError::MalformedSecret => Self::WrongSecret,
            other => Self::InvalidArgument(other.to_string()),
        }
    }
}

/// A session as a caller sees it: the record (as of now) and its version.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub record: SessionRecord,
    pub version: u64,
}

/// What create hands back.
pub struct Created {
    pub view: SessionView,
    pub secret: BrowserSecret,
    pub qr_payload: String,
}

/// What redeem hands back.
pub struct Redeemed {
    pub view: SessionView,
    pub token: AccessToken,
    pub user: PhoneUser,
}

/// Filled once NATS and the bucket are ready; calls before that are UNAVAILABLE.
pub type BrokerSlot = Arc<OnceCell<Broker>>;

/// What the use cases are configured with (from [`AuthConfig`]).
#[derive(Debug, Clone)]
pub struct Settings {
    pub rules: Rules,
    pub public_base: String,
    /// Creates per client network and window, across the cluster; 0: off.
    pub create_limit: u32,
    pub create_window: Duration,
    pub number_matching: bool,
    pub require_key_binding: bool,
    pub proof_max_age: Duration,
    /// Scans and confirms per user and window, across the cluster; 0: off.
    pub scan_limit: u32,
    pub confirm_limit: u32,
    pub user_window: Duration,
    /// How long one call retries the store (QRLOGIN_STORE_RETRY_DEADLINE).
    pub store_retry: Duration,
    /// The longest a call may take (QRLOGIN_REQUEST_TIMEOUT).
    pub request_timeout: Duration,
}

/// Time kept, out of the caller's own deadline, to send the answer.
const ANSWER_RESERVE: Duration = Duration::from_millis(200);

impl Settings {
    pub fn from_config(c: &AuthConfig) -> Self {
        let p = &c.protocol;
        Self {
            rules: c.rules(),
            public_base: c.public_base().to_owned(),
            create_limit: c.create_limit,
            create_window: c.create_limit_window,
            number_matching: p.number_matching,
            require_key_binding: p.require_key_binding,
            proof_max_age: p.proof_max_age,
            scan_limit: p.scan_limit,
            confirm_limit: p.confirm_limit,
            user_window: p.user_limit_window,
            store_retry: c.store.store_retry_deadline,
            request_timeout: c.request_timeout,
        }
    }

    /// Until when a call that arrived now may retry the store: the retry
    /// bound, or the caller's own timeout (gRPC `grpc-timeout`) or auth's
    /// request timeout less a moment to answer, whichever comes first. Past
    /// it the call answers UNAVAILABLE, which the caller may retry.
    pub fn deadline(&self, caller_timeout: Option<Duration>) -> Instant {
        let longest = caller_timeout.map_or(self.request_timeout, |t| t.min(self.request_timeout));
        let bound = self.store_retry.min(longest.saturating_sub(ANSWER_RESERVE));
        Instant::now() + bound
    }
}

pub struct LoginService {
    broker: BrokerSlot,
    settings: Settings,
    verifier: Arc<UserTokens>,
    signer: AccessTokenSigner,
    counters: Arc<Counters>,
    metrics: Arc<AuthMetrics>,
}

pub fn now_millis() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Who may move a session, besides the domain's own rules: the creating
/// browser (its secret, and the proof of its key for redeem), or nobody
/// in particular (phone actions name their user in the action).
enum Guard<'a> {
    Phone,
    Browser(&'a BrowserSecret),
    Redeem {
        secret: &'a BrowserSecret,
        proof: &'a str,
    },
}

impl LoginService {
    pub fn new(
        broker: BrokerSlot,
        settings: Settings,
        verifier: Arc<UserTokens>,
        signer: AccessTokenSigner,
        metrics: Arc<AuthMetrics>,
    ) -> Self {
        Self {
            broker,
            settings,
            verifier,
            signer,
            counters: metrics.qr_counters(),
            metrics,
        }
    }

    /// The counts of refused abuse (for exporters and tests).
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The phone's user from its token; refusals counted by reason.
    async fn verify_user(&self, authorization: Option<&str>) -> Result<PhoneUser, ServiceError> {
        Ok(self
            .verifier
            .verify_header(authorization)
            .await
            .inspect_err(|e| self.metrics.user_token_failure(e.reason()))?)
    }

    fn broker(&self) -> Result<&Broker, ServiceError> {
        self.broker
            .get()
            .ok_or_else(|| ServiceError::Unavailable("not connected to NATS yet".into()))
    }

    /// The payload on screen at `now` for a PENDING record, else empty.
    pub fn qr_payload(&self, record: &SessionRecord, now: UnixMillis) -> String {
        record
            .public_qr()
            .map(|k| k.payload_at(&self.settings.public_base, &record.id, now))
            .unwrap_or_default()
    }

    pub async fn create(
        &self,
        client_ip: &str,
        user_agent: &str,
        browser_key: Option<&BrowserKey>,
        deadline: Instant,
    ) -> Result<Created, ServiceError> {
        let created = self
            .try_create(client_ip, user_agent, browser_key, deadline)
            .await;
        let outcome = match &created {
            Ok(_) => "written",
            Err(e) => e.outcome(),
        };
        self.metrics.transition("create", outcome);
        created
    }

    async fn try_create(
        &self,
        client_ip: &str,
        user_agent: &str,
        browser_key: Option<&BrowserKey>,
        deadline: Instant,
    ) -> Result<Created, ServiceError> {
        let ip: IpAddr = client_ip.trim().parse().map_err(|_| {
            ServiceError::InvalidArgument("client_ip must be an IPv4 or IPv6 address".into())
        })?;
        if user_agent.len() > MAX_USER_AGENT {
            return Err(ServiceError::InvalidArgument(format!(
                "user_agent must be at most {MAX_USER_AGENT} bytes"
            )));
        }
        if !text::is_displayable(user_agent) {
            return Err(ServiceError::InvalidArgument(
                "user_agent must not contain control or format (bidi, zero-width) characters"
                    .into(),
            ));
        }
        let thumbprint = match browser_key {
            Some(key) => Some(key.thumbprint()?),
            None if self.settings.require_key_binding => return Err(ServiceError::KeyRequired),
            None => None,
        };
        let broker = self.broker()?;
        let now = now_millis();
        let s = &self.settings;
        if s.create_limit > 0 {
            let limit = Limit::network(ip, s.create_limit, s.create_window);
            // A counter that cannot be kept lets the call through.
            match broker.limits().count(&limit, now, deadline).await {
                Ok(Decision::Allowed) => {}
                Ok(Decision::Limited { retry_after }) => {
                    self.metrics.create_limited();
                    tracing::info!(network = %limits::network_key(ip), "create limit reached");
                    return Err(ServiceError::RateLimited { retry_after });
                }
                // The write below will tell whether NATS is really away.
                Err(e) => tracing::warn!(error = %e, "create counter unavailable"),
            }
        }
        let browser = BrowserContext {
            ip: ip.to_string(),
            user_agent: user_agent.to_owned(),
            created_at: now,
        };
        // A 128-bit collision is not going to happen; one retry covers it anyway.
        for _ in 0..2 {
            let id = SessionId::generate();
            let secret = BrowserSecret::generate();
            let record = SessionRecord::new(
                &id,
                &secret,
                browser.clone(),
                now,
                &s.rules,
                thumbprint.clone(),
            );
            match broker.create(&record, deadline).await {
                Ok(version) => {
                    tracing::info!(session_id = %id, version, key_bound = thumbprint.is_some(), "login session created");
                    return Ok(Created {
                        qr_payload: self.qr_payload(&record, now),
                        view: SessionView { record, version },
                        secret,
                    });
                }
                Err(BrokerError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Internal(
            "could not allocate a session id".into(),
        ))
    }

    pub async fn get(
        &self,
        id: &str,
        secret: &str,
        deadline: Instant,
    ) -> Result<SessionView, ServiceError> {
        let id = SessionId::parse(id)?;
        let secret = BrowserSecret::parse(secret)?;
        let broker = self.broker()?;
        let (record, version) = broker
            .load(&id, deadline)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if !record.secret_matches(&secret) {
            return Err(ServiceError::WrongSecret);
        }
        let now = now_millis();
        if record.is_past_deadline(now) {
            if let Some(view) = self.expire(broker, &record, version, now, deadline).await {
                return Ok(view);
            }
        }
        Ok(SessionView {
            record: record.as_seen_at(now),
            version,
        })
    }

    /// PENDING, SCANNED or CONFIRMED → CANCELLED ("not you? start over").
    pub async fn cancel(
        &self,
        id: &str,
        secret: &str,
        deadline: Instant,
    ) -> Result<SessionView, ServiceError> {
        let id = SessionId::parse(id)?;
        let secret = BrowserSecret::parse(secret)?;
        let guard = Guard::Browser(&secret);
        self.transition(&id, guard, Action::Cancel, None, deadline)
            .await
    }

    /// CONFIRMED → REDEEMED, with the proof of the browser's key when the
    /// session is bound to one (`proof` empty: none sent). Repeated within
    /// QRLOGIN_REDEEM_RETRY_WINDOW, with the same proofs, it answers the
    /// same token: the token is a function of the redeemed record.
    pub async fn redeem(
        &self,
        id: &str,
        secret: &str,
        proof: &str,
        deadline: Instant,
    ) -> Result<Redeemed, ServiceError> {
        let id = SessionId::parse(id)?;
        let secret = BrowserSecret::parse(secret)?;
        let guard = Guard::Redeem {
            secret: &secret,
            proof,
        };
        let view = self
            .transition(&id, guard, redeem_action(proof), None, deadline)
            .await?;
        let user = view
            .record
            .user
            .clone()
            .ok_or_else(|| ServiceError::Internal("redeemed session has no user".into()))?;
        let token = self.signer.sign(
            &user,
            id.as_str(),
            view.record.updated_at,
            view.record.key_thumbprint.as_deref(),
        )?;
        tracing::info!(session_id = %id, user_id = %user.id, "login redeemed");
        Ok(Redeemed { view, token, user })
    }

    /// Whether the caller may act on `record` (see [`Guard`]).
    fn admit(
        &self,
        guard: &Guard<'_>,
        record: &SessionRecord,
        now: UnixMillis,
    ) -> Result<(), ServiceError> {
        match guard {
            Guard::Phone => Ok(()),
            Guard::Browser(secret) if record.secret_matches(secret) => Ok(()),
            Guard::Redeem { secret, proof } if record.secret_matches(secret) => {
                let Some(thumbprint) = &record.key_thumbprint else {
                    return Ok(());
                };
                // Only a session that could be redeemed (or was, and would
                // answer a repeat with its token) is worth a signature
                // check (and a refusal count); the others are refused by
                // the state machine as before.
                let could_redeem = match record.effective_state(now) {
                    LoginState::Confirmed => true,
                    LoginState::Redeemed => {
                        record.repeats(&redeem_action(proof), now, &self.settings.rules)
                    }
                    _ => false,
                };
                if !could_redeem {
                    return Ok(());
                }
                let expected = proof::Expected {
                    session_id: &record.id,
                    thumbprint,
                    now,
                    max_age: self.settings.proof_max_age,
                };
                proof::verify(proof, &expected).map_err(|e| {
                    Counters::bump(&self.counters.proof_refused);
                    tracing::warn!(session_id = %record.id, error = %e, "redeem refused: no valid proof of the browser key");
                    ServiceError::Proof(e)
                })
            }
            Guard::Browser(_) | Guard::Redeem { .. } => Err(ServiceError::WrongSecret),
        }
    }

    /// Read → decide → compare-and-swap, retried on lost races. `precheck`
    /// runs beside the first read (a limit's counter), so it adds no round
    /// trip before the write.
    async fn transition(
        &self,
        id: &SessionId,
        guard: Guard<'_>,
        action: Action,
        precheck: Option<futures::future::BoxFuture<'_, Result<(), ServiceError>>>,
        deadline: Instant,
    ) -> Result<SessionView, ServiceError> {
        let name = action.name();
        let result = self
            .try_transition(id, guard, action, precheck, deadline)
            .await;
        let outcome = match &result {
            Ok((_, true)) => "written",
            Ok((_, false)) => "unchanged",
            Err(e) => e.outcome(),
        };
        self.metrics.transition(name, outcome);
        result.map(|(view, _)| view)
    }

    /// One transition; the flag says whether it wrote.
    async fn try_transition(
        &self,
        id: &SessionId,
        guard: Guard<'_>,
        action: Action,
        precheck: Option<futures::future::BoxFuture<'_, Result<(), ServiceError>>>,
        deadline: Instant,
    ) -> Result<(SessionView, bool), ServiceError> {
        let broker = self.broker()?;
        let mut precheck = precheck;
        // The first read may come from any replica; one that lags a write
        // committed elsewhere would show an older state. A refusal, a
        // missing session or a lost race is therefore decided again on the
        // leader's record before it is answered.
        let mut from = ReadFrom::AnyReplica;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let loaded = match precheck.take() {
                Some(check) => {
                    let (loaded, checked) =
                        tokio::join!(broker.load_from(id, from, deadline), check);
                    checked?;
                    loaded
                }
                None => broker.load_from(id, from, deadline).await,
            };
            let current = from == ReadFrom::Leader;
            from = ReadFrom::Leader;
            let Some((record, version)) = loaded? else {
                if current {
                    return Err(ServiceError::NotFound);
                }
                continue;
            };
            let now = now_millis();
            self.admit(&guard, &record, now)?;
            match record.apply(&action, now, &self.settings.rules) {
                Ok(Outcome::Write(next)) => match broker.update(&next, version, deadline).await {
                    Ok(new_version) => {
                        tracing::info!(
                            session_id = %id,
                            action = action.name(),
                            state = next.state.name(),
                            version = new_version,
                            "login session moved"
                        );
                        let view = SessionView {
                            record: next,
                            version: new_version,
                        };
                        return Ok((view, true));
                    }
                    Err(BrokerError::Conflict) => {
                        self.metrics.cas_retry(action.name());
                        tracing::debug!(session_id = %id, action = action.name(), "lost a race; re-reading");
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                },
                Ok(Outcome::Unchanged) => {
                    tracing::debug!(session_id = %id, action = action.name(), state = record.state.name(), "a repeated call; answered as the first");
                    return Ok((SessionView { record, version }, false));
                }
                Err(err) if !current => {
                    tracing::debug!(session_id = %id, action = action.name(), error = %err, "refused on a replica's read; deciding on the leader's");
                    continue;
                }
                Err(err @ DomainError::Expired { .. }) => {
                    self.expire(broker, &record, version, now, deadline).await;
                    return Err(err.into());
                }
                Err(err) => return Err(err.into()),
            }
        }
        self.metrics.cas_abort(action.name());
        Err(ServiceError::Aborted(MAX_CAS_ATTEMPTS))
    }

    /// Writes EXPIRED for a record past its deadline (its event tells the
    /// watchers that rely on events). Losing the race is fine: whoever won
    /// wrote a newer state.
    async fn expire(
        &self,
        broker: &Broker,
        record: &SessionRecord,
        version: u64,
        now: UnixMillis,
        deadline: Instant,
    ) -> Option<SessionView> {
        let Ok(Outcome::Write(next)) = record.apply(&Action::Expire, now, &self.settings.rules)
        else {
            return None;
        };
        let written = broker.update(&next, version, deadline).await;
        self.metrics.transition(
            "expire",
            if written.is_ok() {
                "written"
            } else {
                "skipped"
            },
        );
        match written {
            Ok(new_version) => {
                tracing::info!(session_id = %next.id, version = new_version, "login session expired");
                Some(SessionView {
                    record: next,
                    version: new_version,
                })
            }
            Err(e) => {
                tracing::debug!(session_id = %record.id, error = %e, "expiry write skipped");
                None
            }
        }
    }
}

/// The redeem action for the proof a caller sent (empty: none).
fn redeem_action(proof: &str) -> Action {
    Action::Redeem {
        proof: (!proof.is_empty()).then(|| proof::fingerprint(proof)),
    }
}

impl SessionView {
    pub fn state(&self) -> LoginState {
        self.record.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_retries_the_store_until_the_first_of_its_bounds() {
        let config = AuthConfig::from_flags([
            "--user-token-public-key-file",
            "/k/u.pub",
            "--access-token-private-key-file",
            "/k/a.pem",
            "--record-key-file",
            "/k/record.key",
            "--service-tokens-file",
            "/k/service-tokens",
        ])
        .unwrap();
        let settings = Settings::from_config(&config);
        let bound = |caller: Option<Duration>| settings.deadline(caller) - Instant::now();
        // QRLOGIN_STORE_RETRY_DEADLINE (4 s) when the caller allows more.
        assert_eq!(bound(None), Duration::from_secs(4));
        assert_eq!(bound(Some(Duration::from_secs(30))), Duration::from_secs(4));
        // The caller's grpc-timeout, less the moment kept to answer.
        assert_eq!(
            bound(Some(Duration::from_secs(2))),
            Duration::from_millis(1800)
        );
        assert_eq!(bound(Some(Duration::from_millis(100))), Duration::ZERO);
        // QRLOGIN_REQUEST_TIMEOUT likewise.
        let short = Settings {
            request_timeout: Duration::from_secs(1),
            ..settings.clone()
        };
        assert_eq!(
            short.deadline(None) - Instant::now(),
            Duration::from_millis(800)
        );
    }
}
