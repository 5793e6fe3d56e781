//! How many AuthService calls auth takes at once, and for how long. Beyond
//! QRLOGIN_MAX_CONCURRENT_REQUESTS a call is answered RESOURCE_EXHAUSTED at
//! once (no queue that grows while auth is slow: the caller retries, or its
//! load balancer tries another replica); a call that runs longer than
//! QRLOGIN_REQUEST_TIMEOUT is dropped and answered DEADLINE_EXCEEDED.
//! Health and reflection are not counted: probes must get through.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::server::NamedService;

use crate::grpc::{over_capacity, timed_out};

/// Wraps one gRPC service with the concurrency cap and the timeout.
#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    permits: Arc<Semaphore>,
    timeout: Duration,
}

impl<S> Admission<S> {
    pub fn new(inner: S, max_concurrent: usize, timeout: Duration) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max_concurrent)),
            timeout,
        }
    }
}

impl<S, B, R> Service<http::Request<B>> for Admission<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Send + 'static,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Box::pin(async { Ok(over_capacity().into_http()) });
        };
        let call = self.inner.call(request);
        let timeout = self.timeout;
        Box::pin(async move {
            // Held until the answer is ready: unary calls end there.
            let _permit = permit;
            match tokio::time::timeout(timeout, call).await {
                Ok(answer) => answer,
                Err(_) => {
                    tracing::warn!(?timeout, "call exceeded QRLOGIN_REQUEST_TIMEOUT");
                    Ok(timed_out(timeout).into_http())
                }
            }
        })
    }
}

impl<S: NamedService> NamedService for Admission<S> {
    const NAME: &'static str = S::NAME;
}
