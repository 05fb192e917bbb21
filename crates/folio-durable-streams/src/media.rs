//! The content types a stream may have: data formats only.
//!
//! A stream's bytes are served back from the edge's origin under the type it was created with;
//! a type a browser renders as an active document (`text/html`, `image/svg+xml`, XML,
//! JavaScript, …) would make any writer's bytes a page of that origin. Every response also
//! carries a sandboxing CSP and `nosniff` (headers.rs); the allow-list keeps such types out in
//! the first place.

use super::{error::StreamError, meta::normalize_media_type};

/// Exact media types (lower-case, without parameters) a stream may be created with. Besides
/// JSON, NDJSON, text and bytes: `application/x-protobuf` and `image/png`, which the Durable
/// Streams conformance suite creates (its binary SSE tests); neither is ever run by a browser.
const ALLOWED: &[&str] = &[
    "application/json",
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "text/plain",
    "text/csv",
    "application/octet-stream",
    "application/x-protobuf",
    "application/protobuf",
    "image/png",
];

/// A `Content-Type` header a stream may have (trimmed), or 415 naming what was sent.
pub fn check(value: &axum::http::HeaderValue) -> Result<&str, StreamError> {
    match value.to_str().map(str::trim) {
        Ok(ct) if allowed(ct) => Ok(ct),
        _ => Err(StreamError::UnsupportedMediaType(String::from_utf8_lossy(value.as_bytes()).into_owned())),
    }
}

/// Whether a `Content-Type` value (any case, any parameters) names an allowed type.
pub fn allowed(content_type: &str) -> bool {
    let essence = normalize_media_type(content_type);
    let Some((kind, subtype)) = essence.split_once('/') else { return false };
    let token = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.+!#$&^".contains(&c));
    if !token(kind) || !token(subtype) {
        return false;
    }
    // `application/<anything>+json` (RFC 6839 structured syntax suffix): still JSON.
    let json_suffix = kind == "application" && subtype.len() > "+json".len() && subtype.ends_with("+json");
    json_suffix || ALLOWED.contains(&essence.as_str())
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn data_formats_are_allowed_and_documents_are_not() {
        for ok in [
            "application/json",
            "APPLICATION/JSON",
            "application/json; charset=utf-8",
            "application/vnd.folio.event+json",
            "application/x-ndjson",
            "text/plain",
            "TEXT/PLAIN",
            "text/csv; header=present",
            "application/octet-stream",
            "application/x-protobuf",
            "image/png",
        ] {
            assert!(allowed(ok), "{ok}");
        }
        for refused in [
            "text/html",
            "TEXT/HTML; charset=utf-8",
            "image/svg+xml",
            "application/javascript",
            "text/javascript",
            "application/xml",
            "text/xml",
            "application/xhtml+xml",
            "application/pdf",
            "text/plain, text/html",
            "application/+json",
            "text/+json",
            "",
            "json",
        ] {
            assert!(!allowed(refused), "{refused}");
        }
    }
}
