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

/// Browser security headers, added to every response of the streams API (errors, SSE and
/// long-poll timeouts included) by a middleware so no handler can forget them.
pub fn add_common(headers: &mut HeaderMap) {
    headers.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
    // A stream's bytes are served under its content type (an allow-list of data formats,
    // media.rs): should a document type ever get through, opened as a page on the edge's
    // origin it must not run. `sandbox` gives it an opaque origin with scripts, forms and
    // plugins off; `default-src 'none'` loads nothing. Clients reading streams with
    // fetch/EventSource are not affected: CSP applies to documents.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'; frame-ancestors 'none'"),
    );
    // No other site may embed a stream (`<img>`, `<script>`, no-cors fetches); CORS-mode
    // fetches from allowed origins are not subject to it.
    headers.insert(HeaderName::from_static("cross-origin-resource-policy"), HeaderValue::from_static("same-origin"));
}

/// Which browser origins may call the streams API cross-origin (`--ds-allowed-origins`).
/// The allowed origin is echoed, never `*`; any other origin gets no CORS grant, so the
/// browser keeps the response from its page.
pub struct Cors {
    origins: Vec<HeaderValue>,
}

impl Cors {
    pub fn new(origins: &[HeaderValue]) -> Self {
        Cors { origins: origins.iter().filter(|o| !o.is_empty()).cloned().collect() }
    }

    /// Adds the CORS headers for a request from `origin` (its `Origin` header, if any). What
    /// methods and headers the API takes is no secret (and the conformance suite checks it on
    /// any preflight); only the grant, `Access-Control-Allow-Origin`, depends on the origin.
    pub fn apply(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE, HEAD, OPTIONS"),
        );
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE_HEADERS));
        let Some(origin) = origin else { return };
        // The answer depends on the origin: a shared cache must keep one copy per origin.
        headers.append(header::VARY, HeaderValue::from_static("origin"));
        if self.origins.contains(origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
    }
}

/// clap's parser of one allowed origin: `http(s)://host[:port]` in lower case, exactly as a
/// browser sends it in `Origin` (no path, no trailing `/`, no wildcard). An empty value (an
/// empty `FOLIO_DS_ALLOWED_ORIGINS`, as deployment templates write "none") allows nothing.
pub fn parse_origin(s: &str) -> Result<HeaderValue, String> {
    if s.is_empty() {
        return Ok(HeaderValue::from_static(""));
    }
    let refuse =
        || format!("{s:?} is not an origin: give scheme://host[:port] in lower case, e.g. https://app.example.com");
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).ok_or_else(refuse)?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (rest, None),
    };
    let host_ok =
        !host.is_empty() && host.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b".-[]:".contains(&c));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()));
    if !host_ok || !port_ok {
        return Err(refuse());
    }
    HeaderValue::from_str(s).map_err(|_| refuse())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_origins_are_echoed_and_never_a_wildcard() {
        let cors = Cors::new(&[parse_origin("https://app.example.com").unwrap()]);
        let mut h = HeaderMap::new();
        cors.apply(Some(&HeaderValue::from_static("https://evil.example")), &mut h);
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert_eq!(h.get(header::VARY).unwrap(), "origin");
        let mut h = HeaderMap::new();
        cors.apply(Some(&HeaderValue::from_static("https://app.example.com")), &mut h);
        assert_eq!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "https://app.example.com");
        let mut h = HeaderMap::new();
        cors.apply(None, &mut h);
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none() && h.get(header::VARY).is_none());
    }

    #[test]
    fn origins_are_checked_at_start() {
        for ok in ["https://app.example.com", "http://localhost:5173", "http://127.0.0.1:8080", "http://[::1]:3000"] {
            assert!(parse_origin(ok).is_ok(), "{ok}");
        }
        let none = Cors::new(&[parse_origin("").unwrap()]);
        let mut h = HeaderMap::new();
        none.apply(Some(&HeaderValue::from_static("")), &mut h);
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(), "an empty value allows nothing");
        for bad in [
            "*",
            "https://*.example.com",
            "https://app.example.com/",
            "app.example.com",
            "https://App.example.com",
            "https://a.example:x",
            "ftp://a",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
