//! An agency's clients: the people proposals are addressed to.

use folio_domain::{AgencyId, ClientId};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{ApiError, is_foreign_key_violation};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClientRow {
    pub id: Uuid,
    pub agency_id: Uuid,
    pub name: String,
    pub email: String,
    pub company: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

pub struct ClientFields {
    pub name: String,
    pub email: String,
    pub company: String,
}

#[derive(Default)]
pub struct ClientChanges {
    pub name: Option<String>,
    pub email: Option<String>,
    pub company: Option<String>,
}

pub async fn create(
    pool: &PgPool,
    agency: AgencyId,
    fields: ClientFields,
) -> Result<super::Committed<ClientRow>, ApiError> {
    let mut tx = super::begin(pool).await?;
    let row = sqlx::query_as(
        "INSERT INTO clients (id, agency_id, name, email, company) VALUES ($1, $2, $3, $4, $5) RETURNING *",
    )
    .bind(ClientId::new().as_uuid())
    .bind(agency.as_uuid())
    .bind(fields.name)
    .bind(fields.email)
    .bind(fields.company)
    .fetch_one(&mut *tx)
    .await?;
    super::commit(tx, row).await
}

pub async fn get(pool: &PgPool, agency: AgencyId, id: ClientId) -> Result<ClientRow, ApiError> {
    sqlx::query_as("SELECT * FROM clients WHERE id = $1 AND agency_id = $2")
        .bind(id.as_uuid())
        .bind(agency.as_uuid())
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| ApiError::not_found("client", id))
}

pub async fn list(
    pool: &PgPool,
    agency: AgencyId,
    after: Option<Uuid>,
    limit: i64,
) -> Result<(Vec<ClientRow>, Option<Uuid>), ApiError> {
    let rows: Vec<ClientRow> = sqlx::query_as(
        "SELECT * FROM clients WHERE agency_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
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
    id: ClientId,
    changes: ClientChanges,
) -> Result<super::Committed<ClientRow>, ApiError> {
    let mut tx = super::begin(pool).await?;
    let row = sqlx::query_as(
        "UPDATE clients SET name = coalesce($3, name), email = coalesce($4, email), company = coalesce($5, company), \
         updated_at = now() WHERE id = $1 AND agency_id = $2 RETURNING *",
    )
    .bind(id.as_uuid())
    .bind(agency.as_uuid())
    .bind(changes.name)
    .bind(changes.email)
    .bind(changes.company)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found("client", id))?;
    super::commit(tx, row).await
}

pub async fn delete(pool: &PgPool, agency: AgencyId, id: ClientId) -> Result<super::Committed<()>, ApiError> {
    let mut tx = super::begin(pool).await?;
    let result = sqlx::query("DELETE FROM clients WHERE id = $1 AND agency_id = $2")
        .bind(id.as_uuid())
        .bind(agency.as_uuid())
        .execute(&mut *tx)
        .await;
    match result {
        Ok(r) if r.rows_affected() == 0 => Err(ApiError::not_found("client", id)),
        Ok(_) => super::commit(tx, ()).await,
        Err(e) if is_foreign_key_violation(&e) => Err(ApiError::FailedPrecondition(format!(
            "client {id} still has proposals; archive or reassign them first"
        ))),
        Err(e) => Err(e.into()),
    }
}
