//! The operations listener (`QRLOGIN_OPS_LISTEN`): `/metrics`, `/healthz`
//! and `/readyz` on their own port, so that what scrapes and probes the
//! node never needs the public port and the public port never shows them.
//! Plain hyper per connection, with the public front's head limits and
//! write deadline; no admission (a full node must still say so).

use std::{sync::Arc, time::Duration};

use axum::{body::Body, http::Request, Router};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use super::{
    deadline::{WriteDeadline, WriteLimits},
    http1,
};

/// Serves `app` on `listener` until `closing` fires.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    write: Arc<WriteLimits>,
    closing: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        tokio::select! {
            _ = closing.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let io = TokioIo::new(WriteDeadline::new(stream, write.clone()));
                    let service = TowerToHyperService::new(
                        app.clone()
                            .map_request(|req: Request<hyper::body::Incoming>| req.map(Body::new)),
                    );
                    let closing = closing.clone();
                    tracker.spawn(async move {
                        let conn = http1().serve_connection(io, service);
                        let mut conn = std::pin::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = closing.cancelled() => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                            }
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ops accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
