//! One shape: its definition, the snapshot it started from, and its log of change messages.
//!
//! The log lives in memory for the stretch this edge has watched (fed by the table's feed);
//! anything older is re-derived from JetStream, where the change events themselves are kept.
//! That is what lets any edge continue any client: a handle names a definition and a snapshot
//! point (kept in a JetStream KV bucket), and offsets are JetStream sequences.

use std::{
    collections::VecDeque,
    sync::{
        Arc, OnceLock, Weak,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use folio_bus::StreamSeq;
use folio_proto::events::v1::ChangeEvent;
use folio_shapes::WhereClause;
use parking_lot::Mutex;
use prost::Message as _;
use sqlx::{PgPool, Row};
use tokio::sync::watch;

use super::{
    catalog::TableInfo,
    error::{Result, ShapeError},
    feed::TableFeed,
    messages::{DependencyChange, Effect, Prepared, RowChange, RowMap, ShapeView, Stitch, close_op, snapshot_row},
    quota::LiveShapePermit,
    request::{LogMode, Replica, quote},
};

/// Most entries one shape keeps in memory; older ones are read back from JetStream.
const MAX_MEMORY_ENTRIES: usize = 20_000;
const MAX_MEMORY_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug)]
pub struct ShapeDef {
    pub table: Arc<TableInfo>,
    /// Selected column indexes, in table order.
    pub selected: Vec<usize>,
    pub replica: Replica,
    pub log: LogMode,
    pub clause: WhereClause,
    /// The table each subquery of the clause reads, in the clause's subquery order (empty
    /// without subqueries). Such a shape follows the whole change stream, not one table.
    pub deps: Vec<Arc<TableInfo>>,
    /// Hash of everything that defines the log (table and its columns, where, params, columns,
    /// replica, log mode, tenant): the first part of every handle of this definition.
    pub hash: String,
    pub schema_header: String,
    /// The caller's agency, whose quota the definition and its shapes count against.
    pub agency: Option<String>,
    /// Bytes of the request's where text and params.
    pub where_bytes: usize,
    /// Set when the clause exceeded its evaluation budget on a change: requests for the
    /// definition are refused from then on (their shapes were invalidated).
    pub over_budget: AtomicBool,
}

impl ShapeDef {
    /// About how many bytes the definition holds beyond the shared table description.
    pub fn estimated_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.clause.estimated_bytes()
            + self.where_bytes
            + self.schema_header.len()
            + self.hash.len()
            + self.selected.len() * std::mem::size_of::<usize>()
    }

    pub fn over_budget(&self) -> bool {
        self.over_budget.load(Ordering::Relaxed)
    }

    pub fn view<'a>(&'a self, sets: &'a [folio_shapes::ValueSet]) -> ShapeView<'a> {
        ShapeView {
            table: &self.table,
            selected: &self.selected,
            replica: self.replica,
            clause: &self.clause,
            over_budget: &self.over_budget,
            deps: &self.deps,
            sets,
        }
    }

    pub fn has_subqueries(&self) -> bool {
        !self.deps.is_empty()
    }
}

struct Entry {
    seq: StreamSeq,
    /// Commit LSN of the entry's transaction: entries of one transaction share it.
    txn: u64,
    ops: Vec<String>,
    bytes: usize,
}

struct Log {
    /// The log holds every entry after `start` up to `applied`.
    start: StreamSeq,
    /// The feed has applied every event of the table up to here.
    applied: StreamSeq,
    /// Every transaction up to here is complete: reads serve up to here and no further, so
    /// "up to date" always means a committed state.
    head: StreamSeq,
    entries: VecDeque<Entry>,
    bytes: usize,
}

pub struct Shape {
    pub handle: String,
    pub def: Arc<ShapeDef>,
    pub stitch: Stitch,
    /// A subquery shape's moving parts (None without subqueries).
    moves: Option<Mutex<Moves>>,
    /// A subquery shape is re-reading its rows after a move: its head stays where it was.
    resyncing: AtomicBool,
    /// The last transaction end its feed reported (a subquery shape's head catches up to it
    /// when a move is done).
    committed_seen: AtomicU64,
    /// Where a subquery shape re-reads its rows from, and itself for the task that does it.
    resync: Option<Resync>,
    me: OnceLock<Weak<Shape>>,
    /// Snapshot chunks as complete JSON arrays; None when this edge did not take the snapshot
    /// (a client resuming past it does not need it) or dropped it to stay in its memory budget.
    snapshot: Mutex<Option<Arc<[Bytes]>>>,
    /// The edge's total of snapshot bytes held, which this shape's chunks count in.
    snapshot_memory: Arc<AtomicUsize>,
    /// How many chunks the snapshot had (also known to edges that do not hold it): a client
    /// whose offset is the last chunk is past the snapshot.
    pub chunk_count: usize,
    log: Mutex<Log>,
    /// Its table feed's last transaction end, shared by every shape of the feed: a shape no
    /// change concerned is at that point without the feed visiting it, so a batch of changes
    /// costs the shapes it concerns, not every shape (unset for shapes with subqueries, whose
    /// head waits during a move).
    feed_committed: OnceLock<Arc<AtomicU64>>,
    /// In its feed's list of shapes with entries not yet visible to readers.
    pub(super) queued: AtomicBool,
    changed: watch::Sender<StreamSeq>,
    /// Why the shape stopped, set once: every live reader asks at every wake-up, so reading it
    /// takes no lock (50,000 readers made a mutex here a contended one).
    invalid: std::sync::OnceLock<&'static str>,
    pub last_used: AtomicU64,
    memo: Mutex<Option<(StreamSeq, Arc<Rendered>)>>,
    /// The shape's place in its agency's live-shape quota, freed when the shape is dropped.
    _permit: Option<LiveShapePermit>,
}

