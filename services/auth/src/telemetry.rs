//! Logging and traces, set up once per process: `RUST_LOG` filter (default
//! `info`), pretty text for people or JSON for log pipelines; and, only when
//! the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is
//! set, OpenTelemetry traces exported over OTLP (HTTP/protobuf) with the W3C
//! trace context carried across processes: from the edge's gRPC metadata
//! into auth's call span, from there into the headers of the bucket write
//! that NATS republishes to the edges.
//!
//! With tracing off nothing is extracted, injected or created: the checks
//! are one relaxed atomic load ([`enabled`]).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TracerProvider as _,
    Context, KeyValue,
};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider, Resource};
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

/// Installs the global subscriber. `service` names the process in traces
/// unless `OTEL_SERVICE_NAME` does; `instance` (a node or host name) becomes
/// `service.instance.id`. A second call (e.g. in tests) changes nothing.
pub fn init(
    format: LogFormat,
    service: &'static str,
    instance: Option<&str>,
) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = if otlp_requested() {
        Some(provider(service, instance)?)
    } else {
        None
    };
    // Only this service's own spans become trace spans (not those of the
    // libraries below it); logs inside them become span events.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service))
            .with_filter(filter_fn(|m| m.target().starts_with("qrlogin")))
    });
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let installed = match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer()).try_init(),
    };
    let provider = provider.filter(|_| installed.is_ok());
    if provider.is_some() {
        ENABLED.store(true, Relaxed);
        tracing::info!(service, "OpenTelemetry traces on (OTLP over HTTP/protobuf)");
    }
    Ok(Telemetry { provider })
}

fn provider(
    service: &'static str,
    instance: Option<&str>,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    if let Some(instance) = instance {
        resource =
            resource.with_attribute(KeyValue::new("service.instance.id", instance.to_owned()));
    }
    resource = resource.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
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

/// HTTP/2 headers as a W3C carrier (gRPC metadata arrives as these).
pub struct HttpHeaders<'a>(pub &'a http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// NATS message headers as a W3C carrier (the bucket write's headers,
/// which the republished event keeps).
pub struct NatsHeaders<'a>(pub &'a mut async_nats::HeaderMap);

impl Injector for NatsHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_survives_extract_then_inject() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", parent.parse().unwrap());
        let cx = TraceContextPropagator::new().extract(&HttpHeaders(&headers));
        let mut nats = async_nats::HeaderMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut NatsHeaders(&mut nats));
        assert_eq!(
            nats.get("traceparent").map(|v| v.as_str()),
            Some(parent),
            "the same trace, parent span and sampling flag"
        );
    }

    #[test]
    fn nothing_is_injected_while_tracing_is_off() {
        assert!(!enabled());
        let mut nats = async_nats::HeaderMap::new();
        inject_current(&mut NatsHeaders(&mut nats));
        assert!(nats.get("traceparent").is_none());
    }
}
