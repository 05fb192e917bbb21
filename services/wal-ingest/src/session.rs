//! One replication session: from START_REPLICATION to the first error or shutdown. The path of
//! a change through wal-ingest is this file's [`run`] loop: a pgoutput message becomes events
//! (`events.rs`), each event is published with its id (`publish.rs`), acks come back in order
//! and move the confirmable LSN (`confirm.rs`), which goes to Postgres as the flush position.
//!
//! A failed session is simply started again: Postgres replays from the confirmed position,
//! the fence skips what the streams already hold and the duplicate window absorbs the rest.

use std::time::Duration;

use async_nats::jetstream::Context;
use folio_domain::Lsn;
use folio_proto::events::v1::{ChangeEvent, ColumnType, Operation};
use pgwire_replication::{PgWireError, ReplicationClient, ReplicationEvent};
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::{
    confirm::Confirmations,
    decode::{self, DecodeError, PgOutput},
    events::{Assembler, Body, EventError, Outgoing, Target},
    publish::{PublishError, Publisher, StreamSettings},
    replication::{self, ReplicationSettings, UrlError},
    schema::Catalog,
    slot::{SlotError, SlotOwner},
};
use folio_bus::{MsgKey, Part, Subjects};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("replication stream failed")]
    Replication(#[from] PgWireError),
    #[error("undecodable pgoutput message")]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("failed to read the catalog for a Relation message")]
    Catalog(#[source] sqlx::Error),
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("the replication stream ended")]
    StreamEnded,
    #[error("the NATS connection dropped; publishes awaiting their ack are given up")]
    NatsDisconnected,
}

impl SessionError {
    /// Whether the slot owner's Postgres session is suspect and must be re-established.
    pub fn owner_lost(&self) -> bool {
        matches!(self, SessionError::Slot(_) | SessionError::Catalog(_))
    }
}

/// What outlives a session: settings, clients and the type-name cache.
pub struct Ingest {
    pub js: Context,
    pub subjects: Subjects,
    pub streams: StreamSettings,
    pub database_url: String,
    pub slot: String,
    pub publication: String,
    pub publish_window: usize,
    pub status_interval: Duration,
    pub lag_interval: Duration,
    pub shutdown_grace: Duration,
    pub catalog: Catalog,
    pub readiness: folio_runtime::Readiness,
    /// Traces are exported (OTLP configured): worth a span context per message.
    pub propagate_trace: bool,
    /// Counts NATS disconnects (the client's event callback).
    pub nats_disconnects: tokio::sync::watch::Receiver<u64>,
}

pub enum SessionEnd {
    Shutdown,
}

struct Stream<'a> {
    ingest: &'a mut Ingest,
    owner: &'a mut SlotOwner,
    client: ReplicationClient,
    publisher: Publisher,
    assembler: Assembler,
    confirm: Confirmations,
    /// The latest event of each stream, held back until the next one (or the Commit) shows
    /// whether it is the transaction's last on that stream: a consumer of one stream sees the
    /// flag without reading the other.
    held: [Option<Outgoing>; 2],
    scratch: Vec<Outgoing>,
    /// The span of the transaction being published: the parent of its publishes, and (with
    /// OTLP export) the trace context every one of its events carries.
    txn_span: tracing::Span,
    /// The trace context the transaction recorded first in the WAL (the API call that wrote
    /// it), if any: `txn_span`'s parent, and what its events carry when this process exports
    /// no traces of its own.
    txn_traceparent: Option<String>,
    nats_disconnects: tokio::sync::watch::Receiver<u64>,
}

