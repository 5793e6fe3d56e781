//! The rotating QR payload, written once for both sides of the contract:
//! auth verifies what a phone read, an edge shows the browser the payload of
//! the current epoch (see `QrRotation` in events.proto).
//!
//! ```text
//! <base_url>/m/<session_id>#<epoch>.<tag>
//! tag = base64url(HMAC-SHA256(key, "qrlogin qr\0" | session_id | epoch as u64 BE))[..16]
//! ```
//!
//! The `#` part never reaches a server when the phone opens the URL, so
//! the short-lived token stays out of access logs and `Referer` headers;
//! the phone's page reads it and sends the whole payload with its scan.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of a session's payload key.
pub const KEY_BYTES: usize = 16;
/// Bytes of the MAC kept in a tag (96 bits), and their base64url length.
const TAG_BYTES: usize = 12;
const TAG_CHARS: usize = 16;
/// Length of a session id (base64url of 128 bits).
const SESSION_ID_CHARS: usize = 22;
/// Longest payload we look at; real ones are well under 200 bytes.
pub const MAX_PAYLOAD_LEN: usize = 2048;

/// The epoch that runs at `now_ms` (0 before `starts_at_ms`).
pub fn epoch_at(starts_at_ms: i64, period_ms: u32, now_ms: i64) -> u64 {
    if period_ms == 0 || now_ms <= starts_at_ms {
        return 0;
    }
    u64::try_from((now_ms - starts_at_ms) / i64::from(period_ms)).unwrap_or(0)
}

/// When `epoch` begins.
pub fn epoch_start(starts_at_ms: i64, period_ms: u32, epoch: u64) -> i64 {
    let offset = i64::try_from(epoch)
        .unwrap_or(i64::MAX)
        .saturating_mul(i64::from(period_ms));
    starts_at_ms.saturating_add(offset)
}

fn mac(key: &[u8], session_id: &str, epoch: u64) -> Hmac<Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(b"qrlogin qr\0");
    mac.update(session_id.as_bytes());
    mac.update(&epoch.to_be_bytes());
    mac
}

/// The tag of `epoch` for the session `session_id` under `key`.
pub fn tag(key: &[u8], session_id: &str, epoch: u64) -> String {
    let full = mac(key, session_id, epoch).finalize().into_bytes();
    URL_SAFE_NO_PAD.encode(&full[..TAG_BYTES])
}

/// Whether `tag` is the tag of `epoch`, compared in constant time.
pub fn tag_matches(key: &[u8], session_id: &str, epoch: u64, tag: &str) -> bool {
    if tag.len() != TAG_CHARS {
        return false;
    }
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(tag) else {
        return false;
    };
    bytes.len() == TAG_BYTES
        && mac(key, session_id, epoch)
            .verify_truncated_left(&bytes)
            .is_ok()
}

/// The payload of `epoch`: what the QR code encodes.
pub fn payload(base_url: &str, session_id: &str, key: &[u8], epoch: u64) -> String {
    format!(
        "{}/m/{session_id}#{epoch}.{}",
        base_url.trim_end_matches('/'),
        tag(key, session_id, epoch)
    )
}

/// The parts of a payload that a phone read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload<'a> {
    pub session_id: &'a str,
    pub epoch: u64,
    pub tag: &'a str,
}

/// Splits a payload into its parts; `None` when it does not have the
/// shape `…/m/<22 characters>#<epoch>.<16 characters>`. The base URL is not
/// checked: the tag covers what matters.
pub fn parse(text: &str) -> Option<Payload<'_>> {
    if text.len() > MAX_PAYLOAD_LEN {
        return None;
    }
    let (url, fragment) = text.split_once('#')?;
    let (_, session_id) = url.rsplit_once("/m/")?;
    let base64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if session_id.len() != SESSION_ID_CHARS || !base64url(session_id) {
        return None;
    }
    let (epoch, tag) = fragment.split_once('.')?;
    if epoch.is_empty() || epoch.len() > 12 || !epoch.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if tag.len() != TAG_CHARS || !base64url(tag) {
        return None;
    }
    Some(Payload {
        session_id,
        epoch: epoch.parse().ok()?,
        tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "q3Zb0Xz2kT9yLw1sJm5HAA";
    const KEY: [u8; KEY_BYTES] = [7; KEY_BYTES];

    #[test]
    fn epochs_follow_the_period_from_the_start() {
        assert_eq!(epoch_at(1_000, 25_000, 0), 0);
        assert_eq!(epoch_at(1_000, 25_000, 25_999), 0);
        assert_eq!(epoch_at(1_000, 25_000, 26_000), 1);
        assert_eq!(epoch_start(1_000, 25_000, 2), 51_000);
        assert_eq!(epoch_at(1_000, 0, 99_000), 0);
    }

    #[test]
    fn payloads_parse_back_and_verify_only_for_their_epoch_session_and_key() {
        let p = payload("https://login.example/", ID, &KEY, 3);
        assert!(p.starts_with("https://login.example/m/q3Zb0Xz2kT9yLw1sJm5HAA#3."));
        let parsed = parse(&p).unwrap();
        assert_eq!(parsed.session_id, ID);
        assert_eq!(parsed.epoch, 3);
        assert!(tag_matches(&KEY, ID, 3, parsed.tag));
        assert!(!tag_matches(&KEY, ID, 4, parsed.tag), "another epoch");
        assert!(
            !tag_matches(&[8; KEY_BYTES], ID, 3, parsed.tag),
            "another key"
        );
        assert!(!tag_matches(&KEY, "AAAAAAAAAAAAAAAAAAAAAA", 3, parsed.tag));
        assert_ne!(tag(&KEY, ID, 3), tag(&KEY, ID, 4));
    }

    #[test]
    fn malformed_payloads_do_not_parse() {
        let good = payload("http://x", ID, &KEY, 0);
        let (head, tag) = good.split_once('.').unwrap();
        for bad in [
            "",
            "http://x/m/q3Zb0Xz2kT9yLw1sJm5HAA",
            "http://x/m/q3Zb0Xz2kT9yLw1sJm5HA#0.AAAAAAAAAAAAAAAA",
            "http://x/m/q3Zb0Xz2kT9yLw1sJm5HAA#x.AAAAAAAAAAAAAAAA",
            "http://x/m/q3Zb0Xz2kT9yLw1sJm5HAA#.AAAAAAAAAAAAAAAA",
            "http://x/m/q3Zb0Xz2kT9yLw1sJm5HAA#0.AAAA",
            "http://x/m/q3Zb0Xz2kT9yLw1sJm5H.*#0.AAAAAAAAAAAAAAAA",
            &format!("{head}.{tag}A"),
            &"a".repeat(MAX_PAYLOAD_LEN + 1),
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert!(!tag_matches(&KEY, ID, 0, "!!!!!!!!!!!!!!!!"));
    }
}
