//! Logging and traces, set up once: pretty for people, JSON for production;
//! and, only when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `..._TRACES_ENDPOINT`) is set, OpenTelemetry traces over OTLP
//! (HTTP/protobuf). The W3C trace context goes from a request's span into
//! auth's gRPC metadata ([`crate::auth_client`]), and comes back with the
//! republished event in its NATS headers ([`crate::broker`]), so that one
//! login step is one trace across the edge that took it, auth, and the
//! edge that delivers it.
//!
//! With tracing off nothing is extracted, injected or created, and no
//! middleware is installed: the checks are one relaxed atomic load
//! ([`enabled`]), and an idle connection holds no span.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use axum::{extract::Request, middleware::Next, response::Response};
use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TracerProvider as _,
    Context, KeyValue,
};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider, Resource};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{filter::filter_fn, fmt, prelude::*, EnvFilter};

use crate::config::LogFormat;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported (and so worth creating and propagating).
pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OpenTelemetry OTLP exporter: {0}")]
    Exporter(String),
}

/// Keeps the trace pipeline alive; dropping it exports what is pending.
#[must_use = "dropping it stops the trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            ENABLED.store(false, Relaxed);
            if let Err(e) = provider.shutdown() {
                eprintln!("OpenTelemetry: spans not exported at exit: {e}");
            }
        }
    }
}

/// Whether the environment asks for traces: an OTLP endpoint is set, and
/// neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` says no.
pub fn otlp_requested() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let is = |name: &str, value: &str| {
        std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// Installs the global subscriber; `RUST_LOG` filters (default `info`).
/// `node` becomes `service.instance.id` of the traces. Safe to call more
/// than once (later calls change nothing).
pub fn init(format: LogFormat, node: &str) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = if otlp_requested() {
        Some(provider(node)?)
    } else {
        None
    };
    // Only the edge's own spans become trace spans; logs inside them
    // become span events.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("qrlogin-edge"))
            .with_filter(filter_fn(|m| m.target().starts_with("qrlogin")))
    });
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let installed = match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_current_span(false))
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().compact()).try_init(),
    };
    let provider = provider.filter(|_| installed.is_ok());
    if provider.is_some() {
        ENABLED.store(true, Relaxed);
        tracing::info!(node, "OpenTelemetry traces on (OTLP over HTTP/protobuf)");
    }
    Ok(Telemetry { provider })
}

fn provider(node: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let mut resource = Resource::builder()
        .with_attribute(KeyValue::new("service.instance.id", node.to_owned()))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("qrlogin-edge");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Makes `span` a child of the W3C context found in `carrier` (if any).
pub fn continue_from(span: &tracing::Span, carrier: &dyn Extractor) {
    let cx = TraceContextPropagator::new().extract(carrier);
    let _ = span.set_parent(cx);
}

/// Writes the current span's W3C context into `carrier`; nothing when
/// tracing is off or no span is current.
pub fn inject_current(carrier: &mut dyn Injector) {
    if !enabled() {
        return;
    }
    let cx: Context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, carrier);
}

/// HTTP headers as a W3C carrier (a client's own `traceparent` is
/// continued, as OpenTelemetry's HTTP instrumentations do).
pub struct HttpHeaders<'a>(pub &'a http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// gRPC request metadata as a W3C carrier (calls to auth).
pub struct GrpcMetadata<'a>(pub &'a mut tonic::metadata::MetadataMap);

impl Injector for GrpcMetadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        let key = tonic::metadata::MetadataKey::from_bytes(key.as_bytes());
        if let (Ok(key), Ok(value)) = (key, value.parse()) {
            self.0.insert(key, value);
        }
    }
}

/// The header block of a NATS `HMSG` as a W3C carrier (events).
pub struct NatsHeaderBlock<'a>(pub &'a [u8]);

impl Extractor for NatsHeaderBlock<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        crate::broker::proto::header(self.0, key).and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// Middleware (installed only while tracing is on): each request runs in
/// a server span, a child of the client's `traceparent` if it sent one.
/// The span covers the handler until the response head, not a stream's
/// body: a held connection keeps no span.
pub async fn http_span(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "other".to_owned());
    let span = tracing::info_span!(
        "http.server",
        otel.name = %format!("{} {route}", req.method()),
        otel.kind = "server",
        http.request.method = %req.method(),
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    continue_from(&span, &HttpHeaders(req.headers()));
    let response = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_in_nats_headers_is_found() {
        let block = b"NATS/1.0\r\nNats-Sequence: 3\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n";
        let cx = TraceContextPropagator::new().extract(&NatsHeaderBlock(block));
        let mut md = tonic::metadata::MetadataMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut GrpcMetadata(&mut md));
        assert_eq!(
            md.get("traceparent").and_then(|v| v.to_str().ok()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
    }

    #[test]
    fn nothing_is_injected_while_tracing_is_off() {
        assert!(!enabled());
        let mut md = tonic::metadata::MetadataMap::new();
        inject_current(&mut GrpcMetadata(&mut md));
        assert!(md.is_empty());
    }
}
