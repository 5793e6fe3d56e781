//! Black-box tests of the edge: real NATS, real auth, two edges; the NATS
//! client also against a cluster of three real servers (`cluster`).

mod broker;
mod cluster;
mod drain;
mod failures;
mod front;
mod grpc;
mod grpc_limits;
mod guards;
mod helpers;
mod limits;
mod metrics;
mod oidc;
mod pace;
mod qr;
mod raw;
mod resume;
mod security;
mod slow;
mod stomp;
mod transports;
mod trust;
