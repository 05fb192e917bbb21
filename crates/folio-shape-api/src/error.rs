//! The shape API's errors, mapped once to Electric's HTTP responses.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    /// 400 `{"message":"Invalid request","errors":{<field>:[<message>]}}`.
    #[error("invalid {field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 409: the log behind this handle cannot be continued; `handle` is where to start over.
    #[error("must refetch: {reason}")]
    MustRefetch { handle: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 503 with `retry-after`: a dependency (Postgres, JetStream) is not answering.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = ShapeError> = std::result::Result<T, E>;

impl ShapeError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ShapeError::Invalid { field, message: message.into() }
    }

    pub fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        ShapeError::Internal(format!("{context}: {e}"))
    }
}

impl From<sqlx::Error> for ShapeError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => {
                ShapeError::Unavailable(format!("database unreachable: {e}"))
            }
            _ => ShapeError::Internal(format!("database: {e}")),
        }
    }
}

impl IntoResponse for ShapeError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ShapeError::Invalid { field, message } => (
                StatusCode::BAD_REQUEST,
                serde_json::json!({"message": "Invalid request", "errors": {*field: [message]}}),
            ),
            ShapeError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, serde_json::json!({ "message": m })),
            ShapeError::Forbidden(m) => (StatusCode::FORBIDDEN, serde_json::json!({ "message": m })),
            ShapeError::MustRefetch { .. } => {
                (StatusCode::CONFLICT, serde_json::json!([{"headers": {"control": "must-refetch"}}]))
            }
            ShapeError::NotFound(m) => (StatusCode::NOT_FOUND, serde_json::json!({ "message": m })),
            ShapeError::MethodNotAllowed(m) => (StatusCode::METHOD_NOT_ALLOWED, serde_json::json!({ "message": m })),
            ShapeError::Unavailable(m) => {
                tracing::warn!("shape request unavailable: {m}");
                (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "message": m, "code": "unavailable" }))
            }
            ShapeError::Internal(m) => {
                tracing::error!("shape request failed: {m}");
                (StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({"error": "Internal server error"}))
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
            ShapeError::Unavailable(_) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                h.insert("electric-internal-known-error", HeaderValue::from_static("true"));
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
