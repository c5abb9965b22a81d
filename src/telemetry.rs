//! Tracing set-up: `RUST_LOG` filters, `CREDITS_LOG_FORMAT` picks pretty or JSON lines,
//! and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans go to an OpenTelemetry
//! collector over OTLP/HTTP (protobuf, or JSON). Unset, no exporter exists and nothing
//! is sent.
//!
//! The spans a trace holds: one per HTTP request (a child of the caller's W3C
//! `traceparent`, see [`parent_of`]), one per GraphQL operation (`http/graphql.rs`),
//! the ledger commit that carried the request's change (`ledger.commit`; the committer's
//! batch is a span of its own, `ledger.batch`), each Stripe call (`stripe`) and each
//! webhook delivery attempt (`webhook.delivery`).

use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, OtlpConfig};

/// Whether spans are exported (an exporter was installed).
static EXPORTING: OnceLock<bool> = OnceLock::new();

/// The exporter, kept so that its last spans are sent before exit.
#[must_use = "dropping it does not flush; call `shutdown` before exiting"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("traces: shutting down the exporter failed: {error}");
        }
    }
}

/// Why traces cannot be exported.
#[derive(Debug, thiserror::Error)]
#[error("OpenTelemetry exporter: {0}")]
pub struct TelemetryError(String);

/// Installs the global subscriber with `filter` (`RUST_LOG` syntax; `info` if invalid),
/// and the OTLP exporter when `otlp` is set. Logs go to stderr so stdout stays for
/// command output.
pub fn init(format: LogFormat, filter: &str, otlp: Option<&OtlpConfig>) -> Result<Telemetry, TelemetryError> {
    let provider = otlp.map(provider).transpose()?;
    let tracer = provider.as_ref().map(|provider| provider.tracer("credits"));
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Spans go to the collector whatever the log level: the exporter filters on its own.
    let exported = tracer.map(|tracer| {
        let spans = tracing_subscriber::filter::Targets::new()
            .with_target("credits", tracing::Level::INFO)
            .with_target("ledger", tracing::Level::INFO)
            .with_target("tower_http", tracing::Level::INFO);
        tracing_opentelemetry::layer().with_tracer(tracer).with_filter(spans)
    });
    let registry = tracing_subscriber::registry().with(exported);
    let result = match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_current_span(true).with_writer(std::io::stderr).with_filter(filter))
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().with_writer(std::io::stderr).with_filter(filter)).try_init(),
    };
    // A second initialization (tests) keeps the first subscriber.
    if result.is_ok() {
        let _ = EXPORTING.set(provider.is_some());
    }
    Ok(Telemetry { provider })
}

/// A tracer provider exporting in batches to the collector.
fn provider(otlp: &OtlpConfig) -> Result<SdkTracerProvider, TelemetryError> {
    let protocol = if otlp.json { Protocol::HttpJson } else { Protocol::HttpBinary };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(format!("{}/v1/traces", otlp.endpoint.trim_end_matches('/')))
        .build()
        .map_err(|error| TelemetryError(error.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(otlp.service_name.clone()).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// Whether spans are exported.
pub fn exporting() -> bool {
    EXPORTING.get().copied().unwrap_or(false)
}

/// The caller's trace context from its `traceparent` (and `tracestate`) headers, to
/// make a request's span its child; `None` when nothing is exported or none was sent.
pub fn parent_of(headers: &axum::http::HeaderMap) -> Option<opentelemetry::Context> {
    if !exporting() || !headers.contains_key("traceparent") {
        return None;
    }
    Some(TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers)))
}
