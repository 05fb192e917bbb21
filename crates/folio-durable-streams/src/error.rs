//! Every way a Durable Streams request can fail, mapped once to an HTTP response.
//!
//! Bodies are Folio's JSON error shape `{"error": {"code", "message"}}` with the status and code
//! from the shared `ErrorCode` table; the subscription APIs' own codes, the protocol headers
//! some conflicts carry and 415 (which the table does not have) are added here.

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use folio_domain::ErrorCode;
use folio_runtime::error_chain;

use super::{
    headers as h,
    json::JsonBodyError,
    offset::{Offset, OffsetParseError},
    path::PathError,
};

/// A cause kept for the log.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{0}")]
    BadRequest(String),
    /// A JSON body that is not JSON or carries no value.
    #[error(transparent)]
    MalformedJson(#[from] JsonBodyError),
    #[error(transparent)]
    MalformedOffset(#[from] OffsetParseError),
    /// A path (or a stream named in a header or body) that is not in its canonical spelling.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A content type outside the allow-list (media.rs).
    #[error("content type {0:?} is not accepted: streams hold JSON, NDJSON, text, CSV or bytes")]
    UnsupportedMediaType(String),
    /// The client's body could not be read (it went away, or sent a broken chunk).
    #[error("failed to read the request body")]
    BodyRead(#[source] axum::Error),
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
    /// The cause is logged, never sent: the caller only learns that a valid token is needed.
    #[error("a valid bearer token is required")]
    Unauthenticated(#[from] folio_auth::AuthError),
    /// The subscription APIs' own errors, with their machine-readable codes.
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    #[error("storage unavailable")]
    Storage(#[from] StorageError),
    /// Over an append rate (quota.rs): 429 with `Retry-After` and the RateLimit fields.
    #[error("append rate exceeded")]
    RateLimited(Box<folio_quota::Decision>),
    /// Over a counted quota (streams, stored bytes), or NATS could not count it.
    #[error(transparent)]
    Quota(#[from] folio_quota::QuotaError),
}

/// An error of the reserved subscription APIs (`/v1/stream/__ds/…`): each has the protocol's
/// machine-readable code (`FENCED`, `ALREADY_CLAIMED`, …) beside its class in the `ErrorCode`
/// table.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error("invalid JSON body")]
    InvalidJson(#[source] serde_json::Error),
    #[error(transparent)]
    WebhookUrlRejected(#[from] crate::subscriptions::WebhookUrlRejected),
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The wake named is no longer the current one (a newer generation fenced it).
    #[error("wake is no longer current")]
    Fenced,
    #[error("another worker holds the lease")]
    AlreadyClaimed { holder: String },
    #[error("{0}")]
    Exists(&'static str),
}

impl SubscriptionError {
    fn code(&self) -> ErrorCode {
        match self {
            SubscriptionError::InvalidRequest(_)
            | SubscriptionError::InvalidJson(_)
            | SubscriptionError::WebhookUrlRejected(_) => ErrorCode::InvalidArgument,
            SubscriptionError::Unauthorized(_) => ErrorCode::Unauthenticated,
            SubscriptionError::Fenced | SubscriptionError::AlreadyClaimed { .. } => ErrorCode::Conflict,
            SubscriptionError::Exists(_) => ErrorCode::AlreadyExists,
        }
    }

    /// The protocol's code for the body's `code` field.
    fn protocol_code(&self) -> &'static str {
        match self {
            SubscriptionError::InvalidRequest(_) | SubscriptionError::InvalidJson(_) => "INVALID_REQUEST",
            SubscriptionError::WebhookUrlRejected(_) => "WEBHOOK_URL_REJECTED",
            SubscriptionError::Unauthorized(_) => "UNAUTHORIZED",
            SubscriptionError::Fenced => "FENCED",
            SubscriptionError::AlreadyClaimed { .. } => "ALREADY_CLAIMED",
            SubscriptionError::Exists(_) => "SUBSCRIPTION_EXISTS",
        }
    }

    /// Fields the body's `error` object carries beside `code` and `message`.
    fn extra(&self) -> Option<(&'static str, serde_json::Value)> {
        match self {
            SubscriptionError::AlreadyClaimed { holder } => Some(("current_holder", holder.as_str().into())),
            _ => None,
        }
    }
}

/// A failure talking to JetStream; the cause chain is logged, never sent to the client.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action}")]
pub struct StorageError {
    pub action: &'static str,
    #[source]
    pub source: BoxError,
}

impl StorageError {
    pub fn new(action: &'static str, source: impl Into<BoxError>) -> Self {
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

    /// The error's class in Folio's one table of codes.
    pub fn code(&self) -> ErrorCode {
        match self {
            StreamError::BadRequest(_)
            | StreamError::MalformedJson(_)
            | StreamError::MalformedOffset(_)
            | StreamError::Path(_)
            | StreamError::UnsupportedMediaType(_)
            | StreamError::BodyRead(_) => ErrorCode::InvalidArgument,
            StreamError::NotFound => ErrorCode::NotFound,
            StreamError::Gone => ErrorCode::Gone,
            StreamError::Conflict(_) | StreamError::Closed { .. } | StreamError::SequenceGap { .. } => {
                ErrorCode::Conflict
            }
            StreamError::StaleEpoch { .. } | StreamError::Forbidden(_) => ErrorCode::PermissionDenied,
            StreamError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            StreamError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            StreamError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            StreamError::Subscription(e) => e.code(),
            StreamError::Storage(_) => ErrorCode::Unavailable,
            StreamError::RateLimited(d) => d.code(),
            StreamError::Quota(e) => e.code(),
        }
    }

    /// The HTTP status: the table's, except 415, which the table has no code for.
    pub fn status(&self) -> StatusCode {
        match self {
            StreamError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            other => StatusCode::from_u16(other.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    /// The body's `code`: the subscription APIs' own, Folio's otherwise.
    fn body_code(&self) -> &'static str {
        match self {
            StreamError::Subscription(e) => e.protocol_code(),
            StreamError::UnsupportedMediaType(_) => "unsupported_media_type",
            other => other.code().as_str(),
        }
    }

    /// The body's `message`: what went wrong and, for a body the client sent, why.
    fn message(&self) -> String {
        match self {
            StreamError::Storage(_) => "storage unavailable, retry later".to_owned(),
            StreamError::BodyRead(e) => format!("{self}: {e}"),
            StreamError::Subscription(SubscriptionError::InvalidJson(e)) => format!("{self}: {e}"),
            other => other.to_string(),
        }
    }
}

/// folio-quota's answer (status, `Retry-After`, RateLimit fields) with its body inside this
/// API's `{"error": …}`.
fn quota_response(answer: axum::http::Response<String>) -> Response {
    let (parts, body) = answer.into_parts();
    let error = serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default();
    let mut res = (parts.status, axum::Json(serde_json::json!({ "error": error }))).into_response();
    res.headers_mut().extend(parts.headers);
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

impl IntoResponse for StreamError {
    fn into_response(self) -> Response {
        match &self {
            StreamError::RateLimited(decision) => return quota_response(decision.to_http_response()),
            StreamError::Quota(e) => {
                if matches!(e, folio_quota::QuotaError::Unavailable { .. }) {
                    tracing::warn!(error = %error_chain(e), "quota cannot be checked");
                }
                return quota_response(e.to_http_response());
            }
            _ => {}
        }
        let status = self.status();
        let mut headers = HeaderMap::new();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
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
            StreamError::Unauthenticated(e) => tracing::debug!(error = %e, "unauthenticated request"),
            _ => {}
        }
        let mut error = serde_json::json!({ "code": self.body_code(), "message": self.message() });
        if let StreamError::Subscription(e) = &self
            && let Some((k, v)) = e.extra()
        {
            error[k] = v;
        }
        (status, headers, axum::Json(serde_json::json!({ "error": error }))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;

    use super::*;

    /// The one answer an unauthenticated caller gets, whatever was wrong with its token.
    const UNAUTHENTICATED: &str = "a valid bearer token is required";

    async fn answer(e: impl Into<StreamError>) -> (StatusCode, serde_json::Value) {
        let res = e.into().into_response();
        let status = res.status();
        let body = to_bytes(res.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn subscription_errors_keep_their_statuses_and_bodies() {
        let (status, body) = answer(SubscriptionError::Fenced).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body, serde_json::json!({"error": {"code": "FENCED", "message": "wake is no longer current"}}));
        let (status, body) = answer(SubscriptionError::AlreadyClaimed { holder: "w1".into() }).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["code"], "ALREADY_CLAIMED");
        assert_eq!(body["error"]["current_holder"], "w1");
        let (status, body) = answer(SubscriptionError::Exists("subscription was created concurrently")).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["code"], "SUBSCRIPTION_EXISTS");
        let (status, body) = answer(SubscriptionError::Unauthorized("a Bearer token is required")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "UNAUTHORIZED");
        let json = serde_json::from_slice::<serde_json::Value>(b"{").unwrap_err();
        let expected = format!("invalid JSON body: {json}");
        let e = SubscriptionError::InvalidJson(json);
        assert!(std::error::Error::source(&e).is_some());
        let (status, body) = answer(e).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "INVALID_REQUEST");
        assert_eq!(body["error"]["message"], expected);
    }

    #[tokio::test]
    async fn stream_errors_take_their_status_from_the_table() {
        let (status, body) = answer(StreamError::Gone).await;
        assert_eq!(status, StatusCode::GONE);
        assert_eq!(body["error"]["code"], "gone");
        for cause in [
            folio_auth::AuthError::Missing,
            folio_auth::AuthError::NotBearer,
            folio_auth::AuthError::Invalid("bad agency_id claim".into()),
        ] {
            let res = StreamError::from(cause).into_response();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(res.headers().get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
            let body: serde_json::Value =
                serde_json::from_slice(&to_bytes(res.into_body(), usize::MAX).await.unwrap()).unwrap();
            assert_eq!(body["error"], serde_json::json!({"code": "unauthenticated", "message": UNAUTHENTICATED}));
        }
        let (status, body) = answer(StreamError::UnsupportedMediaType("text/html".into())).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(body["error"]["code"], "unsupported_media_type");
        let (status, body) = answer(StorageError::new("read", std::io::Error::other("down"))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["message"], "storage unavailable, retry later");
    }
}
