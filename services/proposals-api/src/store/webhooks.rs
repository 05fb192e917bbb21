//! An agency's webhook endpoints and what became of their deliveries, for its admins.
//!
//! The API writes endpoints and (for tests, replays and recoveries) makes deliveries due in
//! `notification_deliveries`; the notifier, which polls that table, does the sending. Secrets
//! are read back only by the statements that create or rotate them.

use std::time::Duration;

use folio_domain::AgencyId;
use folio_webhook::{events, sign::Secret};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::Committed;
use crate::error::ApiError;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndpointRow {
    pub id: Uuid,
    pub agency_id: Uuid,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub disabled_at: Option<OffsetDateTime>,
    pub failing_since: Option<OffsetDateTime>,
    pub previous_secret_expires_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// Never `secret` nor `previous_secret`.
const ENDPOINT: &str = "id, agency_id, url, description, event_types, disabled_at, failing_since, \
                        previous_secret_expires_at, created_at, updated_at";

pub struct NewEndpoint {
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
}

#[derive(Default)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// A new endpoint and its secret (shown to the caller once).
pub async fn create(
    pool: &PgPool,
    agency: AgencyId,
    new: NewEndpoint,
) -> Result<Committed<(EndpointRow, String)>, ApiError> {
    let secret = Secret::generate();
    let mut tx = super::begin(pool).await?;
    let row: EndpointRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO webhook_endpoints (id, agency_id, url, description, event_types, secret) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {ENDPOINT}"
    )))
    .bind(Uuid::now_v7())
    .bind(agency.as_uuid())
    .bind(new.url)
    .bind(new.description)
    .bind(new.event_types)
    .bind(&secret)
    .fetch_one(&mut *tx)
    .await?;
    super::commit(tx, (row, secret)).await
}

pub async fn get(pool: &PgPool, agency: AgencyId, id: Uuid) -> Result<EndpointRow, ApiError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT} FROM webhook_endpoints WHERE id = $1 AND agency_id = $2"
    )))
    .bind(id)
    .bind(agency.as_uuid())
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ApiError::not_found("webhook endpoint", id))
}

pub async fn list(
    pool: &PgPool,
    agency: AgencyId,
    after: Option<Uuid>,
    limit: i64,
) -> Result<(Vec<EndpointRow>, Option<Uuid>), ApiError> {
    let rows: Vec<EndpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT} FROM webhook_endpoints WHERE agency_id = $1 AND ($2::uuid IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3"
    )))
    .bind(agency.as_uuid())
    .bind(after)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(super::split_page(rows, limit, |r| r.id))
}

/// Sets what `changes` holds. `enabled: Some(true)` clears the failure streak as well.
pub async fn update(
    pool: &PgPool,
    agency: AgencyId,
    id: Uuid,
    changes: EndpointChanges,
) -> Result<Committed<EndpointRow>, ApiError> {
    let mut tx = super::begin(pool).await?;
    let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE webhook_endpoints SET url = coalesce($3, url), description = coalesce($4, description), \
                event_types = coalesce($5, event_types), \
                disabled_at = CASE WHEN $6 IS NULL THEN disabled_at WHEN $6 THEN NULL ELSE coalesce(disabled_at, now()) END, \
                failing_since = CASE WHEN $6 THEN NULL ELSE failing_since END, \
                updated_at = now() \
          WHERE id = $1 AND agency_id = $2 RETURNING {ENDPOINT}"
    )))
    .bind(id)
    .bind(agency.as_uuid())
    .bind(changes.url)
    .bind(changes.description)
    .bind(changes.event_types)
    .bind(changes.enabled)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found("webhook endpoint", id))?;
    super::commit(tx, row).await
}

pub async fn delete(pool: &PgPool, agency: AgencyId, id: Uuid) -> Result<Committed<()>, ApiError> {
    let mut tx = super::begin(pool).await?;
    let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1 AND agency_id = $2")
        .bind(id)
        .bind(agency.as_uuid())
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("webhook endpoint", id));
    }
    super::commit(tx, ()).await
}

