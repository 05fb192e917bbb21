//! Every way a Durable Streams request can fail, mapped once to an HTTP response.
//!
//! Bodies are Folio's JSON error shape `{"error": {"code", "message"}}` with the status and code
//! from the shared `ErrorCode` table; the subscription APIs' own codes and the protocol headers
//! some conflicts carry are added here.

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use folio_domain::ErrorCode;
use folio_runtime::error_chain;

use super::{headers as h, offset::Offset};

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{0}")]
    BadRequest(String),
    #[error("stream not found")]
    NotFound,
    #[error("stream was deleted")]
    Gone,
    #[error("{0}")]
    Conflict(String),
    #[error("stream is closed")]
    Closed { tail: Offset },
    #[error("producer epoch {received} is older than the current epoch {current}")]
    StaleEpoch { current: u64, received: u64 },
    #[error("producer sequence gap: expected {expected}, received {received}")]
    SequenceGap { expected: u64, received: u64 },
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// A machine-readable error the subscription APIs define (`FENCED`, `ALREADY_CLAIMED`, …).
    #[error("{message}")]
    Coded { status: StatusCode, code: &'static str, message: String, extra: Option<serde_json::Value> },
    #[error("storage unavailable")]
    Storage(#[from] StorageError),
}

/// A failure talking to JetStream; the cause chain is logged, never sent to the client.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action}")]
pub struct StorageError {
    pub action: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl StorageError {
    pub fn new(action: &'static str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StorageError { action, source: source.into() }
    }
}

pub type Result<T, E = StreamError> = std::result::Result<T, E>;

impl StreamError {
    pub fn bad(msg: impl Into<String>) -> Self {
        StreamError::BadRequest(msg.into())
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        StreamError::Conflict(msg.into())
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        let table = |c: ErrorCode| {
            (StatusCode::from_u16(c.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), c.as_str())
        };
        match self {
            StreamError::BadRequest(_) => table(ErrorCode::InvalidArgument),
            StreamError::NotFound => table(ErrorCode::NotFound),
            StreamError::Gone => table(ErrorCode::Gone),
            StreamError::Conflict(_) | StreamError::Closed { .. } | StreamError::SequenceGap { .. } => {
                table(ErrorCode::Conflict)
            }
            StreamError::StaleEpoch { .. } | StreamError::Forbidden(_) => table(ErrorCode::PermissionDenied),
            StreamError::Unauthenticated(_) => table(ErrorCode::Unauthenticated),
            StreamError::TooLarge { .. } => table(ErrorCode::PayloadTooLarge),
            StreamError::MethodNotAllowed => table(ErrorCode::MethodNotAllowed),
            StreamError::Coded { status, code, .. } => (*status, code),
            StreamError::Storage(_) => table(ErrorCode::Unavailable),
        }
    }
}

impl IntoResponse for StreamError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut headers = HeaderMap::new();
        match &self {
            StreamError::Closed { tail } => {
                headers.insert(h::STREAM_CLOSED, HeaderValue::from_static("true"));
                headers.insert(h::STREAM_NEXT_OFFSET, h::value(tail));
            }
            StreamError::StaleEpoch { current, .. } => {
                headers.insert(h::PRODUCER_EPOCH, h::value(current));
            }
            StreamError::SequenceGap { expected, received } => {
                headers.insert(h::PRODUCER_EXPECTED_SEQ, h::value(expected));
                headers.insert(h::PRODUCER_RECEIVED_SEQ, h::value(received));
            }
            StreamError::Storage(e) => tracing::error!(error = %error_chain(e), "request failed"),
            _ => {}
        }
        let message = match &self {
            StreamError::Storage(_) => "storage unavailable, retry later".to_owned(),
            other => other.to_string(),
        };
        let mut error = serde_json::json!({ "code": code, "message": message });
        if let StreamError::Coded { extra: Some(serde_json::Value::Object(extra)), .. } = &self {
            for (k, v) in extra {
                error[k] = v.clone();
            }
        }
        (status, headers, axum::Json(serde_json::json!({ "error": error }))).into_response()
    }
}
