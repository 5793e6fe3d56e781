//! How many AuthService calls auth takes at once, and for how long. Beyond
//! QRLOGIN_MAX_CONCURRENT_REQUESTS a call is answered RESOURCE_EXHAUSTED at
//! once (no queue that grows while auth is slow: the caller retries, or its
//! load balancer tries another replica); a call that runs longer than
//! QRLOGIN_REQUEST_TIMEOUT is dropped and answered DEADLINE_EXCEEDED.
//! Health and reflection are not counted: probes must get through.
//!
//! Every call is also counted here (method, gRPC code, duration), and, with
//! tracing on, runs in a server span continuing the caller's W3C context.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::server::NamedService;
use tracing::Instrument as _;

use crate::grpc::{over_capacity, timed_out};
use crate::metrics::AuthMetrics;
use crate::telemetry;

/// Wraps one gRPC service with the concurrency cap and the timeout.
#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    permits: Arc<Semaphore>,
    timeout: Duration,
    metrics: Arc<AuthMetrics>,
}

impl<S> Admission<S> {
    pub fn new(
        inner: S,
        max_concurrent: usize,
        timeout: Duration,
        metrics: Arc<AuthMetrics>,
    ) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max_concurrent)),
            timeout,
            metrics,
        }
    }
}

/// The method named by a gRPC path (`/package.Service/Method`), as a label.
/// Only the methods this service implements are named; anything else is
/// `other`, so a caller cannot create series.
fn method_label(path: &str) -> &'static str {
    const METHODS: [&str; 8] = [
        "CreateLoginSession",
        "GetLoginSession",
        "ScanLoginSession",
        "ConfirmLoginSession",
        "DenyLoginSession",
        "CancelLoginSession",
        "RedeemLoginSession",
        "GetSigningKeys",
    ];
    let name = path.rsplit('/').next().unwrap_or("");
    METHODS.into_iter().find(|m| *m == name).unwrap_or("other")
}

/// The gRPC code of an answer, as a label: from `grpc-status` in the
/// headers (tonic sends every error as a trailers-only answer), otherwise
/// OK (a success carries its status in the trailers).
fn code_label<R>(answer: &http::Response<R>) -> &'static str {
    let code = answer
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    match tonic::Code::from_i32(code) {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The server span of one call, child of the caller's W3C context; a
/// disabled span when tracing is off.
fn call_span<B>(request: &http::Request<B>, method: &'static str) -> tracing::Span {
    if !telemetry::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = %format!("qrlogin.auth.v1.AuthService/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = "qrlogin.auth.v1.AuthService",
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    telemetry::continue_from(&span, &telemetry::HttpHeaders(request.headers()));
    span
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
        let method = method_label(request.uri().path());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            metrics.admission_refused("over_capacity");
            let answer = over_capacity().into_http();
            metrics.call(method, code_label(&answer), started.elapsed());
            return Box::pin(async { Ok(answer) });
        };
        let span = call_span(&request, method);
        let call = span.in_scope(|| self.inner.call(request));
        let timeout = self.timeout;
        let in_flight = metrics.in_flight();
        let recorded = span.clone();
        Box::pin(
            async move {
                // Held until the answer is ready: unary calls end there.
                let _permit = permit;
                let _in_flight = in_flight;
                let answer = match tokio::time::timeout(timeout, call).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        metrics.admission_refused("timeout");
                        tracing::warn!(?timeout, "call exceeded QRLOGIN_REQUEST_TIMEOUT");
                        Ok(timed_out(timeout).into_http())
                    }
                };
                if let Ok(answer) = &answer {
                    let code = code_label(answer);
                    metrics.call(method, code, started.elapsed());
                    recorded.record("rpc.grpc.status_code", code);
                }
                answer
            }
            .instrument(span),
        )
    }
}

impl<S: NamedService> NamedService for Admission<S> {
    const NAME: &'static str = S::NAME;
}
