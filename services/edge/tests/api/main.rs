//! Black-box tests of the edge: real NATS, real auth, two edges; the NATS
//! client also against a cluster of three real servers (`cluster`).

mod broker;
mod cluster;
mod drain;
mod failures;
mod front;
mod grpc;
mod guards;
mod helpers;
mod limits;
mod metrics;
mod qr;
mod resume;
mod security;
mod stomp;
mod transports;
mod trust;
