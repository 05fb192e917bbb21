//! One JetStream subscription per table per edge process: it applies every change event of the
//! table, in stream order, to every active shape of the table, and moves the shapes' heads only
//! where a transaction ends. A shape's head is the only place a client is told "up to date", so
//! a client always holds a committed state of the table, never half a transaction.
//!
//! Where a transaction's events for this table end is known without reading other tables: at an
//! event flagged `last_in_transaction` (the transaction touched this table only) or at a
//! `TRANSACTION_END` marker wal-ingest publishes for each table of a multi-table transaction.
//! An event of another commit also ends the open transaction (streams written before markers).

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream;
use folio_bus::StreamSeq;
use folio_live::{Follower, Reconnects};
use folio_proto::events::v1::{ChangeEvent, Operation};
use parking_lot::Mutex;
use prost::Message as _;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    catalog::TableInfo,
    error::{Result, ShapeError},
    messages::{Prepared, Stitch},
    shape::Shape,
};

/// Messages applied before waiting clients are woken: a transaction's events arrive together,
/// and one wake-up per batch keeps thousands of clients from waking per row.
const WAKE_BATCH: usize = 512;

/// Transactions remembered for the snapshot visibility check (by count and by age): a commit
/// reaches the change stream before it is visible to every session only by moments.
const RECENT_TRANSACTIONS: usize = 4096;
const RECENT_AGE: Duration = Duration::from_secs(30);

pub struct TableFeed {
    pub filter: String,
    /// Follows every table (the feed of shapes with subqueries): a transaction ends only at
    /// its last message on the stream, not at one table's marker.
    whole_stream: bool,
    inner: Mutex<FeedInner>,
    /// Bumped on truncate and schema change: cached table descriptions are re-read.
    generation: AtomicU64,
    /// The subscription ended: the edge starts a new feed for the table's next request.
    dead: AtomicBool,
    /// `committed` for readers, shared with the table feed's shapes (their head when no change
    /// concerned them since): set after every batch, once the batch's entries are recorded.
    committed_clock: Arc<AtomicU64>,
}

/// Shapes by the value their key holds.
type ByValue = HashMap<Box<str>, Vec<Arc<Shape>>>;

/// The event's rows read against `table` (once per table description per event).
fn prepared_for<'a>(prepared: &mut Vec<Prepared<'a>>, table: &TableInfo, ev: &'a ChangeEvent) -> usize {
    let addr = table as *const TableInfo as usize;
    match prepared.iter().position(|p| p.table == addr) {
        Some(k) => k,
        None => {
            prepared.push(Prepared::new(table, ev));
            prepared.len() - 1
        }
    }
}

/// The events a feed applied since a shape with subqueries began its snapshot.
pub struct Tap {
    events: Mutex<Vec<(StreamSeq, ChangeEvent)>>,
}

