//! ElectricSQL's shape API (`/v1/shape`), served from wal-ingest's change stream.
//!
//! Module dependencies point one way: `http` → `lib` (the [`Shapes`] registry) → `feed` →
//! `shape` → `messages` → `catalog` → `request` → `error`.
//!
//! `request` parses and validates a request; `catalog` describes the table (and adds it to the
//! publication when allowed); a shape is created by `shape::take_snapshot` (stitched to the
//! stream by the change stream's sequence before the snapshot and the snapshot's xid
//! visibility), fed by the table's `feed`, and served by `http`. Handles and their snapshot
//! points live in a JetStream KV bucket so that any edge can continue any client.

mod catalog;
mod error;
mod feed;
mod http;
mod messages;
mod request;
mod shape;

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use async_nats::jetstream::{self, kv};
use folio_auth::{Authenticator, Caller};
use folio_bus::StreamSeq;
use folio_live::Reconnects;
use parking_lot::Mutex;
use sha2::Digest;
use sqlx::PgPool;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use catalog::AllowList;
use catalog::TableInfo;
use error::Result;
pub use error::ShapeError;
use feed::TableFeed;
pub use http::router;
use messages::Stitch;
use request::{QualifiedName, ShapeRequest};
use shape::{Shape, ShapeDef};

/// Folio's own tables that hold nothing secret; every one is pinned to the caller's agency.
pub const DEFAULT_TABLES: &str = "public.agencies,public.users,public.clients,public.templates,public.proposals,public.line_items,public.pdf_renditions";

const MAX_CACHED_DEFINITIONS: usize = 20_000;

/// How old a cached table description may be when a request may create a shape.
const CATALOG_FRESHNESS: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, clap::Args)]
pub struct ShapesConfig {
    /// PostgreSQL the shapes' snapshots are read from (the database wal-ingest replicates).
    #[command(flatten)]
    pub db: folio_db::DbArgs,

    /// Tables that may be synced: comma-separated `schema.table`, `schema.*` or `*`.
    #[arg(long = "shape-tables", env = "FOLIO_SHAPE_TABLES", default_value = DEFAULT_TABLES)]
    pub tables: String,

    /// Serve shapes without a bearer token and without tenant pinning. For local development
    /// and other implementations' client test suites only; never in production.
    #[arg(long = "shape-insecure", env = "FOLIO_SHAPE_INSECURE", default_value_t = false)]
    pub insecure: bool,

    /// Add an allowed table to the publication (and set REPLICA IDENTITY FULL) on its first
    /// shape request, as Electric does. Needs ownership of the table.
    #[arg(long = "shape-auto-publish", env = "FOLIO_SHAPE_AUTO_PUBLISH", default_value_t = false)]
    pub auto_publish: bool,

    /// Allow `DELETE /v1/shape` (Electric's integration-testing switch).
    #[arg(long = "shape-enable-delete", env = "FOLIO_SHAPE_ENABLE_DELETE", default_value_t = false)]
    pub enable_delete: bool,

    /// Publication wal-ingest reads.
    #[arg(long = "publication", env = "FOLIO_WAL_PUBLICATION", default_value = folio_db::PUBLICATION)]
    pub publication: String,

    /// How long a live long-poll waits for a change before answering up-to-date.
    #[arg(id = "shape_long_poll_timeout", long = "shape-long-poll-timeout", env = "FOLIO_SHAPE_LONG_POLL_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub long_poll_timeout: Duration,

    /// How long an SSE response stays open.
    #[arg(long = "shape-sse-timeout", env = "FOLIO_SHAPE_SSE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub sse_timeout: Duration,

    /// Target size of one response (snapshot chunk or log chunk), bytes.
    #[arg(long = "shape-chunk-bytes", env = "FOLIO_SHAPE_CHUNK_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub chunk_bytes: usize,

    /// A shape nobody requested for this long leaves this edge's memory (its handle stays
    /// valid: it is re-read from JetStream on the next request).
    #[arg(long = "shape-idle-timeout", env = "FOLIO_SHAPE_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Database connections for snapshots.
    #[arg(long = "shape-db-pool", env = "FOLIO_SHAPE_DB_POOL", default_value_t = 8)]
    pub db_pool: u32,