/// A subquery shape's state beyond its log: what its subqueries yield now and the rows a client
/// following the log holds, so that when a change of another table alters what a subquery
/// yields, the shape re-reads its rows in a snapshot and sends the difference (Electric's
/// move-in and move-out) instead of invalidating.
pub struct Moves {
    /// What each subquery yields, with the rows behind each tuple, kept current from the
    /// changes applied: the membership the shape's changes are decided with.
    pub sets: Vec<folio_shapes::ValueSet>,
    /// The snapshot the current membership and rows were read in: later changes it already
    /// saw are skipped.
    pub stitch: Stitch,
    /// The shape's rows as a client at the head holds them.
    pub rows: RowMap,
    /// Set while the rows are re-read: the changes that arrive meanwhile, held back.
    waiting: Option<Waiting>,
}

struct Waiting {
    events: Vec<(StreamSeq, ChangeEvent)>,
    /// The transactions whose changes altered what a subquery yields.
    txids: Vec<u32>,
}

impl Moves {
    pub fn new(sets: Vec<folio_shapes::ValueSet>, stitch: Stitch, rows: RowMap) -> Self {
        Moves { sets, stitch, rows, waiting: None }
    }
}

/// What a subquery shape re-reads its rows with.
#[derive(Clone)]
pub struct Resync {
    pub pool: PgPool,
    pub feed: Weak<TableFeed>,
    /// The edge's snapshot slots: many shapes moving at once queue for them instead of
    /// exhausting the pool.
    pub slots: Arc<tokio::sync::Semaphore>,
}

/// Most rows a shape with subqueries may hold: the edge keeps each (its key and values) to
/// compute what a move changes.
pub const MAX_SUBQUERY_SHAPE_ROWS: usize = 500_000;

/// Most change events of the whole stream a subquery shape holds back while a move's rows are
/// read.
const MAX_HELD_BACK: usize = 100_000;

/// Shapes invalidated so far, process-wide: a feed drops its invalid shapes only when this
/// moved, instead of visiting every shape after every batch.
pub(super) static INVALIDATIONS: AtomicU64 = AtomicU64::new(0);

/// How long a move waits for the change stream to close the transaction that caused it.
const MOVE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A rendered log read: messages joined by commas (no brackets), where it ends, and whether
/// it reached the head of the log.
pub struct Rendered {
    pub body: Bytes,
    pub end: StreamSeq,
    pub up_to_date: bool,
    pub count: usize,
    array: std::sync::OnceLock<Bytes>,
    sse: std::sync::OnceLock<Bytes>,
}

impl Rendered {
    /// The response body: `[messages…(,up-to-date)]`, built once however many clients share it.
    pub fn json_array(&self) -> Bytes {
        self.array
            .get_or_init(|| {
                let mut out = Vec::with_capacity(self.body.len() + 96);
                out.push(b'[');
                out.extend_from_slice(&self.body);
                if self.up_to_date {
                    if self.count > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(super::messages::up_to_date_json(self.end).as_bytes());
                }
                out.push(b']');
                out.into()
            })
            .clone()
    }

