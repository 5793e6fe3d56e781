//! The rotating QR code of a PENDING session, without a write per
//! rotation: a random key per session, epochs of a fixed length from the
//! creation, and a payload per epoch (`qrlogin_proto::qr`, shared with the
//! edges that show it). A scan must carry the payload of the current epoch,
//! or of the previous one within a short grace after the boundary (the
//! phone read it just before it changed), or of the next one within the
//! same margin (an edge whose clock runs a little ahead showed it early).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use qrlogin_proto::qr as payload;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::{DomainError, UnixMillis};

/// How codes rotate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QrRules {
    /// Length of one epoch (QRLOGIN_QR_ROTATION).
    pub rotation: Duration,
    /// How long a replaced payload is still accepted, and how early the
    /// next one is (QRLOGIN_QR_GRACE).
    pub grace: Duration,
}

impl Default for QrRules {
    fn default() -> Self {
        Self {
            rotation: Duration::from_secs(25),
            grace: Duration::from_secs(3),
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A session's QR key, as stored in the (sealed) record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QrKey {
    /// 16 random bytes, base64url.
    pub key: String,
    /// Start of epoch 0.
    pub starts_at: UnixMillis,
    /// Length of an epoch, fixed for the session's life.
    pub period_ms: u32,
}

impl QrKey {
    pub fn generate(rules: &QrRules, now: UnixMillis) -> Self {
        let mut bytes = [0u8; payload::KEY_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self {
            key: URL_SAFE_NO_PAD.encode(bytes),
            starts_at: now,
            period_ms: u32::try_from(rules.rotation.as_millis())
                .unwrap_or(u32::MAX)
                .max(1),
        }
    }

    pub fn key_bytes(&self) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(&self.key).unwrap_or_default()
    }

    pub fn epoch_at(&self, now: UnixMillis) -> u64 {
        payload::epoch_at(self.starts_at, self.period_ms, now)
    }

    /// The payload on screen at `now`.
    pub fn payload_at(&self, base_url: &str, session_id: &str, now: UnixMillis) -> String {
        payload::payload(base_url, session_id, &self.key_bytes(), self.epoch_at(now))
    }

    /// Whether `scanned` (the whole payload a phone read) may start a scan
    /// of `session_id` at `now`.
    pub fn check(
        &self,
        session_id: &str,
        scanned: Option<&str>,
        now: UnixMillis,
        rules: &QrRules,
    ) -> Result<(), DomainError> {
        let text = scanned
            .filter(|t| !t.is_empty())
            .ok_or(DomainError::QrInvalid(
                "qr_payload is required: send the whole payload read from the QR code",
            ))?;
        let read = payload::parse(text).ok_or(DomainError::QrInvalid(
            "qr_payload is not a qrlogin QR payload (…/m/<id>#<epoch>.<tag>)",
        ))?;
        if read.session_id != session_id {
            return Err(DomainError::QrInvalid(
                "qr_payload belongs to another login session",
            ));
        }
        if !payload::tag_matches(&self.key_bytes(), session_id, read.epoch, read.tag) {
            return Err(DomainError::QrInvalid(
                "qr_payload was not issued for this login session",
            ));
        }
        let grace = millis(rules.grace);
        let current = self.epoch_at(now);
        let start = |epoch| payload::epoch_start(self.starts_at, self.period_ms, epoch);
        if read.epoch == current
            || (read.epoch + 1 == current && now < start(current).saturating_add(grace))
            || (read.epoch == current + 1 && now >= start(read.epoch).saturating_sub(grace))
        {
            return Ok(());
        }
        if read.epoch < current {
            Err(DomainError::QrReplaced)
        } else {
            Err(DomainError::QrInvalid("qr_payload is not valid yet"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "q3Zb0Xz2kT9yLw1sJm5HAA";
    const T0: UnixMillis = 1_800_000_000_000;

    fn key() -> (QrKey, QrRules) {
        let rules = QrRules::default();
        (QrKey::generate(&rules, T0), rules)
    }

    #[test]
    fn the_current_payload_scans_and_the_previous_one_only_within_the_grace() {
        let (k, rules) = key();
        let at = |ms| T0 + ms;
        let p0 = k.payload_at("http://x", ID, at(0));
        assert_eq!(k.check(ID, Some(&p0), at(24_999), &rules), Ok(()));
        // Epoch 1 began at 25 s: p0 is still good for 3 s, then replaced.
        assert_eq!(k.check(ID, Some(&p0), at(27_999), &rules), Ok(()));
        assert_eq!(
            k.check(ID, Some(&p0), at(28_000), &rules),
            Err(DomainError::QrReplaced)
        );
        let p1 = k.payload_at("http://x", ID, at(25_000));
        assert_ne!(p0, p1);
        assert_eq!(k.check(ID, Some(&p1), at(26_000), &rules), Ok(()));
        // An edge slightly ahead shows p1 early: fine within the margin.
        assert_eq!(k.check(ID, Some(&p1), at(22_000), &rules), Ok(()));
        assert!(matches!(
            k.check(ID, Some(&p1), at(21_999), &rules),
            Err(DomainError::QrInvalid(_))
        ));
        let p3 = k.payload_at("http://x", ID, at(75_000));
        assert!(matches!(
            k.check(ID, Some(&p3), at(26_000), &rules),
            Err(DomainError::QrInvalid(_))
        ));
    }

    #[test]
    fn missing_forged_or_foreign_payloads_are_invalid() {
        let (k, rules) = key();
        let (other, _) = key();
        let forged = other.payload_at("http://x", ID, T0);
        let foreign = k.payload_at("http://x", "AAAAAAAAAAAAAAAAAAAAAA", T0);
        for bad in [
            None,
            Some(""),
            Some("http://x/m/q3Zb0Xz2kT9yLw1sJm5HAA"),
            Some(forged.as_str()),
            Some(foreign.as_str()),
        ] {
            assert!(
                matches!(k.check(ID, bad, T0, &rules), Err(DomainError::QrInvalid(_))),
                "{bad:?}"
            );
        }
    }
}
