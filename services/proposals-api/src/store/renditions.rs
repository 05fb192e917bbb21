//! PDF renditions. A request writes the rendition row and the render job in one transaction
//! (the job travels through the WAL to `folio.jobs.pdf`), keyed by proposal, version and
//! template hash, so asking twice for the same document renders it once.

use std::time::Duration;

use folio_domain::{AgencyId, ProposalId, UserId};
use folio_proto::jobs::v1::RenderPdfJob;
use prost::Message as _;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;
use crate::store::templates::body_sha256;

/// `FOLIO_PDF_REQUEUE_AFTER`'s default: above pdf-render's retry budget with its defaults (five
/// deliveries of up to the 2 min render timeout, with backoff: about 12.5 min).
pub const DEFAULT_REQUEUE_AFTER: Duration = Duration::from_secs(15 * 60);

/// Identifies the built-in default template in rendition keys; pdf-render ships its source.
pub const BUILTIN_TEMPLATE_KEY: &str = "builtin:default/v1";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RenditionRow {
    pub id: Uuid,
    pub proposal_id: Uuid,
    pub proposal_version: i64,
    pub status: String,
    pub failure_reason: Option<String>,
    pub pdf_sha256: Option<String>,
    pub size_bytes: Option<i64>,
    pub page_count: Option<i32>,
    pub requested_at: time::OffsetDateTime,
    pub rendered_at: Option<time::OffsetDateTime>,
}

pub async fn get(pool: &PgPool, agency: AgencyId, id: Uuid) -> Result<RenditionRow, ApiError> {
    sqlx::query_as(
        "SELECT id, proposal_id, proposal_version, status, failure_reason, pdf_sha256, size_bytes, page_count, \
         requested_at, rendered_at FROM pdf_renditions WHERE id = $1 AND agency_id = $2",
    )
    .bind(id)
    .bind(agency.as_uuid())
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ApiError::not_found("rendition", id))
}

pub struct RenditionRequest {
    pub rendition_id: Uuid,
    pub proposal_version: i64,
    pub status: String,
}

/// Writes the rendition row and its render job in one transaction, or returns the existing
/// rendition for this proposal version and template. A job is queued again for a rendition that
/// `failed`, and for one still `queued` or `rendering` whose job was queued more than
/// `requeue_after` ago (the job was lost or gave up without recording it: pdf-render would have
/// finished it well before). Concurrent requests queue at most one job between them.
pub async fn request(
    pool: &PgPool,
    agency: AgencyId,
    requested_by: UserId,
    proposal: ProposalId,
    traceparent: String,
    requeue_after: Duration,
) -> Result<super::Committed<RenditionRequest>, ApiError> {
    let mut tx = super::begin(pool).await?;
    // FOR SHARE: the version cannot move between reading it and writing the job.
    let found: Option<(i64, Option<Uuid>, Option<String>)> = sqlx::query_as(
        "SELECT p.version, p.template_id, t.body_sha256 FROM proposals p LEFT JOIN templates t ON t.id = p.template_id \
         WHERE p.id = $1 AND p.agency_id = $2 FOR SHARE OF p",
    )
    .bind(proposal.as_uuid())
    .bind(agency.as_uuid())
    .fetch_optional(&mut *tx)
    .await?;
    let (version, template_id, template_sha) = found.ok_or_else(|| ApiError::not_found("proposal", proposal))?;
    let template_sha = template_sha.unwrap_or_else(|| body_sha256(BUILTIN_TEMPLATE_KEY));

    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO pdf_renditions (id, agency_id, proposal_id, proposal_version, template_id, template_sha256, requested_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (proposal_id, proposal_version, template_sha256) DO NOTHING \
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(agency.as_uuid())
    .bind(proposal.as_uuid())
    .bind(version)
    .bind(template_id)
    .bind(&template_sha)
    .bind(requested_by.as_uuid())
    .fetch_optional(&mut *tx)
    .await?;

    let (rendition_id, status, queue_job) = match inserted {
        Some(id) => (id, "queued".to_owned(), true),
        None => {
            // FOR UPDATE: concurrent requests for the same rendition take turns here, and each
            // sees the row as the one before left it (READ COMMITTED re-reads a row it waited
            // for), so a job is queued again by one of them only.
            let (id, status, overdue): (Uuid, String, bool) = sqlx::query_as(
                "SELECT id, status, requested_at < now() - make_interval(secs => $4) FROM pdf_renditions \
                 WHERE proposal_id = $1 AND proposal_version = $2 AND template_sha256 = $3 FOR UPDATE",
            )
            .bind(proposal.as_uuid())
            .bind(version)
            .bind(&template_sha)
            .bind(requeue_after.as_secs_f64())
            .fetch_one(&mut *tx)
            .await?;
            let requeue = match status.as_str() {
                // A failed render is retried on request: the template may have been fixed.
                "failed" => true,
                // Its job is long gone. Unless a pdf-render worker holds the rendition right now
                // (its session lock, see pdf-render's RenditionLock): then it is alive and will
                // record the outcome itself.
                "queued" | "rendering" if overdue => {
                    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
                        .bind(id.to_string())
                        .fetch_one(&mut *tx)
                        .await?;
                    if !free {
                        tracing::info!(rendition_id = %id, %status, "overdue rendition is being rendered; not queued again");
                    }
                    free
                }
                _ => false,
            };
            if requeue {
                sqlx::query(
                    "UPDATE pdf_renditions SET status = 'queued', failure_reason = NULL, requested_at = now() \
                     WHERE id = $1",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                if status != "failed" {
                    tracing::warn!(rendition_id = %id, %status, ?requeue_after, "rendition overdue; its job is queued again");
                    metrics::counter!("folio_api_pdf_requeued_total").increment(1);
                }
                (id, "queued".to_owned(), true)
            } else {
                (id, status, false)
            }
        }
    };
    if queue_job {
        let now = std::time::SystemTime::now();
        let job = RenderPdfJob {
            rendition_id: rendition_id.to_string(),
            agency_id: agency.to_string(),
            proposal_id: proposal.to_string(),
            proposal_version: version,
            template_id: template_id.map(|t| t.to_string()).unwrap_or_default(),
            requested_by: requested_by.to_string(),
            requested_at: Some(prost_types::Timestamp::from(now)),
            traceparent,
            signed_response_id: String::new(),
        };
        folio_db::emit_job(&mut tx, "pdf", &job.encode_to_vec()).await?;
    }
    super::commit(tx, RenditionRequest { rendition_id, proposal_version: version, status }).await
}
