//! W3C trace context on the bus: written into NATS headers by publishers and read back by
//! consumers, and carried in job payloads that outlive their request. One pair, so a header
//! written by one service is always read the same way by another.

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct NatsInjector<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct NatsExtractor<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }
    /// Only named lookups are needed by the W3C trace-context propagator.
    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// Writes the current span's trace context into NATS headers.
pub fn inject_into_nats(headers: &mut async_nats::HeaderMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut NatsInjector(headers)));
}

/// Makes `span` a child of the trace context a message's publisher wrote into its headers.
pub fn set_parent_from_nats(span: &tracing::Span, headers: &async_nats::HeaderMap) {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&NatsExtractor(headers)));
    let _ = span.set_parent(parent);
}

/// The current span's `traceparent`, for payloads that outlive the request (outbox jobs).
pub fn current_traceparent() -> String {
    let cx = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.remove("traceparent").unwrap_or_default()
}

/// Makes `span` a child of a stored `traceparent` (jobs carry their request's trace).
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let carrier = std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// A header written by `inject_into_nats` is read back by `set_parent_from_nats` as the
    /// same trace: the two halves cannot drift apart.
    #[test]
    fn nats_headers_carry_the_trace_to_the_consumer() {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let publisher = tracing::info_span!("publish");
            let mut headers = async_nats::HeaderMap::new();
            publisher.in_scope(|| inject_into_nats(&mut headers));
            let sent = publisher.context().span().span_context().trace_id();
            assert!(headers.get("traceparent").is_some());

            let consumer = tracing::info_span!("consume");
            set_parent_from_nats(&consumer, &headers);
            use opentelemetry::trace::TraceContextExt as _;
            assert_eq!(consumer.context().span().span_context().trace_id(), sent);
        });
    }
}
