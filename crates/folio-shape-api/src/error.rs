//! The shape API's errors, mapped once to Electric's HTTP responses: the status comes from
//! Folio's `ErrorCode` table, the bodies are Electric's.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use folio_domain::ErrorCode;

/// A cause kept for the log (never sent to the client beyond its one-line message).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    /// 400 `{"message":"Invalid request","errors":{<field>:[<message>]}}`; `source` is the
    /// refusal `message` describes (the parser's, the database's), kept for the log.
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// 400 `{"message":"Invalid request","errors":{"subset":{<field>:[<message>]}}}`: a subset
    /// snapshot's parameter, nested as Electric nests them.
    #[error("invalid subset {field}: {message}")]
    InvalidSubset {
        field: &'static str,
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// 413: a request body over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// 401 with the token's problem as the message.
    #[error("unauthorized")]
    Unauthorized(#[source] folio_auth::AuthError),
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 409: the log behind this handle cannot be continued; `handle` is where to start over.
    #[error("must refetch: {reason}")]
    MustRefetch { handle: String, reason: String },
    /// 429 with `Retry-After` and RateLimit headers: the caller's agency holds as many shapes
    /// (or definitions) as this edge allows it.
    #[error("too many shapes")]
    OverQuota(#[source] super::quota::OverQuota),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 503 with `retry-after`: a dependency (Postgres, JetStream) is not answering.
    #[error("unavailable: failed to {action}")]
    Unavailable {
        action: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("internal error: failed to {action}")]
    Internal {
        action: String,
        #[source]
        source: Option<BoxError>,
    },
}

pub type Result<T, E = ShapeError> = std::result::Result<T, E>;

impl ShapeError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ShapeError::Invalid { field, message: message.into(), source: None }
    }

    /// A 400 whose `message` tells the client what `source` refused.
    pub fn invalid_because(field: &'static str, message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        ShapeError::Invalid { field, message: message.into(), source: Some(source.into()) }
    }

    /// `action` says what failed ("read the shape handle"); `source` why.
    pub fn unavailable(action: impl Into<String>, source: impl Into<BoxError>) -> Self {
        ShapeError::Unavailable { action: action.into(), source: Some(source.into()) }
    }

    pub fn unavailable_without_source(action: impl Into<String>) -> Self {
        ShapeError::Unavailable { action: action.into(), source: None }
    }

    pub fn internal(action: impl Into<String>, source: impl Into<BoxError>) -> Self {
        ShapeError::Internal { action: action.into(), source: Some(source.into()) }
    }

    pub fn internal_without_source(action: impl Into<String>) -> Self {
        ShapeError::Internal { action: action.into(), source: None }
    }

    /// The error's class in Folio's one table of codes.
    pub fn code(&self) -> ErrorCode {
        match self {
            ShapeError::Invalid { .. } | ShapeError::InvalidSubset { .. } => ErrorCode::InvalidArgument,
            ShapeError::TooLarge(_) => ErrorCode::PayloadTooLarge,
            ShapeError::Unauthorized(_) => ErrorCode::Unauthenticated,
            ShapeError::Forbidden(_) => ErrorCode::PermissionDenied,
            ShapeError::MustRefetch { .. } => ErrorCode::Conflict,
            ShapeError::OverQuota(_) => ErrorCode::ResourceExhausted,
            ShapeError::NotFound(_) => ErrorCode::NotFound,
            ShapeError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ShapeError::Unavailable { .. } => ErrorCode::Unavailable,
            ShapeError::Internal { .. } => ErrorCode::Internal,
        }
    }

    /// `<action>: <cause>`, the one line a 503 body carries.
    fn detail(action: &str, source: &Option<BoxError>) -> String {
        match source {
            Some(e) => format!("{action}: {e}"),
            None => action.to_owned(),
        }
    }
}

impl From<sqlx::Error> for ShapeError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => {
                ShapeError::unavailable("database unreachable", e)
            }
            _ => ShapeError::internal("database", e),
        }
    }
}

