//! The JetStream consumer loop: proposal change events turned into delivery rows in one
//! Postgres transaction, acknowledged only after that transaction committed.
//!
//! Deliveries are written once per Postgres transaction that changed proposals, when its end
//! arrives (the event flagged `last_in_transaction`, or the `_txn` marker of a transaction that
//! also wrote other tables): the earlier events of that transaction are read back from the
//! stream and each proposal's changes folded into one ([`crate::txn`]). An earlier event is
//! acked as soon as it is checked; only the end carries the work, so one ack covers the
//! transaction and any replica can take it.
//!
//! An event that cannot be read (not a `ChangeEvent`, a row the notifier cannot map) is parked
//! on the dead-letter subject ([`crate::dead_letter`]) and then acked, so it neither vanishes
//! nor blocks the events after it.
//!
//! A crash before the commit leaves nothing and the event is redelivered; a crash between the
//! commit and the ack redelivers an event whose rows exist, and the unique key
//! (event_id, channel, recipient) makes the second write a no-op. Either way each recipient
//! gets one delivery.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    stream::{RawMessageErrorKind, Stream},
};
use folio_bus::{MsgKey, Part};
use folio_proto::events::v1::ChangeEvent;
use folio_runtime::Readiness;
use futures::StreamExt;
use prost::Message as _;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    Ctx, chain,
    dead_letter::{DeadLetter, DeadLetterError, Reason},
    fanout, store,
    transitions::{self, RowError},
    txn,
};

