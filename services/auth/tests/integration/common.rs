//! Shared by the auth integration tests: a real nats-server, throw-away keys,
//! the auth service on port 0, and a gRPC client with small helpers.

use qrlogin_auth::config::AuthConfig;
use qrlogin_auth::testing::{BrowserKeyPair, NatsServer, TestAuth, TestKeys};
use qrlogin_proto::auth::v1 as pb;
use qrlogin_proto::auth::v1::auth_service_client::AuthServiceClient;
use qrlogin_proto::events::v1::LoginState;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// A client that presents the service token on every call, as an edge does.
pub type Client = AuthServiceClient<InterceptedService<Channel, WithServiceToken>>;

/// Adds `x-qrlogin-service-token` to every request.
#[derive(Clone)]
pub struct WithServiceToken(pub MetadataValue<Ascii>);

impl tonic::service::Interceptor for WithServiceToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("x-qrlogin-service-token", self.0.clone());
        Ok(request)
    }
}

pub struct Harness {
    pub nats: NatsServer,
    pub keys: TestKeys,
    pub auth: TestAuth,
    pub client: Client,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut AuthConfig)) -> Self {
        Self::start_on(NatsServer::start().await, tweak).await
    }

    /// Auth on a NATS server the test started itself.
    pub async fn start_on(nats: NatsServer, tweak: impl FnOnce(&mut AuthConfig)) -> Self {
        let keys = TestKeys::generate();
        let auth = TestAuth::spawn(&nats, &keys, tweak).await;
        let client = client(&auth).await;
        Self {
            nats,
            keys,
            auth,
            client,
        }
    }

    pub fn alice(&self) -> String {
        self.keys.user_token("alice", "Alice")
    }

    pub fn bob(&self) -> String {
        self.keys.user_token("bob", "Bob")
    }
}

pub async fn client(auth: &TestAuth) -> Client {
    client_with_token(auth, auth.service_token()).await
}

/// A client presenting `token` (which may be wrong) on every call.
pub async fn client_with_token(auth: &TestAuth, token: &str) -> Client {
    let channel = Channel::from_shared(auth.url())
        .expect("url")
        .connect()
        .await
        .expect("connect to auth");
    AuthServiceClient::with_interceptor(
        channel,
        WithServiceToken(token.parse().expect("ascii token")),
    )
}

/// A client without any service token (a phone backend, or an intruder).
pub async fn raw_client(auth: &TestAuth) -> AuthServiceClient<Channel> {
    AuthServiceClient::connect(auth.url())
        .await
        .expect("connect to auth")
}

#[derive(Debug, Clone)]
pub struct Created {
    pub id: String,
    pub secret: String,
    pub version: u64,
    pub qr_payload: String,
}

/// What the tests' browsers know about the sessions they created, so the
/// plain helpers below can play the phone that reads the QR code on screen
/// and the user who picks the number the browser shows.
fn registry() -> &'static Mutex<HashMap<String, Created>> {
    static SESSIONS: OnceLock<Mutex<HashMap<String, Created>>> = OnceLock::new();
    SESSIONS.get_or_init(Default::default)
}

pub fn remember(created: &Created) {
    registry()
        .lock()
        .unwrap()
        .insert(created.id.clone(), created.clone());
}

fn known(id: &str) -> Option<Created> {
    registry().lock().unwrap().get(id).cloned()
}

pub fn create_request(key: Option<pb::BrowserKey>) -> pb::CreateLoginSessionRequest {
    pb::CreateLoginSessionRequest {
        client_ip: "203.0.113.7".into(),
        user_agent: "Mozilla/5.0 (X11; Linux x86_64) TestBrowser/1.0".into(),
        browser_key: key,
    }
}

/// A session without a browser key.
pub async fn create(c: &mut Client) -> Created {
    create_with(c, create_request(None)).await.expect("create")
}

pub async fn create_with(
    c: &mut Client,
    req: pb::CreateLoginSessionRequest,
) -> Result<Created, Status> {
    let r = c.create_login_session(req).await?.into_inner();
    let s = r.session.expect("session");
    let created = Created {
        id: s.session_id,
        secret: r.browser_secret,
        version: s.version,
        qr_payload: r.qr_payload,
    };
    remember(&created);
    Ok(created)
}

/// The browser's key as a BrowserKey message.
pub fn browser_key(pair: &BrowserKeyPair) -> pb::BrowserKey {
    let k = pair.public();
    pb::BrowserKey {
        kty: k.kty,
        crv: k.crv,
        x: k.x,
        y: k.y,
    }
}

pub fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    req
}

