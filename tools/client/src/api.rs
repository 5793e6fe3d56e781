//! The edge's HTTP API (docs/protocol.md) as typed calls: the browser
//! routes (create, short and long poll, cancel, redeem), the phone routes
//! (scan, confirm, deny) and the development token, with error bodies
//! decoded into their stable codes.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use crate::http::{HttpError, Pool, Response};
use crate::key::BrowserKey;

/// The states of docs/protocol.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LoginState {
    Pending,
    Scanned,
    Confirmed,
    Redeemed,
    Denied,
    Cancelled,
    Expired,
}

impl LoginState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Redeemed | Self::Denied | Self::Cancelled | Self::Expired
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Scanned => "SCANNED",
            Self::Confirmed => "CONFIRMED",
            Self::Redeemed => "REDEEMED",
            Self::Denied => "DENIED",
            Self::Cancelled => "CANCELLED",
            Self::Expired => "EXPIRED",
        }
    }

    /// `SCANNED` or the protobuf name `LOGIN_STATE_SCANNED`.
    pub fn parse(text: &str) -> Option<Self> {
        let name = text.strip_prefix("LOGIN_STATE_").unwrap_or(text);
        serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
    }
}

/// The session snapshot every transport carries (docs/protocol.md). Times
/// are kept as the RFC 3339 text the edge sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Snapshot {
    pub session_id: String,
    pub state: LoginState,
    pub version: u64,
    pub expires_at: Option<String>,
    pub updated_at: String,
    pub user_display_name: Option<String>,
    /// While PENDING: the payload the QR code shows now (replaced every
    /// rotation without a new version).
    #[serde(default)]
    pub qr_payload: Option<String>,
    /// While SCANNED: the number the browser shows (number matching).
    #[serde(default)]
    pub match_code: Option<u32>,
    /// Why a DENIED session was refused (`user`, `wrong_match`).
    #[serde(default)]
    pub deny_reason: Option<String>,
    /// Short polls: the interval the server asks this client to keep.
    #[serde(default)]
    pub poll_interval_ms: Option<u64>,
    /// The edge that wrote this snapshot.
    pub node: Option<String>,
}

impl Snapshot {
    /// The protocol's rule: news when the version is higher, when it is
    /// final and the one held is not (an EXPIRED that an edge computed at
    /// the deadline keeps the last stored version), or when the same
    /// PENDING version shows a later QR payload (rotation).
    pub fn is_newer_than(&self, held: Option<&Snapshot>) -> bool {
        match held {
            None => true,
            Some(h) => {
                self.version > h.version
                    || (self.state.is_final() && !h.state.is_final())
                    || (self.version == h.version
                        && matches!((self.qr_epoch(), h.qr_epoch()), (Some(a), Some(b)) if a > b))
            }
        }
    }

    /// The epoch of the QR payload (the number after `#`), while PENDING.
    pub fn qr_epoch(&self) -> Option<u64> {
        qr_epoch(self.qr_payload.as_deref()?)
    }
}

/// The epoch of a QR payload `…/m/<id>#<epoch>.<tag>`.
pub fn qr_epoch(payload: &str) -> Option<u64> {
    let (_, fragment) = payload.rsplit_once('#')?;
    fragment.split_once('.')?.0.parse().ok()
}

/// The create answer (201).
#[derive(Debug, Clone, Deserialize)]
pub struct Created {
    #[serde(flatten)]
    pub snapshot: Snapshot,
    pub browser_secret: String,
    pub qr_svg: String,
    /// The thumbprint of the bound key, when created with one.
    #[serde(default)]
    pub key_thumbprint: Option<String>,
}

impl Created {
    pub fn id(&self) -> &str {
        &self.snapshot.session_id
    }

    /// The payload the QR code shows now. It is the snapshot's own field:
    /// under `flatten`, serde gives a key to one field only, so the answer's
    /// `qr_payload` is not a second field here.
    pub fn qr_payload(&self) -> &str {
        self.snapshot.qr_payload.as_deref().unwrap_or_default()
    }
}

/// Where the login comes from, as the phone sees it at scan.
#[derive(Debug, Clone, Deserialize)]
pub struct BrowserContext {
    pub ip: String,
    pub user_agent: String,
    pub created_at: String,
}

