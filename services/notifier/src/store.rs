//! `notification_deliveries` and `delivery_attempts`: the durable state of every delivery.
//!
//! A delivery is `pending` (due at `next_attempt_at`), `delivering` (claimed by one replica
//! until `lease_expires_at`), then `delivered`, `failed` or `skipped`. The unique key
//! (event_id, channel, recipient) makes writing the same event's deliveries twice a no-op.

use std::time::Duration;

use serde_json::Value;
use sqlx::{PgConnection, PgPool, types::Json};
use time::OffsetDateTime;
use uuid::Uuid;

/// At most this much of a response body is kept in the attempt log.
pub const MAX_RESPONSE_BODY: usize = 20 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Email,
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }
}

/// A delivery to write; `skipped` ones record a decision (an opt-out) instead of a send.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub agency_id: Uuid,
    pub event_id: String,
    pub channel: Channel,
    pub recipient: String,
    pub event_type: String,
    pub proposal_id: Option<Uuid>,
    pub payload: Value,
    pub due_at: OffsetDateTime,
    pub skipped_because: Option<String>,
    /// Written as `failed` without an attempt (a disabled endpoint's message, kept for recovery).
    pub failed_because: Option<String>,
}

/// Inserts the deliveries that do not exist yet; returns how many were new. Each remembers the
/// current span's trace context (the change event's, when the worker writes them): their
/// attempts continue that trace.
pub async fn insert_deliveries(conn: &mut PgConnection, deliveries: &[NewDelivery]) -> Result<u64, sqlx::Error> {
    if deliveries.is_empty() {
        return Ok(0);
    }
    let traceparent = Some(folio_bus::trace_context::current_traceparent()).filter(|t| !t.is_empty());
    let n = deliveries.len();
    let (mut ids, mut agencies, mut events, mut channels, mut recipients) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut types, mut proposals, mut payloads, mut statuses, mut dues, mut errors) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for d in deliveries {
        ids.push(Uuid::now_v7());
        agencies.push(d.agency_id);
        events.push(d.event_id.clone());
        channels.push(d.channel.as_str());
        recipients.push(d.recipient.clone());
        types.push(d.event_type.clone());
        proposals.push(d.proposal_id);
        payloads.push(d.payload.to_string());
        let (status, error) = match (&d.skipped_because, &d.failed_because) {
            (Some(why), _) => ("skipped", Some(why.clone())),
            (None, Some(why)) => ("failed", Some(why.clone())),
            (None, None) => ("pending", None),
        };
        statuses.push(status);
        dues.push((status == "pending").then_some(d.due_at));
        errors.push(error);
    }
    let done = sqlx::query(
        "INSERT INTO notification_deliveries \
           (id, agency_id, event_id, channel, recipient, event_type, proposal_id, payload, status, next_attempt_at, last_error, \
            traceparent) \
         SELECT id, agency_id, event_id, channel, recipient, event_type, proposal_id, payload::jsonb, status, due, err, $12 \
           FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::uuid[], $8::text[], \
                       $9::text[], $10::timestamptz[], $11::text[]) \
                AS t(id, agency_id, event_id, channel, recipient, event_type, proposal_id, payload, status, due, err) \
         ON CONFLICT (event_id, channel, recipient) DO NOTHING",
    )
    .bind(ids)
    .bind(agencies)
    .bind(events)
    .bind(channels)
    .bind(recipients)
    .bind(types)
    .bind(proposals)
    .bind(payloads)
    .bind(statuses)
    .bind(dues)
    .bind(errors)
    .bind(traceparent)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// A delivery claimed by this replica.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub agency_id: Uuid,
    pub event_id: String,
    pub channel: String,
    pub recipient: String,
    pub event_type: String,
    pub proposal_id: Option<Uuid>,
    pub payload: Json<Value>,
    pub attempts: i32,
    pub retry_step: i32,
    /// The trace context of what decided the delivery (see [`insert_deliveries`]).
    pub traceparent: Option<String>,
    /// A webhook delivery's endpoint, read with the claim (saves a round trip per delivery);
    /// `None` when it was deleted.
    #[sqlx(flatten)]
    endpoint_columns: EndpointColumns,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct EndpointColumns {
    ep_id: Option<Uuid>,
    ep_url: Option<String>,
    ep_secret: Option<String>,
    ep_previous_secret: Option<String>,
    ep_previous_secret_expires_at: Option<OffsetDateTime>,
    ep_failing_since: Option<OffsetDateTime>,
    ep_disabled_at: Option<OffsetDateTime>,
}

