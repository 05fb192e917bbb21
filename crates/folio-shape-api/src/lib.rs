//! ElectricSQL's shape API (`/v1/shape`), served from wal-ingest's change stream.
//!
//! `request` parses and validates a request; `policy` says whether the caller may read the
//! table; `catalog` describes the table (and adds it to the publication when allowed);
//! `definition` resolves the request into a shape definition. A shape is created by
//! `shape::take_snapshot` within the `snapshots` limits (stitched to the stream by the change
//! stream's sequence before the snapshot and the snapshot's xid visibility), fed by the table's
//! `feed` (one per table, kept by `changes`), kept in this edge's `registry`, and served by
//! `http`. Handles and their snapshot points live in a JetStream KV bucket (`handles`) so that
//! any edge can continue any client. `subset` answers subset snapshots of a shape (Electric's
//! `subset__*`): parsed with the request, checked against the shape's definition, read from a
//! snapshot `snapshots` takes. A shape with subqueries follows the whole stream's feed and
//! keeps its rows: when what a subquery yields changes, it re-reads them in a snapshot and
//! logs the difference as Electric's move-out / move-in (`shape::Moves`).
//!
//! [`Shapes`] composes those parts; each owns its own state and locks. Module dependencies
//! point one way: `http` → `lib` → `policy`, `definition`, `registry`, `snapshots`, `handles`,
//! `changes` → `feed` → `shape` → `messages` → `catalog` → `request` → `error`.

mod catalog;
mod changes;
mod config;
mod definition;
mod error;
mod feed;
mod handles;
mod http;
mod messages;
mod policy;
mod quota;
mod registry;
mod request;
mod shape;
mod snapshots;
mod subset;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream;
use folio_auth::{Authenticator, Caller};
use folio_bus::StreamSeq;
use folio_live::Reconnects;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use catalog::AllowList;
use catalog::{Catalog, TableInfo};
use changes::ChangeStream;
pub use config::{DEFAULT_TABLES, ShapesConfig};
use definition::Definitions;
use error::Result;
pub use error::ShapeError;
use feed::TableFeed;
use handles::{HandleRecord, HandleStore};
pub use http::router;
use policy::Policy;
use quota::{AgencyQuota, LiveShapePermit, QuotaLimits};
use registry::Registry;
use request::{QualifiedName, RequestOffset, ShapeRequest};
use shape::{Shape, ShapeDef};
use snapshots::Snapshots;

/// The shape API of one edge.
pub struct Shapes {
    policy: Policy,
    catalog: Catalog,
    definitions: Definitions,
    changes: ChangeStream,
    registry: Registry,
    snapshots: Snapshots,
    handles: HandleStore,
    /// Per-agency caps on definitions and live shapes.
    quota: AgencyQuota,
    /// Cancelled when the edge starts draining: live requests answer and end.
    shutdown: CancellationToken,
    /// Set soon after `shutdown` is cancelled, then `drain_started` wakes every SSE stream:
    /// what they check between events (the token's own check takes a lock that 50,000
    /// streams would share).
    draining: AtomicBool,
    drain_started: tokio::sync::Notify,
}

/// Why the shape API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid database url")]
    DatabaseUrl(#[source] sqlx::Error),
    #[error("failed to create the KV bucket {bucket}")]
    Bucket {
        bucket: String,
        #[source]
        source: jetstream::context::CreateKeyValueError,
    },
    #[error("FOLIO_SHAPE_TABLES: {0}")]
    Tables(String),
}