    /// The same messages as SSE events (`data: …` each, then the up-to-date), also built once:
    /// every SSE client at the same offset is sent the same bytes.
    pub fn sse_events(&self) -> Bytes {
        self.sse
            .get_or_init(|| {
                let mut out = Vec::with_capacity(self.body.len() + 8 * self.count + 96);
                for msg in super::http::split_messages(&self.body) {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(msg);
                    out.extend_from_slice(b"\n\n");
                }
                if self.up_to_date {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(super::messages::up_to_date_json(self.end).as_bytes());
                    out.extend_from_slice(b"\n\n");
                }
                out.into()
            })
            .clone()
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

impl Shape {
    pub fn new(
        handle: String,
        def: Arc<ShapeDef>,
        stitch: Stitch,
        snapshot: Option<Vec<Bytes>>,
        chunk_count: usize,
        snapshot_memory: Arc<AtomicUsize>,
        permit: Option<LiveShapePermit>,
        moves: Option<(Moves, Resync)>,
    ) -> Self {
        let seq0 = stitch.seq0;
        let bytes: usize = snapshot.iter().flatten().map(Bytes::len).sum();
        snapshot_memory.fetch_add(bytes, Ordering::SeqCst);
        Shape {
            handle,
            def,
            stitch,
            resync: moves.as_ref().map(|(_, r)| r.clone()),
            moves: moves.map(|(m, _)| Mutex::new(m)),
            resyncing: AtomicBool::new(false),
            committed_seen: AtomicU64::new(seq0.get()),
            me: OnceLock::new(),
            snapshot: Mutex::new(snapshot.map(Into::into)),
            snapshot_memory,
            chunk_count,
            log: Mutex::new(Log { start: seq0, applied: seq0, head: seq0, entries: VecDeque::new(), bytes: 0 }),
            feed_committed: OnceLock::new(),
            queued: AtomicBool::new(false),
            changed: watch::channel(seq0).0,
            invalid: std::sync::OnceLock::new(),
            last_used: AtomicU64::new(now_secs()),
            memo: Mutex::new(None),
            _permit: permit,
        }
    }

    pub fn snapshot(&self) -> Option<Arc<[Bytes]>> {
        self.snapshot.lock().clone()
    }

    /// Frees the snapshot chunks (clients still reading them get 409 and start over).
    pub fn drop_snapshot(&self) {
        if let Some(chunks) = self.snapshot.lock().take() {
            self.snapshot_memory.fetch_sub(chunks.iter().map(Bytes::len).sum(), Ordering::SeqCst);
        }
    }

    pub fn touch(&self) {
        // Written once a second at most: every SSE client of the shape calls this per event,
        // and a store from both cores each time would bounce the line between them.
        let now = now_secs();
        if self.last_used.load(Ordering::Relaxed) != now {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }

    /// Called by the feed under its lock: the log starts where the feed is. Events between the
    /// snapshot and there (and of a transaction the feed is in the middle of) come from history.
    pub(super) fn attach_at(&self, applied: StreamSeq, committed: StreamSeq, feed_committed: Option<Arc<AtomicU64>>) {
        if let Some(c) = feed_committed {
            let _ = self.feed_committed.set(c);
        }
        let mut log = self.log.lock();
        log.start = applied.max(self.stitch.seq0);
        log.applied = log.start;
        log.head = committed.max(self.stitch.seq0);
    }

    /// Applies one change event of the table (the feed calls this in stream order). Returns
    /// whether the log got an entry (or the shape was invalidated): its readers have news once
    /// the transaction ends.
    pub(super) fn apply(&self, seq: StreamSeq, event: &Prepared<'_>) -> bool {
        if self.invalid_reason().is_some() {
            return false;
        }
        // A shape without subqueries decides with no sets.
        let effect = self.def.view(&[]).effect_of(&self.stitch, seq, event);
        self.record(seq, event.commit_lsn(), effect)
    }

    /// Called by the feed under its lock, for a shape with subqueries: the log starts at the
    /// snapshot's point; `events` are what the feed applied since the snapshot began (which
    /// the snapshot may partly have seen), then the feed's every event follows.
    pub(super) fn attach_tapped(self: &Arc<Self>, events: Vec<(StreamSeq, ChangeEvent)>, committed: StreamSeq) {
        let _ = self.me.set(Arc::downgrade(self));
        self.committed_seen.fetch_max(committed.get(), Ordering::SeqCst);
        let Some(moves) = &self.moves else { return };
        let mut m = moves.lock();
        for (seq, ev) in &events {
            self.process(&mut m, *seq, ev);
        }
        if m.waiting.is_none() {
            let mut log = self.log.lock();
            log.head = log.head.max(committed);
        }
    }

    /// Applies one change event of any table (a subquery shape's feed follows the whole
    /// stream, so changes of the tables its subqueries read come in stream order with its own).
    pub(super) fn apply_any(&self, seq: StreamSeq, event: &ChangeEvent) {
        let Some(moves) = &self.moves else { return };
        self.process(&mut moves.lock(), seq, event);
    }

    fn process(&self, m: &mut Moves, seq: StreamSeq, event: &ChangeEvent) {
        if self.invalid_reason().is_some() {
            return;
        }
        if let Some(w) = &mut m.waiting {
            if w.events.len() >= MAX_HELD_BACK {
                // The re-read is too slow for the stream (Electric caps this at 1,000
                // transactions): the clients start over rather than the edge's memory growing.
                m.waiting = None;
                return self.invalidate("too many changes arrived while a move was computed");
            }
            w.events.push((seq, event.clone()));
            return;
        }
        // An event already applied (or covered by the latest snapshot's point) is never
        // counted twice.
        if seq <= self.log.lock().applied {
            return;
        }
        let change = self.def.view(&m.sets).dependency_change(&m.stitch, seq, event);
        match change {
            DependencyChange::Nothing => {}
            DependencyChange::Invalidate(reason) => {
                self.record(seq, event.commit_lsn, Effect::Invalidate(reason));
                return;
            }
            DependencyChange::Yields(moved) => {
                if !count(&mut m.sets, moved) {
                    // What a subquery yields changed: rows move in or out. The shape stops
                    // here (its head stays at the last committed point before) and re-reads
                    // its rows in a snapshot past this transaction; this event and the ones
                    // after wait for it.
                    m.waiting = Some(Waiting { events: vec![(seq, event.clone())], txids: vec![event.xid] });
                    self.resyncing.store(true, Ordering::SeqCst);
                    self.start_resync(seq);
                    return;
                }
            }
        }
        let view = self.def.view(&m.sets);
        let effect = if view.is_of(&self.def.table, event) {
            let mut rows = Vec::new();
            let effect = view.effect_tracked(&m.stitch, seq, &Prepared::new(&self.def.table, event), Some(&mut rows));
            for r in rows {
                match r {
                    RowChange::Upsert(k, v) => {
                        m.rows.insert(k, v);
                    }
                    RowChange::Remove(k) => {
                        m.rows.remove(&k);
                    }
                }
            }
            effect
        } else {
            Effect::Ops(Vec::new())
        };
        self.record(seq, event.commit_lsn, effect);
        if m.rows.len() > MAX_SUBQUERY_SHAPE_ROWS {
            self.invalidate("the shape holds more rows than a shape with subqueries may");
        }
    }

    /// Re-reads the shape's rows after the change at `trigger` moved some, on the runtime (the
    /// feed applies changes on the blocking pool).
    fn start_resync(&self, trigger: StreamSeq) {
        let me = self.me.get().and_then(Weak::upgrade);
        let (Some(me), Some(ctx), Ok(rt)) = (me, self.resync.clone(), tokio::runtime::Handle::try_current()) else {
            return self.invalidate("a move could not be computed");
        };
        rt.spawn(async move {
            if let Err(e) = Arc::clone(&me).resync(ctx, trigger).await {
                tracing::warn!(handle = %me.handle, error = %folio_runtime::error_chain(&e), "re-reading a shape's rows after a move failed");
                me.invalidate("the rows a move brings could not be read");
            }
        });
    }

    async fn resync(self: Arc<Self>, ctx: Resync, trigger: StreamSeq) -> Result<()> {
        let _slot = ctx.slots.acquire().await.map_err(|e| ShapeError::internal("snapshot slots", e))?;
        let deadline = std::time::Instant::now() + MOVE_WAIT;
        // A snapshot past the whole transaction that moved rows: the feed has closed it.
        let feed = loop {
            let Some(feed) = ctx.feed.upgrade().filter(|f| !f.is_dead()) else {
                return Err(ShapeError::unavailable_without_source("the change feed ended during a move"));
            };
            if feed.committed() >= trigger {
                break feed;
            }
            if std::time::Instant::now() > deadline || self.invalid_reason().is_some() {
                return Err(ShapeError::unavailable_without_source("the transaction of a move did not end"));
            }
            drop(feed);
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        };
        let seq0 = feed.committed();
        let (tx, stitch) = begin_snapshot(&ctx.pool, seq0, |s| feed.snapshot_sees_recent(s)).await?;
        drop(feed);
        let (sets, rows) = read_rows(tx, &self.def, None).await?;
        self.finish_resync(stitch, sets, rows);
        Ok(())
    }

    /// The rows re-read after a move: the log gets the difference at the snapshot's point,
    /// then the changes held back meanwhile (those the snapshot saw are skipped), and the head
    /// moves on unless one of them moved rows again.
    fn finish_resync(&self, stitch: Stitch, sets: Vec<folio_shapes::ValueSet>, rows: RowMap) {
        let Some(moves) = &self.moves else { return };
        let mut m = moves.lock();
        let Some(waiting) = m.waiting.take() else { return };
        // The transactions the snapshot covers among those held back send no message of their
        // own: the move's events carry their txids (TanStack DB's awaitTxId waits for them).
        let mut txids = waiting.txids.clone();
        let covered = waiting.events.iter().filter(|(seq, ev)| *seq <= stitch.seq0 || stitch.saw(ev.xid));
        txids.extend(covered.map(|(_, ev)| ev.xid));
        txids.sort_unstable();
        txids.dedup();
        let ops = super::messages::move_ops(&self.def.table.relation_json, &m.rows, &rows, &txids, &stitch);
        let at = stitch.seq0;
        if at <= self.log.lock().applied {
            // The snapshot is not past what the log holds: its difference has no place there.
            drop(m);
            return self.invalidate("a move's snapshot is behind the shape's log");
        }
        m.rows = rows;
        m.sets = sets;
        m.stitch = stitch;
        // Its own transaction in the log: the messages of a move end with `last`.
        self.record(at, u64::MAX - at.get(), Effect::Ops(ops));
        self.resyncing.store(false, Ordering::SeqCst);
        for (seq, ev) in &waiting.events {
            self.process(&mut m, *seq, ev);
        }
        if m.waiting.is_none() {
            let committed = StreamSeq::new(self.committed_seen.load(Ordering::SeqCst));
            let mut log = self.log.lock();
            log.head = log.head.max(committed).max(at);
        }
        drop(m);
        self.notify();
    }

    fn record(&self, seq: StreamSeq, commit_lsn: u64, effect: Effect) -> bool {
        let mut log = self.log.lock();
        if seq <= log.applied {
            return false;
        }
        log.applied = seq;
        match effect {
            Effect::Invalidate(reason) => {
                drop(log);
                self.invalidate(reason);
                true
            }
            Effect::Ops(ops) if ops.is_empty() => false,
            Effect::Ops(ops) => {
                let bytes = ops.iter().map(|o| o.len() + 20).sum();
                log.bytes += bytes;
                log.entries.push_back(Entry { seq, txn: commit_lsn, ops, bytes });
                while log.entries.len() > MAX_MEMORY_ENTRIES || log.bytes > MAX_MEMORY_BYTES {
                    let Some(old) = log.entries.pop_front() else { break };
                    log.bytes -= old.bytes;
                    log.start = old.seq;
                }
                true
            }
        }
    }

    /// Whether the log holds entries past the head (of a transaction not yet complete), or
    /// starts past it (registered, or trimmed, inside one).
    pub(super) fn has_hidden(&self) -> bool {
        let log = self.log.lock();
        log.start > log.head || log.entries.back().is_some_and(|e| e.seq > log.head)
    }

    /// The feed has applied every table event up to `applied`, and every transaction up to
    /// `committed` is complete. Returns whether readers have something new (messages below the
    /// new head, or the shape was invalidated).
    pub(super) fn advance(&self, applied: StreamSeq, committed: StreamSeq) -> bool {
        if self.invalid_reason().is_some() {
            return true;
        }
        if self.moves.is_some() {
            // A subquery shape records every event itself (in order, some held back during a
            // move); its head waits while a move is computed.
            self.committed_seen.fetch_max(committed.get(), Ordering::SeqCst);
            if self.resyncing.load(Ordering::SeqCst) {
                return false;
            }
        }
        let mut log = self.log.lock();
        if self.moves.is_none() {
            log.applied = log.applied.max(applied);
        }
        let before = log.head;
        log.head = before.max(committed);
        if log.head == before {
            return false;
        }
        let visible = log.entries.partition_point(|e| e.seq <= log.head);
        // Entries trimmed from memory past the old head are news too.
        log.start > before || (visible > 0 && log.entries[visible - 1].seq > before)
    }

    pub(super) fn notify(&self) {
        let head = self.head();
        self.changed.send_replace(head);
    }

    pub fn invalidate(&self, reason: &'static str) {
        if self.invalid.set(reason).is_ok() {
            tracing::info!(handle = %self.handle, table = %self.def.table.name, reason, "shape invalidated");
            INVALIDATIONS.fetch_add(1, Ordering::SeqCst);
        }
        self.changed.send_modify(|_| {});
    }

    pub fn invalid_reason(&self) -> Option<&'static str> {
        self.invalid.get().copied()
    }

    /// The last committed point readers are served up to: the shape's own, or its feed's when
    /// that is further (every entry up to the feed's point was recorded before it was set).
    pub fn head(&self) -> StreamSeq {
        let own = self.log.lock().head;
        self.feed_committed.get().map_or(own, |c| own.max(StreamSeq::new(c.load(Ordering::SeqCst))))
    }

    pub fn subscribe(&self) -> watch::Receiver<StreamSeq> {
        self.changed.subscribe()
    }

    /// Messages after `from`, up to about `max_bytes`, never past the head. Entries this edge
    /// has not watched are re-derived from the change stream through `history`.
    pub async fn read(&self, from: StreamSeq, max_bytes: usize, history: &History<'_>) -> Result<Arc<Rendered>> {
        let from = from.max(self.stitch.seq0);
        let head = self.head();
        let (start, last_visible) = {
            let log = self.log.lock();
            let visible = log.entries.partition_point(|e| e.seq <= head);
            (log.start, visible.checked_sub(1).map(|i| log.entries[i].seq))
        };
        if from >= start
            && let Some((memo_from, r)) = self.memo.lock().as_ref()
            && *memo_from == from
            && r.up_to_date
            && last_visible.is_none_or(|seq| seq <= r.end)
        {
            // Identical requests (every client of a busy shape after a change) render once.
            // When only other shapes' changes moved the head since, the answer is the same
            // state, at an earlier (still committed) offset.
            return Ok(Arc::clone(r));
        }
        let mut picked = Picked::default();
        let mut pos = from;
        if pos < start.min(head) && self.moves.is_some() {
            // A subquery shape's moves are not in the change stream: its log is only what
            // this edge holds.
            return Err(ShapeError::MustRefetch {
                handle: String::new(),
                reason: "the shape's log no longer holds this offset".into(),
            });
        }
        if pos < start.min(head) {
            let to = start.min(head);
            let reached = history.read(self, pos, to, max_bytes, &mut picked).await?;
            if picked.cut.is_some() {
                return Ok(Arc::new(picked.render(reached, false)));
            }
            pos = to;
        }
        if pos >= head {
            return Ok(Arc::new(picked.render(head.max(pos), pos >= head)));
        }
        let log = self.log.lock();
        if pos < log.start {
            // The log was trimmed while history was read: answer with what we have; where the
            // last transaction ends is not known, so it is not marked.
            picked.cut = Some(None);
            drop(log);
            return Ok(Arc::new(picked.render(pos, false)));
        }
        let after = pos;
        for e in log.entries.iter().filter(|e| e.seq > after && e.seq <= head) {
            if !picked.push(e.txn, &e.ops, max_bytes) {
                drop(log);
                return Ok(Arc::new(picked.render(pos, false)));
            }
            pos = e.seq;
        }
        drop(log);
        let r = Arc::new(picked.render(head, true));
        *self.memo.lock() = Some((from, Arc::clone(&r)));
        Ok(r)
    }
}

impl Drop for Shape {
    fn drop(&mut self) {
        self.drop_snapshot();
    }
}

/// Messages picked for one response, in log order, by transaction.
#[derive(Default)]
struct Picked {
    items: Vec<(u64, Vec<String>)>,
    bytes: usize,
    /// Set when the response ends before its limit: the transaction of the first message left
    /// out (`Some(None)`: not known).
    cut: Option<Option<u64>>,
}

impl Picked {
    /// Adds one entry's messages, or records the cut when they do not fit.
    fn push(&mut self, txn: u64, ops: &[String], max_bytes: usize) -> bool {
        let n: usize = ops.iter().map(|o| o.len() + 20).sum();
        if self.bytes + n > max_bytes && !self.items.is_empty() {
            self.cut = Some(Some(txn));
            return false;
        }
        self.bytes += n;
        self.items.push((txn, ops.to_vec()));
        true
    }

    /// Joins the messages. `last: true` marks the final message of a transaction: inside the
    /// response where the next message belongs to another one; at its end only where the
    /// response reached the head (a transaction end) or the first message left out belongs to
    /// another transaction.
    fn render(&self, end: StreamSeq, up_to_date: bool) -> Rendered {
        let items = &self.items;
        let mut body = Vec::with_capacity(items.iter().flat_map(|(_, o)| o).map(|o| o.len() + 16).sum());
        let mut count = 0;
        for (i, (txn, ops)) in items.iter().enumerate() {
            let txn_ends = match items.get(i + 1) {
                Some((next, _)) => next != txn,
                None => match self.cut {
                    None => true,
                    Some(next) => next.is_some_and(|n| n != *txn),
                },
            };
            for (j, op) in ops.iter().enumerate() {
                if count > 0 {
                    body.push(b',');
                }
                close_op(&mut body, op, txn_ends && j + 1 == ops.len());
                count += 1;
            }
        }
        Rendered {
            body: body.into(),
            end,
            up_to_date,
            count,
            array: std::sync::OnceLock::new(),
            sse: std::sync::OnceLock::new(),
        }
    }
}

/// Reads a table's change events back from JetStream for a range this edge's log does not hold.
pub struct History<'a> {
    pub nats: &'a async_nats::Client,
    pub js: &'a async_nats::jetstream::Context,
    pub stream: &'a str,
    pub filter: &'a str,
}

impl History<'_> {
    /// Adds the messages of `shape` for events in `(from, to]` to `picked`; returns the
    /// position reached (`to` unless `max_bytes` cut the read, which `picked.cut` then says).
    async fn read(
        &self,
        shape: &Shape,
        from: StreamSeq,
        to: StreamSeq,
        max_bytes: usize,
        picked: &mut Picked,
    ) -> Result<StreamSeq> {
        let info = self
            .js
            .get_stream_no_info(self.stream)
            .await
            .map_err(|e| ShapeError::unavailable(format!("open change stream {}", self.stream), e))?
            .get_info()
            .await
            .map_err(|e| ShapeError::unavailable("read change stream state", e))?;
        let (first, last) = (StreamSeq::new(info.state.first_sequence), StreamSeq::new(info.state.last_sequence));
        if first > from.next() || last < from {
            // Events the client has not seen were removed by retention (also when every message
            // expired), or the stream was recreated: the log cannot be continued.
            if first > shape.stitch.seq0.next() || last < shape.stitch.seq0 {
                // Nor can the snapshot itself: new clients must not be handed this shape again.
                shape.invalidate("snapshot older than the change stream's retention");
            }
            return Err(ShapeError::MustRefetch {
                handle: String::new(),
                reason: "change stream no longer holds this offset".into(),
            });
        }
        let mut pos = from;
        while pos < to {
            let batch = folio_live::direct_get_batch(self.nats, self.stream, self.filter, pos.next(), 256, 8 << 20)
                .await
                .map_err(|e| ShapeError::unavailable("read change history", e))?;
            if batch.is_empty() {
                break;
            }
            // The caller's where clause runs here, at a cost the caller chooses (within its
            // budget per event): on the blocking pool, as for live changes, never on the threads
            // that answer requests (issue 13, finding 5).
            let (def, stitch) = (Arc::clone(&shape.def), shape.stitch.clone());
            let (effects, past_to) = tokio::task::spawn_blocking(move || effects_of(&def, &stitch, batch, to))
                .await
                .map_err(|e| ShapeError::internal("evaluate change history", e))??;
            for (seq, commit_lsn, effect) in effects {
                match effect {
                    Effect::Invalidate(reason) => {
                        shape.invalidate(reason);
                        return Err(ShapeError::MustRefetch { handle: String::new(), reason: reason.into() });
                    }
                    Effect::Ops(ops) if ops.is_empty() => {}
                    Effect::Ops(ops) => {
                        if !picked.push(commit_lsn, &ops, max_bytes) {
                            return Ok(pos);
                        }
                    }
                }
                pos = seq;
            }
            if past_to {
                return Ok(to);
            }
        }
        Ok(to)
    }
}

