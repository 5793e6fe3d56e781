//! The use cases: create, read and move login sessions. Every transition is
//! read → decide (domain) → compare-and-swap, retried a bounded number of
//! times when another writer wins the race in between. Events need no step
//! of ours: NATS republishes every committed write on the session's subject.

use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::OnceCell;

use crate::broker::limits::{self, Decision};
use crate::broker::{Broker, BrokerError};
use crate::domain::{
    text, Action, BrowserContext, BrowserSecret, Deadlines, DomainError, IdError, LoginState,
    Outcome, PhoneUser, SessionId, SessionRecord, UnixMillis,
};
use crate::token::{AccessToken, AccessTokenSigner, KeyError, TokenError, UserTokenVerifier};

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
    #[error("the login session changed concurrently {0} times; retry")]
    Aborted(usize),
    /// The detail is for the log; callers get a fixed text.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    #[error("too many login sessions created from this network; retry later")]
    RateLimited { retry_after: std::time::Duration },
    #[error("the session store is full; retry later")]
    StorageFull,
    #[error("internal error: {0}")]
    Internal(String),
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

pub struct LoginService {
    broker: BrokerSlot,
    deadlines: Deadlines,
    verifier: UserTokenVerifier,
    signer: AccessTokenSigner,
    public_base: String,
    /// Creates per client network and window, across the cluster; 0: off.
    create_limit: u32,
}

pub fn now_millis() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl LoginService {
    pub fn new(
        broker: BrokerSlot,
        deadlines: Deadlines,
        verifier: UserTokenVerifier,
        signer: AccessTokenSigner,
        public_base: String,
        create_limit: u32,
    ) -> Self {
        Self {
            broker,
            deadlines,
            verifier,
            signer,
            public_base,
            create_limit,
        }
    }

    fn broker(&self) -> Result<&Broker, ServiceError> {
        self.broker
            .get()
            .ok_or_else(|| ServiceError::Unavailable("not connected to NATS yet".into()))
    }

    pub async fn create(&self, client_ip: &str, user_agent: &str) -> Result<Created, ServiceError> {
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
        let broker = self.broker()?;
        let now = now_millis();
        if self.create_limit > 0 {
            match broker.limits().count(ip, self.create_limit, now).await {
                Ok(Decision::Allowed) => {}
                Ok(Decision::Limited { retry_after }) => {
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
            let record = SessionRecord::new(&id, &secret, browser.clone(), now, &self.deadlines);
            match broker.create(&record).await {
                Ok(version) => {
                    tracing::info!(session_id = %id, version, "login session created");
                    return Ok(Created {
                        qr_payload: format!("{}/m/{}", self.public_base, id),
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

    pub async fn scan(
        &self,
        id: &str,
        authorization: Option<&str>,
    ) -> Result<SessionView, ServiceError> {
        self.phone(id, authorization, Action::Scan).await
    }

    pub async fn confirm(
        &self,
        id: &str,
        authorization: Option<&str>,
    ) -> Result<SessionView, ServiceError> {
        self.phone(id, authorization, |user| Action::Confirm {
            user_id: user.id,
        })
        .await
    }

    pub async fn deny(
        &self,
        id: &str,
        authorization: Option<&str>,
    ) -> Result<SessionView, ServiceError> {
        self.phone(id, authorization, |user| Action::Deny { user_id: user.id })
            .await
    }

    /// A phone call: the id is checked, then the user's token, then the
    /// action made for that user is applied.
    async fn phone(
        &self,
        id: &str,
        authorization: Option<&str>,
        action: impl FnOnce(PhoneUser) -> Action,
    ) -> Result<SessionView, ServiceError> {
        let id = SessionId::parse(id)?;
        let user = self.verifier.verify_header(authorization)?;
        self.transition(&id, None, action(user)).await
    }

    pub async fn cancel(&self, id: &str, secret: &str) -> Result<SessionView, ServiceError> {
        let id = SessionId::parse(id)?;
        let secret = BrowserSecret::parse(secret)?;
        self.transition(&id, Some(&secret), Action::Cancel).await
    }

    pub async fn redeem(&self, id: &str, secret: &str) -> Result<Redeemed, ServiceError> {
        let id = SessionId::parse(id)?;
        let secret = BrowserSecret::parse(secret)?;
        let view = self.transition(&id, Some(&secret), Action::Redeem).await?;
        let user = view
            .record
            .user
            .clone()
            .ok_or_else(|| ServiceError::Internal("redeemed session has no user".into()))?;
        let token = self
            .signer
            .sign(&user, id.as_str(), view.record.updated_at)?;
        tracing::info!(session_id = %id, user_id = %user.id, "login redeemed");
        Ok(Redeemed { view, token, user })
    }

    /// Read → decide → compare-and-swap, retried on lost races.
    async fn transition(
        &self,
        id: &SessionId,
        secret: Option<&BrowserSecret>,
        action: Action,
    ) -> Result<SessionView, ServiceError> {
        let broker = self.broker()?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (record, version) = broker.load(id).await?.ok_or(ServiceError::NotFound)?;
            if let Some(secret) = secret {
                if !record.secret_matches(secret) {
                    return Err(ServiceError::WrongSecret);
                }
            }
            let now = now_millis();
            match record.apply(&action, now, &self.deadlines) {
                Ok(Outcome::Write(next)) => match broker.update(&next, version).await {
                    Ok(new_version) => {
                        tracing::info!(
                            session_id = %id,
                            action = action.name(),
                            state = next.state.name(),
                            version = new_version,
                            "login session moved"
                        );
                        return Ok(SessionView {
                            record: next,
                            version: new_version,
                        });
                    }
                    Err(BrokerError::Conflict) => {
                        tracing::debug!(session_id = %id, action = action.name(), "lost a race; re-reading");
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                },
                Ok(Outcome::Unchanged) => return Ok(SessionView { record, version }),
                Err(err @ DomainError::Expired { .. }) => {
                    self.expire(broker, &record, version, now).await;
                    return Err(err.into());
                }
                Err(err) => return Err(err.into()),
            }
        }
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
        let Ok(Outcome::Write(next)) = record.apply(&Action::Expire, now, &self.deadlines) else {
            return None;
        };
        match broker.update(&next, version).await {
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
