//! Serving rendered PDFs: gRPC server streaming and a plain HTTP GET for browsers, both read
//! from the JetStream Object Store bucket pdf-render writes (objects named by SHA-256).

use async_nats::jetstream::{self, object_store::ObjectStore};
use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use tokio::sync::OnceCell;

use crate::{AppState, Authenticator, error::ApiError, store::renditions};

/// Reads from the PDF bucket; opened on first use because pdf-render creates it.
pub struct PdfStore {
    js: jetstream::Context,
    bucket: String,
    store: OnceCell<ObjectStore>,
}

impl PdfStore {
    pub fn new(nats: async_nats::Client, bucket: String) -> Self {
        Self { js: jetstream::new(nats), bucket, store: OnceCell::new() }
    }

    pub async fn open(&self, sha256: &str) -> Result<jetstream::object_store::Object, ApiError> {
        let store = self
            .store
            .get_or_try_init(|| async { self.js.get_object_store(&self.bucket).await })
            .await
            .map_err(|e| ApiError::Unavailable(format!("the PDF store is not reachable: {e}")))?;
        store.get(sha256).await.map_err(|e| ApiError::Unavailable(format!("failed to read PDF {sha256}: {e}")))
    }
}

/// A ready rendition and the name of its PDF, or why there is none.
pub async fn ready_rendition(
    state: &AppState,
    agency: folio_domain::AgencyId,
    id: uuid::Uuid,
) -> Result<(renditions::RenditionRow, String), ApiError> {
    let rendition = renditions::get(&state.pool, agency, id).await?;
    match (rendition.status.as_str(), rendition.pdf_sha256.clone()) {
        ("ready", Some(sha)) => Ok((rendition, sha)),
        ("failed", _) => Err(ApiError::FailedPrecondition(format!(
            "rendition {id} failed: {}",
            rendition.failure_reason.as_deref().unwrap_or("no reason recorded")
        ))),
        (status, _) => Err(ApiError::FailedPrecondition(format!("rendition {id} is {status}, not ready yet"))),
    }
}

pub fn pdf_store(state: &AppState) -> Result<&PdfStore, ApiError> {
    state
        .pdfs
        .as_deref()
        .ok_or_else(|| ApiError::Unavailable("PDF downloads need FOLIO_NATS_URL to be configured".into()))
}

/// `GET /v1/renditions/{id}/pdf` with `Authorization: Bearer <token>`.
pub async fn download(
    State((state, auth)): State<(AppState, Authenticator)>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = auth.verify_header(headers.get(header::AUTHORIZATION).and_then(|h| h.to_str().ok()))?;
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| ApiError::InvalidArgument(vec![tonic_types::FieldViolation::new("id", "is not a UUID")]))?;
    let (rendition, sha) = ready_rendition(&state, caller.agency_id, id).await?;
    let etag = format!("\"{sha}\"");
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    // The bytes of one rendition never change, but who may read them is the token's: a cache
    // keeps them per Authorization, never across callers (issue 13, finding 12).
    let common = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, "private, max-age=31536000, immutable".to_owned()),
        (header::VARY, "authorization".to_owned()),
    ];
    if cached {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    let object = pdf_store(&state)?.open(&sha).await?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(object));
    let filename =
        format!("proposal-{}-v{}.pdf", &rendition.proposal_id.simple().to_string()[..8], rendition.proposal_version);
    Ok((
        StatusCode::OK,
        common,
        [
            (header::CONTENT_TYPE, "application/pdf".to_owned()),
            (header::CONTENT_LENGTH, rendition.size_bytes.unwrap_or_default().to_string()),
            (header::CONTENT_DISPOSITION, format!("inline; filename=\"{filename}\"")),
        ],
        body,
    )
        .into_response())
}