/// Why a feed stopped: a message it cannot apply (skipping it would let shapes move past a
/// change they never applied).
#[derive(Debug, thiserror::Error)]
enum FeedError {
    #[error("change message without metadata")]
    NoMetadata(#[source] async_nats::Error),
    #[error("undecodable change event at {seq}")]
    Undecodable {
        seq: StreamSeq,
        #[source]
        source: prost::DecodeError,
    },
}

struct FeedInner {
    /// Every event of the table up to here has been applied to the registered shapes.
    applied: StreamSeq,
    /// Every transaction with events up to here is complete: the shapes' heads.
    committed: StreamSeq,
    /// Commit LSN and xid of the transaction whose end has not arrived yet.
    open: Option<(u64, u32)>,
    shapes: Vec<Arc<Shape>>,
    /// The table feed's shapes with a `column = constant` (or `IN`) key, by (their table
    /// description, column) and value: a row change is applied only to those whose value its
    /// old or new row holds, so it costs about the shapes it concerns, not every shape.
    index: HashMap<(usize, usize), (Arc<TableInfo>, ByValue)>,
    /// The others, which see every change.
    scan: Vec<Arc<Shape>>,
    /// Events kept for shapes with subqueries whose snapshot is being taken (dropped when
    /// their taker lets go).
    taps: Vec<Arc<Tap>>,
    /// Recently completed transactions: (their last sequence, xid, when).
    recent: VecDeque<(StreamSeq, u32, Instant)>,
    /// Shapes whose log has entries their readers were not yet woken for.
    pending: Vec<Arc<Shape>>,
    /// `shape::INVALIDATIONS` when invalid shapes were last dropped.
    invalidations_seen: u64,
}

impl FeedInner {
    /// Applies one row (or table-wide) event of a table feed to the shapes it concerns: every
    /// shape for a truncate, schema change or an event without complete rows; otherwise the
    /// shapes without a key and those whose key's values the old or new row holds. Shapes of
    /// one table description share the event's decoded rows.
    fn apply_table_event<'a>(&self, seq: StreamSeq, ev: &'a ChangeEvent, op: Operation, news: &mut Vec<Arc<Shape>>) {
        let mut prepared: Vec<Prepared<'a>> = Vec::with_capacity(1);
        let mut apply = |shape: &Arc<Shape>, prepared: &mut Vec<Prepared<'a>>| {
            let k = prepared_for(prepared, &shape.def.table, ev);
            if shape.apply(seq, &prepared[k]) && !shape.queued.swap(true, Ordering::Relaxed) {
                news.push(Arc::clone(shape));
            }
        };
        if !matches!(op, Operation::Insert | Operation::Update | Operation::Delete) || self.index.is_empty() {
            for shape in &self.shapes {
                apply(shape, &mut prepared);
            }
            return;
        }
        for shape in &self.scan {
            apply(shape, &mut prepared);
        }
        for (&(_, col), (table, by_value)) in &self.index {
            let k = prepared_for(&mut prepared, table, ev);
            match prepared[k].column(col) {
                Some((old, new)) => {
                    for v in [old, new.filter(|n| Some(*n) != old)].into_iter().flatten() {
                        for shape in by_value.get(v).into_iter().flatten() {
                            apply(shape, &mut prepared);
                        }
                    }
                }
                // Not readable as rows: every shape decides (and stops) on its own.
                None => {
                    for shape in by_value.values().flatten() {
                        apply(shape, &mut prepared);
                    }
                }
            }
        }
    }

    /// Removes the shapes `gone` says from the index and the scanned shapes.
    fn forget(&mut self, gone: impl Fn(&Arc<Shape>) -> bool) {
        self.pending.retain(|s| !gone(s));
        self.scan.retain(|s| !gone(s));
        for (_, by_value) in self.index.values_mut() {
            for shapes in by_value.values_mut() {
                shapes.retain(|s| !gone(s));
            }
            by_value.retain(|_, shapes| !shapes.is_empty());
        }
        self.index.retain(|_, (_, by_value)| !by_value.is_empty());
    }

    fn close(&mut self, at: StreamSeq, xid: u32) {
        self.committed = self.committed.max(at);
        self.open = None;
        let now = Instant::now();
        while self.recent.len() >= RECENT_TRANSACTIONS
            || self.recent.front().is_some_and(|(_, _, t)| now.duration_since(*t) > RECENT_AGE)
        {
            self.recent.pop_front();
        }
        self.recent.push_back((at, xid, now));
    }
}

