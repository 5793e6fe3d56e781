//! The gRPC watch stream, `qrlogin.watch.v1.LoginWatch`
//! (proto/qrlogin/watch/v1/watch.proto), on the edge's own gRPC port for
//! native and backend clients: its settings, the tonic server with health
//! and (optionally) reflection, and its bounds.
//!
//! - [`watch`]: the service (authorize, deliver, end) and the one mapping
//!   of [`crate::sessions::SessionError`] to gRPC status codes.
//! - [`health`]: `grpc.health.v1.Health`, answered like `/readyz`.
//! - [`incoming`]: accepted connections, counted against
//!   `QRLOGIN_GRPC_MAX_CONNECTIONS` and, per client,
//!   `QRLOGIN_GRPC_MAX_CONNECTIONS_PER_CLIENT`.
//! - [`idle`]: the deadlines of a connection without a stream (the HTTP/2
//!   handshake, then the idle timeout) and the layer that counts streams.
//!
//! Bounds: connections (`QRLOGIN_GRPC_MAX_CONNECTIONS`, and per client
//! address `QRLOGIN_GRPC_MAX_CONNECTIONS_PER_CLIENT`, trusted proxies
//! exempt; beyond, a new connection is closed at once), the client's
//! connection preface within `QRLOGIN_GRPC_HANDSHAKE_TIMEOUT`, a connection
//! without an open stream closed after `QRLOGIN_GRPC_IDLE_TIMEOUT`, streams
//! per connection
//! (`QRLOGIN_GRPC_MAX_STREAMS`, HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`),
//! every watch stream counted against the node's `QRLOGIN_MAX_CONNECTIONS`
//! (beyond: RESOURCE_EXHAUSTED), request messages of at most
//! [`MAX_REQUEST_BYTES`], HTTP/2 pings every `QRLOGIN_GRPC_KEEPALIVE` (a
//! peer that does not answer within as long is dropped), and reset-stream
//! floods bounded by hyper's defaults.
//!
//! Drain: at the stop signal the listener closes (a balancer retries the
//! connection elsewhere), every connection gets a GOAWAY, and each open
//! watch ends with UNAVAILABLE and `retry-after-ms` (delivery's drain).

mod health;
mod idle;
mod incoming;
pub mod watch;

use std::{future::Future, net::SocketAddr, str::FromStr, time::Duration};

use qrlogin_proto::watch::v1::login_watch_server::LoginWatchServer;
use tokio::net::TcpListener;

use crate::{
    config::{duration, CidrList, ConfigError},
    limits::ConnectionGate,
    metrics::Metrics,
    sessions::Sessions,
};

/// Largest request message accepted (a session id and a version need
/// under 64 bytes).
pub const MAX_REQUEST_BYTES: usize = 1024;
/// Largest message sent (a snapshot is about 150 bytes).
pub const MAX_RESPONSE_BYTES: usize = 4096;

/// The gRPC port's address, or none when it is turned off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

impl FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        text.trim()
            .parse()
            .map(|a| Self(Some(a)))
            .map_err(|_| format!("{text:?} is not an address like 0.0.0.0:50061, or off"))
    }
}

/// Settings of the gRPC watch port (docs/configuration.md, "edge").
#[derive(Debug, Clone, clap::Args)]
pub struct GrpcSettings {
    /// gRPC watch stream address (qrlogin.watch.v1.LoginWatch, health,
    /// reflection); `off` serves none. Port 0 picks a free port.
    #[arg(
        id = "grpc-listen",
        long = "grpc-listen",
        env = "QRLOGIN_EDGE_GRPC_LISTEN",
        default_value = "0.0.0.0:50061"
    )]
    pub listen: Listen,
    /// Serve gRPC reflection (v1 and v1alpha) on the gRPC port.
    #[arg(
        id = "grpc-reflection",
        long = "grpc-reflection",
        env = "QRLOGIN_GRPC_REFLECTION",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub reflection: bool,
    /// Open connections to the gRPC port; beyond, a new one is closed at once.
    #[arg(
        id = "grpc-max-connections",
        long = "grpc-max-connections",
        env = "QRLOGIN_GRPC_MAX_CONNECTIONS",
        default_value_t = 1000
    )]
    pub max_connections: usize,
    /// Concurrent streams on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(
        id = "grpc-max-streams",
        long = "grpc-max-streams",
        env = "QRLOGIN_GRPC_MAX_STREAMS",
        default_value_t = 100
    )]
    pub max_streams: u32,
    /// Interval of HTTP/2 pings; a peer that does not answer one within the
    /// same time is dropped.
    #[arg(id = "grpc-keepalive", long = "grpc-keepalive", env = "QRLOGIN_GRPC_KEEPALIVE", default_value = "20s", value_parser = duration)]
    pub keepalive: Duration,
    /// Open connections to the gRPC port from one client (IPv4 address or
    /// IPv6 /64; trusted proxies exempt); beyond, a new one is closed at once.
    #[arg(
        id = "grpc-max-connections-per-client",
        long = "grpc-max-connections-per-client",
        env = "QRLOGIN_GRPC_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 32
    )]
    pub max_connections_per_client: usize,
    /// A client must send its HTTP/2 connection preface within this time
    /// of connecting, or the connection is closed.
    #[arg(id = "grpc-handshake-timeout", long = "grpc-handshake-timeout", env = "QRLOGIN_GRPC_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub handshake_timeout: Duration,
    /// A connection without an open stream (watch, health check) for this
    /// long is closed; a client reconnects when it needs one.
    #[arg(id = "grpc-idle-timeout", long = "grpc-idle-timeout", env = "QRLOGIN_GRPC_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub idle_timeout: Duration,
}

