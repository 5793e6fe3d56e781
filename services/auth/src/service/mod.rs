//! The use cases: create, read and move login sessions. Every transition is
//! read → decide (domain) → compare-and-swap, retried a bounded number of
//! times when another writer wins the race in between. Events need no step
//! of ours: NATS republishes every committed write on the session's subject.
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

use crate::broker::limits::{self, Decision, Limit};
use crate::broker::{Broker, BrokerError};
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
}

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
        }
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
    ) -> Result<Created, ServiceError> {
        let created = self.try_create(client_ip, user_agent, browser_key).await;
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
            match broker.limits().count(&limit, now).await {
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
            match broker.create(&record).await {
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

    pub async fn get(&self, id: &str, secret: &str) -> Result<SessionView, ServiceError> {
        let id = SessionId::parse(id)?;
        let secret = BrowserSecret::parse(secret)?;
        let broker = self.broker()?;
        let (record, version) = broker.load(&id).await?.ok_or(ServiceError::NotFound)?;
        if !record.secret_matches(&secret) {
            return Err(ServiceError::WrongSecret);
        }
        let now = now_millis();
        if record.is_past_deadline(now) {
            if let Some(view) = self.expire(broker, &record, version, now).await {
                return Ok(view);
            }
        }
        Ok(SessionView {
            record: record.as_seen_at(now),
            version,
        })
    }

    /// PENDING, SCANNED or CONFIRMED → CANCELLED ("not you? start over").
    pub async fn cancel(&self, id: &str, secret: &str) -> Result<SessionView, ServiceError> {
        let id = SessionId::parse(id)?;
        let secret = BrowserSecret::parse(secret)?;
        self.transition(&id, Guard::Browser(&secret), Action::Cancel, None)
            .await
    }

    /// CONFIRMED → REDEEMED, with the proof of the browser's key when the
    /// session is bound to one (`proof` empty: none sent).
    pub async fn redeem(
        &self,
        id: &str,
        secret: &str,
        proof: &str,
    ) -> Result<Redeemed, ServiceError> {
        let id = SessionId::parse(id)?;
        let secret = BrowserSecret::parse(secret)?;
        let guard = Guard::Redeem {
            secret: &secret,
            proof,
        };
        let view = self.transition(&id, guard, Action::Redeem, None).await?;
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
                // Only a session that could be redeemed is worth a
                // signature check (and a refusal count).
                if record.effective_state(now) != LoginState::Confirmed {
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
    ) -> Result<SessionView, ServiceError> {
        let name = action.name();
        let result = self.try_transition(id, guard, action, precheck).await;
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
    ) -> Result<(SessionView, bool), ServiceError> {
        let broker = self.broker()?;
        let mut precheck = precheck;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let loaded = match precheck.take() {
                Some(check) => {
                    let (loaded, checked) = tokio::join!(broker.load(id), check);
                    checked?;
                    loaded
                }
                None => broker.load(id).await,
            };
            let (record, version) = loaded?.ok_or(ServiceError::NotFound)?;
            let now = now_millis();
            self.admit(&guard, &record, now)?;
            match record.apply(&action, now, &self.settings.rules) {
                Ok(Outcome::Write(next)) => match broker.update(&next, version).await {
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
                Ok(Outcome::Unchanged) => return Ok((SessionView { record, version }, false)),
                Err(err @ DomainError::Expired { .. }) => {
                    self.expire(broker, &record, version, now).await;
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
    ) -> Option<SessionView> {
        let Ok(Outcome::Write(next)) = record.apply(&Action::Expire, now, &self.settings.rules)
        else {
            return None;
        };
        let written = broker.update(&next, version).await;
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

impl SessionView {
    pub fn state(&self) -> LoginState {
        self.record.state
    }
}
