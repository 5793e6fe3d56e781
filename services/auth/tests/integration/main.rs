//! The auth service's integration tests, one test binary: each module drives
//! the real gRPC API (or NATS itself) against a real nats-server started by
//! the test on a random port with a temporary store. One binary links once;
//! every test still starts its own servers and shares no state with another
//! (the session registry in `common` is keyed by session id).
mod common;

mod callers;
mod cluster;
mod concurrency;
mod events;
mod forged_record;
mod grpcurl;
mod key_binding;
mod metrics;
mod nats_boundary;
mod qr_protocol;
mod signing_keys;
mod transitions;
mod trusted_issuers;
mod user_tokens;