impl GrpcSettings {
    /// Checks what the types cannot; part of the edge's validation.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |var, reason: &str| ConfigError::Invalid {
            var,
            reason: reason.into(),
        };
        if !(1..=100_000).contains(&self.max_connections) {
            return Err(invalid("QRLOGIN_GRPC_MAX_CONNECTIONS", "1..=100000"));
        }
        if !(1..=10_000).contains(&self.max_streams) {
            return Err(invalid("QRLOGIN_GRPC_MAX_STREAMS", "1..=10000"));
        }
        if self.keepalive < Duration::from_secs(1) {
            return Err(invalid("QRLOGIN_GRPC_KEEPALIVE", "at least 1s"));
        }
        if !(1..=100_000).contains(&self.max_connections_per_client) {
            return Err(invalid(
                "QRLOGIN_GRPC_MAX_CONNECTIONS_PER_CLIENT",
                "1..=100000",
            ));
        }
        if self.handshake_timeout.is_zero() || self.handshake_timeout > Duration::from_secs(300) {
            return Err(invalid(
                "QRLOGIN_GRPC_HANDSHAKE_TIMEOUT",
                "more than 0, at most 5m",
            ));
        }
        if self.idle_timeout < self.handshake_timeout
            || self.idle_timeout > Duration::from_secs(86_400)
        {
            return Err(invalid(
                "QRLOGIN_GRPC_IDLE_TIMEOUT",
                "at least QRLOGIN_GRPC_HANDSHAKE_TIMEOUT, at most 24h",
            ));
        }
        Ok(())
    }
}

/// What the gRPC port serves with: the node's sessions and its bounds.
#[derive(Clone)]
pub struct GrpcContext {
    pub sessions: Sessions,
    pub gate: ConnectionGate,
    pub metrics: std::sync::Arc<Metrics>,
    pub node: String,
    /// The front server's write deadline, on every gRPC connection too.
    pub write_limits: std::sync::Arc<crate::server::deadline::WriteLimits>,
    /// Peers exempt from the per-client connection cap.
    pub trusted_proxies: CidrList,
}

/// Why the gRPC port could not be served.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Serves the gRPC port on `listener` until `stop` resolves, then stops
/// accepting, sends GOAWAY and returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    settings: GrpcSettings,
    context: GrpcContext,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GrpcError> {
    let reflection = if settings.reflection {
        let v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(qrlogin_proto::WATCH_FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| GrpcError::Reflection(e.to_string()))?;
        let v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(qrlogin_proto::WATCH_FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| GrpcError::Reflection(e.to_string()))?;
        Some((v1, v1alpha))
    } else {
        None
    };
    let (v1, v1alpha) = reflection.unzip();
    let watch = LoginWatchServer::new(watch::WatchService::new(context.clone()))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let health = tonic_health::pb::health_server::HealthServer::new(health::HealthService::new(
        context.sessions.clone(),
    ));
    let incoming = incoming::counted(listener, &settings, &context);
    tonic::transport::Server::builder()
        .max_concurrent_streams(settings.max_streams)
        .http2_keepalive_interval(Some(settings.keepalive))
        .http2_keepalive_timeout(Some(settings.keepalive))
        .http2_max_header_list_size(16 * 1024)
        .layer(idle::CountStreamsLayer)
        .add_service(watch)
        .add_service(health)
        .add_optional_service(v1)
        .add_optional_service(v1alpha)
        .serve_with_incoming_shutdown(incoming, stop)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_an_address_or_off() {
        assert_eq!(
            "127.0.0.1:0".parse::<Listen>().unwrap(),
            Listen(Some("127.0.0.1:0".parse().unwrap()))
        );
        assert_eq!("off".parse::<Listen>().unwrap(), Listen(None));
        assert_eq!(" OFF ".parse::<Listen>().unwrap(), Listen(None));
        assert!("50061".parse::<Listen>().is_err());
    }
}
