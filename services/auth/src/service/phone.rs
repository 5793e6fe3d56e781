//! The phone side: scan (with the QR payload read, starting number
//! matching, telling whether browser and phone share a network), confirm
//! (with the number picked; a wrong one denies) and deny. Each is
//! authenticated by the user's token and, for scan and confirm, counted
//! against the per-user limits.

use futures::FutureExt as _;
use std::net::IpAddr;
use tokio::time::Instant;

use super::{now_millis, Guard, LoginService, ServiceError, SessionView};
use crate::broker::limits::{Decision, Limit};
use crate::counters::Counters;
use crate::domain::{
    network, Action, DenyReason, DomainError, LoginState, Matching, PhoneUser, SessionId,
};

/// What a scan hands back besides the session.
pub struct Scanned {
    pub view: SessionView,
    /// The numbers to offer (empty without number matching).
    pub choices: Vec<u8>,
    /// Whether the browser and the phone share a network; `None` when the
    /// phone's address is unknown.
    pub same_network: Option<bool>,
}

impl LoginService {
    /// PENDING → SCANNED for the token's user, if `qr_payload` is the code
    /// on screen. `phone_ip` may be empty (unknown).
    pub async fn scan(
        &self,
        id: &str,
        authorization: Option<&str>,
        qr_payload: &str,
        phone_ip: &str,
        deadline: Instant,
    ) -> Result<Scanned, ServiceError> {
        let id = SessionId::parse(id)?;
        let user = self.verify_user(authorization).await?;
        let phone_ip: Option<IpAddr> = match phone_ip.trim() {
            "" => None,
            text => Some(text.parse().map_err(|_| {
                ServiceError::InvalidArgument("client_ip must be an IPv4 or IPv6 address".into())
            })?),
        };
        let action = Action::Scan {
            user: user.clone(),
            qr_payload: Some(qr_payload.to_owned()).filter(|p| !p.is_empty()),
            matching: self.settings.number_matching.then(Matching::random),
        };
        let limit = self.user_limit("scan", self.settings.scan_limit, &user);
        let precheck = limit.as_ref().map(|l| self.take(l, deadline).boxed());
        let result = self
            .transition(&id, Guard::Phone, action, precheck, deadline)
            .await;
        match &result {
            Err(ServiceError::Domain(DomainError::WrongUser)) => {
                Counters::bump(&self.counters.multi_scan);
                tracing::warn!(session_id = %id, user_id = %user.id, "a second user tried to scan a login session that another user scanned");
            }
            Err(ServiceError::Domain(DomainError::QrReplaced)) => {
                Counters::bump(&self.counters.qr_replaced);
                tracing::info!(session_id = %id, user_id = %user.id, "scan refused: the QR payload was replaced");
            }
            Err(ServiceError::Domain(DomainError::QrInvalid(why))) => {
                Counters::bump(&self.counters.qr_invalid);
                tracing::warn!(session_id = %id, user_id = %user.id, why, "scan refused: not a QR payload of this session");
            }
            _ => {}
        }
        let view = result?;
        let same_network = phone_ip.and_then(|phone| {
            let browser: IpAddr = view.record.browser.ip.parse().ok()?;
            Some(network::same_network(phone, browser))
        });
        Ok(Scanned {
            choices: view
                .record
                .matching
                .map(|m| m.choices.to_vec())
                .unwrap_or_default(),
            same_network,
            view,
        })
    }

    /// SCANNED → CONFIRMED for the scanning user who picked `match_code`
    /// (0: none); a wrong pick → DENIED and [`ServiceError::WrongMatch`].
    pub async fn confirm(
        &self,
        id: &str,
        authorization: Option<&str>,
        match_code: u32,
        deadline: Instant,
    ) -> Result<SessionView, ServiceError> {
        let id = SessionId::parse(id)?;
        let user = self.verify_user(authorization).await?;
        // A number outside 1..=255 can only be wrong (codes are 10-99).
        let picked = (match_code != 0).then(|| u8::try_from(match_code).unwrap_or(0));
        let action = Action::Confirm {
            user_id: user.id.clone(),
            match_code: picked,
        };
        let limit = self.user_limit("confirm", self.settings.confirm_limit, &user);
        let precheck = limit.as_ref().map(|l| self.take(l, deadline).boxed());
        let view = self
            .transition(&id, Guard::Phone, action, precheck, deadline)
            .await?;
        if view.record.state == LoginState::Denied
            && view.record.deny_reason == Some(DenyReason::WrongMatch)
        {
            Counters::bump(&self.counters.wrong_match);
            tracing::warn!(session_id = %id, user_id = %user.id, "wrong number picked: login refused (a relayed QR code?)");
            return Err(ServiceError::WrongMatch);
        }
        Ok(view)
    }

    /// SCANNED → DENIED by the scanning user.
    pub async fn deny(
        &self,
        id: &str,
        authorization: Option<&str>,
        deadline: Instant,
    ) -> Result<SessionView, ServiceError> {
        let id = SessionId::parse(id)?;
        let user = self.verify_user(authorization).await?;
        let action = Action::Deny { user_id: user.id };
        self.transition(&id, Guard::Phone, action, None, deadline)
            .await
    }

    fn user_limit(&self, action: &str, limit: u32, user: &PhoneUser) -> Option<Limit> {
        (limit > 0).then(|| Limit::user(action, &user.id, limit, self.settings.user_window))
    }

    /// Counts this call against `limit` before its write, with one
    /// compare-and-swap on the counter (beside the session's first read,
    /// so no round trip is added): concurrent calls of one user are
    /// counted one by one and cannot pass the limit together, and a call
    /// refused later (wrong state, wrong QR code) has still been counted.
    /// A counter that cannot be read lets the call through (logged).
    async fn take(&self, limit: &Limit, deadline: Instant) -> Result<(), ServiceError> {
        let broker = self.broker()?;
        match broker.limits().count(limit, now_millis(), deadline).await {
            Ok(Decision::Allowed) => Ok(()),
            Ok(Decision::Limited { retry_after }) => {
                Counters::bump(&self.counters.user_limited);
                let action = if limit.subject.starts_with("scan") {
                    "scan"
                } else {
                    "confirm"
                };
                tracing::info!(subject = %limit.subject, "per-user {action} limit reached");
                Err(ServiceError::UserLimited {
                    action,
                    retry_after,
                })
            }
            // As for creates: the write tells whether NATS is really away.
            Err(e) => {
                tracing::warn!(error = %e, "per-user counter unavailable; letting the call through");
                Ok(())
            }
        }
    }
}
