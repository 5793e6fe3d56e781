//! Black-box tests of the edge: real NATS, real auth, two edges.

mod broker;
mod drain;
mod failures;
mod front;
mod grpc;
mod guards;
mod helpers;
mod limits;
mod metrics;
mod oidc;
mod qr;
mod resume;
mod security;
mod stomp;
mod transports;
mod trust;
