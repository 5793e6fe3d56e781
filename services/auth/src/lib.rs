//! qrlogin auth service: the only writer of login session state.
//!
//! - [`config`]: the typed configuration (flags + environment) and the CLI.
//! - [`domain`]: ids, secrets, states and transition rules (no I/O).
//! - [`identity`]: phone users' tokens: trusted issuers (OpenID discovery,
//!   JWKS URL or file, PEM), the key cache, the claims that name the user.
//! - [`token`]: access token signing, dev keys, the errors of user tokens.
//! - [`signing`]: the published keys of the tokens auth signs (kid, JWKS:
//!   current, next, previous).
//! - [`broker`]: NATS: the key-value bucket (CAS writes as
//!   JetStream publishes, republished by the server as per-session events),
//!   the stored bytes (`StoredSession`), credentials and TLS.
//! - [`sealing`]: the AEAD that seals the private part of stored sessions.
//! - [`nats_accounts`]: the NATS accounts and least-privilege users, rendered
//!   into nats.conf for tests and the local cluster.
//! - [`proof`]: browser keys (RFC 7638 thumbprints) and the proofs that
//!   key-bound redemption needs.
//! - [`counters`]: counts of refused QR-protocol abuse, for exporters.
//! - [`service`]: the use cases (create, get, scan, confirm, deny, cancel,
//!   redeem) over domain + broker.
//! - [`grpc`]: the tonic service and the one error → `Status` mapping.
//! - [`callers`]: service tokens (who may make browser-side calls).
//! - [`admission`]: the concurrency cap and the timeout of AuthService calls;
//!   per-call metrics and the server span.
//! - [`metrics`]: the service's Prometheus metrics (prometheus-client).
//! - [`ops`]: the operations port (`/metrics`, `/healthz`, `/readyz`).
//! - [`startup`]: build (validate, bind) and run (serve, health, reflection,
//!   graceful stop).
//! - [`dev`]: DEVELOPMENT ONLY key and user token generation.
//! - [`telemetry`]: logging, and OpenTelemetry traces when an OTLP endpoint
//!   is set (W3C context in, and out into NATS headers).
//! - [`shutdown`]: the stop signal.
//! - `testing` (feature `testing`): a real nats-server per test, test keys, an
//!   in-process auth service on port 0.

pub mod admission;
pub mod broker;
pub mod callers;
pub mod config;
pub mod counters;
pub mod dev;
pub mod domain;
pub mod grpc;
pub mod identity;
pub mod metrics;
pub mod nats_accounts;
pub mod ops;
pub mod proof;
pub mod sealing;
pub mod service;
pub mod shutdown;
pub mod signing;
pub mod startup;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token;
