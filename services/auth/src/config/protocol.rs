//! The settings of the QR protocol's defences (docs/security.md): number
//! matching, rotating codes, key-bound redemption, per-user limits.
//! Flattened into [`super::AuthConfig`]: the same flags and variables.

use clap::Args;
use std::time::Duration;

use super::{invalid, ConfigError};
use crate::domain::QrRules;

#[derive(Debug, Clone, Args)]
pub struct ProtocolConfig {
    /// Number matching: after a scan the browser shows a two-digit code that
    /// the phone's user must pick among three before confirming.
    #[arg(long, env = "QRLOGIN_NUMBER_MATCHING", default_value_t = true, action = clap::ArgAction::Set)]
    pub number_matching: bool,
    /// How often the QR payload of a PENDING session is replaced (20s to
    /// 30s in production; shorter only for tests, with a warning).
    #[arg(long, env = "QRLOGIN_QR_ROTATION", default_value = "25s", value_parser = humantime::parse_duration)]
    pub qr_rotation: Duration,
    /// How long a replaced QR payload is still accepted (the phone read it
    /// just before it changed), and how early the next one is (clocks).
    #[arg(long, env = "QRLOGIN_QR_GRACE", default_value = "3s", value_parser = humantime::parse_duration)]
    pub qr_grace: Duration,
    /// Refuse creates without a browser key, so that every session can only
    /// be redeemed with a proof of that key.
    #[arg(long, env = "QRLOGIN_REQUIRE_KEY_BINDING", default_value_t = false, action = clap::ArgAction::Set)]
    pub require_key_binding: bool,
    /// How far a redeem proof's `iat` may be from auth's clock.
    #[arg(long, env = "QRLOGIN_PROOF_MAX_AGE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub proof_max_age: Duration,
    /// Scans one phone user may start per QRLOGIN_USER_LIMIT_WINDOW, across
    /// the cluster; 0 turns the limit off.
    #[arg(long, env = "QRLOGIN_SCAN_LIMIT", default_value_t = 30)]
    pub scan_limit: u32,
    /// Confirms one phone user may make per QRLOGIN_USER_LIMIT_WINDOW,
    /// across the cluster; 0 turns the limit off.
    #[arg(long, env = "QRLOGIN_CONFIRM_LIMIT", default_value_t = 10)]
    pub confirm_limit: u32,
    /// The fixed window of the per-user limits.
    #[arg(long, env = "QRLOGIN_USER_LIMIT_WINDOW", default_value = "60s", value_parser = humantime::parse_duration)]
    pub user_limit_window: Duration,
    /// How long after a redeem the creating browser may redeem again (a
    /// retry after a lost answer) and get the same access token; 0s: never.
    #[arg(long, env = "QRLOGIN_REDEEM_RETRY_WINDOW", default_value = "30s", value_parser = humantime::parse_duration)]
    pub redeem_retry_window: Duration,
}

/// Rotation periods outside this range are refused; below 20 s only tests
/// should go (a warning says so).
const MIN_ROTATION: Duration = Duration::from_secs(1);
const MAX_ROTATION: Duration = Duration::from_secs(30);
pub const PRODUCTION_MIN_ROTATION: Duration = Duration::from_secs(20);

impl ProtocolConfig {
    pub fn qr_rules(&self) -> QrRules {
        QrRules {
            rotation: self.qr_rotation,
            grace: self.qr_grace,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.qr_rotation < MIN_ROTATION || self.qr_rotation > MAX_ROTATION {
            return Err(invalid(
                "QRLOGIN_QR_ROTATION",
                "must be between 1s and 30s (20s to 30s in production)",
            ));
        }
        if self.qr_grace > Duration::from_secs(10) || self.qr_grace >= self.qr_rotation {
            return Err(invalid(
                "QRLOGIN_QR_GRACE",
                "must be at most 10s and shorter than QRLOGIN_QR_ROTATION",
            ));
        }
        if self.proof_max_age < Duration::from_secs(5)
            || self.proof_max_age > Duration::from_secs(300)
        {
            return Err(invalid(
                "QRLOGIN_PROOF_MAX_AGE",
                "must be between 5s and 5m",
            ));
        }
        if self.redeem_retry_window > Duration::from_secs(300) {
            return Err(invalid(
                "QRLOGIN_REDEEM_RETRY_WINDOW",
                "must be at most 5m (a retry comes within seconds)",
            ));
        }
        if self.user_limit_window < Duration::from_secs(1)
            || self.user_limit_window > Duration::from_secs(24 * 3600)
        {
            return Err(invalid(
                "QRLOGIN_USER_LIMIT_WINDOW",
                "must be between 1s and 24h",
            ));
        }
        Ok(())
    }
}
