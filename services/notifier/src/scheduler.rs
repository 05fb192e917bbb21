//! Sends due deliveries. Postgres is the queue: rows are claimed with `FOR UPDATE SKIP LOCKED`
//! and a lease, so replicas share the work without taking each other's rows, a restart finds
//! every pending retry where it left it, and a crashed replica's claims come back when their
//! lease runs out.

use std::{sync::Arc, time::Duration};

use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    Ctx, chain, fanout,
    retry::NextAttempt,
    store::{self, AttemptLog, Delivery, Outcome},
};

/// Runs until `shutdown`, then waits (up to the grace period) for attempts in flight.
pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(ctx.config.delivery_concurrency.max(1)));
    let tracker = TaskTracker::new();
    loop {
        // Claim only what can start now: a claimed row waiting for a slot would hold a lease
        // for nothing.
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let mut slots = vec![first];
        while let Ok(p) = permits.clone().try_acquire_owned() {
            slots.push(p);
        }
        let wanted = slots.len();
        let claimed = match store::claim_due(&ctx.pool, ctx.replica, wanted as i64, ctx.config.delivery_lease).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("failed to claim due deliveries: {}", chain(&e));
                drop(slots);
                idle(&ctx, &shutdown).await;
                continue;
            }
        };
        let more_due = claimed.len() == wanted;
        for delivery in claimed {
            let permit = slots.pop().expect("one slot per claimed row");
            let ctx = ctx.clone();
            tracker.spawn(async move {
                attempt(&ctx, delivery).await;
                drop(permit);
            });
        }
        drop(slots);
        if !more_due {
            idle(&ctx, &shutdown).await;
        }
    }
    tracker.close();
    let grace = ctx.config.common.shutdown_grace;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(in_flight = tracker.len(), "attempts still running at the end of the grace period");
    }
    tracing::info!("scheduler stopped");
}

async fn idle(ctx: &Ctx, shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = ctx.wake.notified() => {}
        _ = tokio::time::sleep(ctx.config.scheduler_poll) => {}
    }
}

/// What a delivery came to before its state is written.
enum Decision {
    Attempted {
        log: AttemptLog,
        permanent: bool,
        retry_after: Option<Duration>,
    },
    /// Not attempted, no longer wanted.
    Skip(String),
    /// Not attempted, can never be.
    Fail(String),
}

/// One attempt of one delivery, in its own span.
async fn attempt(ctx: &Ctx, delivery: Delivery) {
    let span = tracing::info_span!(
        "delivery",
        delivery_id = %delivery.id,
        event_id = %delivery.event_id,
        channel = %delivery.channel,
        event_type = %delivery.event_type,
        attempt = delivery.attempts + 1,
        outcome = tracing::field::Empty,
    );
    // Every attempt, the first or a retry hours later, continues the trace of the change event
    // that decided the delivery: one trace from the API call to the email or webhook.
    folio_bus::trace_context::set_parent_from_traceparent(&span, delivery.traceparent.as_deref().unwrap_or_default());
    async {
        let started = std::time::Instant::now();
        let (decision, endpoint) = match decide(ctx, &delivery).await {
            Ok(d) => d,
            Err(e) => {
                // Postgres trouble before anything was sent: leave the lease to expire.
                tracing::warn!("failed to prepare the delivery: {}", chain(&e));
                return;
            }
        };
        let (log, outcome, reason) = match decision {
            Decision::Skip(reason) => (None, Outcome::Skipped, Some(reason)),
            Decision::Fail(reason) => (None, Outcome::Failed, Some(reason)),
            Decision::Attempted { log, permanent, retry_after } => {
                // The duration of an attempt that reached SMTP or the endpoint (a skip or a
                // refusal before sending is not an attempt).
                metrics::histogram!("folio_notifier_attempt_seconds", "channel" => delivery.channel.clone())
                    .record(started.elapsed().as_secs_f64());
                let outcome = if log.succeeded {
                    Outcome::Delivered
                } else if permanent {
                    Outcome::Failed
                } else {
                    let step = usize::try_from(delivery.retry_step).unwrap_or(usize::MAX);
                    match ctx.schedule.next(step, retry_after, &mut rand::rng()) {
                        NextAttempt::After(d) => Outcome::RetryAt(OffsetDateTime::now_utc() + d),
                        NextAttempt::GiveUp => Outcome::Failed,
                    }
                };
                let reason = log.error.clone();
                (Some(log), outcome, reason)
            }
        };
        let label = match &outcome {
            Outcome::Delivered => "delivered",
            Outcome::RetryAt(_) => "retry",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        };
        tracing::Span::current().record("outcome", label);
        metrics::counter!("folio_notifier_delivery_outcomes_total", "channel" => delivery.channel.clone(), "outcome" => label)
            .increment(1);
        match &outcome {
            Outcome::RetryAt(at) => {
                tracing::info!(next_attempt_at = %at, "attempt failed: {}", reason.as_deref().unwrap_or(""))
            }
            Outcome::Failed => tracing::warn!("delivery failed for good: {}", reason.as_deref().unwrap_or("")),
            _ => tracing::debug!("delivery {label}"),
        }
        // The attempt happened; its log must land even if Postgres blinks, or a retry would
        // repeat a delivery that succeeded.
        let mut pause = Duration::from_millis(200);
        loop {
            match store::finish(&ctx.pool, &delivery, ctx.replica, log.as_ref(), &outcome, reason.as_deref()).await {
                Ok(true) => {
                    // A recovery's next message may have waited for this one.
                    if !matches!(outcome, Outcome::RetryAt(_)) {
                        ctx.wake.notify_one();
                    }
                    break;
                }
                Ok(false) => {
                    tracing::warn!("the lease ran out before the attempt was recorded; another replica may repeat it");
                    break;
                }
                Err(e) if pause < Duration::from_secs(10) => {
                    tracing::warn!("failed to record the attempt, retrying: {}", chain(&e));
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    tracing::error!("failed to record the attempt; it may be repeated: {}", chain(&e));
                    return;
                }
            }
        }
        if let (Some(endpoint), Some(log)) = (endpoint, &log) {
            record_endpoint_health(ctx, endpoint, log.succeeded).await;
        }
    }
    .instrument(span)
    .await
}