pub async fn run(
    ingest: &mut Ingest,
    owner: &mut SlotOwner,
    shutdown: &CancellationToken,
) -> Result<SessionEnd, SessionError> {
    // A disconnect from here on ends the session, one before it does not.
    let mut nats_disconnects = ingest.nats_disconnects.clone();
    nats_disconnects.mark_unchanged();
    crate::publish::declare_streams(&ingest.js, &ingest.subjects, &ingest.streams).await?;
    let mut state = owner.ensure().await?;
    owner.end_stale_walsender().await?;
    if state.invalidated {
        state = resnapshot_required(ingest, owner).await?;
    }
    let publisher = Publisher::start(ingest.js.clone(), &ingest.streams, ingest.propagate_trace).await?;
    let config = replication::config(&ReplicationSettings {
        database_url: &ingest.database_url,
        slot: &ingest.slot,
        publication: &ingest.publication,
        confirmed: state.confirmed_flush,
        status_interval: ingest.status_interval,
    })?;
    let mut client = ReplicationClient::connect(config).await?;
    if let Err(e) = client.wait_started().await {
        client.abort();
        return Err(e.into());
    }
    // START_REPLICATION silently starts at max(requested, confirmed_flush): read what the
    // server actually holds now that the slot is ours.
    let started_at = owner.state().await?.map(|s| s.confirmed_flush).unwrap_or_default();
    tracing::info!(slot = %ingest.slot, confirmed_flush = %started_at, "replication started");
    ingest.readiness.set(true);
    let mut stream = Stream {
        assembler: Assembler::new(ingest.subjects.clone()),
        ingest,
        owner,
        client,
        publisher,
        confirm: Confirmations::new(started_at),
        held: [None, None],
        scratch: Vec::new(),
        txn_span: tracing::Span::none(),
        txn_traceparent: None,
        nats_disconnects,
    };
    let result = stream.pump(shutdown).await;
    stream.ingest.readiness.set(false);
    match &result {
        Ok(_) => stream.finish().await,
        Err(_) => stream.client.abort(),
    }
    result
}