/// A new secret; the current one becomes the previous, signing too for `grace`. A rotation
/// during another's grace period ends that one: only the secret just replaced stays valid.
pub async fn rotate(
    pool: &PgPool,
    agency: AgencyId,
    id: Uuid,
    grace: Duration,
) -> Result<Committed<(EndpointRow, String)>, ApiError> {
    let secret = Secret::generate();
    let mut tx = super::begin(pool).await?;
    let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE webhook_endpoints SET previous_secret = secret, \
                previous_secret_expires_at = now() + make_interval(secs => $4), secret = $3, updated_at = now() \
          WHERE id = $1 AND agency_id = $2 RETURNING {ENDPOINT}"
    )))
    .bind(id)
    .bind(agency.as_uuid())
    .bind(&secret)
    .bind(grace.as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found("webhook endpoint", id))?;
    super::commit(tx, (row, secret)).await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub recipient: String,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub delivered_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
}

const DELIVERY: &str =
    "id, recipient, event_type, status, attempts, next_attempt_at, created_at, delivered_at, last_error";

/// Queues a `webhook.test` message to an enabled endpoint.
pub async fn send_test(pool: &PgPool, agency: AgencyId, endpoint: Uuid) -> Result<Committed<DeliveryRow>, ApiError> {
    let mut tx = super::begin(pool).await?;
    lock_enabled_endpoint(&mut tx, agency, endpoint).await?;
    let id = Uuid::now_v7();
    let data = events::TestEvent { endpoint_id: endpoint, message: "a test message from Folio".into() };
    let payload = events::Message::new(events::TEST_EVENT, OffsetDateTime::now_utc(), data).to_value();
    let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO notification_deliveries \
           (id, agency_id, event_id, channel, recipient, event_type, payload, status, next_attempt_at, traceparent) \
         VALUES ($1, $2, $3, 'webhook', $4, $5, $6, 'pending', now(), NULLIF($7, '')) RETURNING {DELIVERY}"
    )))
    .bind(id)
    .bind(agency.as_uuid())
    .bind(format!("test:{id}"))
    .bind(endpoint.to_string())
    .bind(events::TEST_EVENT)
    .bind(payload)
    // The notifier's attempt continues this call's trace, as it does a change event's.
    .bind(folio_bus::trace_context::current_traceparent())
    .fetch_one(&mut *tx)
    .await?;
    super::commit(tx, row).await
}

/// Holds the agency's endpoint against deletion and disabling for the transaction; refuses a
/// missing (or another agency's) endpoint and a disabled one.
async fn lock_enabled_endpoint(tx: &mut PgConnection, agency: AgencyId, endpoint: Uuid) -> Result<(), ApiError> {
    let disabled: Option<Option<OffsetDateTime>> =
        sqlx::query_scalar("SELECT disabled_at FROM webhook_endpoints WHERE id = $1 AND agency_id = $2 FOR SHARE")
            .bind(endpoint)
            .bind(agency.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
    match disabled {
        None => Err(ApiError::not_found("webhook endpoint", endpoint)),
        Some(Some(_)) => Err(disabled_endpoint(endpoint)),
        Some(None) => Ok(()),
    }
}

fn disabled_endpoint(endpoint: Uuid) -> ApiError {
    ApiError::FailedPrecondition(format!("webhook endpoint {endpoint} is disabled; enable it first"))
}

/// A webhook delivery of the agency.
pub async fn delivery(pool: &PgPool, agency: AgencyId, id: Uuid) -> Result<DeliveryRow, ApiError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY} FROM notification_deliveries WHERE id = $1 AND agency_id = $2 AND channel = 'webhook'"
    )))
    .bind(id)
    .bind(agency.as_uuid())
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ApiError::not_found("delivery", id))
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub id: i64,
    pub delivery_id: Uuid,
    pub event_type: String,
    pub attempted_at: OffsetDateTime,
    pub succeeded: bool,
    pub response_code: Option<i32>,
    pub latency_ms: Option<i32>,
    pub error: Option<String>,
    pub response_body: Option<String>,
    pub status: String,
    pub next_attempt_at: Option<OffsetDateTime>,
}

const ATTEMPT: &str = "a.id, a.delivery_id, d.event_type, a.attempted_at, a.succeeded, a.response_code, \
                       a.latency_ms, a.error, a.response_body, d.status, d.next_attempt_at";

