//! STOMP 1.2 over WebSocket, as `@stomp/stompjs` speaks it: the frame codec
//! ([`command`], [`frame`] decodes client frames, [`encode`] writes server
//! frames), version and heart-beat negotiation ([`negotiate`]), the
//! connection itself ([`conn`]), the transport's settings
//! ([`StompSettings`]), and the names qrlogin gives to its destinations and
//! headers (below), so the transport and the clients agree on them in one
//! place.
//!
//! The conversation, for a session `<id>` (docs/protocol.md has the contract):
//!
//! ```text
//! client: GET /v1/login-sessions/<id>/stomp   Sec-WebSocket-Protocol: v12.stomp
//! client: CONNECT  accept-version:1.2  heart-beat:10000,10000
//! server: CONNECTED  version:1.2  heart-beat:<sx>,<sy>  server:qrlogin/<version>
//! client: SUBSCRIBE  id:sub-0  destination:/topic/login-sessions.<id>  [since:<version>]
//! server: MESSAGE  subscription:sub-0  message-id:<n>  destination:…  content-type:application/json
//!         (one per snapshot, body = the JSON snapshot)
//! client: SEND  destination:/app/login-sessions.<id>.cancel      (optional: cancel)
//! client: DISCONNECT  receipt:<r>
//! server: RECEIPT  receipt-id:<r>
//! ```
//!
//! Any frame may carry `receipt`; the server answers it with RECEIPT once the
//! frame is processed. Anything the server cannot accept gets an ERROR frame
//! and the connection is closed, as the specification requires.

pub mod command;
pub mod conn;
pub mod encode;
pub mod frame;
pub mod negotiate;

use std::time::Duration;

use crate::config::duration;

/// Settings of the STOMP transport (docs/configuration.md, "edge").
#[derive(Debug, Clone, clap::Args)]
pub struct StompSettings {
    /// The server's heart-beat offer in CONNECTED (`<sx>,<sy>`): it sends
    /// an EOL at least this often and wants the client's at least this
    /// often (each side takes the larger of the two offers); a client
    /// silent for twice the negotiated interval is dropped.
    #[arg(id = "stomp-heartbeat", long = "stomp-heartbeat", env = "QRLOGIN_STOMP_HEARTBEAT", default_value = "20s", value_parser = duration)]
    pub heart_beat: Duration,
}

impl StompSettings {
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        if self.heart_beat < Duration::from_secs(1) || self.heart_beat > Duration::from_secs(3600) {
            return Err(crate::config::ConfigError::Invalid {
                var: "QRLOGIN_STOMP_HEARTBEAT",
                reason: "1s..=1h".into(),
            });
        }
        Ok(())
    }
}

/// Picks the subprotocol from a `Sec-WebSocket-Protocol` offer (tokens
/// separated by commas, maybe over several headers): the first of
/// [`SUBPROTOCOLS`] the client offers.
pub fn choose_subprotocol<'a>(offers: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    let offered: Vec<&str> = offers
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    SUBPROTOCOLS
        .into_iter()
        .find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)))
}

/// WebSocket subprotocols the STOMP endpoint accepts, most preferred first
/// (stompjs offers `v12.stomp, v11.stomp, v10.stomp`). STOMP 1.0 is not
/// offered: it has no heart-beats and no header escaping.
pub const SUBPROTOCOLS: [&str; 2] = ["v12.stomp", "v11.stomp"];

/// The only topic a connection may subscribe to is its own session's:
/// `/topic/login-sessions.<session id>`.
pub const TOPIC_PREFIX: &str = "/topic/login-sessions.";

/// Cancel is a SEND (empty body) to `/app/login-sessions.<session id>.cancel`.
pub const CANCEL_PREFIX: &str = "/app/login-sessions.";
/// The suffix of the cancel destination.
pub const CANCEL_SUFFIX: &str = ".cancel";

/// SUBSCRIBE header for resuming: the newest version the client holds
/// (the same rule as SSE `Last-Event-ID` and WebSocket `since`).
pub const SINCE_HEADER: &str = "since";

/// `content-type` of every MESSAGE: the JSON snapshot of docs/protocol.md.
pub const MESSAGE_CONTENT_TYPE: &str = "application/json";

/// The destination a client subscribes to for session `id`.
pub fn topic(id: &str) -> String {
    format!("{TOPIC_PREFIX}{id}")
}

/// The destination a client sends to for cancelling session `id`.
pub fn cancel_destination(id: &str) -> String {
    format!("{CANCEL_PREFIX}{id}{CANCEL_SUFFIX}")
}

/// The session id of a topic destination, if it is one.
pub fn session_of_topic(destination: &str) -> Option<&str> {
    destination
        .strip_prefix(TOPIC_PREFIX)
        .filter(|id| !id.is_empty())
}

/// The session id of a cancel destination, if it is one.
pub fn session_of_cancel(destination: &str) -> Option<&str> {
    destination
        .strip_prefix(CANCEL_PREFIX)
        .and_then(|rest| rest.strip_suffix(CANCEL_SUFFIX))
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "q3Zb0Xz2kT9yLw1sJm5HAA";

    #[test]
    fn destinations_round_trip() {
        assert_eq!(topic(ID), "/topic/login-sessions.q3Zb0Xz2kT9yLw1sJm5HAA");
        assert_eq!(session_of_topic(&topic(ID)), Some(ID));
        assert_eq!(
            cancel_destination(ID),
            "/app/login-sessions.q3Zb0Xz2kT9yLw1sJm5HAA.cancel"
        );
        assert_eq!(session_of_cancel(&cancel_destination(ID)), Some(ID));
    }

    #[test]
    fn the_subprotocol_is_v12_before_v11_and_never_v10() {
        assert_eq!(
            choose_subprotocol(["v10.stomp, v11.stomp, v12.stomp"]),
            Some("v12.stomp")
        );
        assert_eq!(
            choose_subprotocol(["v10.stomp", "v11.stomp"]),
            Some("v11.stomp")
        );
        assert_eq!(choose_subprotocol(["v10.stomp"]), None);
        assert_eq!(choose_subprotocol([]), None);
    }

    #[test]
    fn other_destinations_are_not_ours() {
        assert_eq!(session_of_topic("/topic/login-sessions."), None);
        assert_eq!(session_of_topic("/queue/login-sessions.x"), None);
        assert_eq!(session_of_topic(&cancel_destination(ID)), None);
        assert_eq!(session_of_cancel(&topic(ID)), None);
        assert_eq!(session_of_cancel("/app/login-sessions..cancel"), None);
        assert_eq!(session_of_cancel("/app/login-sessions.x.confirm"), None);
    }
}