impl TableFeed {
    /// Starts the subscription right after the stream's current last sequence.
    pub async fn start(
        js: &jetstream::Context,
        stream_name: &str,
        filter: String,
        whole_stream: bool,
        reconnects: &Reconnects,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Arc<Self>> {
        let mut stream = js
            .get_stream(stream_name)
            .await
            .map_err(|e| ShapeError::unavailable(format!("open change stream {stream_name}"), e))?;
        let last = StreamSeq::new(
            stream
                .info()
                .await
                .map_err(|e| ShapeError::unavailable("read change stream state", e))?
                .state
                .last_sequence,
        );
        let mut follower = Follower::new(js.clone(), stream_name, filter.clone(), last, reconnects, shutdown);
        let feed = Arc::new(TableFeed {
            filter: filter.clone(),
            whole_stream,
            inner: Mutex::new(FeedInner {
                applied: last,
                committed: last,
                open: None,
                shapes: Vec::new(),
                index: HashMap::new(),
                scan: Vec::new(),
                taps: Vec::new(),
                recent: VecDeque::new(),
                pending: Vec::new(),
                invalidations_seen: super::shape::INVALIDATIONS.load(Ordering::SeqCst),
            }),
            generation: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            committed_clock: Arc::new(AtomicU64::new(last.get())),
        });
        let weak = Arc::downgrade(&feed);
        tasks.spawn(async move {
            tracing::debug!(filter, from = %last.next(), "table feed started");
            // The batch being applied (on the blocking pool) while the next one is read and
            // decoded here, with its transactions' spans; batches are applied one after another.
            let mut applying: Option<tokio::task::JoinHandle<()>> = None;
            let settle = |applying: Option<tokio::task::JoinHandle<()>>| async {
                match applying {
                    Some(task) => task.await.map_err(|e| e.to_string()),
                    None => Ok(()),
                }
            };
            while let Some(messages) = follower.next_batch(WAKE_BATCH).await {
                let mut batch = Vec::with_capacity(messages.len());
                let mut broken = None;
                // One span per transaction this edge applies, a child of the write that made it
                // (wal-ingest's `traceparent` header): the live update's hop in the write's trace.
                let mut traced: Vec<tracing::Span> = Vec::new();
                let mut traced_lsn = None;
                for msg in messages {
                    if let (Some(headers), Ok(info)) = (&msg.headers, msg.info())
                        && headers.get(folio_bus::headers::TRACEPARENT).is_some()
                    {
                        let lsn = headers.get(folio_bus::headers::COMMIT_LSN).map(|v| v.as_str().to_owned());
                        if lsn != traced_lsn {
                            let span = tracing::info_span!("live_change", filter = %filter, commit_lsn = lsn.as_deref().unwrap_or(""), stream_seq = info.stream_sequence);
                            traced_lsn = lsn;
                            folio_bus::trace_context::set_parent_from_nats(&span, headers);
                            traced.push(span);
                        }
                    }
                    let event = msg.info().map_err(FeedError::NoMetadata).and_then(|i| {
                        let seq = StreamSeq::new(i.stream_sequence);
                        ChangeEvent::decode(msg.payload.as_ref())
                            .map(|ev| (seq, ev))
                            .map_err(|source| FeedError::Undecodable { seq, source })
                    });
                    match event {
                        Ok(e) => batch.push(e),
                        Err(e) => {
                            // Skipping it would let shapes move past a change they never
                            // applied: their clients start over instead.
                            broken = Some(e);
                            break;
                        }
                    }
                }
                let Some(feed) = weak.upgrade() else { return };
                if let Err(e) = settle(applying.take()).await {
                    tracing::error!(filter, error = %e, "applying changes to shapes failed");
                    feed.fail();
                    return;
                }
                // Where clauses are evaluated here, at a cost the callers choose (within their
                // budget): on the blocking pool, never on the threads that answer requests.
                let to_apply = Arc::clone(&feed);
                let filter_of = filter.clone();
                applying = Some(tokio::task::spawn_blocking(move || {
                    // A panic fails the feed at once (its shapes' clients start over), not when
                    // the next message arrives, which on a quiet table may be never.
                    let applied =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| to_apply.apply(&batch)));
                    // The transactions' spans end when their changes are applied.
                    drop(traced);
                    if applied.is_err() {
                        tracing::error!(filter = filter_of, "applying changes to shapes panicked");
                        to_apply.fail();
                    }
                }));
                if let Some(reason) = broken {
                    // What came before the undecodable message is applied first.
                    let _ = settle(applying.take()).await;
                    tracing::error!(filter, error = %folio_runtime::error_chain(&reason), "table feed stopped");
                    feed.fail();
                    return;
                }
            }
            // Shutdown: the last batch is applied before the task ends.
            let _ = settle(applying).await;
        });
        Ok(feed)
    }

    fn apply(&self, batch: &[(StreamSeq, ChangeEvent)]) {
        if batch.is_empty() {
            return;
        }
        if batch.iter().any(|(_, e)| {
            matches!(
                Operation::try_from(e.operation),
                Ok(Operation::Truncate | Operation::SchemaChange | Operation::ResnapshotRequired)
            )
        }) {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        let mut inner = self.inner.lock();
        let mut news = Vec::new();
        for (seq, ev) in batch {
            let (seq, op) = (*seq, ev.operation());
            if let Some((lsn, xid)) = inner.open
                && lsn != ev.commit_lsn
            {
                let at = inner.applied;
                inner.close(at, xid);
            }
            if self.whole_stream {
                for tap in &inner.taps {
                    tap.events.lock().push((seq, ev.clone()));
                }
                for shape in &inner.shapes {
                    shape.apply_any(seq, ev);
                }
            } else if op != Operation::TransactionEnd {
                inner.apply_table_event(seq, ev, op, &mut news);
            }
            inner.applied = seq;
            let ends = if self.whole_stream {
                ev.last_in_transaction
            } else {
                op == Operation::TransactionEnd || ev.last_in_transaction
            };
            if ends {
                inner.close(seq, ev.xid);
            } else {
                inner.open = Some((ev.commit_lsn, ev.xid));
            }
        }
        let (applied, committed) = (inner.applied, inner.committed);
        let woken: Vec<Arc<Shape>> = if self.whole_stream {
            inner.shapes.iter().filter(|s| s.advance(applied, committed)).map(Arc::clone).collect()
        } else {
            // Only shapes whose logs grew have readers to wake; every other shape's head is
            // the feed's point, read from the clock.
            self.committed_clock.store(committed.get(), Ordering::SeqCst);
            inner.pending.append(&mut news);
            let mut woken = Vec::new();
            inner.pending.retain(|s| {
                if s.advance(applied, committed) {
                    woken.push(Arc::clone(s));
                }
                let hidden = s.has_hidden();
                if !hidden {
                    s.queued.store(false, Ordering::Relaxed);
                }
                hidden
            });
            woken
        };
        let invalidations = super::shape::INVALIDATIONS.load(Ordering::SeqCst);
        if invalidations != inner.invalidations_seen {
            inner.invalidations_seen = invalidations;
            let before = inner.shapes.len();
            inner.shapes.retain(|s| s.invalid_reason().is_none());
            if inner.shapes.len() != before {
                inner.forget(|s| s.invalid_reason().is_some());
            }
        }
        inner.taps.retain(|t| Arc::strong_count(t) > 1);
        drop(inner);
        for s in woken {
            s.notify();
        }
    }

    /// Ends the feed: its shapes are invalidated (their clients get 409 and start over on a new
    /// feed) and the edge creates a new feed for the table on the next request.
    fn fail(&self) {
        self.dead.store(true, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        let shapes = {
            let mut inner = self.inner.lock();
            inner.pending.clear();
            inner.index.clear();
            inner.scan.clear();
            std::mem::take(&mut inner.shapes)
        };
        for s in shapes {
            s.invalidate("the table's change feed failed");
        }
    }

    /// Bumped on truncate and schema change: table descriptions cached before are stale.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The subscription ended: the table's next request starts a new feed.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// The last transaction end this feed has applied: a snapshot's stitching point.
    pub fn committed(&self) -> StreamSeq {
        self.inner.lock().committed
    }

    /// Whether the snapshot of `stitch` sees every recent transaction at or before its
    /// stitching point. A commit reaches the change stream before it is visible to other
    /// sessions (by moments; longer with synchronous replication): a snapshot taken in that
    /// moment would lose the transaction, whose events the log skips as "in the snapshot".
    pub fn snapshot_sees_recent(&self, stitch: &Stitch) -> bool {
        let inner = self.inner.lock();
        inner.recent.iter().filter(|(seq, _, _)| *seq <= stitch.seq0).all(|(_, xid, _)| stitch.saw(*xid))
    }

    /// Adds `shape`: from now on it receives every event after the feed's position, and its
    /// log starts there.
    pub fn register(&self, shape: Arc<Shape>) {
        let mut inner = self.inner.lock();
        let clock = (!self.whole_stream).then(|| Arc::clone(&self.committed_clock));
        shape.attach_at(inner.applied, inner.committed, clock);
        if !self.whole_stream && inner.applied > inner.committed && !shape.queued.swap(true, Ordering::Relaxed) {
            // Registered inside a transaction whose earlier events it reads from history: its
            // readers must be woken when that transaction ends, whether or not the rest of it
            // concerns the shape.
            inner.pending.push(Arc::clone(&shape));
        }
        if !self.whole_stream {
            match shape.def.clause.equality_key() {
                Some((col, values)) => {
                    let table = &*shape.def.table as *const TableInfo as usize;
                    let (_, by_value) = inner
                        .index
                        .entry((table, col))
                        .or_insert_with(|| (Arc::clone(&shape.def.table), ByValue::new()));
                    for v in values {
                        by_value.entry(v.into()).or_default().push(Arc::clone(&shape));
                    }
                }
                None => inner.scan.push(Arc::clone(&shape)),
            }
        }
        inner.shapes.push(shape);
    }

    /// Starts keeping every event from here on for a shape with subqueries about to take its
    /// snapshot; with the last transaction end applied (the snapshot's point) and the
    /// transaction open at this moment, if any, whose earlier events are not kept: the
    /// snapshot must see it.
    pub fn tap(&self) -> (Arc<Tap>, StreamSeq, Option<u32>) {
        let mut inner = self.inner.lock();
        let tap = Arc::new(Tap { events: Mutex::new(Vec::new()) });
        inner.taps.push(Arc::clone(&tap));
        (tap, inner.committed, inner.open.map(|(_, xid)| xid))
    }

    /// Adds a shape with subqueries whose snapshot was taken after `tap`: it applies what the
    /// tap kept (the snapshot skips what it saw), then every later event, with no gap.
    pub fn register_tapped(&self, shape: Arc<Shape>, tap: Arc<Tap>) {
        let mut inner = self.inner.lock();
        inner.taps.retain(|t| !Arc::ptr_eq(t, &tap));
        let events = std::mem::take(&mut *tap.events.lock());
        shape.attach_tapped(events, inner.committed);
        if self.is_dead() {
            // It ended while the snapshot was taken: nothing would move the shape on.
            return shape.invalidate("the table's change feed failed");
        }
        inner.shapes.push(shape);
    }

    /// Removes these very shapes (not others registered since under the same handles), in one
    /// pass over the feed's shapes however many leave.
    pub fn unregister(&self, shapes: &[Arc<Shape>]) {
        let gone: std::collections::HashSet<*const Shape> = shapes.iter().map(Arc::as_ptr).collect();
        let mut inner = self.inner.lock();
        inner.shapes.retain(|s| !gone.contains(&Arc::as_ptr(s)));
        inner.forget(|s| gone.contains(&Arc::as_ptr(s)));
    }
}