/// Checks that the delivery is still wanted, then makes the attempt.
async fn decide(ctx: &Ctx, d: &Delivery) -> Result<(Decision, Option<Uuid>), sqlx::Error> {
    if d.event_type == "proposal.expiring"
        && let Some(reason) = expiry_no_longer_due(ctx, d).await?
    {
        return Ok((Decision::Skip(reason), None));
    }
    match d.channel.as_str() {
        "email" => {
            if let Some(user) =
                d.payload.0.get("user_id").and_then(|u| u.as_str()).and_then(|u| Uuid::parse_str(u).ok())
                && let Some(audience) = d.payload.0.get("audience").and_then(|a| serde_json::from_value(a.clone()).ok())
                && !fanout::is_mandatory(&d.event_type, audience)
            {
                // An unsubscribe between the event and now still counts.
                let mut conn = ctx.pool.acquire().await?;
                if crate::preferences::is_opted_out(&mut conn, user, &d.event_type).await? {
                    return Ok((Decision::Skip(format!("recipient opted out of {}", d.event_type)), None));
                }
            }
            let attachment = match crate::signed_copies::wanted(d) {
                None => None,
                Some(response) => match crate::signed_copies::fetch(ctx, response).await {
                    Ok(pdf) => Some(pdf),
                    Err(e) => {
                        // Nothing was sent: a failed attempt, retried unless it cannot come right.
                        let log = AttemptLog { error: Some(chain(&e)), ..Default::default() };
                        let permanent = e.is_permanent();
                        return Ok((Decision::Attempted { log, permanent, retry_after: None }, None));
                    }
                },
            };
            let (log, permanent) = ctx.mailer.send(d, attachment.as_ref()).await;
            Ok((Decision::Attempted { log, permanent, retry_after: None }, None))
        }
        "webhook" => {
            let Some(endpoint) = d.endpoint() else {
                return Ok((Decision::Skip("the endpoint was deleted".into()), None));
            };
            if endpoint.disabled_at.is_some() {
                return Ok((Decision::Fail("the endpoint is disabled".into()), None));
            }
            let body = serde_json::to_vec(&d.payload.0).expect("a JSON value serialises");
            let msg_id = folio_webhook::events::message_id(d.id);
            let a = ctx.webhooks.send(&endpoint, &msg_id, &body).await;
            // A refused URL says nothing about the endpoint's health; a success of an endpoint
            // with no failure streak changes nothing.
            let nothing_to_record = a.permanent || (a.log.succeeded && endpoint.failing_since.is_none());
            let health = (!nothing_to_record).then_some(endpoint.id);
            Ok((Decision::Attempted { log: a.log, permanent: a.permanent, retry_after: a.retry_after }, health))
        }
        other => Ok((Decision::Fail(format!("unknown channel {other:?}")), None)),
    }
}

/// A reminder is moot once the proposal was answered, withdrawn or its date moved.
async fn expiry_no_longer_due(ctx: &Ctx, d: &Delivery) -> Result<Option<String>, sqlx::Error> {
    let Some(proposal) = d.proposal_id else { return Ok(None) };
    let planned = d
        .payload
        .0
        .pointer("/proposal/valid_until")
        .or_else(|| d.payload.0.pointer("/data/valid_until"))
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let now: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT status, valid_until::text FROM proposals WHERE id = $1 AND agency_id = $2")
            .bind(proposal)
            .bind(d.agency_id)
            .fetch_optional(&ctx.pool)
            .await?;
    Ok(match now {
        None => Some("the proposal was deleted".into()),
        Some((status, _)) if !matches!(status.as_str(), "sent" | "viewed") => {
            Some(format!("the proposal is {status} now"))
        }
        Some((_, until)) if until != planned => Some("the proposal's expiry date changed".into()),
        Some(_) => None,
    })
}

async fn record_endpoint_health(ctx: &Ctx, endpoint: Uuid, succeeded: bool) {
    match store::endpoint_result(&ctx.pool, endpoint, succeeded, ctx.config.endpoint_disable_after).await {
        Ok(Some(disabled)) => {
            tracing::warn!(endpoint = %disabled.id, url = %disabled.url, "endpoint failing for too long: disabled");
            metrics::counter!("folio_notifier_endpoints_disabled_total").increment(1);
            match fanout::endpoint_disabled_notices(&ctx.pool, &disabled, OffsetDateTime::now_utc()).await {
                Ok(_) => ctx.wake.notify_one(),
                Err(e) => tracing::error!("failed to notify the agency of a disabled endpoint: {}", chain(&e)),
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("failed to record the endpoint's health: {}", chain(&e)),
    }
}
