//! The one stop signal and the drain state every connection listens to.

use tokio::sync::watch;

/// Resolves when the process is asked to stop: SIGTERM (what Kubernetes
/// sends to a pod it is terminating, before SIGKILL after the grace period)
/// or SIGINT (Ctrl-C).
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}

/// Whether the node is draining. Once set it stays set: `/readyz` answers
/// 503, new requests get `503 draining`, WebSockets close with 1012, SSE
/// streams end with a jittered `retry:`, long polls answer at once.
#[derive(Clone)]
pub struct Drain {
    tx: std::sync::Arc<watch::Sender<bool>>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            tx: std::sync::Arc::new(watch::Sender::new(false)),
        }
    }
}

impl Drain {
    pub fn start(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.tx.borrow()
    }

    /// A handle a connection can wait on.
    pub fn listener(&self) -> DrainListener {
        DrainListener(self.tx.subscribe())
    }
}

/// Waits for the drain; costs one small receiver per connection.
pub struct DrainListener(watch::Receiver<bool>);

impl DrainListener {
    /// Resolves once draining started (at once if it already has).
    /// Cancel-safe.
    pub async fn started(&mut self) {
        if self.0.wait_for(|d| *d).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
