//! Build and run: validate the configuration, load keys, bind the listener,
//! then serve gRPC (service, health, reflection) while a background task
//! connects to NATS. Health reports NOT_SERVING until the bucket is ready and
//! whenever the NATS link is down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::broker::{AccessError, Broker, BrokerSettings, LinkState, NatsAccess};
use crate::config::{AuthConfig, ConfigError};
use crate::grpc::GrpcAuth;
use crate::service::{BrokerSlot, LoginService};
use crate::token::{AccessTokenSigner, KeyError, UserTokenVerifier};
use qrlogin_proto::auth::v1::auth_service_server::AuthServiceServer;

/// Largest request we decode. Our messages are a few hundred bytes; tonic's
/// default of 4 MiB would let one request pin megabytes.
const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Concurrent requests per connection before the client waits.
const MAX_CONCURRENT_STREAMS: u32 = 256;
const HEALTH_NAME: &str = "qrlogin.auth.v1.AuthService";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    NatsAccess(#[from] AccessError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: AuthConfig,
    nats_access: NatsAccess,
    service: Arc<LoginService>,
    broker: BrokerSlot,
}

impl Application {
    pub async fn build(config: AuthConfig) -> Result<Self, StartupError> {
        config.validate()?;
        let verifier = UserTokenVerifier::from_pem_file(
            &config.user_token_public_key_file,
            &config.user_token_issuer,
            &config.user_token_audience,
        )?;
        let signer = AccessTokenSigner::from_pem_file(
            &config.access_token_private_key_file,
            &config.access_token_issuer,
            &config.access_token_audience,
            config.access_token_ttl,
        )?;
        let nats_access = NatsAccess::load(&config)?;
        if !nats_access.has_credentials() {
            tracing::warn!("QRLOGIN_NATS_NKEY_SEED_FILE is not set: connecting to NATS without credentials (development only)");
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: config.listen,
            source,
        })?;
        let broker: BrokerSlot = Arc::default();
        let service = Arc::new(LoginService::new(
            broker.clone(),
            config.deadlines(),
            verifier,
            signer,
            config.public_base().to_owned(),
        ));
        Ok(Self {
            listener,
            local_addr,
            config,
            nats_access,
            service,
            broker,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then lets in-flight calls finish for
    /// at most the configured grace period.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health
            .set_service_status(HEALTH_NAME, ServingStatus::NotServing)
            .await;

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(qrlogin_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| StartupError::Reflection(e.to_string()))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(qrlogin_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| StartupError::Reflection(e.to_string()))?;

        let connector = tokio::spawn(connect_broker(
            BrokerSettings::from_config(&self.config, self.nats_access.clone()),
            self.broker.clone(),
            health.clone(),
        ));

        let auth = AuthServiceServer::new(GrpcAuth::new(self.service.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES);

        let stopping = Arc::new(tokio::sync::Notify::new());
        let signal = {
            let stopping = stopping.clone();
            let health = health.clone();
            async move {
                shutdown.await;
                tracing::info!("stop signal received; draining");
                health
                    .set_service_status("", ServingStatus::NotServing)
                    .await;
                health
                    .set_service_status(HEALTH_NAME, ServingStatus::NotServing)
                    .await;
                stopping.notify_one();
            }
        };
        tracing::info!(addr = %self.local_addr, "auth gRPC listening");
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(auth)
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), signal);
        let grace = self.config.shutdown_grace;
        let result = tokio::select! {
            r = server => r.map_err(StartupError::from),
            _ = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "in-flight calls did not finish within the grace period");
                Ok(())
            }
        };
        connector.abort();
        tracing::info!("auth stopped");
        result
    }
}

/// Connects to NATS with capped exponential backoff, then flips health to
/// SERVING. Later link changes flip it back and forth.
async fn connect_broker(
    settings: BrokerSettings,
    slot: BrokerSlot,
    health: tonic_health::server::HealthReporter,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let reporter = health.clone();
        let ready = slot.clone();
        let on_link = move |state: LinkState| {
            // Before the bucket is open, "connected" does not mean ready.
            if ready.get().is_none() {
                return;
            }
            let reporter = reporter.clone();
            let status = match state {
                LinkState::Up => ServingStatus::Serving,
                LinkState::Down => ServingStatus::NotServing,
            };
            tracing::info!(?state, "NATS link changed");
            tokio::spawn(async move {
                reporter.set_service_status("", status).await;
                reporter.set_service_status(HEALTH_NAME, status).await;
            });
        };
        match Broker::connect(&settings, on_link).await {
            Ok(broker) => {
                if slot.set(broker).is_err() {
                    return;
                }
                health.set_service_status("", ServingStatus::Serving).await;
                health
                    .set_service_status(HEALTH_NAME, ServingStatus::Serving)
                    .await;
                tracing::info!(bucket = %settings.bucket, "NATS and session bucket ready");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "NATS not ready");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