/// One event of the history for one shape: its position, its commit, what it means.
type HistoryEffect = (StreamSeq, u64, Effect);

/// What each event of a batch read from the change stream means for one shape, up to `to`;
/// and whether the batch reached past `to` (the read is then complete).
fn effects_of(
    def: &ShapeDef,
    stitch: &Stitch,
    batch: Vec<(StreamSeq, Bytes)>,
    to: StreamSeq,
) -> Result<(Vec<HistoryEffect>, bool)> {
    // Only shapes without subqueries read history (a subquery shape's moves are not in it).
    let view = def.view(&[]);
    let mut effects = Vec::with_capacity(batch.len());
    for (seq, payload) in batch {
        if seq > to {
            return Ok((effects, true));
        }
        let ev = ChangeEvent::decode(payload.as_ref()).map_err(|e| ShapeError::internal("decode a change event", e))?;
        let effect = view.effect(stitch, seq, &ev);
        effects.push((seq, ev.commit_lsn, effect));
    }
    Ok((effects, false))
}

/// Counts what a change altered in the subqueries' yields; false when the membership of a set
/// changed (a tuple no row yields any more, or a new one): rows may move in or out.
fn count(
    sets: &mut [folio_shapes::ValueSet],
    moved: Vec<(usize, Option<folio_shapes::Tuple>, Option<folio_shapes::Tuple>)>,
) -> bool {
    let mut same = true;
    for (k, before, after) in moved {
        if let Some(b) = before
            && sets[k].remove_one(&b) != Some(false)
        {
            // Its last row (or a tuple the set did not hold: the two disagree).
            same = false;
        }
        if let Some(a) = after
            && sets[k].add_counted(a, 1)
        {
            same = false;
        }
    }
    same
}

