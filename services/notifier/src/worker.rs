//! The JetStream consumer loop: one proposal change event at a time, turned into delivery rows
//! in one Postgres transaction, acknowledged only after that transaction committed.
//!
//! A crash before the commit leaves nothing and the event is redelivered; a crash between the
//! commit and the ack redelivers an event whose rows exist, and the unique key
//! (event_id, channel, recipient) makes the second write a no-op. Either way each recipient
//! gets one delivery.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
};
use folio_proto::events::v1::ChangeEvent;
use folio_runtime::Readiness;
use futures::StreamExt;
use prost::Message as _;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{Ctx, chain, fanout, store};

/// How long JetStream waits for an ack before redelivering; writing one event's rows takes
/// milliseconds, so this only matters when Postgres hangs.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Pause before a failed event is offered again (Postgres down).
const NAK_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the payload is not a ChangeEvent")]
    Decode(#[from] prost::DecodeError),
    #[error(transparent)]
    Fanout(#[from] fanout::FanoutError),
    #[error("failed to write deliveries")]
    Db(#[from] sqlx::Error),
}

impl EventError {
    /// Whether trying again could help; a malformed event never will.
    fn is_transient(&self) -> bool {
        match self {
            EventError::Decode(_) | EventError::Fanout(fanout::FanoutError::Row(_)) => false,
            EventError::Fanout(fanout::FanoutError::Db(_)) | EventError::Db(_) => true,
        }
    }
}

/// Follows the changes stream until `shutdown`. Connection and stream problems are retried.
pub async fn run(ctx: Arc<Ctx>, nats: async_nats::Client, shutdown: CancellationToken, readiness: Readiness) {
    let js = jetstream::new(nats);
    while !shutdown.is_cancelled() {
        let consumer = match consumer(&ctx, &js).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(stream = %ctx.config.bus.changes_stream, "changes stream not available yet, retrying: {}", chain(&e));
                pause(Duration::from_secs(1), &shutdown).await;
                continue;
            }
        };
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("failed to pull from the consumer, retrying: {e:#}");
                pause(Duration::from_secs(1), &shutdown).await;
                continue;
            }
        };
        readiness.set(true);
        tracing::info!(consumer = %ctx.config.consumer, "following proposal changes");
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(msg)) => handle(&ctx, msg).await,
                Some(Err(e)) => {
                    tracing::warn!("failed to receive from JetStream: {e:#}");
                    pause(Duration::from_millis(500), &shutdown).await;
                }
                None => {
                    tracing::warn!("the consumer's message stream ended; resubscribing");
                    break;
                }
            }
        }
        readiness.set(false);
    }
    tracing::info!("worker stopped");
}

async fn consumer(ctx: &Ctx, js: &jetstream::Context) -> Result<PullConsumer, SetupError> {
    let stream = js.get_stream(&ctx.config.bus.changes_stream).await?;
    let deliver_policy = if ctx.config.deliver_from == "all" { DeliverPolicy::All } else { DeliverPolicy::New };
    let config = pull::Config {
        durable_name: Some(ctx.config.consumer.clone()),
        description: Some("notifier: emails and webhooks on proposal changes".into()),
        filter_subject: ctx.config.bus.subjects().table_filter("public", "proposals"),
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        deliver_policy,
        // Events are independent; keep enough in flight for replicas to share the load.
        max_ack_pending: 1024,
        ..Default::default()
    };
    Ok(stream.get_or_create_consumer(&ctx.config.consumer, config).await?)
}

/// Handles one message and acks, naks or terminates it.
async fn handle(ctx: &Ctx, msg: jetstream::Message) {
    let event_id = match msg.headers.as_ref().and_then(|h| h.get(folio_bus::headers::MSG_ID)) {
        Some(id) => id.as_str().to_owned(),
        // Without a message id there is no stable idempotency key; the stream position is the
        // next best (stable across redeliveries of this message).
        None => match msg.info() {
            Ok(info) => format!("{}:{}", info.stream, info.stream_sequence),
            Err(_) => String::new(),
        },
    };
    let span = tracing::info_span!("change_event", event_id = %event_id, subject = %msg.subject, deliveries = tracing::field::Empty);
    if let Some(headers) = &msg.headers {
        folio_bus::trace_context::set_parent_from_nats(&span, headers);
    }
    async {
        match write_deliveries(ctx, &event_id, &msg.payload).await {
            Ok(new) => {
                tracing::Span::current().record("deliveries", new);
                // The rows are committed: acknowledging now is what makes a redelivery rare,
                // and the unique key what makes one harmless.
                if let Err(e) = msg.ack().await {
                    tracing::warn!("failed to ack; the event will be redelivered and deduplicated: {e:#}");
                }
                if new > 0 {
                    metrics::counter!("notifier_deliveries_created_total").increment(new);
                    ctx.wake.notify_one();
                }
            }
            Err(e) if e.is_transient() => {
                tracing::warn!("failed to handle the event, will retry: {}", chain(&e));
                let _ = msg.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
            }
            Err(e) => {
                tracing::error!("dropping an unreadable event: {}", chain(&e));
                metrics::counter!("notifier_events_dropped_total").increment(1);
                let _ = msg.ack_with(AckKind::Term).await;
            }
        }
    }
    .instrument(span)
    .await
}

/// Decodes one change event and writes its deliveries; returns how many were new.
pub async fn write_deliveries(ctx: &Ctx, event_id: &str, payload: &[u8]) -> Result<u64, EventError> {
    let event = ChangeEvent::decode(payload)?;
    let mut tx = ctx.pool.begin().await?;
    let deliveries =
        fanout::deliveries_for(&mut tx, event_id, &event, ctx.config.expiry_reminder_lead, OffsetDateTime::now_utc())
            .await?;
    let new = store::insert_deliveries(&mut tx, &deliveries).await?;
    tx.commit().await?;
    Ok(new)
}

async fn pause(d: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// JetStream set-up errors, logged and retried alike.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("failed to look up the stream")]
    Stream(#[from] async_nats::jetstream::context::GetStreamError),
    #[error("failed to create the consumer")]
    Consumer(#[from] async_nats::jetstream::stream::ConsumerError),
}
