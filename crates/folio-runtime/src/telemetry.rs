//! Tracing set up once per process; OTLP export when an endpoint is configured.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

use crate::args::{CommonArgs, LogFormat};

/// Flushes exported spans on `shutdown`; dropping it without calling loses the last batch.
pub struct TelemetryHandle {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryHandle {
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = provider.force_flush();
            if let Err(e) = provider.shutdown() {
                eprintln!("failed to flush traces: {e}");
            }
        }
    }
}

/// Installs the global subscriber. Must run inside a Tokio runtime (the OTLP exporter is tonic).
pub fn init(service_name: &'static str, args: &CommonArgs) -> anyhow::Result<TelemetryHandle> {
    let filter = EnvFilter::try_new(&args.log_filter)?;
    let provider = match &args.otlp_endpoint {
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name)
                .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build();
            Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
        }
        None => None,
    };
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let otel_layer = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service_name)));
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    match args.log_format {
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer()).try_init()?,
        LogFormat::Json => registry.with(tracing_subscriber::fmt::layer().json()).try_init()?,
    }
    Ok(TelemetryHandle { provider })
}