/// The scan answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Scanned {
    pub session: Snapshot,
    pub browser: BrowserContext,
    /// Number matching: the three numbers to offer the user.
    #[serde(default)]
    pub match_choices: Vec<u32>,
    /// Whether the browser and the phone share a network (a hint).
    #[serde(default)]
    pub same_network: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RedeemedUser {
    pub id: String,
    pub display_name: String,
}

/// The redeem answer: the one-time login's access token.
#[derive(Debug, Clone, Deserialize)]
pub struct Redeemed {
    pub access_token: String,
    pub token_type: String,
    pub expires_at: String,
    pub user: RedeemedUser,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("HTTP {status} {code}: {message}")]
    Status {
        status: u16,
        code: String,
        message: String,
        /// The answer's `Retry-After` (whole seconds), when it had one.
        retry_after: Option<std::time::Duration>,
    },
    #[error("cannot decode the answer: {0}")]
    Decode(String),
}

impl ApiError {
    /// Worth retrying (possibly on another edge): the network, a node that
    /// is down, draining or over capacity, a lost concurrent update.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Http(_) => true,
            ApiError::Status { status, code, .. } => {
                *status == 503 || *status == 429 || code == "conflict"
            }
            ApiError::Decode(_) => false,
        }
    }

    /// The stable error code (`network` and `decode` for local failures).
    pub fn code(&self) -> &str {
        match self {
            ApiError::Http(_) => "network",
            ApiError::Status { code, .. } => code,
            ApiError::Decode(_) => "decode",
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long the server asked the client to wait (`Retry-After` of a
    /// 429 or 503), when it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ApiError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The error a non-2xx answer stands for.
pub fn status_error(status: u16, body: &[u8]) -> ApiError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => ApiError::Status {
            status,
            code: b.error.code,
            message: b.error.message,
            retry_after: None,
        },
        Err(_) => ApiError::Status {
            status,
            code: "unknown".into(),
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            retry_after: None,
        },
    }
}

fn decode<T: for<'de> Deserialize<'de>>(r: &Response) -> Result<T, ApiError> {
    if !(200..300).contains(&r.head.status) {
        let mut e = status_error(r.head.status, &r.body);
        if let ApiError::Status { retry_after, .. } = &mut e {
            *retry_after = r
                .head
                .header("retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(std::time::Duration::from_secs);
        }
        return Err(e);
    }
    serde_json::from_slice(&r.body).map_err(|e| ApiError::Decode(e.to_string()))
}

/// One edge (or a balancer in front of edges), over a small keep-alive pool.
/// Browser calls send the secret as `Authorization: Bearer`, as non-browser
/// clients do (browsers use the cookie; both are accepted).
pub struct Client {
    pool: Pool,
}

impl Client {
    /// A client of `addr`, binding its sockets to `src` when given, keeping
    /// at most `max_idle` idle connections.
    pub fn new(addr: SocketAddr, src: Option<IpAddr>, max_idle: usize) -> Self {
        Self {
            pool: Pool::new(addr, src, max_idle),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.pool.addr()
    }

    pub fn src(&self) -> Option<IpAddr> {
        self.pool.src()
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&[u8]>,
        on_send: impl Fn(),
    ) -> Result<T, ApiError> {
        self.call_with(method, path, bearer, &[], body, on_send)
            .await
    }

    async fn call_with<T: for<'de> Deserialize<'de>>(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        extra: &[(&str, &str)],
        body: Option<&[u8]>,
        on_send: impl Fn(),
    ) -> Result<T, ApiError> {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        headers.extend_from_slice(extra);
        let r = self
            .pool
            .request(method, path, &headers, body, on_send)
            .await?;
        decode(&r)
    }

    /// `POST /v1/login-sessions`, without a browser key (redeem then needs
    /// only the secret, unless auth requires key binding).
    pub async fn create(&self) -> Result<Created, ApiError> {
        self.call("POST", "/v1/login-sessions", None, Some(b"{}"), || {})
            .await
    }

    /// `POST /v1/login-sessions` bound to `key`: redeem will need a proof
    /// signed by it ([`Client::redeem_bound`]).
    pub async fn create_bound(&self, key: &BrowserKey) -> Result<Created, ApiError> {
        let body = serde_json::to_vec(&serde_json::json!({ "public_key": key.jwk() }))
            .map_err(|e| ApiError::Decode(e.to_string()))?;
        self.call("POST", "/v1/login-sessions", None, Some(&body), || {})
            .await
    }

    /// `GET /v1/login-sessions/{id}`: short poll.
    pub async fn get(&self, id: &str, secret: &str) -> Result<Snapshot, ApiError> {
        let path = format!("/v1/login-sessions/{id}");
        self.call("GET", &path, Some(secret), None, || {}).await
    }

    /// `GET /v1/login-sessions/{id}?since=V&qr=E&wait=W`: long poll.
    /// Answers when the snapshot is newer than `held` (its version and, while
    /// PENDING, its QR payload) or final, else after `wait`.
    pub async fn long_poll(
        &self,
        id: &str,
        secret: &str,
        held: &Snapshot,
        wait: std::time::Duration,
    ) -> Result<Snapshot, ApiError> {
        let qr = held
            .qr_epoch()
            .map(|e| format!("&qr={e}"))
            .unwrap_or_default();
        let path = format!(
            "/v1/login-sessions/{id}?since={}{qr}&wait={}ms",
            held.version,
            wait.as_millis()
        );
        self.call("GET", &path, Some(secret), None, || {}).await
    }

    /// `DELETE /v1/login-sessions/{id}`.
    pub async fn cancel(&self, id: &str, secret: &str) -> Result<Snapshot, ApiError> {
        let path = format!("/v1/login-sessions/{id}");
        self.call("DELETE", &path, Some(secret), None, || {}).await
    }

    /// `POST /v1/login-sessions/{id}/redeem` with the secret alone (a
    /// session created without a key).
    pub async fn redeem(&self, id: &str, secret: &str) -> Result<Redeemed, ApiError> {
        let path = format!("/v1/login-sessions/{id}/redeem");
        self.call("POST", &path, Some(secret), Some(b"{}"), || {})
            .await
    }

    /// `POST /v1/login-sessions/{id}/redeem` with a fresh proof of `key`
    /// in the `DPoP` header (a session created with [`Client::create_bound`]).
    pub async fn redeem_bound(
        &self,
        id: &str,
        secret: &str,
        key: &BrowserKey,
    ) -> Result<Redeemed, ApiError> {
        let path = format!("/v1/login-sessions/{id}/redeem");
        let proof = key.proof(id, &format!("http://{}{path}", self.addr()));
        self.call_with(
            "POST",
            &path,
            Some(secret),
            &[("DPoP", &proof)],
            Some(b"{}"),
            || {},
        )
        .await
    }

    /// `POST /v1/login-sessions/{id}/scan` with the phone user's JWT and the
    /// payload read from the QR code.
    pub async fn scan(
        &self,
        id: &str,
        user_token: &str,
        qr_payload: &str,
    ) -> Result<Scanned, ApiError> {
        let path = format!("/v1/login-sessions/{id}/scan");
        let body = serde_json::to_vec(&serde_json::json!({ "qr_payload": qr_payload }))
            .map_err(|e| ApiError::Decode(e.to_string()))?;
        self.call("POST", &path, Some(user_token), Some(&body), || {})
            .await
    }

    /// `POST /v1/login-sessions/{id}/confirm` with the number the user
    /// picked (0: none). `on_send` runs right before the request is written
    /// (a latency clock starts there).
    pub async fn confirm(
        &self,
        id: &str,
        user_token: &str,
        match_code: u32,
        on_send: impl Fn(),
    ) -> Result<Snapshot, ApiError> {
        let path = format!("/v1/login-sessions/{id}/confirm");
        let body = serde_json::to_vec(&serde_json::json!({ "match_code": match_code }))
            .map_err(|e| ApiError::Decode(e.to_string()))?;
        self.call("POST", &path, Some(user_token), Some(&body), on_send)
            .await
    }

    /// `POST /v1/login-sessions/{id}/deny`.
    pub async fn deny(&self, id: &str, user_token: &str) -> Result<Snapshot, ApiError> {
        let path = format!("/v1/login-sessions/{id}/deny");
        self.call("POST", &path, Some(user_token), Some(b"{}"), || {})
            .await
    }

    /// `POST /v1/dev/token`: a phone user token from an edge that has the
    /// development key (never in production).
    pub async fn dev_token(&self, user_id: &str, display_name: &str) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        struct Token {
            token: String,
        }
        let body = serde_json::json!({ "user_id": user_id, "display_name": display_name });
        let body = serde_json::to_vec(&body).map_err(|e| ApiError::Decode(e.to_string()))?;
        let t: Token = self
            .call("POST", "/v1/dev/token", None, Some(&body), || {})
            .await?;
        Ok(t.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAPSHOT: &str = r#"{"session_id":"q3Zb0Xz2kT9yLw1sJm5HAA","state":"SCANNED","version":7,"expires_at":"2026-11-26T10:00:00.000Z","updated_at":"2026-11-26T09:59:00.000Z","user_display_name":null,"node":"edge-1"}"#;

    fn snap(state: LoginState, version: u64) -> Snapshot {
        Snapshot {
            session_id: "s".into(),
            state,
            version,
            expires_at: None,
            updated_at: String::new(),
            user_display_name: None,
            qr_payload: None,
            match_code: None,
            deny_reason: None,
            poll_interval_ms: None,
            node: None,
        }
    }

    #[test]
    fn the_protocol_example_snapshot_decodes() {
        let s: Snapshot = serde_json::from_str(SNAPSHOT).unwrap();
        assert_eq!(s.state, LoginState::Scanned);
        assert_eq!(s.version, 7);
        assert_eq!(s.node.as_deref(), Some("edge-1"));
        assert_eq!(s.user_display_name, None);
    }

    #[test]
    fn states_parse_from_json_and_protobuf_names() {
        assert_eq!(LoginState::parse("CONFIRMED"), Some(LoginState::Confirmed));
        assert_eq!(
            LoginState::parse("LOGIN_STATE_EXPIRED"),
            Some(LoginState::Expired)
        );
        assert_eq!(LoginState::parse("LOGIN_STATE_UNSPECIFIED"), None);
        assert_eq!(LoginState::parse("confirmed"), None);
    }

    #[test]
    fn newer_follows_the_protocol_rule() {
        use LoginState::*;
        assert!(snap(Pending, 1).is_newer_than(None));
        assert!(snap(Scanned, 2).is_newer_than(Some(&snap(Pending, 1))));
        assert!(!snap(Pending, 1).is_newer_than(Some(&snap(Scanned, 2))));
        assert!(snap(Expired, 2).is_newer_than(Some(&snap(Scanned, 2))));
        assert!(!snap(Expired, 2).is_newer_than(Some(&snap(Expired, 2))));
        let qr = |epoch: u64| Snapshot {
            qr_payload: Some(format!(
                "http://x/m/q3Zb0Xz2kT9yLw1sJm5HAA#{epoch}.AAAAAAAAAAAAAAAA"
            )),
            ..snap(Pending, 1)
        };
        assert!(qr(1).is_newer_than(Some(&qr(0))), "a rotated payload");
        assert!(!qr(0).is_newer_than(Some(&qr(1))));
        assert!(!qr(1).is_newer_than(Some(&qr(1))));
    }

    #[test]
    fn error_bodies_keep_their_code() {
        let e = status_error(
            409,
            br#"{"error":{"code":"conflict","message":"lost a race"}}"#,
        );
        assert_eq!((e.code(), e.status()), ("conflict", Some(409)));
        assert!(e.is_retryable());
        let e = status_error(
            409,
            br#"{"error":{"code":"failed_precondition","message":"x"}}"#,
        );
        assert!(!e.is_retryable());
        let e = status_error(502, b"<html>bad gateway</html>");
        assert_eq!(e.code(), "unknown");
        assert!(!e.is_retryable());
        assert!(status_error(503, b"").is_retryable());
    }

    #[test]
    fn a_refusal_keeps_its_retry_after() {
        let refusal = |headers: Vec<(String, String)>| Response {
            head: crate::http::Head {
                status: 429,
                headers,
            },
            body: br#"{"error":{"code":"rate_limited","message":"x"}}"#.to_vec(),
        };
        let e = decode::<Snapshot>(&refusal(vec![("retry-after".into(), "7".into())])).unwrap_err();
        assert_eq!(
            (e.code(), e.retry_after()),
            ("rate_limited", Some(std::time::Duration::from_secs(7)))
        );
        let e = decode::<Snapshot>(&refusal(vec![])).unwrap_err();
        assert_eq!(e.retry_after(), None);
    }
}
