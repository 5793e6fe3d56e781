//! Building and running the edge: everything is checked and connected,
//! and both ports (public and operations) are bound, before `build`
//! returns; `run_until_stopped` serves until the stop signal, drains, and
//! returns within the drain deadline.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth_client::{AuthAccess, AuthClient, AuthError},
    broker::{Broker, BrokerConfig, BrokerError},
    config::{ConfigError, EdgeConfig, NatsInterest},
    delivery::{Settings, Watches},
    limits::{ClientGate, ConnectionGate, CreateRateLimiter, PollPace},
    metrics::Metrics,
    routes::{self, AppState, DevTokens, Shared},
    server,
    sessions::Sessions,
    shutdown::Drain,
    transport::{
        grpc::{self, GrpcContext},
        long_poll, sse, stomp, ws,
    },
};

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("auth client: {0}")]
    Auth(#[from] AuthError),
    #[error("QRLOGIN_DEV_USER_TOKEN_KEY_FILE: {0}")]
    DevKey(#[from] crate::routes::DevTokenError),
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Grpc(#[from] grpc::GrpcError),
}

/// A built, bound, not yet serving edge.
pub struct Application {
    listener: TcpListener,
    ops_listener: TcpListener,
    /// The gRPC watch port, unless turned off.
    grpc_listener: Option<TcpListener>,
    state: AppState,
}

impl Application {
    pub async fn build(config: EdgeConfig) -> Result<Self, StartupError> {
        config.validate()?;
        let node = config.node();
        let metrics = Arc::new(Metrics::default());
        let dev_tokens = match &config.dev_user_token_key_file {
            Some(path) => {
                let tokens =
                    DevTokens::load(path, &config.user_token_issuer, &config.user_token_audience)?;
                tracing::warn!(path = %path.display(), "development endpoint POST /v1/dev/token is ON: it mints user tokens for anyone; never enable it in production");
                Some(tokens)
            }
            None => None,
        };
        if config.nats_nkey_seed_file.is_none() {
            tracing::warn!("QRLOGIN_NATS_NKEY_SEED_FILE is not set: connecting to NATS without credentials (development only)");
        }
        let auth_access = AuthAccess::load(&config)?;
        if !auth_access.has_token() {
            tracing::warn!("QRLOGIN_AUTH_SERVICE_TOKEN_FILE is not set: auth will refuse browser-side calls from this edge");
        }
        let auth = AuthClient::new(&config.auth_url, config.auth_timeout, &auth_access)?;
        let broker_config = BrokerConfig {
            name: format!("qrlogin-edge {node}"),
            nkey_seed_file: config.nats_nkey_seed_file.clone(),
            tls_ca_file: config.nats_tls_ca_file.clone(),
            tls_cert_file: config.nats_tls_cert_file.clone(),
            tls_key_file: config.nats_tls_key_file.clone(),
            ping_interval: config.nats_ping_interval,
            wildcard: config.nats_interest == NatsInterest::Wildcard,
            ..BrokerConfig::new(&config.nats_url, &config.subject_prefix)
        };
        let (broker, connection) = Broker::new(&broker_config, metrics.clone())?;
        let watches = Watches::new(
            Arc::new(broker.clone()),
            Arc::new(auth.clone()),
            metrics.clone(),
            Settings {
                interest_settle: config.interest_settle,
                ..Settings::new(config.max_watchers_per_session)
            },
        );
        // Connects in the background: the edge starts unready and becomes
        // ready when NATS is there.
        connection.start(watches.inbox());
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartupError::Bind { addr, source })
        };
        let listener = bind(config.listen).await?;
        let ops_listener = bind(config.ops_listen).await?;
        let grpc_listener = match config.grpc.listen.0 {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let drain = Drain::default();
        let sessions = Sessions::new(
            auth.clone(),
            watches,
            metrics.clone(),
            drain.clone(),
            config.sse.retry,
        );
        let stomp = Arc::new(stomp::conn::Endpoint {
            sessions: sessions.clone(),
            node: node.clone(),
            settings: config.stomp.clone(),
            ws: config.ws.clone(),
        });
        let sse = Arc::new(sse::Endpoint {
            node: node.clone(),
            settings: config.sse.clone(),
        });
        let ws = Arc::new(ws::Endpoint {
            sessions: sessions.clone(),
            node: node.clone(),
            settings: config.ws.clone(),
        });
        let long_poll = long_poll::Endpoint {
            node: node.clone(),
            settings: config.long_poll.clone(),
        };
        let state = Arc::new(Shared {
            node,
            auth,
            broker,
            sessions,
            sse,
            ws,
            stomp,
            long_poll,
            metrics,
            drain,
            gate: ConnectionGate::new(config.max_connections),
            // No node-wide cap of its own: a slot is an open connection
            // whose head came, either admitted (QRLOGIN_MAX_CONNECTIONS) or
            // reading its body (QRLOGIN_BODY_TIMEOUT); a slow body must not
            // keep other clients out.
            clients: ClientGate::new(usize::MAX, config.max_requests_per_client),
            create_rate: CreateRateLimiter::new(config.create_rate_per_ip),
            poll_pace: PollPace::new(config.poll_interval),
            dev_tokens,
            oidc_keys: Default::default(),
            config,
        });
        Ok(Self {
            listener,
            ops_listener,
            grpc_listener,
            state,
        })
    }

    /// The public address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.state.config.listen)
    }

    /// The operations address actually bound (`/metrics`, `/healthz`,
    /// `/readyz`).
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_listener
            .local_addr()
            .unwrap_or_else(|_| self.state.config.ops_listen)
    }

    /// The gRPC watch port actually bound, unless it is turned off.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_listener.as_ref()?.local_addr().ok()
    }

    pub fn node(&self) -> &str {
        &self.state.node
    }

    /// Serves until `stop` resolves, then drains: readiness fails at once,
    /// new requests get 503 draining, streams are told to go elsewhere; the
    /// node keeps answering for the drain deadline (so load balancers see it
    /// leave) and then returns.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let Self {
            listener,
            ops_listener,
            grpc_listener,
            state,
        } = self;
        let drain = state.drain.clone();
        let deadline = state.config.drain_deadline;
        tracing::info!(
            addr = %listener.local_addr().map_err(StartupError::Serve)?,
            ops = %ops_listener.local_addr().map_err(StartupError::Serve)?,
            node = %state.node,
            "edge listening"
        );
        let closing = CancellationToken::new();
        let tracker = TaskTracker::new();
        // The gRPC port stops accepting as soon as the drain starts (a
        // balancer retries a refused connection elsewhere); its open
        // watches end through delivery's drain.
        let grpc_server = grpc_listener.map(|listener| {
            tracing::info!(addr = ?listener.local_addr().ok(), "edge gRPC watch listening");
            let context = GrpcContext {
                sessions: state.sessions.clone(),
                gate: state.gate.clone(),
                metrics: state.metrics.clone(),
                node: state.node.clone(),
                write_limits: std::sync::Arc::new(server::deadline::WriteLimits {
                    timeout: state.config.write_timeout,
                    metrics: state.metrics.clone(),
                }),
                trusted_proxies: state.config.trusted_proxies.clone(),
            };
            let mut draining = drain.listener();
            let closing = closing.clone();
            let stop = async move {
                tokio::select! {
                    _ = draining.started() => {}
                    _ = closing.cancelled() => {}
                }
            };
            tokio::spawn(grpc::serve(
                listener,
                state.config.grpc.clone(),
                context,
                stop,
            ))
        });
        let front = server::Front::new(
            routes::app(state.clone()),
            &state.config,
            &state.node,
            state.metrics.clone(),
            closing.clone(),
            tracker.clone(),
        );
        let server = tokio::spawn(server::serve(listener, front));
        // The operations port answers through the drain (readiness says 503).
        let ops = tokio::spawn(server::ops::serve(
            ops_listener,
            routes::ops_app(state.clone()),
            std::sync::Arc::new(server::deadline::WriteLimits {
                timeout: state.config.write_timeout,
                metrics: state.metrics.clone(),
            }),
            closing.clone(),
            tracker.clone(),
        ));
        stop.await;
        tracing::info!(deadline = ?deadline, "draining");
        drain.start();
        // Answer (readiness 503, requests 503 draining) until the deadline,
        // minus a margin for closing what is still open.
        let margin = Duration::from_millis(250).min(deadline / 4);
        tokio::time::sleep(deadline.saturating_sub(margin)).await;
        closing.cancel();
        tracker.close();
        let _ = server.await;
        if let Some(mut grpc_server) = grpc_server {
            match tokio::time::timeout(margin, &mut grpc_server).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server ended with an error"),
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(
                        "gRPC connections still open at the drain deadline; dropping them"
                    );
                    grpc_server.abort();
                }
            }
        }
        let _ = ops.await;
        if tokio::time::timeout(margin, tracker.wait()).await.is_err() {
            tracing::warn!(
                open = tracker.len(),
                "connections still open at the drain deadline; dropping them"
            );
        }
        Ok(())
    }
}