impl Delivery {
    pub fn endpoint(&self) -> Option<Endpoint> {
        let c = &self.endpoint_columns;
        Some(Endpoint {
            id: c.ep_id?,
            agency_id: self.agency_id,
            url: c.ep_url.clone()?,
            secret: c.ep_secret.clone()?,
            previous_secret: c.ep_previous_secret.clone(),
            previous_secret_expires_at: c.ep_previous_secret_expires_at,
            failing_since: c.ep_failing_since,
            disabled_at: c.ep_disabled_at,
        })
    }
}

const DELIVERY_COLUMNS: &str = "d.id, d.agency_id, d.event_id, d.channel, d.recipient, d.event_type, d.proposal_id, d.payload, d.attempts, d.retry_step, d.traceparent";

/// Pending and due, and not waiting for the delivery before it in a recovery (which goes
/// out in order of creation: the next one only once the one before is delivered or failed).
const PENDING_DUE: &str = "status = 'pending' AND next_attempt_at <= now() \
     AND (after_delivery IS NULL OR NOT EXISTS ( \
          SELECT 1 FROM notification_deliveries prev \
           WHERE prev.id = notification_deliveries.after_delivery AND prev.status IN ('pending', 'delivering'))) \
     ORDER BY next_attempt_at, created_at, id";

/// Claims up to `limit` due deliveries for `lease`: first claims whose holder's lease ran out
/// (it crashed), then pending ones whose time has come, oldest first. `SKIP LOCKED` lets
/// replicas claim side by side without waiting on, or taking, each other's rows. Each branch
/// walks its own partial index.
pub async fn claim_due(
    pool: &PgPool,
    replica: Uuid,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let mut claimed = claim(
        pool,
        replica,
        limit,
        lease,
        "status = 'delivering' AND lease_expires_at <= now() ORDER BY lease_expires_at",
    )
    .await?;
    let rest = limit - claimed.len() as i64;
    if rest > 0 {
        claimed.extend(claim(pool, replica, rest, lease, PENDING_DUE).await?);
    }
    Ok(claimed)
}

async fn claim(
    pool: &PgPool,
    replica: Uuid,
    limit: i64,
    lease: Duration,
    due: &'static str,
) -> Result<Vec<Delivery>, sqlx::Error> {
    // A webhook delivery's endpoint comes back with the claim: one round trip, not two.
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH claimed AS ( \
           UPDATE notification_deliveries d \
              SET status = 'delivering', lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3) \
             FROM (SELECT id FROM notification_deliveries WHERE {due} LIMIT $1 FOR UPDATE SKIP LOCKED) due \
            WHERE d.id = due.id \
           RETURNING {DELIVERY_COLUMNS}) \
         SELECT c.*, e.id AS ep_id, e.url AS ep_url, e.secret AS ep_secret, e.previous_secret AS ep_previous_secret, \
                e.previous_secret_expires_at AS ep_previous_secret_expires_at, e.failing_since AS ep_failing_since, \
                e.disabled_at AS ep_disabled_at \
           FROM claimed c \
           LEFT JOIN webhook_endpoints e \
             ON e.id = CASE WHEN c.channel = 'webhook' THEN c.recipient::uuid END AND e.agency_id = c.agency_id"
    )))
    .bind(limit)
    .bind(replica)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// One attempt's result, as logged.
