//! Protocol header names and the headers every response carries.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

pub const STREAM_NEXT_OFFSET: &str = "stream-next-offset";
pub const STREAM_UP_TO_DATE: &str = "stream-up-to-date";
pub const STREAM_CLOSED: &str = "stream-closed";
pub const STREAM_CURSOR: &str = "stream-cursor";
pub const STREAM_TTL: &str = "stream-ttl";
pub const STREAM_EXPIRES_AT: &str = "stream-expires-at";
pub const STREAM_SEQ: &str = "stream-seq";
pub const STREAM_FORKED_FROM: &str = "stream-forked-from";
pub const STREAM_FORK_OFFSET: &str = "stream-fork-offset";
pub const STREAM_FORK_SUB_OFFSET: &str = "stream-fork-sub-offset";
pub const STREAM_SSE_DATA_ENCODING: &str = "stream-sse-data-encoding";
pub const PRODUCER_ID: &str = "producer-id";
pub const PRODUCER_EPOCH: &str = "producer-epoch";
pub const PRODUCER_SEQ: &str = "producer-seq";
pub const PRODUCER_EXPECTED_SEQ: &str = "producer-expected-seq";
pub const PRODUCER_RECEIVED_SEQ: &str = "producer-received-seq";

const ALLOW_HEADERS: &str = "content-type, authorization, if-none-match, stream-seq, stream-ttl, stream-expires-at, \
    stream-closed, producer-id, producer-epoch, producer-seq, stream-forked-from, stream-fork-offset, \
    stream-fork-sub-offset";
const EXPOSE_HEADERS: &str = "stream-next-offset, stream-cursor, stream-up-to-date, stream-closed, stream-ttl, \
    stream-expires-at, stream-sse-data-encoding, producer-epoch, producer-seq, producer-expected-seq, \
    producer-received-seq, etag, content-type, content-encoding, location, vary";

pub fn value(v: impl ToString) -> HeaderValue {
    HeaderValue::from_str(&v.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The value of a request header, if present and visible ASCII.
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `Stream-Closed: true` (case-insensitive); any other value means "not closing", never an error.
pub fn is_true(headers: &HeaderMap, name: &str) -> bool {
    get(headers, name).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Browser security and CORS headers, added to every response of the streams API (errors,
/// SSE and long-poll timeouts included) by a middleware so no handler can forget them.
pub fn add_common(headers: &mut HeaderMap) {
    headers.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
    // A stream may hold any bytes under any type (`text/html`, `image/svg+xml`): opened as a
    // page on the edge's origin, it must not run. `sandbox` gives it an opaque origin with
    // scripts, forms and plugins off; `default-src 'none'` loads nothing. Clients reading
    // streams with fetch/EventSource are not affected: CSP applies to documents.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'; frame-ancestors 'none'"),
    );
    headers.insert(HeaderName::from_static("cross-origin-resource-policy"), HeaderValue::from_static("cross-origin"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, HEAD, OPTIONS"),
    );
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE_HEADERS));
}
