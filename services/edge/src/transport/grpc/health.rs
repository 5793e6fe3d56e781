//! `grpc.health.v1.Health` on the gRPC port, answered like `/readyz`: the
//! service `""` and `qrlogin.watch.v1.LoginWatch` are SERVING when NATS is
//! connected, auth answers and the node is not draining. Check asks when it
//! is called; Watch sends the status, then a new one when it changes
//! (looked at every [`WATCH_EVERY`] while the call is open). While the node
//! drains its gRPC listener is closed, so new checks fail to connect.

use std::{pin::Pin, time::Duration};

use futures::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_server::Health, HealthCheckRequest,
    HealthCheckResponse,
};

use crate::sessions::Sessions;

/// The names this port reports on.
const SERVICES: [&str; 2] = ["", "qrlogin.watch.v1.LoginWatch"];
/// How often an open Watch call looks at readiness again.
const WATCH_EVERY: Duration = Duration::from_secs(5);

pub struct HealthService {
    sessions: Sessions,
}

impl HealthService {
    pub fn new(sessions: Sessions) -> Self {
        Self { sessions }
    }
}

async fn status(sessions: &Sessions) -> ServingStatus {
    if sessions.readiness().await.ready() {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

type Statuses = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        if !SERVICES.contains(&request.get_ref().service.as_str()) {
            return Err(Status::not_found("unknown service"));
        }
        Ok(Response::new(response(status(&self.sessions).await)))
    }

    type WatchStream = Statuses;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Statuses>, Status> {
        if !SERVICES.contains(&request.get_ref().service.as_str()) {
            let unknown = futures::stream::iter([Ok(response(ServingStatus::ServiceUnknown))])
                .chain(futures::stream::pending());
            return Ok(Response::new(Box::pin(unknown)));
        }
        let sessions = self.sessions.clone();
        let stream = futures::stream::unfold(
            (sessions, None::<ServingStatus>),
            |(sessions, last)| async move {
                loop {
                    if last.is_some() {
                        tokio::time::sleep(WATCH_EVERY).await;
                    }
                    let now = status(&sessions).await;
                    if Some(now) != last {
                        return Some((Ok(response(now)), (sessions, Some(now))));
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}