#[derive(Debug, Clone, Default)]
pub struct AttemptLog {
    pub succeeded: bool,
    pub response_code: Option<i32>,
    pub latency_ms: Option<i32>,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

/// What becomes of the delivery after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered,
    RetryAt(OffsetDateTime),
    Failed,
    /// Not attempted: no longer wanted (opted out, proposal no longer pending, endpoint gone).
    Skipped,
}

/// Logs the attempt (if one was made) and moves the delivery on, in one statement (so one
/// round trip, and atomic). The state changes only while this replica still holds the lease;
/// returns whether it did. The attempt is logged either way: it happened.
pub async fn finish(
    pool: &PgPool,
    delivery: &Delivery,
    replica: Uuid,
    attempt: Option<&AttemptLog>,
    outcome: &Outcome,
    reason: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let (status, next, step) = match outcome {
        Outcome::Delivered => ("delivered", None, 0),
        Outcome::RetryAt(at) => ("pending", Some(*at), 1),
        Outcome::Failed => ("failed", None, 0),
        Outcome::Skipped => ("skipped", None, 0),
    };
    let none = AttemptLog::default();
    let a = attempt.unwrap_or(&none);
    let updated = sqlx::query(
        "WITH attempt AS ( \
           INSERT INTO delivery_attempts (delivery_id, succeeded, response_code, latency_ms, response_body, error) \
           SELECT $1, $8, $9, $10, $11, $12 WHERE $13 \
           RETURNING 1) \
         UPDATE notification_deliveries \
            SET status = $3, next_attempt_at = $4, attempts = attempts + $5, retry_step = retry_step + $6, \
                last_error = $7, lease_owner = NULL, lease_expires_at = NULL, \
                delivered_at = CASE WHEN $3 = 'delivered' THEN now() ELSE delivered_at END \
          WHERE id = $1 AND status = 'delivering' AND lease_owner = $2",
    )
    .bind(delivery.id)
    .bind(replica)
    .bind(status)
    .bind(next)
    .bind(i32::from(attempt.is_some()))
    .bind(step)
    .bind(reason)
    .bind(a.succeeded)
    .bind(a.response_code)
    .bind(a.latency_ms)
    .bind(a.response_body.as_deref().map(truncate_body))
    .bind(a.error.as_deref())
    .bind(attempt.is_some())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Keeps at most [`MAX_RESPONSE_BODY`] bytes, cut on a character boundary.
pub fn truncate_body(body: &str) -> &str {
    if body.len() <= MAX_RESPONSE_BODY {
        return body;
    }
    let mut end = MAX_RESPONSE_BODY;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    &body[..end]
}

/// A webhook endpoint as the sender needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Endpoint {
    pub id: Uuid,
    pub agency_id: Uuid,
    pub url: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<OffsetDateTime>,
    pub failing_since: Option<OffsetDateTime>,
    pub disabled_at: Option<OffsetDateTime>,
}

/// Records an endpoint's success (its failure streak ends) or failure (a streak starts if none
/// runs). Returns the endpoint if this failure made it cross `disable_after` and disabled it.
pub async fn endpoint_result(
    pool: &PgPool,
    id: Uuid,
    succeeded: bool,
    disable_after: Duration,
) -> Result<Option<Endpoint>, sqlx::Error> {
    if succeeded {
        sqlx::query("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL")
            .bind(id)
            .execute(pool)
            .await?;
        return Ok(None);
    }
    // One statement (the row lock orders concurrent failures), so two replicas failing at
    // once disable the endpoint, and notify the agency, once: only the transaction that set
    // `disabled_at` sees it equal to its own `now()`.
    let row: Option<(Endpoint, bool)> = sqlx::query_as::<_, EndpointDisabled>(
        "UPDATE webhook_endpoints \
            SET failing_since = COALESCE(failing_since, now()), \
                disabled_at = CASE WHEN disabled_at IS NULL \
                                    AND COALESCE(failing_since, now()) <= now() - make_interval(secs => $2) \
                                   THEN now() ELSE disabled_at END \
          WHERE id = $1 \
         RETURNING id, agency_id, url, secret, previous_secret, previous_secret_expires_at, failing_since, disabled_at, \
                   disabled_at IS NOT NULL AND disabled_at = now() AS newly_disabled",
    )
    .bind(id)
    .bind(disable_after.as_secs_f64())
    .fetch_optional(pool)
    .await?
    .map(|r| (r.endpoint, r.newly_disabled));
    Ok(row.and_then(|(endpoint, newly)| newly.then_some(endpoint)))
}

