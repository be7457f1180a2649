//! Logs and traces: `tracing` with an env filter, human or JSON output, and an OTLP trace
//! exporter when `observability.otlp_endpoint` is set.
//!
//! Trace context crosses processes as W3C `traceparent`/`tracestate` (the global text-map
//! propagator, set here): [`extract_parent`] continues a caller's trace in a server span,
//! [`inject_span`] hands a client span to the next hop (mesh calls; the event bus does the
//! same for events and jobs).

use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{LogFormat, ObservabilityConfig};

/// Keeps the trace exporter alive; dropping it flushes pending spans.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("trace exporter shutdown failed: {e}");
        }
    }
}

/// Failure to start telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid configuration: observability.otlp_endpoint: {0}")]
    Exporter(String),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Which process the spans come from: the OTLP resource's `service.name` and
/// `service.instance.id`, so a trace view tells the processes of one trace apart.
#[derive(Clone, Debug, Default)]
pub struct ProcessIdentity {
    /// The services this process hosts (`guardyn serve --service NAME`); empty = every one.
    pub services: Vec<String>,
    /// `service.instance.id`; empty = a random UUID, new at every start.
    pub instance_id: String,
}

impl ProcessIdentity {
    /// `service.name`: `observability.service_name`, plus the hosted services when the process
    /// runs a subset (`guardyn-messaging`, `guardyn-auth+presence`).
    fn service_name(&self, base: &str) -> String {
        if self.services.is_empty() {
            base.to_owned()
        } else {
            format!("{base}-{}", self.services.join("+"))
        }
    }

    fn instance_id(&self) -> String {
        if self.instance_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            self.instance_id.clone()
        }
    }
}

/// Install the global subscriber. `RUST_LOG`, when set, overrides `log_level`.
pub fn init(
    config: &ObservabilityConfig,
    process: &ProcessIdentity,
) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));

    // The log level filters logs only: spans are exported at info whatever logs show, so
    // quieter logs never cut a trace short.
    let fmt = match config.log_format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };

    let (otel, provider) = if config.otlp_endpoint.is_empty() {
        (None, None)
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(process.service_name(&config.service_name))
                    .with_attribute(KeyValue::new("service.instance.id", process.instance_id()))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("guardyn");
        (
            Some(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
            ),
            Some(provider),
        )
    };

    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(TelemetryGuard { provider })
}

/// The caller's trace context from `traceparent`/`tracestate` headers, when they carry a valid
/// one.
pub fn extract_parent(headers: &http::HeaderMap) -> Option<opentelemetry::Context> {
    // The only propagator installed is W3C trace context, which has nothing to extract
    // without `traceparent`: most calls skip the global propagator's lock.
    if !headers.contains_key("traceparent") {
        return None;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderCarrier(headers)));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Write the context of `span` into `headers` (nothing when no trace is being recorded).
pub fn inject_span(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut HeaderCarrierMut(headers));
        });
    }
}

struct HeaderCarrier<'a>(&'a http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderCarrierMut<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderCarrierMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_valid_traceparent_is_extracted_and_garbage_is_not() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let cx = extract_parent(&headers).expect("a valid traceparent");
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        headers.insert("traceparent", "00-zz-00f067aa0ba902b7-01".parse().unwrap());
        assert!(extract_parent(&headers).is_none());
        assert!(extract_parent(&http::HeaderMap::new()).is_none());
    }

    #[test]
    fn service_name_names_the_hosted_subset() {
        let all = ProcessIdentity::default();
        assert_eq!(all.service_name("guardyn"), "guardyn");
        let some = ProcessIdentity {
            services: vec!["auth".into(), "presence".into()],
            instance_id: "i-1".into(),
        };
        assert_eq!(some.service_name("guardyn"), "guardyn-auth+presence");
        assert_eq!(some.instance_id(), "i-1");
        assert_ne!(all.instance_id(), all.instance_id(), "fresh per start");
    }
}