/// A delivery's attempts, oldest first.
pub async fn delivery_attempts(pool: &PgPool, agency: AgencyId, id: Uuid) -> Result<Vec<AttemptRow>, ApiError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ATTEMPT} FROM delivery_attempts a JOIN notification_deliveries d ON d.id = a.delivery_id \
          WHERE d.id = $1 AND d.agency_id = $2 ORDER BY a.attempted_at, a.id"
    )))
    .bind(id)
    .bind(agency.as_uuid())
    .fetch_all(pool)
    .await?)
}

/// An endpoint's attempts, newest first, `limit` at a time after the attempt id `before`.
pub async fn endpoint_attempts(
    pool: &PgPool,
    agency: AgencyId,
    endpoint: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<AttemptRow>, Option<i64>), ApiError> {
    get(pool, agency, endpoint).await?;
    let mut rows: Vec<AttemptRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ATTEMPT} FROM delivery_attempts a JOIN notification_deliveries d ON d.id = a.delivery_id \
          WHERE d.channel = 'webhook' AND d.recipient = $1 AND d.agency_id = $2 AND ($3::bigint IS NULL OR a.id < $3) \
          ORDER BY a.id DESC LIMIT $4"
    )))
    .bind(endpoint.to_string())
    .bind(agency.as_uuid())
    .bind(before)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.id)
    } else {
        None
    };
    Ok((rows, next))
}

/// Makes every failed delivery of an enabled endpoint created since `since` due again, each
/// after the one created before it (the notifier claims a recovered delivery only once its
/// predecessor is delivered or failed), with a fresh retry schedule. Returns how many.
pub async fn recover(
    pool: &PgPool,
    agency: AgencyId,
    endpoint: Uuid,
    since: OffsetDateTime,
) -> Result<Committed<i64>, ApiError> {
    let mut tx = super::begin(pool).await?;
    lock_enabled_endpoint(&mut tx, agency, endpoint).await?;
    let recovered = sqlx::query(
        "WITH failed AS ( \
           SELECT id, lag(id) OVER (ORDER BY created_at, id) AS prev FROM notification_deliveries \
            WHERE channel = 'webhook' AND recipient = $1 AND agency_id = $2 AND status = 'failed' AND created_at >= $3) \
         UPDATE notification_deliveries d \
            SET status = 'pending', next_attempt_at = now(), retry_step = 0, after_delivery = failed.prev \
           FROM failed WHERE d.id = failed.id AND d.status = 'failed'",
    )
    .bind(endpoint.to_string())
    .bind(agency.as_uuid())
    .bind(since)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    super::commit(tx, recovered as i64).await
}

/// Makes one delivered or failed delivery due again, with a fresh retry schedule.
pub async fn replay(pool: &PgPool, agency: AgencyId, id: Uuid) -> Result<Committed<DeliveryRow>, ApiError> {
    let mut tx = super::begin(pool).await?;
    // (status, whether the endpoint exists, whether it is disabled)
    let found: Option<(String, bool, bool)> = sqlx::query_as(
        "SELECT d.status, e.id IS NOT NULL, e.disabled_at IS NOT NULL \
           FROM notification_deliveries d \
           LEFT JOIN webhook_endpoints e ON e.id::text = d.recipient AND e.agency_id = d.agency_id \
          WHERE d.id = $1 AND d.agency_id = $2 AND d.channel = 'webhook' FOR UPDATE OF d",
    )
    .bind(id)
    .bind(agency.as_uuid())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((status, exists, disabled)) = found else { return Err(ApiError::not_found("delivery", id)) };
    if !exists {
        return Err(ApiError::FailedPrecondition(format!("the endpoint of delivery {id} was deleted")));
    }
    if disabled {
        return Err(ApiError::FailedPrecondition(format!("the endpoint of delivery {id} is disabled")));
    }
    if !matches!(status.as_str(), "delivered" | "failed") {
        return Err(ApiError::FailedPrecondition(format!(
            "delivery {id} is {status}; only delivered or failed deliveries can be replayed"
        )));
    }
    let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE notification_deliveries \
            SET status = 'pending', next_attempt_at = now(), retry_step = 0, after_delivery = NULL \
          WHERE id = $1 RETURNING {DELIVERY}"
    )))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    super::commit(tx, row).await
}