impl Stream<'_> {
    async fn pump(&mut self, shutdown: &CancellationToken) -> Result<SessionEnd, SessionError> {
        let mut lag_timer = tokio::time::interval(self.ingest.lag_interval);
        lag_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let room = self.publisher.in_flight() < self.ingest.publish_window;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                // The fence and the Nats-Msg-Id dedupe make the replay of the lost tail exact.
                Ok(()) = self.nats_disconnects.changed() => return Err(SessionError::NatsDisconnected),
                acked = self.publisher.next_ack(), if self.publisher.in_flight() > 0 => {
                    let acked = acked?;
                    metrics::histogram!("folio_wal_ingest_publish_latency_seconds").record(acked.latency.as_secs_f64());
                    if let Some(lsn) = self.confirm.acked(acked.seq) {
                        self.confirm_lsn(lsn);
                    }
                }
                // The slot's lag itself is measured by `slot::watch`, session or none.
                _ = lag_timer.tick() => {
                    tracing::info!(slot = %self.ingest.slot, confirmed = %self.confirm.flushed(), in_flight = self.publisher.in_flight(), "publishing");
                }
                event = self.client.recv(), if room => {
                    match event? {
                        Some(event) => self.on_event(event).await?,
                        None => return Err(SessionError::StreamEnded),
                    }
                }
            }
        }
    }

    async fn on_event(&mut self, event: ReplicationEvent) -> Result<(), SessionError> {
        match event {
            ReplicationEvent::Begin { final_lsn, xid, commit_time_micros } => {
                let lsn = Lsn(final_lsn.as_u64());
                self.txn_span = tracing::info_span!("transaction", commit_lsn = %lsn, xid);
                self.txn_traceparent = None;
                self.assembler.begin(lsn, xid, commit_time_micros);
            }
            ReplicationEvent::XLogData { data, .. } => match decode::decode(data)? {
                PgOutput::Relation(relation) => {
                    let oid = relation.oid;
                    let table = self
                        .ingest
                        .catalog
                        .describe(&mut self.owner.conn, relation)
                        .await
                        .map_err(SessionError::Catalog)?;
                    // A session's first Relation for a table is compared with what the stream
                    // last stored for it (not with memory: an unpublished schema event of a
                    // failed session must be announced again).
                    let previous = if self.assembler.knows(oid) {
                        None
                    } else {
                        last_published_shape(
                            &self.ingest.js,
                            &self.ingest.streams.changes_stream,
                            &self.ingest.subjects,
                            table.schema(),
                            table.name(),
                        )
                        .await
                    };
                    self.assembler.relation(table, previous.as_deref());
                }
                PgOutput::Type { oid, schema, name } => self.ingest.catalog.learn_type(oid, &schema, &name),
                change @ (PgOutput::Insert { .. }
                | PgOutput::Update { .. }
                | PgOutput::Delete { .. }
                | PgOutput::Truncate { .. }) => {
                    let mut out = std::mem::take(&mut self.scratch);
                    let result = self.assembler.change(change, &mut out);
                    for event in out.drain(..) {
                        self.emit(event).await?;
                    }
                    self.scratch = out;
                    result?;
                }
                PgOutput::Origin { .. } | PgOutput::Other(_) => {}
            },
            ReplicationEvent::Message { transactional: true, prefix, content, .. }
                if self.assembler.in_transaction() =>
            {
                if prefix == folio_bus::trace_context::WAL_MESSAGE_PREFIX {
                    self.continue_trace(&content);
                }
                let mut out = std::mem::take(&mut self.scratch);
                let result = self.assembler.message(&prefix, content, &mut out);
                for event in out.drain(..) {
                    self.emit(event).await?;
                }
                self.scratch = out;
                result?;
            }
            // Non-transactional messages are not tied to a commit, so they are never jobs.
            ReplicationEvent::Message { .. } => {}
            ReplicationEvent::Commit { end_lsn, .. } => {
                let end_lsn = Lsn(end_lsn.as_u64());
                let mut markers = std::mem::take(&mut self.scratch);
                self.assembler.commit(&mut markers);
                // Held like any event: the last marker, not the last change, is then flagged.
                for marker in markers.drain(..) {
                    self.emit(marker).await?;
                }
                self.scratch = markers;
                for lane in 0..self.held.len() {
                    if let Some(mut last) = self.held[lane].take() {
                        last.last_in_transaction = true;
                        last.commit_end_lsn = Some(end_lsn);
                        self.publish(last).await?;
                    }
                }
                metrics::counter!("folio_wal_ingest_transactions_total").increment(1);
                self.txn_span.in_scope(|| tracing::debug!(end_lsn = %end_lsn, "transaction published"));
                self.txn_span = tracing::Span::none();
                self.txn_traceparent = None;
                if let Some(lsn) = self.confirm.committed(end_lsn) {
                    self.confirm_lsn(lsn);
                }
            }
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                if let Some(lsn) = self.confirm.idle(Lsn(wal_end.as_u64()), self.assembler.in_transaction()) {
                    self.confirm_lsn(lsn);
                }
            }
            ReplicationEvent::StoppedAt { .. } => return Err(SessionError::StreamEnded),
        }
        Ok(())
    }

    /// The transaction recorded the trace context of the call that wrote it: its span, and so
    /// every event it publishes, continue that trace. The message comes first in the
    /// transaction (`folio_db::emit_trace_context`), before any event is published under the
    /// span; a later or second one cannot re-parent a started span and is only logged.
    fn continue_trace(&mut self, content: &[u8]) {
        let Some(traceparent) = folio_bus::trace_context::parse_traceparent(content) else {
            tracing::debug!("a trace message without a valid traceparent; the transaction starts its own trace");
            return;
        };
        if self.txn_traceparent.is_some() {
            tracing::debug!(traceparent, "a second trace message in one transaction; the first one stands");
            return;
        }
        folio_bus::trace_context::set_parent_from_traceparent(&self.txn_span, traceparent);
        self.txn_traceparent = Some(traceparent.to_owned());
    }

    async fn emit(&mut self, event: Outgoing) -> Result<(), SessionError> {
        let lane = match event.target {
            Target::Changes => 0,
            Target::Jobs => 1,
        };
        if let Some(previous) = self.held[lane].replace(event) {
            self.publish(previous).await?;
        }
        Ok(())
    }

    async fn publish(&mut self, event: Outgoing) -> Result<(), SessionError> {
        if self.publisher.is_fenced(&event) {
            metrics::counter!("folio_wal_ingest_fenced_total").increment(1);
            return Ok(());
        }
        let stream = match event.target {
            Target::Changes => "changes",
            Target::Jobs => "jobs",
        };
        let seq = self.confirm.published();
        if self.ingest.propagate_trace {
            let span = self.txn_span.clone();
            self.publisher.send(event, seq, None).instrument(span).await?;
        } else {
            self.publisher.send(event, seq, self.txn_traceparent.as_deref()).await?;
        }
        metrics::counter!("folio_wal_ingest_events_total", "stream" => stream).increment(1);
        Ok(())
    }

    fn confirm_lsn(&mut self, lsn: Lsn) {
        self.client.update_applied_lsn(pgwire_replication::Lsn::from_u64(lsn.0));
        metrics::gauge!("folio_wal_ingest_confirmed_lsn").set(lsn.0 as f64);
    }

    /// Graceful end: stop reading, wait for every ack, confirm, and let the status update
    /// reach Postgres before the connection closes.
    async fn finish(&mut self) {
        let grace = self.ingest.shutdown_grace;
        let drain = async {
            while self.publisher.in_flight() > 0 {
                match self.publisher.next_ack().await {
                    Ok(acked) => {
                        if let Some(lsn) = self.confirm.acked(acked.seq) {
                            self.confirm_lsn(lsn);
                        }
                    }
                    Err(e) => {
                        tracing::warn!("an ack failed while draining: {}", crate::chain(&e));
                        return;
                    }
                }
            }
            // The feedback task sends a raised position within one status interval.
            tokio::time::sleep(self.ingest.status_interval + Duration::from_millis(200)).await;
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!("acks did not drain within the grace period; the unconfirmed tail will be replayed");
        }
        tracing::info!(confirmed = %self.confirm.flushed(), "replication stopped");
        self.client.stop();
        if tokio::time::timeout(Duration::from_secs(2), self.client.shutdown()).await.is_err() {
            self.client.abort();
        }
    }
}

