//! Every way a Yjs request can fail, mapped once to a response: the protocol's JSON envelope
//! `{"error":{"code","message"}}` with its codes (YJS-PROTOCOL §10) for what this layer
//! decides, the Durable Streams answer (status, headers, body) for what the streams decided.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use folio_durable_streams::{StorageError, StreamError};

use super::{frames::FrameError, path::YjsPathError};

#[derive(Debug, thiserror::Error)]
pub enum YjsError {
    #[error(transparent)]
    Path(#[from] YjsPathError),
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error(transparent)]
    Frames(#[from] FrameError),
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("Document not found")]
    DocumentNotFound,
    #[error("Snapshot not found")]
    SnapshotNotFound,
    #[error("Awareness stream not found")]
    AwarenessNotFound,
    /// A proposal document whose proposal is not in the caller's agency.
    #[error("Proposal not found")]
    ProposalNotFound,
    /// Only a draft's document accepts updates.
    #[error("{0}")]
    ReadOnly(String),
    /// Proposal documents need the database (and the API) this edge was not given, or the
    /// database failed (logged).
    #[error("proposal documents are unavailable")]
    ProposalsUnavailable(#[source] Option<sqlx::Error>),
    /// The streams layer's own refusal (auth, quotas, offsets, conflicts): passed on as is.
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl IntoResponse for YjsError {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            YjsError::Stream(e) => return e.into_response(),
            // Logged (with its cause chain) by the streams layer's mapping.
            YjsError::Storage(e) => return StreamError::Storage(e).into_response(),
            YjsError::Path(_) | YjsError::InvalidRequest(_) | YjsError::Frames(FrameError::Malformed) => {
                (StatusCode::BAD_REQUEST, "INVALID_REQUEST")
            }
            YjsError::Frames(FrameError::TooLarge { .. }) => (StatusCode::PAYLOAD_TOO_LARGE, "INVALID_REQUEST"),
            YjsError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "INVALID_REQUEST"),
            YjsError::DocumentNotFound => (StatusCode::NOT_FOUND, "DOCUMENT_NOT_FOUND"),
            YjsError::SnapshotNotFound => (StatusCode::NOT_FOUND, "SNAPSHOT_NOT_FOUND"),
            YjsError::AwarenessNotFound => (StatusCode::NOT_FOUND, "STREAM_NOT_FOUND"),
            YjsError::ProposalNotFound => (StatusCode::NOT_FOUND, "PROPOSAL_NOT_FOUND"),
            // Not 403 or 409: the provider's producer retries a 403 at once with a new epoch
            // and waits out a 409 as a sequence gap; any other 4xx reaches the application
            // as an error, which is what a read-only document is.
            YjsError::ReadOnly(_) => (StatusCode::LOCKED, "DOCUMENT_READ_ONLY"),
            YjsError::ProposalsUnavailable(ref e) => {
                if let Some(e) = e {
                    tracing::error!(error = %folio_runtime::error_chain(e), "proposal documents: database error");
                }
                (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
            }
        };
        let body = serde_json::json!({ "error": { "code": code, "message": self.to_string() } });
        let mut res = (status, axum::Json(body)).into_response();
        res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }
}