    /// Bytes of snapshot chunks kept in memory for new clients of a shape; beyond it the least
    /// recently used snapshots are dropped (a later first request takes a new one).
    #[arg(long = "shape-snapshot-memory", env = "FOLIO_SHAPE_SNAPSHOT_MEMORY", default_value_t = 1 << 30)]
    pub snapshot_memory: usize,

    /// Snapshots taken at once; more initial requests wait.
    #[arg(long = "shape-max-concurrent-snapshots", env = "FOLIO_SHAPE_MAX_CONCURRENT_SNAPSHOTS", default_value_t = 4)]
    pub max_concurrent_snapshots: usize,
}

impl ShapesConfig {
    pub fn validate(&self) -> Result<(), String> {
        AllowList::parse(&self.tables).map_err(|e| format!("FOLIO_SHAPE_TABLES: {e}"))?;
        if self.chunk_bytes < 1024 {
            return Err("FOLIO_SHAPE_CHUNK_BYTES must be at least 1024".into());
        }
        if self.long_poll_timeout.is_zero() || self.long_poll_timeout > Duration::from_secs(40) {
            return Err("FOLIO_SHAPE_LONG_POLL_TIMEOUT must be between 0 and 40s (the client aborts at 45s)".into());
        }
        Ok(())
    }
}

/// What a handle names, kept in KV: the definition's hash and the snapshot point.
#[derive(serde::Serialize, serde::Deserialize)]
struct HandleRecord {
    def: String,
    table: String,
    seq0: u64,
    xmin: u64,
    xmax: u64,
    xip: Vec<u64>,
    /// Snapshot chunks (0 in records written before it was kept).
    #[serde(default)]
    chunks: usize,
}

/// A table description with the feed generation and the time it was read at.
struct CachedTable {
    info: Arc<TableInfo>,
    generation: u64,
    read_at: std::time::Instant,
}

#[derive(Default)]
struct Active {
    by_handle: HashMap<String, Arc<Shape>>,
    /// The shape new clients of a definition get (one with its snapshot in memory).
    by_def: HashMap<String, Arc<Shape>>,
}