/// A scan with the payload the session's browser shows now (read from the
/// session when the test created it, else none).
pub async fn scan(
    c: &mut Client,
    id: &str,
    token: &str,
) -> Result<pb::ScanLoginSessionResponse, Status> {
    let payload = match known(id) {
        Some(s) => get(c, id, &s.secret)
            .await
            .map(|v| v.qr_payload)
            .unwrap_or(s.qr_payload),
        None => String::new(),
    };
    scan_with(c, id, token, &payload, "").await
}

pub async fn scan_with(
    c: &mut Client,
    id: &str,
    token: &str,
    qr_payload: &str,
    phone_ip: &str,
) -> Result<pb::ScanLoginSessionResponse, Status> {
    c.scan_login_session(with_token(
        pb::ScanLoginSessionRequest {
            session_id: id.into(),
            qr_payload: qr_payload.into(),
            client_ip: phone_ip.into(),
        },
        token,
    ))
    .await
    .map(|r| r.into_inner())
}

/// A confirm that picks the number the session's browser shows (as its
/// user would), when the test created the session.
pub async fn confirm(c: &mut Client, id: &str, token: &str) -> Result<pb::LoginSession, Status> {
    let code = match known(id) {
        Some(s) => get(c, id, &s.secret)
            .await
            .map(|v| v.match_code)
            .unwrap_or(0),
        None => 0,
    };
    confirm_with(c, id, token, code).await
}

pub async fn confirm_with(
    c: &mut Client,
    id: &str,
    token: &str,
    match_code: u32,
) -> Result<pb::LoginSession, Status> {
    c.confirm_login_session(with_token(
        pb::ConfirmLoginSessionRequest {
            session_id: id.into(),
            match_code,
        },
        token,
    ))
    .await
    .map(|r| r.into_inner().session.expect("session"))
}

pub async fn deny(c: &mut Client, id: &str, token: &str) -> Result<pb::LoginSession, Status> {
    c.deny_login_session(with_token(
        pb::DenyLoginSessionRequest {
            session_id: id.into(),
        },
        token,
    ))
    .await
    .map(|r| r.into_inner().session.expect("session"))
}

pub async fn cancel(c: &mut Client, id: &str, secret: &str) -> Result<pb::LoginSession, Status> {
    c.cancel_login_session(pb::CancelLoginSessionRequest {
        session_id: id.into(),
        browser_secret: secret.into(),
    })
    .await
    .map(|r| r.into_inner().session.expect("session"))
}

pub async fn get(c: &mut Client, id: &str, secret: &str) -> Result<pb::LoginSession, Status> {
    c.get_login_session(pb::GetLoginSessionRequest {
        session_id: id.into(),
        browser_secret: secret.into(),
    })
    .await
    .map(|r| r.into_inner().session.expect("session"))
}

pub async fn redeem(
    c: &mut Client,
    id: &str,
    secret: &str,
) -> Result<pb::RedeemLoginSessionResponse, Status> {
    redeem_with(c, id, secret, "").await
}

pub async fn redeem_with(
    c: &mut Client,
    id: &str,
    secret: &str,
    proof: &str,
) -> Result<pb::RedeemLoginSessionResponse, Status> {
    c.redeem_login_session(pb::RedeemLoginSessionRequest {
        session_id: id.into(),
        browser_secret: secret.into(),
        proof: proof.into(),
    })
    .await
    .map(|r| r.into_inner())
}

pub fn state(s: &pb::LoginSession) -> LoginState {
    LoginState::try_from(s.state).expect("known state")
}

/// The `x-qrlogin-reason` of a refusal.
#[track_caller]
pub fn reason<T: std::fmt::Debug>(r: &Result<T, Status>) -> String {
    match r {
        Ok(v) => panic!("expected a refusal, got Ok({v:?})"),
        Err(s) => s
            .metadata()
            .get("x-qrlogin-reason")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
    }
}

#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(r: Result<T, Status>, code: Code, needle: &str) {
    match r {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "message: {}", s.message());
            assert!(
                s.message().to_lowercase().contains(&needle.to_lowercase()),
                "message {:?} should mention {needle:?}",
                s.message()
            );
        }
    }
}

/// Takes a session to SCANNED by alice.
pub async fn scanned(h: &mut Harness) -> Created {
    let s = create(&mut h.client).await;
    let token = h.alice();
    scan(&mut h.client, &s.id, &token).await.expect("scan");
    s
}

/// Takes a session to CONFIRMED by alice.
pub async fn confirmed(h: &mut Harness) -> Created {
    let s = scanned(h).await;
    let token = h.alice();
    confirm(&mut h.client, &s.id, &token)
        .await
        .expect("confirm");
    s
}
