//! W3C trace context on the bus: written into NATS headers by publishers and read back by
//! consumers, carried in job payloads that outlive their request, and recorded in the WAL by
//! every API write transaction (a transactional logical message with [`WAL_MESSAGE_PREFIX`]
//! as its first record), which is how a change event continues the trace of the call that
//! committed it. One set of functions, so what one service writes another reads the same way.

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Prefix of the transactional logical message (`pg_logical_emit_message(true,
/// 'folio.trace', '<traceparent>')`) an API transaction writes first: wal-ingest makes its span
/// of the transaction a child of it and so every event of the transaction carries the trace.
/// Fixed whatever the subject root, like [`crate::subjects::JOB_MESSAGE_PREFIX`]; it does not
/// start with that prefix, so it is never taken for a job.
pub const WAL_MESSAGE_PREFIX: &str = "folio.trace";

/// A `traceparent` as W3C trace context writes it: `00-<32 hex>-<16 hex>-<2 hex>`. Whatever
/// else a transaction's message holds is ignored rather than trusted into a header.
pub fn parse_traceparent(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    let parts: Vec<&str> = text.split('-').collect();
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    match parts.as_slice() {
        [version, trace, span, flags]
            if hex(version, 2) && *version != "ff" && hex(trace, 32) && hex(span, 16) && hex(flags, 2) =>
        {
            Some(text)
        }
        _ => None,
    }
}

/// The trace id of a `traceparent` (its second field), to compare two contexts.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1).filter(|t| t.len() == 32)
}

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

/// Makes `span`, a worker's span of one job, a child of the job's trace (see [`job_parent`]).
/// Call it before the span is first entered: a started span keeps its parent.
pub fn set_parent_from_job(span: &tracing::Span, headers: Option<&async_nats::HeaderMap>, payload_traceparent: &str) {
    let header = headers.and_then(|h| h.get(crate::headers::TRACEPARENT)).map(|v| v.as_str());
    set_parent_from_traceparent(span, job_parent(header, payload_traceparent));
}

/// The parent of a job's span: the message's `traceparent` header when it continues the trace
/// the payload names (wal-ingest's span of the transaction, itself a child of the request: one
/// more hop of the same trace), else the payload's (the request that asked for the job), else
/// the header's.
pub fn job_parent<'a>(header: Option<&'a str>, payload: &'a str) -> &'a str {
    match header {
        Some(header) if payload.is_empty() || trace_id_of(header) == trace_id_of(payload) => header,
        _ => payload,
    }
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

    #[test]
    fn only_a_well_formed_traceparent_is_read_from_the_wal() {
        let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(parse_traceparent(good.as_bytes()), Some(good));
        assert_eq!(trace_id_of(good), Some("0af7651916cd43dd8448eb211c80319c"));
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nx: y",
            "00-0af7651916cd43dd8448eb211c8031zz-b7ad6b7169203331-01",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad:?}");
        }
    }

    /// A job's span joins the hop through wal-ingest when the header continues the payload's
    /// trace, and the payload's request when the header is of another trace.
    #[test]
    fn a_job_continues_its_header_only_within_the_payloads_trace() {
        let payload = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let same_trace = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";
        let other_trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(job_parent(Some(same_trace), payload), same_trace);
        assert_eq!(job_parent(Some(other_trace), payload), payload);
        assert_eq!(job_parent(None, payload), payload);
        assert_eq!(job_parent(Some(other_trace), ""), other_trace);
        assert_eq!(job_parent(None, ""), "");
    }
}