/// Data exceptions (class 22: a cast of a stored value that fails, an overflow) and syntax or
/// access errors (42) in the snapshot query come from what the where clause asks: a 400 for the
/// client, not a 500 it would retry for ever.
pub(super) fn where_error(e: sqlx::Error, table: &super::request::QualifiedName) -> ShapeError {
    if let sqlx::Error::Database(db) = &e
        && db.code().as_deref() == Some("42P01")
    {
        // Dropped since the edge read its description: the table is what is wrong.
        return ShapeError::invalid(
            "table",
            format!(
                "Table {table} does not exist. If the table name contains capitals or special characters you must quote it."
            ),
        );
    }
    if let sqlx::Error::Database(db) = &e
        && db.code().is_some_and(|c| c.starts_with("22") || c.starts_with("42"))
    {
        let message = format!("the database refused the clause: {}", db.message());
        return ShapeError::invalid_because("where", message, e);
    }
    e.into()
}

/// How long a snapshot waits for commits already on the change stream to become visible.
const VISIBILITY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens a REPEATABLE READ READ ONLY transaction whose snapshot sees every transaction the
/// change stream carried up to `seq0` (a transaction end read from the stream before this
/// starts): `sees_committed` tells whether a snapshot does, and one that does not is taken
/// again. Values are rendered as the change stream renders them.
pub(super) async fn begin_snapshot(
    pool: &PgPool,
    seq0: StreamSeq,
    sees_committed: impl Fn(&Stitch) -> bool,
) -> Result<(sqlx::Transaction<'static, sqlx::Postgres>, Stitch)> {
    let deadline = std::time::Instant::now() + VISIBILITY_WAIT;
    loop {
        let mut tx = pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(folio_db::text_output_set_local())).execute(&mut *tx).await?;
        let snap: String = sqlx::query_scalar("SELECT pg_current_snapshot()::text").fetch_one(&mut *tx).await?;
        let stitch = Stitch::from_snapshot_text(seq0, &snap)
            .ok_or_else(|| ShapeError::internal_without_source(format!("unparseable snapshot {snap}")))?;
        if sees_committed(&stitch) {
            return Ok((tx, stitch));
        }
        tx.rollback().await?;
        if std::time::Instant::now() > deadline {
            return Err(ShapeError::unavailable_without_source(
                "the database does not show transactions the change stream already carries",
            ));
        }
        tracing::debug!(%seq0, snapshot = snap, "snapshot taken before a published commit was visible; again");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Runs the shape's snapshot query in a REPEATABLE READ transaction and cuts the rows into
/// chunks of about `chunk_bytes`. `seq0` must be a transaction end read from the change stream
/// before this starts; `sees_committed` tells whether a snapshot sees the transactions up to
/// it (one that does not is taken again). A shape with subqueries also gets what they yield
/// and its rows (see [`Moves`]).
pub async fn take_snapshot(
    pool: &PgPool,
    def: &ShapeDef,
    seq0: StreamSeq,
    chunk_bytes: usize,
    sees_committed: impl Fn(&Stitch) -> bool,
) -> Result<(Stitch, Vec<Bytes>, Vec<folio_shapes::ValueSet>, RowMap)> {
    let (tx, stitch) = begin_snapshot(pool, seq0, sees_committed).await?;
    let mut chunks = Vec::new();
    let (sets, rows) = read_rows(tx, def, Some((chunk_bytes, &mut chunks))).await?;
    // The open chunk's own buffer (not a copy): it is the only reference.
    let mut chunk: Vec<u8> = chunks.pop().map(Vec::from).unwrap_or_else(|| b"[".to_vec());
    if chunk.len() > 1 {
        chunk.push(b',');
    }
    chunk.extend_from_slice(stitch.snapshot_end_json().as_bytes());
    chunk.push(b']');
    // A presized last chunk may hold few rows: the memory budget counts lengths, not capacity.
    if chunk.capacity() > 2 * chunk.len() + 4096 {
        chunk.shrink_to_fit();
    }
    chunks.push(Bytes::from(chunk));
    Ok((stitch, chunks, sets, rows))
}

/// Reads, in the snapshot transaction `tx` (committed at the end), what each subquery of the
/// shape yields, and the shape's rows: into chunks (the last one left open: `[` and rows, no
/// `]`) when `chunks` is given and the log is full, and into a [`RowMap`] for a shape with
/// subqueries (at most [`MAX_SUBQUERY_SHAPE_ROWS`]).
async fn read_rows(
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    def: &ShapeDef,
    mut chunks: Option<(usize, &mut Vec<Bytes>)>,
) -> Result<(Vec<folio_shapes::ValueSet>, RowMap)> {
    use futures::TryStreamExt;
    let table = &def.table;
    let sets = subquery_sets(&mut tx, def).await?;
    let mut map = RowMap::new();
    let chunking = chunks.is_some() && def.log == LogMode::Full;
    let mut chunk = String::from("[");
    if chunking || def.has_subqueries() {
        let mut needed: Vec<usize> = def.selected.iter().chain(&table.key).copied().collect();
        needed.sort_unstable();
        needed.dedup();
        let list: Vec<String> = needed
            .iter()
            .map(|&i| format!("{}({})::text", table.columns[i].output_fn, quote(&table.columns[i].name)))
            .collect();
        let mut sink = folio_shapes::ParamSink::new();
        let cond = def.clause.to_sql(&mut sink);
        let sql = format!("SELECT {} FROM {} WHERE {cond}", list.join(", "), table.name);
        // Identifiers are quoted catalog names and every value is a bind parameter.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for v in sink.into_values() {
            query = query.bind(v);
        }
        let mut rows = query.fetch(&mut *tx);
        let mut msg = String::with_capacity(512);
        while let Some(row) = rows.try_next().await.map_err(|e| where_error(e, &table.name))? {
            // Borrowed from the row: no allocation per value (the initial sync's cost per row).
            let mut refs: Vec<Option<&str>> = vec![None; table.columns.len()];
            for (k, &i) in needed.iter().enumerate() {
                // Every column is selected as `…::text`: no type check per value.
                refs[i] = row.try_get_unchecked::<Option<&str>, _>(k)?;
            }
            if def.has_subqueries() {
                if map.len() >= MAX_SUBQUERY_SHAPE_ROWS {
                    return Err(ShapeError::invalid(
                        "where",
                        format!("a shape with subqueries may hold at most {MAX_SUBQUERY_SHAPE_ROWS} rows"),
                    ));
                }
                let (key, value) = super::messages::key_and_value(table, &def.selected, &refs);
                map.insert(key.into(), value.into());
            }
            let Some((chunk_bytes, chunks)) = chunks.as_mut().filter(|_| chunking) else { continue };
            msg.clear();
            snapshot_row(&mut msg, table, &def.selected, &refs, None);
            if chunk.len() > 1 && chunk.len() + msg.len() + 2 > *chunk_bytes {
                chunk.push(']');
                // A snapshot that filled one chunk is big: the next is sized at once instead
                // of growing by copies.
                let mut next = String::with_capacity(*chunk_bytes + 64);
                next.push('[');
                chunks.push(Bytes::from(std::mem::replace(&mut chunk, next)));
            }
            if chunk.len() > 1 {
                chunk.push(',');
            }
            chunk.push_str(&msg);
        }
    }
    tx.commit().await?;
    if let Some((_, chunks)) = chunks {
        chunks.push(Bytes::from(chunk));
    }
    Ok((sets, map))
}

