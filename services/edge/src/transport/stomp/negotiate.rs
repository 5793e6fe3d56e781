//! CONNECT negotiation: the protocol version (`accept-version` against what
//! qrlogin speaks) and heart-beats (the client's `heart-beat: cx,cy`
//! against the server's `sx,sy`), per "Connecting" and "Heart-beating" in
//! the STOMP 1.2 specification. A client's values are read as at most
//! [`MAX_CLIENT_HEART_BEAT`]: a client cannot ask for so long an interval
//! that silence detection is off in effect.

use std::time::Duration;

/// STOMP versions the endpoint speaks (1.0 is refused: no heart-beats, no
/// escaping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V1_1,
    V1_2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// The WebSocket subprotocol of this version (`v12.stomp`, `v11.stomp`).
    pub fn subprotocol(self) -> &'static str {
        match self {
            Version::V1_1 => "v11.stomp",
            Version::V1_2 => "v12.stomp",
        }
    }
}

/// The longest interval a client's `heart-beat` values are read as. A
/// `cx` above it would let a client promise beats and then stay silent for
/// years (twice `cx` is the silence allowed); a `cy` above it would stop
/// the server's beats that keep proxies and NATs from dropping the socket.
/// Zero keeps its meaning (that direction off: then WebSocket pings and
/// `QRLOGIN_IDLE_TIMEOUT` find a dead peer).
pub const MAX_CLIENT_HEART_BEAT: Duration = Duration::from_secs(60);

/// What the server can do: send a heart-beat at least this often, and
/// tolerate client silence this long (zero: not at all / no need).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerHeartBeat {
    /// `sx`: the smallest interval at which the server can send heart-beats.
    pub send_every: Duration,
    /// `sy`: the interval at which the server wants heart-beats from the client.
    pub expect_every: Duration,
}

/// The outcome of CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub version: Version,
    /// What the server offered (echoed in CONNECTED).
    pub offer: ServerHeartBeat,
    /// How often the server must send something (a frame or an EOL); `None`
    /// when either side declined.
    pub server_sends_every: Option<Duration>,
    /// How often the client promised to send something; `None` when either
    /// side declined. A server closes the connection after some multiple of
    /// this without any byte (the specification leaves the margin to it).
    pub client_sends_every: Option<Duration>,
}

