//! An agency's proposal templates: typst sources, identified in renditions by their hash.

use folio_domain::{AgencyId, TemplateId};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{ApiError, is_foreign_key_violation};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TemplateRow {
    pub id: Uuid,
    pub agency_id: Uuid,
    pub name: String,
    pub body: String,
    pub body_sha256: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

pub fn body_sha256(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn create(
    pool: &PgPool,
    agency: AgencyId,
    name: String,
    body: String,
) -> Result<super::Committed<TemplateRow>, ApiError> {
    let mut tx = super::begin(pool).await?;
    let row = sqlx::query_as(
        "INSERT INTO templates (id, agency_id, name, body, body_sha256) VALUES ($1, $2, $3, $4, $5) RETURNING *",
    )
    .bind(TemplateId::new().as_uuid())
    .bind(agency.as_uuid())
    .bind(name)
    .bind(&body)
    .bind(body_sha256(&body))
    .fetch_one(&mut *tx)
    .await?;
    super::commit(tx, row).await
}

pub async fn get(pool: &PgPool, agency: AgencyId, id: TemplateId) -> Result<TemplateRow, ApiError> {
    sqlx::query_as("SELECT * FROM templates WHERE id = $1 AND agency_id = $2")
        .bind(id.as_uuid())
        .bind(agency.as_uuid())
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| ApiError::not_found("template", id))
}

pub async fn list(
    pool: &PgPool,
    agency: AgencyId,
    after: Option<Uuid>,
    limit: i64,
) -> Result<(Vec<TemplateRow>, Option<Uuid>), ApiError> {
    let rows: Vec<TemplateRow> = sqlx::query_as(
        "SELECT * FROM templates WHERE agency_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(agency.as_uuid())
    .bind(after)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(super::split_page(rows, limit, |r| r.id))
}

pub async fn update(
    pool: &PgPool,
    agency: AgencyId,
    id: TemplateId,
    name: Option<String>,
    body: Option<String>,
) -> Result<super::Committed<TemplateRow>, ApiError> {
    let sha = body.as_deref().map(body_sha256);
    let mut tx = super::begin(pool).await?;
    let row = sqlx::query_as(
        "UPDATE templates SET name = coalesce($3, name), body = coalesce($4, body), \
         body_sha256 = coalesce($5, body_sha256), updated_at = now() WHERE id = $1 AND agency_id = $2 RETURNING *",
    )
    .bind(id.as_uuid())
    .bind(agency.as_uuid())
    .bind(name)
    .bind(body)
    .bind(sha)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found("template", id))?;
    super::commit(tx, row).await
}

pub async fn delete(pool: &PgPool, agency: AgencyId, id: TemplateId) -> Result<super::Committed<()>, ApiError> {
    let mut tx = super::begin(pool).await?;
    let result = sqlx::query("DELETE FROM templates WHERE id = $1 AND agency_id = $2")
        .bind(id.as_uuid())
        .bind(agency.as_uuid())
        .execute(&mut *tx)
        .await;
    match result {
        Ok(r) if r.rows_affected() == 0 => Err(ApiError::not_found("template", id)),
        Ok(_) => super::commit(tx, ()).await,
        Err(e) if is_foreign_key_violation(&e) => {
            Err(ApiError::FailedPrecondition(format!("template {id} is still used by proposals or renditions")))
        }
        Err(e) => Err(e.into()),
    }
}