impl IntoResponse for ShapeError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = match &self {
            ShapeError::Invalid { field, message, .. } => {
                serde_json::json!({"message": "Invalid request", "errors": {*field: [message]}})
            }
            ShapeError::InvalidSubset { field, message, .. } => {
                serde_json::json!({"message": "Invalid request", "errors": {"subset": {*field: [message]}}})
            }
            ShapeError::Unauthorized(e) => serde_json::json!({ "message": e.to_string() }),
            ShapeError::Forbidden(m)
            | ShapeError::NotFound(m)
            | ShapeError::MethodNotAllowed(m)
            | ShapeError::TooLarge(m) => {
                serde_json::json!({ "message": m })
            }
            ShapeError::MustRefetch { .. } => serde_json::json!([{"headers": {"control": "must-refetch"}}]),
            ShapeError::OverQuota(q) => serde_json::json!({
                "message": format!(
                    "Too many {}: this agency may hold {} on this server; retry after {} s",
                    if q.policy == "definitions" { "distinct shape definitions" } else { "live shapes" },
                    q.quota,
                    q.retry_after.as_secs()
                ),
                "code": "too_many_shapes",
                "policy": q.policy,
            }),
            ShapeError::Unavailable { action, source } => {
                tracing::warn!(error = %folio_runtime::error_chain(&self), "shape request unavailable");
                serde_json::json!({ "message": Self::detail(action, source), "code": "unavailable" })
            }
            ShapeError::Internal { .. } => {
                tracing::error!(error = %folio_runtime::error_chain(&self), "shape request failed");
                serde_json::json!({"error": "Internal server error"})
            }
        };
        let mut res = (status, axum::Json(body)).into_response();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        match &self {
            ShapeError::MustRefetch { handle, .. } => {
                if let Ok(v) = HeaderValue::from_str(handle) {
                    h.insert("electric-handle", v);
                }
                // Private: the handle answers one caller's shape (Electric's public 409s assume
                // an unauthenticated API behind a proxy).
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=60, must-revalidate"));
            }
            ShapeError::Unavailable { .. } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                h.insert("electric-internal-known-error", HeaderValue::from_static("true"));
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                h.insert("surrogate-control", HeaderValue::from_static("no-store"));
            }
            ShapeError::OverQuota(q) => {
                // IETF draft-ietf-httpapi-ratelimit-headers: the policy (quota, window) and
                // what is left of it (nothing) with the seconds until it resets.
                let secs = q.retry_after.as_secs().max(1);
                let mut policy = format!("\"{}\";q={}", q.policy, q.quota);
                if let Some(w) = q.window {
                    policy.push_str(&format!(";w={}", w.as_secs()));
                }
                let pairs = [
                    ("retry-after", secs.to_string()),
                    ("ratelimit-policy", policy),
                    ("ratelimit", format!("\"{}\";r=0;t={secs}", q.policy)),
                ];
                for (name, value) in pairs {
                    if let Ok(v) = HeaderValue::from_str(&value) {
                        h.insert(name, v);
                    }
                }
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                h.insert("surrogate-control", HeaderValue::from_static("no-store"));
            }
            _ => {
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                h.insert("surrogate-control", HeaderValue::from_static("no-store"));
            }
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_come_from_the_error_code_table_and_causes_stay_attached() {
        let e = ShapeError::unavailable("read the shape handle", std::io::Error::other("nats down"));
        assert!(std::error::Error::source(&e).is_some());
        let res = e.into_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()["retry-after"], "5");
        assert_eq!(ShapeError::invalid("where", "x").into_response().status(), StatusCode::BAD_REQUEST);
        let unauthorized = ShapeError::Unauthorized(folio_auth::AuthError::Missing);
        assert!(std::error::Error::source(&unauthorized).is_some());
        assert_eq!(unauthorized.into_response().status(), StatusCode::UNAUTHORIZED);
        let refetch = ShapeError::MustRefetch { handle: "h-1".into(), reason: "gone".into() }.into_response();
        assert_eq!(refetch.status(), StatusCode::CONFLICT);
        assert_eq!(
            ShapeError::internal_without_source("x").into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