impl Shapes {
    /// Opens (or creates) the handle bucket `<bucket_prefix>_shapes` and starts the idle sweep
    /// on `tasks` (table feeds start there too). Callers are authenticated with `auth`; `rates`
    /// counts definitions with every other edge (`None`: on this edge alone).
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        nats: async_nats::Client,
        config: ShapesConfig,
        rates: Option<folio_quota::RateLimiter>,
        bucket_prefix: &str,
        auth: Authenticator,
        bus: &folio_bus::BusArgs,
        reconnects: Reconnects,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Arc<Self>, StartError> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(config.db_pool)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy(&config.db.database_url)
            .map_err(StartError::DatabaseUrl)?;
        let changes = ChangeStream::new(nats, bus, reconnects, shutdown.clone(), tasks.clone());
        let bucket = format!("{bucket_prefix}_shapes");
        let handles = HandleStore::open(changes.js(), &bucket)
            .await
            .map_err(|source| StartError::Bucket { bucket: bucket.clone(), source })?;
        let definitions = Definitions::new(config.definition_cache_bytes, config.where_limits());
        let limits = QuotaLimits {
            definitions: config.max_definitions_per_agency,
            definition_window: config.definition_window,
            live_shapes: config.max_live_shapes_per_agency,
            idle_timeout: config.idle_timeout,
        };
        let quota = match rates {
            Some(rates) => AgencyQuota::shared(limits, rates),
            None => AgencyQuota::new(limits),
        };
        // Often enough that a shape leaves about when it has been idle for the timeout.
        let sweep_every = (config.idle_timeout / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
        let shapes = Arc::new(Shapes {
            catalog: Catalog::new(pool.clone(), config.publication.clone(), config.auto_publish),
            snapshots: Snapshots::new(
                pool,
                config.chunk_bytes,
                config.max_concurrent_snapshots,
                config.snapshot_memory,
            ),
            policy: Policy::new(config, auth).map_err(StartError::Tables)?,
            definitions,
            quota,
            changes,
            registry: Registry::default(),
            handles,
            shutdown: shutdown.clone(),
            draining: AtomicBool::new(false),
            drain_started: tokio::sync::Notify::new(),
        });
        // The flag first: a stream woken by the notice must see it.
        let draining = Arc::downgrade(&shapes);
        let drained = shutdown.clone();
        tasks.spawn(async move {
            drained.cancelled().await;
            let Some(shapes) = draining.upgrade() else { return };
            shapes.draining.store(true, Ordering::SeqCst);
            shapes.drain_started.notify_waiters();
        });
        let sweeper = Arc::downgrade(&shapes);
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(sweep_every) => {}
                }
                let Some(s) = sweeper.upgrade() else { return };
                s.evict_idle();
            }
        });
        Ok(shapes)
    }

    /// The table's description and feed. The description is cached for clients continuing a
    /// shape; for requests that may create one (`fresh`) it is at most a few seconds old.
    async fn table(&self, name: &QualifiedName, fresh: bool) -> Result<(Arc<TableInfo>, Arc<TableFeed>)> {
        if let Some(feed) = self.changes.feed(name)
            && let Some(info) = self.catalog.cached(name, feed.generation(), fresh)
        {
            return Ok((info, feed));
        }
        let info = self.catalog.load(name).await?;
        let feed = self.changes.feed_for(&info.name).await?;
        self.catalog.remember(&info, feed.generation());
        Ok((info, feed))
    }

    /// The shape definition a request asks for, with the caller's agency pinned in.
    async fn resolve(&self, req: &ShapeRequest, caller: Option<&Caller>) -> Result<(Arc<ShapeDef>, Arc<TableFeed>)> {
        self.policy.check_table(&req.table)?;
        let fresh = matches!(req.offset, RequestOffset::BeforeAll | RequestOffset::Now);
        let (table, mut feed) = self.table(&req.table, fresh).await?;
        let names = match &req.where_clause {
            Some(w) => {
                folio_shapes::subquery_tables(w).map_err(|e| ShapeError::invalid_because("where", e.to_string(), e))?
            }
            None => Vec::new(),
        };
        let mut deps = std::collections::HashMap::new();
        for name in names {
            // A subquery's table is read as the shape's: the same schema, the same policy.
            let qualified = QualifiedName { schema: req.table.schema.clone(), name: name.clone() };
            self.policy.check_table(&qualified)?;
            let (info, _) = self.table(&qualified, fresh).await?;
            deps.insert(name, info);
        }
        let def = self.definitions.resolve(req, table, &deps, caller)?;
        if def.has_subqueries() {
            feed = self.changes.whole_stream_feed().await?;
        }
        if let Some(agency) = &def.agency {
            self.quota.admit_definition(agency, &def.hash).await.map_err(|refusal| match refusal {
                quota::Refusal::Over(over) => ShapeError::OverQuota(over),
                quota::Refusal::Unavailable => {
                    ShapeError::unavailable_without_source("check the definition quota (NATS unreachable)")
                }
            })?;
        }
        Ok((def, feed))
    }

    /// A place in the live-shape quota of `def`'s agency for one more shape.
    fn live_shape_permit(&self, def: &ShapeDef) -> Result<Option<LiveShapePermit>> {
        def.agency.as_deref().map(|a| self.quota.admit_live_shape(a)).transpose().map_err(ShapeError::OverQuota)
    }

    /// The shape new clients of `def` start from; takes a snapshot if this edge has none.
    /// Concurrent first requests share one snapshot.
    async fn get_or_create(&self, def: Arc<ShapeDef>, feed: &Arc<TableFeed>) -> Result<Arc<Shape>> {
        if let Some(s) = self.registry.serving(&def.hash) {
            return Ok(s);
        }
        let lock = self.registry.creation_lock(&def.hash);
        let _guard = lock.lock().await;
        if let Some(s) = self.registry.serving(&def.hash) {
            return Ok(s);
        }
        let permit = self.live_shape_permit(&def)?;
        let _slot = self.snapshots.slot().await?;
        let started = std::time::Instant::now();
        let taken = self.snapshots.take(&def, feed).await?;
        let (seq0, stitch, chunks) = (taken.seq0, taken.stitch, taken.chunks);
        let handle = self.handles.create(&def, &HandleRecord::new(&def, &stitch, chunks.len())).await?;
        tracing::info!(
            %handle, table = %def.table.name, %seq0, chunks = chunks.len(),
            ms = started.elapsed().as_millis() as u64, "shape snapshot taken"
        );
        let count = chunks.len();
        let moves = match &taken.tap {
            Some(_) => Some((shape::Moves::new(taken.sets, stitch.clone(), taken.rows), self.snapshots.resync(feed))),
            None => None,
        };
        let shape =
            Arc::new(Shape::new(handle, def, stitch, Some(chunks), count, self.snapshots.counter(), permit, moves));
        match taken.tap {
            Some(tap) => feed.register_tapped(Arc::clone(&shape), tap),
            None => feed.register(Arc::clone(&shape)),
        }
        self.registry.insert(&shape, true);
        self.snapshots.trim(|| self.registry.holding_snapshots(&shape));
        Ok(shape)
    }

    /// 409 for `def`: the handle clients of this definition should start over with.
    fn refetch(&self, def: &ShapeDef, reason: impl Into<String>) -> ShapeError {
        let handle = self.registry.serving(&def.hash).map(|s| s.handle.clone()).unwrap_or_else(|| handles::mint(def));
        ShapeError::MustRefetch { handle, reason: reason.into() }
    }

    /// The shape behind a handle a client continues with, from this edge's memory or from KV.
    async fn lookup(&self, handle: &str, def: Arc<ShapeDef>, feed: &TableFeed) -> Result<Arc<Shape>> {
        let stale = |reason: &str| self.refetch(&def, reason);
        let well_formed = handle
            .split_once('-')
            .is_some_and(|(h, t)| h.len() == 16 && !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
        if !well_formed {
            return Err(stale("not a handle this server issued"));
        }
        if handle.split_once('-').map(|(h, _)| h) != Some(def.hash.as_str()) {
            return Err(stale("handle belongs to another shape definition"));
        }
        let known = |s: Arc<Shape>| match s.invalid_reason() {
            None => Ok(s),
            Some(r) => Err(stale(r)),
        };
        if let Some(s) = self.registry.get(handle) {
            return known(s);
        }
        let lock = self.registry.creation_lock(handle);
        let _guard = lock.lock().await;
        if let Some(s) = self.registry.get(handle) {
            return known(s);
        }
        if def.has_subqueries() {
            // What its subqueries yielded is held by the edge that took its snapshot, not in
            // the handle: as Electric does since 1.7.10, such a shape is not resumed elsewhere
            // or after a restart; its clients start over (and the new edge rebuilds the sets).
            return Err(stale("a shape with subqueries is continued only by the edge that created it"));
        }
        let Some(record) = self.handles.get(handle).await? else { return Err(stale("unknown or deleted handle")) };
        if record.def != def.hash {
            return Err(stale("handle belongs to another shape definition"));
        }
        // A truncate or schema change since the snapshot may have happened while no edge
        // watched this shape: the table's latest table-wide event says.
        if self.changes.last_table_wide_event(&def.table.name).await? > StreamSeq::new(record.seq0) {
            let _ = self.handles.purge(handle).await;
            return Err(stale("table truncated or changed since the shape's snapshot"));
        }
        let permit = self.live_shape_permit(&def)?;
        let shape = Arc::new(Shape::new(
            handle.to_owned(),
            Arc::clone(&def),
            record.stitch(),
            None,
            record.chunks,
            self.snapshots.counter(),
            permit,
            None,
        ));
        feed.register(Arc::clone(&shape));
        tracing::debug!(handle, "shape resumed from its stored handle");
        self.registry.insert(&shape, false);
        Ok(shape)
    }

    /// `DELETE /v1/shape` (testing): drops a handle, or every shape of a table, so followers
    /// get 409.
    async fn delete(&self, handle: Option<&str>, table: Option<&QualifiedName>) -> Result<bool> {
        let mut doomed: Vec<String> = handle.map(str::to_owned).into_iter().collect();
        if let Some(t) = table {
            doomed.extend(self.handles.of_table(t).await?);
        }
        let mut found = false;
        for h in doomed {
            if let Some(s) = self.registry.remove(&h) {
                s.invalidate("deleted");
                found = true;
            }
            if self.handles.exists(&h).await {
                found = true;
                self.handles.purge(&h).await?;
            }
        }
        Ok(found)
    }

    /// Shapes nobody requested for the idle timeout leave memory and their table's feed.
    fn evict_idle(&self) {
        let cutoff = shape::now_secs().saturating_sub(self.policy.idle_timeout().as_secs());
        // By feed: one pass over a feed's shapes however many of them leave.
        let mut by_feed: HashMap<*const TableFeed, (Arc<TableFeed>, Vec<Arc<Shape>>)> = HashMap::new();
        for s in self.registry.remove_idle(cutoff) {
            // A shape with subqueries follows the whole stream, not its table's feed.
            let feed =
                if s.def.has_subqueries() { self.changes.whole_stream() } else { self.changes.feed(&s.def.table.name) };
            if let Some(f) = feed {
                by_feed.entry(Arc::as_ptr(&f)).or_insert_with(|| (f, Vec::new())).1.push(s);
            }
        }
        for (feed, shapes) in by_feed.into_values() {
            feed.unregister(&shapes);
        }
    }
}