/// The columns of the table's latest event in the changes stream, if any: what consumers last
/// saw, so a schema change made while we were down is still announced.
async fn last_published_shape(
    js: &Context,
    changes_stream: &str,
    subjects: &Subjects,
    schema: &str,
    table: &str,
) -> Option<Vec<ColumnType>> {
    let stream = js.get_stream(changes_stream).await.ok()?;
    let msg = stream.get_last_raw_message_by_subject(&subjects.table_filter(schema, table)).await.ok()?;
    let event = ChangeEvent::decode(msg.payload).ok()?;
    (!event.column_types.is_empty()).then_some(event.column_types)
}

/// The slot lost WAL it needed (`max_slot_wal_keep_size`): changes are gone for good. Tell
/// every consumer of every published table to re-snapshot, then start a fresh slot. The
/// notices go out before the slot is recreated, so a crash in between repeats them rather
/// than losing them.
async fn resnapshot_required(
    ingest: &mut Ingest,
    owner: &mut SlotOwner,
) -> Result<crate::slot::SlotState, SessionError> {
    tracing::error!(slot = %ingest.slot, "replication slot invalidated (WAL removed, SQLSTATE 55000): publishing re-snapshot-required events and recreating the slot");
    metrics::counter!("folio_wal_ingest_slot_invalidations_total").increment(1);
    let (current,): (String,) = sqlx::query_as("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&mut owner.conn)
        .await
        .map_err(SessionError::Catalog)?;
    let at: Lsn = current.parse().unwrap_or_default();
    let tables = owner.published_tables(&ingest.publication).await?;
    let mut publisher = Publisher::start(ingest.js.clone(), &ingest.streams, ingest.propagate_trace).await?;
    for (i, (schema, table)) in tables.iter().enumerate() {
        let event = ChangeEvent {
            commit_lsn: at.0,
            schema: schema.clone(),
            table: table.clone(),
            operation: Operation::ResnapshotRequired as i32,
            ..Default::default()
        };
        let outgoing = Outgoing {
            key: MsgKey::new(at, 0, Part::Control(i as u32)),
            target: Target::Changes,
            subject: ingest.subjects.table_wide(schema, table),
            body: Body::Change(Box::new(event)),
            xid: 0,
            last_in_transaction: i + 1 == tables.len(),
            commit_end_lsn: None,
            encoded_suffix: bytes::Bytes::new(),
        };
        publisher.send(outgoing, i as u64 + 1, None).await?;
    }
    while publisher.in_flight() > 0 {
        publisher.next_ack().await?;
    }
    Ok(owner.recreate().await?)
}
