//! Build and run: validate the configuration, load keys, tokens and
//! certificates, bind the listeners, then serve gRPC (the AuthService behind
//! its admission limits, health, and reflection when enabled; TLS or mTLS
//! when configured) while a background task connects to NATS. Health
//! reports NOT_SERVING until the buckets are ready and whenever the NATS
//! link is down; it can also be served on a plaintext port of its own for
//! probes that cannot speak TLS. The operations port, when configured,
//! serves metrics and the same readiness over plain HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::admission::Admission;
use crate::broker::{AccessError, Broker, BrokerSettings, LinkState, NatsAccess};
use crate::callers::{ServiceTokens, TokensError};
use crate::config::{AuthConfig, ConfigError, PRODUCTION_MIN_ROTATION};
use crate::grpc::GrpcAuth;
use crate::identity::{IdentityError, UserTokens};
use crate::metrics::AuthMetrics;
use crate::ops::{self, Readiness};
use crate::sealing::{SealError, Sealer};
use crate::service::{BrokerSlot, LoginService, Settings};
use crate::signing::PublishedKeys;
use crate::token::{AccessTokenSigner, KeyError};
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
    Identity(#[from] IdentityError),
    #[error(transparent)]
    NatsAccess(#[from] AccessError),
    #[error(transparent)]
    RecordKey(#[from] SealError),
    #[error(transparent)]
    ServiceTokens(#[from] TokensError),
    #[error("{var}: cannot read {path}: {source}")]
    TlsFile {
        var: &'static str,
        path: String,
        source: std::io::Error,
    },
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
    /// The plaintext health-only listener (QRLOGIN_AUTH_HEALTH_LISTEN).
    health_listener: Option<(TcpListener, SocketAddr)>,
    /// The operations listener (QRLOGIN_AUTH_OPS_LISTEN).
    ops_listener: Option<(TcpListener, SocketAddr)>,
    tls: Option<ServerTlsConfig>,
    tokens: Arc<ServiceTokens>,
    config: AuthConfig,
    nats_access: NatsAccess,
    sealer: Arc<Sealer>,
    /// The JWK Set of the tokens auth signs (GetSigningKeys).
    published: Arc<PublishedKeys>,
    service: Arc<LoginService>,
    broker: BrokerSlot,
    metrics: Arc<AuthMetrics>,
    ready: Readiness,
}

impl Application {
    pub async fn build(config: AuthConfig) -> Result<Self, StartupError> {
        config.validate()?;
        let verifier = Arc::new(UserTokens::from_config(&config)?);
        verifier.prefetch();
        let signer = AccessTokenSigner::from_pem_file(
            &config.access_token_private_key_file,
            &config.access_token_issuer,
            &config.access_token_audience,
            config.access_token_ttl,
        )?;
        let published = Arc::new(PublishedKeys::load(
            &config.access_token_private_key_file,
            config.access_token_next_key_file.as_deref(),
            config.access_token_previous_key_file.as_deref(),
        )?);
        let sealer = Arc::new(Sealer::from_files(
            &config.record_key_file,
            config.record_previous_key_file.as_deref(),
        )?);
        let nats_access = NatsAccess::load(&config)?;
        if !nats_access.has_credentials() {
            tracing::warn!("QRLOGIN_NATS_NKEY_SEED_FILE is not set: connecting to NATS without credentials (development only)");
        }
        let tokens = Arc::new(ServiceTokens::from_file(&config.service_tokens_file)?);
        let tls = server_tls(&config)?;
        if tls.is_none() {
            tracing::warn!("QRLOGIN_AUTH_TLS_CERT_FILE is not set: gRPC without TLS (only inside a trusted network)");
        }
        let (listener, local_addr) = bind(config.listen).await?;
        let health_listener = match config.health_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let ops_listener = match config.ops_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let metrics = Arc::new(AuthMetrics::new());
        let broker: BrokerSlot = Arc::default();
        if config.protocol.qr_rotation < PRODUCTION_MIN_ROTATION {
            tracing::warn!(rotation = ?config.protocol.qr_rotation, "QRLOGIN_QR_ROTATION is below 20s: for tests only");
        }
        if !config.protocol.number_matching {
            tracing::warn!(
                "QRLOGIN_NUMBER_MATCHING=false: a relayed QR code can be confirmed by its victim"
            );
        }
        let service = Arc::new(LoginService::new(
            broker.clone(),
            Settings::from_config(&config),
            verifier,
            signer,
            metrics.clone(),
        ));
        Ok(Self {
            listener,
            local_addr,
            health_listener,
            ops_listener,
            tls,
            tokens,
            config,
            nats_access,
            sealer,
            published,
            service,
            broker,
            metrics,
            ready: Readiness::default(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counts of refused QR-protocol abuse (for an exporter).
    pub fn counters(&self) -> &Arc<crate::counters::Counters> {
        self.service.counters()
    }

    /// The address of the plaintext health listener, if one is configured.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener.as_ref().map(|(_, addr)| *addr)
    }

    /// The address of the operations listener, if one is configured.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops_listener.as_ref().map(|(_, addr)| *addr)
    }

    /// Where the broker appears once NATS and the bucket are ready (tests
    /// reach its hooks through it).
    pub fn broker_slot(&self) -> BrokerSlot {
        self.broker.clone()
    }

    /// The service's metrics (what `/metrics` renders).
    pub fn metrics(&self) -> Arc<AuthMetrics> {
        self.metrics.clone()
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

        // Reflection only when asked for: it lists every service and message
        // to whoever can reach the port.
        let (reflection_v1, reflection_v1alpha) = if self.config.grpc_reflection {
            let v1 = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(qrlogin_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1()
                .map_err(|e| StartupError::Reflection(e.to_string()))?;
            let v1alpha = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(qrlogin_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1alpha()
                .map_err(|e| StartupError::Reflection(e.to_string()))?;
            (Some(v1), Some(v1alpha))
        } else {
            (None, None)
        };

        let status = Status {
            health: health.clone(),
            ready: self.ready.clone(),
        };
        let connector = tokio::spawn(connect_broker(
            BrokerSettings::from_config(&self.config, self.nats_access.clone()),
            self.sealer.clone(),
            self.broker.clone(),
            status.clone(),
            self.metrics.clone(),
        ));

        let auth = Admission::new(
            AuthServiceServer::new(
                GrpcAuth::new(
                    self.service.clone(),
                    self.tokens.clone(),
                    self.metrics.clone(),
                )
                .publishing(&self.published),
            )
            .max_decoding_message_size(MAX_REQUEST_BYTES),
            self.config.max_concurrent_requests,
            self.config.request_timeout,
            self.metrics.clone(),
        );

        // One stop for both listeners: the health server stops with the main one.
        let (stop_health, health_stopped) = tokio::sync::watch::channel(false);
        let stopping = Arc::new(tokio::sync::Notify::new());
        let signal = {
            let stopping = stopping.clone();
            let status = status.clone();
            async move {
                shutdown.await;
                tracing::info!("stop signal received; draining");
                status.stopping();
                status.set(ServingStatus::NotServing).await;
                let _ = stop_health.send(true);
                stopping.notify_one();
            }
        };
        // The operations port answers until the very end (readiness 503
        // while stopping); it is aborted with the rest below.
        let ops_task = self.ops_listener.map(|(listener, addr)| {
            tracing::info!(%addr, "auth operations (metrics, health) listening");
            let app = ops::app(self.metrics.clone(), self.ready.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "operations listener failed");
                }
            })
        });
        let health_task = self.health_listener.map(|(listener, addr)| {
            tracing::info!(%addr, "auth gRPC health (plaintext) listening");
            let mut stopped = health_stopped;
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(health_service.clone())
                    .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    }),
            )
        });
        tracing::info!(
            addr = %self.local_addr,
            tls = self.tls.is_some(),
            reflection = self.config.grpc_reflection,
            "auth gRPC listening"
        );
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        let server = builder
            .add_service(health_service)
            .add_optional_service(reflection_v1)
            .add_optional_service(reflection_v1alpha)
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
        if let Some(task) = health_task {
            task.abort();
        }
        if let Some(task) = ops_task {
            task.abort();
        }
        tracing::info!("auth stopped");
        result
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    let bind_err = |source| StartupError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    Ok((listener, local))
}

fn read_pem(var: &'static str, path: &std::path::Path) -> Result<Vec<u8>, StartupError> {
    std::fs::read(path).map_err(|source| StartupError::TlsFile {
        var,
        path: path.display().to_string(),
        source,
    })
}

/// The server's TLS configuration, read before anything is bound: its
/// certificate and key, and the CA that must have signed client
/// certificates when mTLS is on.
fn server_tls(c: &AuthConfig) -> Result<Option<ServerTlsConfig>, StartupError> {
    let (Some(cert), Some(key)) = (&c.tls_cert_file, &c.tls_key_file) else {
        return Ok(None);
    };
    let identity = Identity::from_pem(
        read_pem("QRLOGIN_AUTH_TLS_CERT_FILE", cert)?,
        read_pem("QRLOGIN_AUTH_TLS_KEY_FILE", key)?,
    );
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &c.tls_client_ca_file {
        tls = tls.client_ca_root(Certificate::from_pem(read_pem(
            "QRLOGIN_AUTH_TLS_CLIENT_CA_FILE",
            ca,
        )?));
    }
    Ok(Some(tls))
}

/// Where auth says whether it serves: the gRPC health service and the
/// operations port's `/readyz`, always together.
#[derive(Clone)]
struct Status {
    health: tonic_health::server::HealthReporter,
    ready: Readiness,
}

impl Status {
    /// Reports `status`; after the stop signal, NOT_SERVING whatever the link says.
    async fn set(&self, status: ServingStatus) {
        let status = if self.ready.is_stopped() {
            ServingStatus::NotServing
        } else {
            status
        };
        self.ready.set(status == ServingStatus::Serving);
        self.health.set_service_status("", status).await;
        self.health.set_service_status(HEALTH_NAME, status).await;
    }

    fn stopping(&self) {
        self.ready.stop();
    }
}

/// Connects to NATS with capped exponential backoff, then flips health to
/// SERVING. Later link changes flip it back and forth.
async fn connect_broker(
    settings: BrokerSettings,
    sealer: Arc<Sealer>,
    slot: BrokerSlot,
    status: Status,
    metrics: Arc<AuthMetrics>,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let reporter = status.clone();
        // Weak: the connection keeps this callback, and must not keep the
        // broker (and so itself) alive once the service is gone.
        let ready = Arc::downgrade(&slot);
        let link_metrics = metrics.clone();
        let on_link = move |state: LinkState| {
            // Before the bucket is open, "connected" does not mean ready.
            if ready.upgrade().is_none_or(|slot| slot.get().is_none()) {
                return;
            }
            let reporter = reporter.clone();
            link_metrics.nats_link(state == LinkState::Up);
            let serving = match state {
                LinkState::Up => ServingStatus::Serving,
                LinkState::Down => ServingStatus::NotServing,
            };
            tracing::info!(?state, "NATS link changed");
            tokio::spawn(async move { reporter.set(serving).await });
        };
        match Broker::connect(&settings, sealer.clone(), metrics.clone(), on_link).await {
            Ok(broker) => {
                if slot.set(broker).is_err() {
                    return;
                }
                metrics.nats_first_connect();
                status.set(ServingStatus::Serving).await;
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