/// Most distinct tuples one subquery of a shape may yield: what the edge holds per shape to
/// decide its changes (about 100 bytes each).
pub const MAX_SUBQUERY_VALUES: usize = 100_000;

/// What each subquery of the shape yields in the snapshot's transaction, so the shape's rows
/// and the sets its changes are decided with are of one point of the change stream.
async fn subquery_sets(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    def: &ShapeDef,
) -> Result<Vec<folio_shapes::ValueSet>> {
    use futures::TryStreamExt;
    let mut sets = Vec::with_capacity(def.deps.len());
    for (sub, dep) in def.clause.subqueries().iter().zip(&def.deps) {
        let mut sink = folio_shapes::ParamSink::new();
        let sql = format!("{} LIMIT {}", sub.counts_sql(&mut sink), MAX_SUBQUERY_VALUES + 1);
        // Identifiers are quoted catalog names and every value is a bind parameter.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for v in sink.into_values() {
            query = query.bind(v);
        }
        let mut set = folio_shapes::ValueSet::default();
        let mut rows = query.fetch(&mut **tx);
        while let Some(row) = rows.try_next().await.map_err(|e| where_error(e, &dep.name))? {
            if set.len() >= MAX_SUBQUERY_VALUES {
                return Err(ShapeError::invalid(
                    "where",
                    format!("a subquery of the shape yields more than {MAX_SUBQUERY_VALUES} values"),
                ));
            }
            let tuple: Vec<Option<String>> =
                (0..sub.width()).map(|k| row.try_get::<Option<String>, _>(k)).collect::<Result<_, _>>()?;
            let n: i64 = row.try_get(sub.width())?;
            set.add_counted(tuple.into(), n.max(0) as u64);
        }
        sets.push(set);
    }
    Ok(sets)
}