pub struct Shapes {
    config: ShapesConfig,
    pool: PgPool,
    nats: async_nats::Client,
    js: jetstream::Context,
    kv: kv::Store,
    auth: Authenticator,
    allow: AllowList,
    changes_stream: String,
    subjects: folio_bus::Subjects,
    tables: Mutex<HashMap<QualifiedName, CachedTable>>,
    feeds: Mutex<HashMap<QualifiedName, Arc<TableFeed>>>,
    /// Held while a feed is being created, so a table never gets two.
    feed_creation: tokio::sync::Mutex<()>,
    active: Mutex<Active>,
    /// Resolved definitions by request (table, where, params, columns, replica, log, tenant).
    defs: Mutex<HashMap<String, Arc<ShapeDef>>>,
    creating: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    snapshots: tokio::sync::Semaphore,
    /// Bytes of snapshot chunks held by this edge's shapes.
    snapshot_memory: Arc<std::sync::atomic::AtomicUsize>,
    reconnects: Reconnects,
    shutdown: CancellationToken,
    /// The feeds and the idle sweep; the edge waits for them at shutdown.
    tasks: TaskTracker,
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
    /// on `tasks` (table feeds start there too). Callers are authenticated with `auth`.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        nats: async_nats::Client,
        config: ShapesConfig,
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
        let js = jetstream::new(nats.clone());
        let bucket = format!("{bucket_prefix}_shapes");
        let kv = match js.get_key_value(&bucket).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    description: "shape-edge: shape handles and their snapshot points".into(),
                    history: 1,
                    max_age: Duration::from_secs(7 * 24 * 3600),
                    ..Default::default()
                })
                .await
                .map_err(|source| StartError::Bucket { bucket: bucket.clone(), source })?,
        };
        if config.insecure {
            tracing::warn!(
                "FOLIO_SHAPE_INSECURE is on: /v1/shape serves every allowed table WITHOUT authentication or tenant pinning. Never use this in production."
            );
        }
        let shapes = Arc::new(Shapes {
            allow: AllowList::parse(&config.tables).map_err(StartError::Tables)?,
            snapshots: tokio::sync::Semaphore::new(config.max_concurrent_snapshots.max(1)),
            snapshot_memory: Arc::default(),
            config,
            pool,
            nats,
            js,
            kv,
            auth,
            changes_stream: bus.changes_stream.clone(),
            subjects: bus.subjects(),
            tables: Mutex::default(),
            feeds: Mutex::default(),
            feed_creation: tokio::sync::Mutex::default(),
            active: Mutex::default(),
            defs: Mutex::default(),
            creating: Mutex::default(),
            reconnects,
            shutdown,
            tasks,
        });
        let sweeper = Arc::downgrade(&shapes);
        let stop = shapes.shutdown.clone();
        shapes.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
                let Some(s) = sweeper.upgrade() else { return };
                s.evict_idle();
            }
        });
        Ok(shapes)
    }

    /// The caller a request's token names. In insecure mode the header is not read at all, as
    /// Electric never reads it: a client or proxy forwarding its own app token must not be
    /// refused (the official client's `onError` retry with new headers would loop on 401).
    fn authenticate(&self, authorization: Option<&str>) -> Result<Option<Caller>> {
        if self.config.insecure {
            return Ok(None);
        }
        self.auth.verify_header(authorization).map(Some).map_err(|e| ShapeError::Unauthorized(e.to_string()))
    }

    fn existing_feed(&self, table: &QualifiedName) -> Option<Arc<TableFeed>> {
        self.feeds.lock().get(table).filter(|f| !f.dead.load(Ordering::SeqCst)).cloned()
    }

    async fn feed_for(&self, table: &TableInfo) -> Result<Arc<TableFeed>> {
        if let Some(f) = self.existing_feed(&table.name) {
            return Ok(f);
        }
        let _creating = self.feed_creation.lock().await;
        if let Some(f) = self.existing_feed(&table.name) {
            return Ok(f);
        }
        let filter = self.subjects.table_filter(&table.name.schema, &table.name.name);
        let feed = TableFeed::start(
            &self.js,
            &self.changes_stream,
            filter,
            &self.reconnects,
            self.shutdown.clone(),
            &self.tasks,
        )
        .await?;
        self.feeds.lock().insert(table.name.clone(), Arc::clone(&feed));
        Ok(feed)
    }

    /// The table's description: cached for clients continuing a shape; for requests that may
    /// create one (`fresh`) at most a few seconds old, so a table dropped and created again
    /// (no change event says so) is read anew.
    async fn table(&self, name: &QualifiedName, fresh: bool) -> Result<(Arc<TableInfo>, Arc<TableFeed>)> {
        if let Some(feed) = self.existing_feed(name) {
            let generation = feed.generation.load(Ordering::SeqCst);
            let cached = self.tables.lock().get(name).and_then(|c| {
                let current = c.generation == generation && !(fresh && c.read_at.elapsed() > CATALOG_FRESHNESS);
                current.then(|| Arc::clone(&c.info))
            });
            if let Some(info) = cached {
                return Ok((info, feed));
            }
        }
        let info = catalog::load(&self.pool, name, &self.config.publication, self.config.auto_publish).await?;
        let info = Arc::new(info);
        let feed = self.feed_for(&info).await?;
        let g = feed.generation.load(Ordering::SeqCst);
        self.tables.lock().insert(
            name.clone(),
            CachedTable { info: Arc::clone(&info), generation: g, read_at: std::time::Instant::now() },
        );
        Ok((info, feed))
    }

    /// The shape definition a request asks for, with the caller's agency pinned in.
    async fn resolve(&self, req: &ShapeRequest, caller: Option<&Caller>) -> Result<(Arc<ShapeDef>, Arc<TableFeed>)> {
        if !self.allow.allows(&req.table) {
            return Err(ShapeError::Forbidden(format!(
                "table {} is not served by this edge (FOLIO_SHAPE_TABLES)",
                req.table
            )));
        }
        let fresh = matches!(req.offset, request::RequestOffset::BeforeAll | request::RequestOffset::Now);
        let (table, feed) = self.table(&req.table, fresh).await?;
        // Every live request of every client re-states its shape: parse and hash it once.
        let key = serde_json::json!([
            req.table.schema,
            req.table.name,
            req.where_clause,
            req.params,
            req.columns,
            format!("{:?}", req.replica),
            format!("{:?}", req.log),
            caller.map(|c| c.agency_id.to_string()),
        ])
        .to_string();
        let cached = self.defs.lock().get(&key).cloned();
        if let Some(def) = cached.filter(|d| Arc::ptr_eq(&d.table, &table)) {
            return Ok((def, feed));
        }
        let selected: Vec<usize> = match &req.columns {
            None => (0..table.columns.len()).collect(),
            Some(cols) => {
                let missing: Vec<&str> =
                    cols.iter().filter(|c| table.column_index(c).is_none()).map(String::as_str).collect();
                if !missing.is_empty() {
                    return Err(ShapeError::invalid(
                        "columns",
                        format!("The following columns are not found on the table: {}", missing.join(", ")),
                    ));
                }
                let pk_missing: Vec<&str> = table
                    .columns
                    .iter()
                    .filter(|c| c.pk_index.is_some() && !cols.contains(&c.name))
                    .map(|c| c.name.as_str())
                    .collect();
                if !pk_missing.is_empty() {
                    return Err(ShapeError::invalid(
                        "columns",
                        format!(
                            "The list of columns must include all primary key columns, missing: {}",
                            pk_missing.join(", ")
                        ),
                    ));
                }
                let mut idx: Vec<usize> = cols.iter().filter_map(|c| table.column_index(c)).collect();
                idx.sort_unstable();
                idx
            }
        };
        let mut clause = match &req.where_clause {
            Some(w) => folio_shapes::WhereClause::parse(w, &table.where_schema, &req.params)
                .map_err(|e| ShapeError::invalid("where", e.to_string()))?,
            None => folio_shapes::WhereClause::all_rows(&table.where_schema),
        };
        let tenant = match (caller, table.tenant) {
            (Some(c), Some(t)) => {
                let agency = c.agency_id.to_string();
                clause = clause
                    .and_tenant(&table.columns[t].name, &agency)
                    .map_err(|e| ShapeError::internal("pin the tenant", e))?;
                Some(agency)
            }
            _ => None,
        };
        let mut h = sha2::Sha256::new();
        let canonical = serde_json::json!({
            "table": [table.name.schema, table.name.name], "columns": table.fingerprint,
            "where": req.where_clause, "params": req.params, "selected": selected,
            "replica": format!("{:?}", req.replica), "log": format!("{:?}", req.log), "tenant": tenant,
        });
        h.update(canonical.to_string().as_bytes());
        let hash = catalog::hex(&h.finalize()[..8]);
        let def = ShapeDef {
            schema_header: table.schema_header(&selected),
            table,
            selected,
            replica: req.replica,
            log: req.log,
            clause,
            hash,
        };
        let def = Arc::new(def);
        let mut defs = self.defs.lock();
        if defs.len() >= MAX_CACHED_DEFINITIONS {
            defs.clear();
        }
        defs.insert(key, Arc::clone(&def));
        Ok((def, feed))
    }

    fn mint_handle(def: &ShapeDef) -> String {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or_default();
        format!("{}-{micros}", def.hash)
    }

    fn creation_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut creating = self.creating.lock();
        creating.retain(|_, m| Arc::strong_count(m) > 1);
        Arc::clone(creating.entry(key.to_owned()).or_default())
    }

    fn live_for_def(&self, hash: &str) -> Option<Arc<Shape>> {
        let active = self.active.lock();
        active.by_def.get(hash).filter(|s| s.invalid_reason().is_none() && s.snapshot().is_some()).cloned()
    }

    /// The shape new clients of `def` start from; takes a snapshot if this edge has none.
    /// Concurrent first requests share one snapshot.
    async fn get_or_create(&self, def: Arc<ShapeDef>, feed: &TableFeed) -> Result<Arc<Shape>> {
        if let Some(s) = self.live_for_def(&def.hash) {
            return Ok(s);
        }
        let lock = self.creation_lock(&def.hash);
        let _guard = lock.lock().await;
        if let Some(s) = self.live_for_def(&def.hash) {
            return Ok(s);
        }
        let _permit = self.snapshots.acquire().await.map_err(|e| ShapeError::internal("snapshot slots", e))?;
        // Every transaction of the table up to the feed's last transaction end was committed
        // before the snapshot starts (and the snapshot is retried until it sees them).
        let seq0 = feed.committed();
        let started = std::time::Instant::now();
        let (stitch, chunks) =
            shape::take_snapshot(&self.pool, &def, seq0, self.config.chunk_bytes, |s| feed.snapshot_sees_recent(s))
                .await?;
        let mut handle = Self::mint_handle(&def);
        let record = HandleRecord {
            def: def.hash.clone(),
            table: def.table.name.to_string(),
            seq0: seq0.get(),
            xmin: stitch.xmin,
            xmax: stitch.xmax,
            xip: stitch.xip.iter().copied().collect(),
            chunks: chunks.len(),
        };
        let record = serde_json::to_vec(&record).map_err(|e| ShapeError::internal("encode handle", e))?;
        let record = bytes::Bytes::from(record);
        // `create`, not `put`: two edges minting in the same microsecond must not overwrite
        // each other's snapshot point.
        let mut attempts = 0;
        while let Err(e) = self.kv.create(&handle, record.clone()).await {
            attempts += 1;
            if e.kind() != kv::CreateErrorKind::AlreadyExists || attempts > 3 {
                return Err(ShapeError::unavailable("store the shape handle", e));
            }
            handle = Self::mint_handle(&def);
        }
        tracing::info!(
            %handle, table = %def.table.name, %seq0, chunks = chunks.len(),
            ms = started.elapsed().as_millis() as u64, "shape snapshot taken"
        );
        let count = chunks.len();
        let shape =
            Arc::new(Shape::new(handle.clone(), def, stitch, Some(chunks), count, Arc::clone(&self.snapshot_memory)));
        feed.register(Arc::clone(&shape));
        let mut active = self.active.lock();
        active.by_handle.insert(handle, Arc::clone(&shape));
        active.by_def.insert(shape.def.hash.clone(), Arc::clone(&shape));
        metrics::gauge!("folio_edge_shapes_active").set(active.by_handle.len() as f64);
        // Over the memory budget: the least recently used snapshots go first (their handles
        // stay valid for clients past the snapshot).
        let budget = self.config.snapshot_memory;
        if self.snapshot_memory.load(Ordering::SeqCst) > budget {
            let mut held: Vec<&Arc<Shape>> =
                active.by_handle.values().filter(|s| !Arc::ptr_eq(s, &shape) && s.snapshot().is_some()).collect();
            held.sort_by_key(|s| s.last_used.load(Ordering::Relaxed));
            for s in held {
                if self.snapshot_memory.load(Ordering::SeqCst) <= budget {
                    break;
                }
                s.drop_snapshot();
            }
        }
        metrics::gauge!("folio_edge_shape_snapshot_bytes").set(self.snapshot_memory.load(Ordering::SeqCst) as f64);
        Ok(shape)
    }

    /// Sequence of the table's latest truncate / schema change / re-snapshot event (0: none).
    async fn last_table_wide_event(&self, table: &QualifiedName) -> Result<StreamSeq> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        let subject = self.subjects.table_wide(&table.schema, &table.name);
        let stream = self
            .js
            .get_stream_no_info(&self.changes_stream)
            .await
            .map_err(|e| ShapeError::unavailable("open change stream", e))?;
        match stream.direct_get_last_for_subject(subject).await {
            Ok(m) => Ok(StreamSeq::new(m.sequence)),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(StreamSeq::ZERO),
            Err(e) => Err(ShapeError::unavailable("read the table's latest table-wide event", e)),
        }
    }

    /// Reads of a table's change events this edge's logs do not hold.
    fn history<'a>(&'a self, table_filter: &'a str) -> shape::History<'a> {
        shape::History { nats: &self.nats, js: &self.js, stream: &self.changes_stream, filter: table_filter }
    }

    async fn stream_last_sequence(&self) -> Result<StreamSeq> {
        Ok(StreamSeq::new(
            self.js
                .get_stream_no_info(&self.changes_stream)
                .await
                .map_err(|e| ShapeError::unavailable("open change stream", e))?
                .get_info()
                .await
                .map_err(|e| ShapeError::unavailable("read change stream state", e))?
                .state
                .last_sequence,
        ))
    }

    /// 409 for `def`: the handle clients of this definition should start over with.
    fn refetch(&self, def: &ShapeDef, reason: impl Into<String>) -> ShapeError {
        let handle = self.live_for_def(&def.hash).map(|s| s.handle.clone()).unwrap_or_else(|| Self::mint_handle(def));
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
        let known = self.active.lock().by_handle.get(handle).cloned();
        if let Some(s) = known {
            return match s.invalid_reason() {
                None => Ok(s),
                Some(r) => Err(stale(r)),
            };
        }
        let lock = self.creation_lock(handle);
        let _guard = lock.lock().await;
        let known = self.active.lock().by_handle.get(handle).cloned();
        if let Some(s) = known {
            return match s.invalid_reason() {
                None => Ok(s),
                Some(r) => Err(stale(r)),
            };
        }
        let entry = self.kv.get(handle).await.map_err(|e| ShapeError::unavailable("read the shape handle", e))?;
        let Some(bytes) = entry else { return Err(stale("unknown or deleted handle")) };
        let record: HandleRecord =
            serde_json::from_slice(&bytes).map_err(|e| ShapeError::internal("decode handle record", e))?;
        if record.def != def.hash {
            return Err(stale("handle belongs to another shape definition"));
        }
        // A truncate or schema change since the snapshot may have happened while no edge
        // watched this shape: the table's latest table-wide event says.
        if self.last_table_wide_event(&def.table.name).await? > StreamSeq::new(record.seq0) {
            let _ = self.kv.purge(handle).await;
            return Err(stale("table truncated or changed since the shape's snapshot"));
        }
        let stitch = Stitch {
            seq0: StreamSeq::new(record.seq0),
            xmin: record.xmin,
            xmax: record.xmax,
            xip: record.xip.into_iter().collect(),
        };
        let shape = Arc::new(Shape::new(
            handle.to_owned(),
            def,
            stitch,
            None,
            record.chunks,
            Arc::clone(&self.snapshot_memory),
        ));
        feed.register(Arc::clone(&shape));
        tracing::debug!(handle, "shape resumed from its stored handle");
        let mut active = self.active.lock();
        active.by_handle.insert(handle.to_owned(), Arc::clone(&shape));
        metrics::gauge!("folio_edge_shapes_active").set(active.by_handle.len() as f64);
        Ok(shape)
    }

    /// `DELETE /v1/shape` (testing): drops a handle, or every shape of a table, so followers
    /// get 409.
    async fn delete(&self, handle: Option<&str>, table: Option<&QualifiedName>) -> Result<bool> {
        let mut doomed: Vec<String> = Vec::new();
        if let Some(h) = handle {
            doomed.push(h.to_owned());
        }
        if let Some(t) = table {
            let wanted = t.to_string();
            let mut keys = self.kv.keys().await.map_err(|e| ShapeError::unavailable("list handles", e))?;
            use futures::StreamExt;
            while let Some(k) = keys.next().await {
                let Ok(k) = k else { continue };
                if let Ok(Some(v)) = self.kv.get(&k).await
                    && serde_json::from_slice::<HandleRecord>(&v).is_ok_and(|r| r.table == wanted)
                {
                    doomed.push(k);
                }
            }
        }
        let mut found = false;
        for h in doomed {
            let shape = {
                let mut active = self.active.lock();
                let s = active.by_handle.remove(&h);
                if let Some(s) = &s
                    && active.by_def.get(&s.def.hash).is_some_and(|d| d.handle == h)
                {
                    active.by_def.remove(&s.def.hash);
                }
                s
            };
            if let Some(s) = shape {
                s.invalidate("deleted");
                found = true;
            }
            if self.kv.get(&h).await.ok().flatten().is_some() {
                found = true;
                self.kv.purge(&h).await.map_err(|e| ShapeError::unavailable("delete handle", e))?;
            }
        }
        Ok(found)
    }

    fn evict_idle(&self) {
        let cutoff = shape::now_secs().saturating_sub(self.config.idle_timeout.as_secs());
        let evicted: Vec<Arc<Shape>> = {
            let mut active = self.active.lock();
            let old: Vec<String> = active
                .by_handle
                .iter()
                .filter(|(_, s)| s.last_used.load(Ordering::Relaxed) < cutoff || s.invalid_reason().is_some())
                .map(|(h, _)| h.clone())
                .collect();
            let mut out = Vec::new();
            for h in old {
                if let Some(s) = active.by_handle.remove(&h) {
                    if active.by_def.get(&s.def.hash).is_some_and(|d| d.handle == h) {
                        active.by_def.remove(&s.def.hash);
                    }
                    out.push(s);
                }
            }
            metrics::gauge!("folio_edge_shapes_active").set(active.by_handle.len() as f64);
            out
        };
        for s in evicted {
            if let Some(f) = self.existing_feed(&s.def.table.name) {
                f.unregister(&s);
            }
        }
    }

    async fn healthy(&self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&self.pool)).await,
            Ok(Ok(_))
        )
    }
}