/// Pause before a failed event is offered again (Postgres down).
const NAK_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Fanout(#[from] fanout::FanoutError),
    #[error("failed to write deliveries")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    #[error("failed to read the transaction's earlier events from the stream")]
    ReadBack(#[from] async_nats::jetstream::stream::RawMessageError),
}

/// Follows the changes stream until `shutdown`. Connection and stream problems are retried.
pub async fn run(ctx: Arc<Ctx>, nats: async_nats::Client, shutdown: CancellationToken, readiness: Readiness) {
    let js = jetstream::new(nats);
    while !shutdown.is_cancelled() {
        let (stream, consumer) = match consumer(&ctx, &js).await {
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
                Some(Ok(msg)) => handle(&ctx, &stream, msg).await,
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

async fn consumer(ctx: &Ctx, js: &jetstream::Context) -> Result<(Stream, PullConsumer), SetupError> {
    let stream = js.get_stream(&ctx.config.bus.changes_stream).await?;
    let deliver_policy = if ctx.config.deliver_from == "all" { DeliverPolicy::All } else { DeliverPolicy::New };
    let config = pull::Config {
        durable_name: Some(ctx.config.consumer.clone()),
        description: Some("notifier: emails and webhooks on proposal changes".into()),
        filter_subject: ctx.config.bus.subjects().table_filter("public", "proposals"),
        ack_policy: AckPolicy::Explicit,
        ack_wait: ctx.config.ack_wait,
        deliver_policy,
        // Events are independent; keep enough in flight for replicas to share the load.
        max_ack_pending: 1024,
        ..Default::default()
    };
    let consumer = stream.get_or_create_consumer(&ctx.config.consumer, config).await?;
    Ok((stream, consumer))
}

/// Handles one message and acks or naks it. An event that cannot be read is parked on the
/// dead-letter subject first, so acking it loses nothing.
async fn handle(ctx: &Ctx, stream: &Stream, msg: jetstream::Message) {
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
        match process(ctx, stream, &event_id, &msg).await {
            Ok(new) => {
                tracing::Span::current().record("deliveries", new);
                // The rows are committed: acknowledging now is what makes a redelivery rare,
                // and the unique key what makes one harmless.
                if let Err(e) = msg.ack().await {
                    tracing::warn!("failed to ack; the event will be redelivered and deduplicated: {e:#}");
                }
                if new > 0 {
                    metrics::counter!("folio_notifier_deliveries_created_total").increment(new);
                    ctx.wake.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!("failed to handle the event, will retry: {}", chain(&e));
                let _ = msg.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
            }
        }
    }
    .instrument(span)
    .await
}

/// One message: parks it if unreadable; if it ends its transaction's part of `proposals`,
/// writes the deliveries of the whole transaction. Returns how many deliveries were new.
async fn process(ctx: &Ctx, stream: &Stream, event_id: &str, msg: &jetstream::Message) -> Result<u64, EventError> {
    let flagged_last = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(folio_bus::headers::LAST_IN_TRANSACTION))
        .is_some_and(|v| v.as_str() == "true");
    let key = MsgKey::parse(event_id);
    let (event, ends) = match ChangeEvent::decode(msg.payload.clone()) {
        Ok(event) => {
            let ends = txn::ends_transaction(&event) || flagged_last;
            match readable(&event) {
                Ok(()) => (Some(event), ends),
                Err(e) => {
                    park(ctx, event_id, msg, Reason::from(&e), &fanout::FanoutError::Row(e)).await?;
                    (None, ends)
                }
            }
        }
        Err(e) => {
            park(ctx, event_id, msg, Reason::Undecodable, &e).await?;
            // The header still says whether the transaction's other events wait for this one.
            (None, flagged_last && key.is_some())
        }
    };
    if !ends {
        // Its transaction's end (the flagged last event or the `_txn` marker) reads it back
        // from the stream; acking it now lets any replica take that end.
        return Ok(0);
    }
    let commit_lsn = event.as_ref().map(|e| e.commit_lsn).filter(|l| *l != 0).or(key.map(|k| k.commit_lsn.0));
    // Only a change at position 0 of its transaction can be the transaction's first message
    // of this table; anything else has earlier events to fold in.
    let alone = commit_lsn.is_none()
        || key.is_some_and(|k| k.position == 0 && k.part == Part::Change(0))
        || (key.is_none() && event.as_ref().is_some_and(|e| e.position == 0));
    let mut events = match commit_lsn {
        Some(lsn) if !alone => earlier_in_transaction(ctx, stream, msg, lsn).await?,
        _ => Vec::new(),
    };
    if let Some(event) = event {
        events.push((event_id.to_owned(), event));
    }
    write_deliveries(ctx, txn::coalesce(events)).await
}

/// Whether every transition the event stands for can be read from its rows.
fn readable(event: &ChangeEvent) -> Result<(), RowError> {
    transitions::transitions(event)?;
    transitions::expiry_to_remind(event)?;
    Ok(())
}

async fn park(
    ctx: &Ctx,
    event_id: &str,
    msg: &jetstream::Message,
    reason: Reason,
    error: &(dyn std::error::Error + Send + Sync + 'static),
) -> Result<(), DeadLetterError> {
    let letter = DeadLetter {
        event_id,
        subject: msg.subject.as_str(),
        payload: msg.payload.clone(),
        reason,
        detail: chain(error),
    };
    ctx.dead_letters.park(letter).await
}

/// The readable `proposals` row changes of the transaction `commit_lsn` published before `msg`,
/// in stream order. wal-ingest publishes a transaction's messages back to back (each publish
/// names the previous message), so they are the stream's messages just before this one that
/// carry its commit LSN. Unreadable ones were parked when they were delivered.
async fn earlier_in_transaction(
    ctx: &Ctx,
    stream: &Stream,
    msg: &jetstream::Message,
    commit_lsn: u64,
) -> Result<Vec<(String, ChangeEvent)>, EventError> {
    let Ok(info) = msg.info() else { return Ok(Vec::new()) };
    let rows = ctx.config.bus.subjects().row_prefix("public", "proposals");
    let mut found = Vec::new();
    let mut seq = info.stream_sequence;
    let mut read = 0u64;
    while seq > 1 {
        seq -= 1;
        let earlier = match stream.get_raw_message(seq).await {
            Ok(m) => m,
            // Aged out or never there: nothing earlier of this transaction is left to read.
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
            Err(e) => return Err(e.into()),
        };
        read += 1;
        if read.is_multiple_of(256) {
            // A transaction of many rows: keep the end from being redelivered meanwhile.
            let _ = msg.ack_with(AckKind::Progress).await;
        }
        let id = earlier.headers.get(folio_bus::headers::MSG_ID).map(|v| v.as_str().to_owned());
        let Some(key) = id.as_deref().and_then(MsgKey::parse) else { break };
        if key.commit_lsn.0 != commit_lsn {
            break;
        }
        if !earlier.subject.as_str().starts_with(&rows) {
            continue;
        }
        let Ok(event) = ChangeEvent::decode(earlier.payload) else { continue };
        if txn::is_row_change(&event) && readable(&event).is_ok() {
            found.push((id.unwrap_or_default(), event));
        }
    }
    found.reverse();
    Ok(found)
}

/// Writes the deliveries of one transaction's folded changes in one Postgres transaction;
/// returns how many were new. Keys come from the events, so a redelivery adds nothing.
pub async fn write_deliveries(ctx: &Ctx, changes: Vec<(String, ChangeEvent)>) -> Result<u64, EventError> {
    if changes.is_empty() {
        return Ok(0);
    }
    let now = OffsetDateTime::now_utc();
    let mut tx = ctx.pool.begin().await?;
    let mut deliveries = Vec::new();
    for (event_id, event) in &changes {
        match fanout::deliveries_for(&mut tx, event_id, event, ctx.config.expiry_reminder_lead, now).await {
            Ok(d) => deliveries.extend(d),
            // Each event was readable alone; should a folded one not be, it is parked rather
            // than holding up the rest of the transaction.
            Err(fanout::FanoutError::Row(e)) => {
                let subject = ctx.config.bus.subjects().row("public", "proposals", Some(&event.tenant));
                let detail = chain(&e);
                let letter = DeadLetter {
                    event_id,
                    subject: &subject,
                    payload: event.encode_to_vec().into(),
                    reason: Reason::from(&e),
                    detail,
                };
                ctx.dead_letters.park(letter).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
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

/// How often the consumer's lag and the dead letters are measured for `/metrics`.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// Exports the changes consumer's lag (`folio_notifier_consumer_pending`, `…_ack_pending`) and
/// the dead-letter stream's depth (`folio_notifier_dead_letter_messages`) until `shutdown`.
/// Every replica reports the same shared numbers: dashboards take the max over replicas.
pub async fn report_backlog(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    // The counters alerts watch exist from the start at 0: `increase()` over a series that
    // first appears at 1 misses that first event.
    metrics::counter!("folio_notifier_dead_letters_total").increment(0);
    metrics::counter!("folio_notifier_endpoints_disabled_total").increment(0);
    let dead_letters = crate::dead_letter::stream_name(&ctx.config.bus);
    let mut every = tokio::time::interval(BACKLOG_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match folio_bus::backlog::measure(&ctx.js, &ctx.config.bus.changes_stream, &ctx.config.consumer, &dead_letters)
            .await
        {
            Ok(backlog) => {
                metrics::gauge!("folio_notifier_consumer_pending").set(backlog.pending as f64);
                metrics::gauge!("folio_notifier_consumer_ack_pending").set(backlog.ack_pending as f64);
                metrics::gauge!("folio_notifier_dead_letter_messages").set(backlog.dead_letters as f64);
            }
            // Before the worker has made its consumer, or while NATS is away: the gauges keep
            // their last value and the worker's own logs say what is wrong.
            Err(e) => tracing::debug!("failed to measure the consumer's backlog: {e}"),
        }
    }
}