impl Negotiated {
    /// The `heart-beat` header of CONNECTED: `sx,sy` in milliseconds.
    pub fn server_header(&self) -> String {
        format!(
            "{},{}",
            self.offer.send_every.as_millis(),
            self.offer.expect_every.as_millis()
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiateError {
    #[error("supported protocol versions are 1.1 and 1.2; the client accepts {0:?}")]
    NoCommonVersion(String),
    #[error("heart-beat header {0:?} is not two non-negative integers \"cx,cy\"")]
    BadHeartBeat(String),
}

/// Picks the version and the heart-beat intervals from CONNECT's
/// `accept-version` and `heart-beat` headers (both optional: an absent
/// `accept-version` means 1.0 only, an absent `heart-beat` means `0,0`).
pub fn negotiate(
    accept_version: Option<&str>,
    heart_beat: Option<&str>,
    server: ServerHeartBeat,
) -> Result<Negotiated, NegotiateError> {
    let accepted = accept_version.unwrap_or("1.0");
    let version = accepted
        .split(',')
        .filter_map(|v| match v.trim() {
            "1.2" => Some(Version::V1_2),
            "1.1" => Some(Version::V1_1),
            _ => None,
        })
        .max()
        .ok_or_else(|| NegotiateError::NoCommonVersion(accepted.to_owned()))?;
    let (cx, cy) = match heart_beat {
        None => (0, 0),
        Some(text) => parse_heart_beat(text)?,
    };
    let max = MAX_CLIENT_HEART_BEAT.as_millis() as u64;
    let (cx, cy) = (cx.min(max), cy.min(max));
    let (sx, sy) = (
        server.send_every.as_millis() as u64,
        server.expect_every.as_millis() as u64,
    );
    Ok(Negotiated {
        version,
        offer: server,
        server_sends_every: interval(sx, cy),
        client_sends_every: interval(cx, sy),
    })
}

/// The specification's rule: none when either value is 0, else the larger.
fn interval(can: u64, wants: u64) -> Option<Duration> {
    (can != 0 && wants != 0).then(|| Duration::from_millis(can.max(wants)))
}

fn parse_heart_beat(text: &str) -> Result<(u64, u64), NegotiateError> {
    let bad = || NegotiateError::BadHeartBeat(text.to_owned());
    let (x, y) = text.split_once(',').ok_or_else(bad)?;
    let number = |s: &str| {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<u64>().map_err(|_| bad())
    };
    Ok((number(x)?, number(y)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: ServerHeartBeat = ServerHeartBeat {
        send_every: Duration::from_millis(15_000),
        expect_every: Duration::from_millis(20_000),
    };

    #[test]
    fn highest_common_version_wins() {
        let v = |a| negotiate(Some(a), None, SERVER).map(|n| n.version);
        assert_eq!(v("1.0,1.1,1.2"), Ok(Version::V1_2));
        assert_eq!(v("1.2"), Ok(Version::V1_2));
        assert_eq!(v("1.1"), Ok(Version::V1_1));
        assert_eq!(v("1.0, 1.1"), Ok(Version::V1_1));
        assert!(matches!(v("1.0"), Err(NegotiateError::NoCommonVersion(_))));
        assert!(matches!(
            v("2.0,3"),
            Err(NegotiateError::NoCommonVersion(_))
        ));
        assert!(
            negotiate(None, None, SERVER).is_err(),
            "no header means 1.0"
        );
    }

    #[test]
    fn heart_beats_follow_the_specification_example() {
        // stompjs's default: 10000,10000.
        let n = negotiate(Some("1.2"), Some("10000,10000"), SERVER).unwrap();
        assert_eq!(n.server_sends_every, Some(Duration::from_millis(15_000)));
        assert_eq!(n.client_sends_every, Some(Duration::from_millis(20_000)));
        assert_eq!(n.server_header(), "15000,20000");
        // A client that wants beats every 30 s: max(sx, cy) = 30 s.
        let n = negotiate(Some("1.2"), Some("5000,30000"), SERVER).unwrap();
        assert_eq!(n.server_sends_every, Some(Duration::from_millis(30_000)));
        assert_eq!(n.client_sends_every, Some(Duration::from_millis(20_000)));
    }

    #[test]
    fn zero_on_either_side_turns_a_direction_off() {
        let n = negotiate(Some("1.2"), Some("0,0"), SERVER).unwrap();
        assert_eq!((n.server_sends_every, n.client_sends_every), (None, None));
        let n = negotiate(Some("1.2"), None, SERVER).unwrap();
        assert_eq!((n.server_sends_every, n.client_sends_every), (None, None));
        let n = negotiate(Some("1.2"), Some("0,1000"), SERVER).unwrap();
        assert_eq!(n.server_sends_every, Some(Duration::from_millis(15_000)));
        assert_eq!(n.client_sends_every, None);
        let quiet = ServerHeartBeat {
            send_every: Duration::ZERO,
            expect_every: Duration::ZERO,
        };
        let n = negotiate(Some("1.2"), Some("10000,10000"), quiet).unwrap();
        assert_eq!((n.server_sends_every, n.client_sends_every), (None, None));
        assert_eq!(n.server_header(), "0,0");
    }

    /// Regression: `heart-beat: 9999999999999,0` made the allowed silence
    /// twice about 317 years, and `u64::MAX` overflowed the timers.
    #[test]
    fn a_client_cannot_ask_for_beats_further_apart_than_the_maximum() {
        let n = negotiate(Some("1.2"), Some("9999999999999,0"), SERVER).unwrap();
        assert_eq!(n.client_sends_every, Some(MAX_CLIENT_HEART_BEAT));
        assert_eq!(n.server_sends_every, None);
        let huge = format!("{0},{0}", u64::MAX);
        let n = negotiate(Some("1.2"), Some(&huge), SERVER).unwrap();
        assert_eq!(n.client_sends_every, Some(MAX_CLIENT_HEART_BEAT));
        assert_eq!(n.server_sends_every, Some(MAX_CLIENT_HEART_BEAT));
        // A server offer above the maximum still wins (the larger of both).
        let slow = ServerHeartBeat {
            send_every: Duration::from_secs(300),
            expect_every: Duration::from_secs(300),
        };
        let n = negotiate(Some("1.2"), Some("9999999999999,9999999999999"), slow).unwrap();
        assert_eq!(n.client_sends_every, Some(Duration::from_secs(300)));
        assert_eq!(n.server_sends_every, Some(Duration::from_secs(300)));
        // Within the maximum, the client's values are taken as they are.
        let n = negotiate(Some("1.2"), Some("45000,0"), SERVER).unwrap();
        assert_eq!(n.client_sends_every, Some(Duration::from_secs(45)));
    }

    #[test]
    fn malformed_heart_beats_are_refused() {
        for bad in ["", "10", "a,b", "-1,0", "1,2,3", "10000;10000", ",5"] {
            assert!(
                matches!(
                    negotiate(Some("1.2"), Some(bad), SERVER),
                    Err(NegotiateError::BadHeartBeat(_))
                ),
                "{bad:?}"
            );
        }
        assert!(negotiate(Some("1.2"), Some(" 10 , 20 "), SERVER).is_ok());
    }

    #[test]
    fn subprotocols_match_versions() {
        assert_eq!(Version::V1_2.subprotocol(), super::super::SUBPROTOCOLS[0]);
        assert_eq!(Version::V1_1.subprotocol(), super::super::SUBPROTOCOLS[1]);
    }
}