#[derive(sqlx::FromRow)]
struct EndpointDisabled {
    #[sqlx(flatten)]
    endpoint: Endpoint,
    newly_disabled: bool,
}

/// A delivery with its attempt log, for the API.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct DeliveryView {
    pub id: Uuid,
    pub agency_id: Uuid,
    pub event_id: String,
    pub channel: String,
    pub recipient: String,
    pub event_type: String,
    pub proposal_id: Option<Uuid>,
    pub status: String,
    pub attempts: i32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    #[sqlx(skip)]
    pub attempt_log: Vec<AttemptView>,
}

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct AttemptView {
    #[serde(with = "time::serde::rfc3339")]
    pub attempted_at: OffsetDateTime,
    pub succeeded: bool,
    pub response_code: Option<i32>,
    pub latency_ms: Option<i32>,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

pub async fn view(pool: &PgPool, agency: Uuid, id: Uuid) -> Result<Option<DeliveryView>, sqlx::Error> {
    let Some(mut d): Option<DeliveryView> = sqlx::query_as(
        "SELECT id, agency_id, event_id, channel, recipient, event_type, proposal_id, status, attempts, \
                next_attempt_at, delivered_at, last_error \
           FROM notification_deliveries WHERE id = $1 AND agency_id = $2",
    )
    .bind(id)
    .bind(agency)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    d.attempt_log = sqlx::query_as(
        "SELECT attempted_at, succeeded, response_code, latency_ms, response_body, error \
           FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempted_at, id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some(d))
}

#[derive(Debug, PartialEq, Eq)]
pub enum ManualRetry {
    Scheduled,
    NotFound,
    /// Only failed deliveries are retried by hand; others are still on their way or done.
    NotFailed(String),
}

/// Makes a failed delivery due now for exactly one more attempt (the schedule is not
/// restarted: a manual retry that fails stays failed, as with Svix).
pub async fn manual_retry(
    pool: &PgPool,
    agency: Uuid,
    id: Uuid,
    one_shot_step: i32,
) -> Result<ManualRetry, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM notification_deliveries WHERE id = $1 AND agency_id = $2 FOR UPDATE")
            .bind(id)
            .bind(agency)
            .fetch_optional(&mut *tx)
            .await?;
    let result = match status.as_deref() {
        None => ManualRetry::NotFound,
        Some("failed") => {
            sqlx::query(
                "UPDATE notification_deliveries SET status = 'pending', next_attempt_at = now(), retry_step = $2 \
                  WHERE id = $1",
            )
            .bind(id)
            .bind(one_shot_step)
            .execute(&mut *tx)
            .await?;
            ManualRetry::Scheduled
        }
        Some(other) => ManualRetry::NotFailed(other.to_owned()),
    };
    tx.commit().await?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_cut_at_20_kb_on_a_char_boundary() {
        assert_eq!(truncate_body("ok"), "ok");
        let long = "é".repeat(MAX_RESPONSE_BODY);
        let cut = truncate_body(&long);
        assert!(cut.len() <= MAX_RESPONSE_BODY && cut.len() >= MAX_RESPONSE_BODY - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
