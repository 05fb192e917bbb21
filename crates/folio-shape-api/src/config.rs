//! The shape API's settings, flattened into the edge's configuration.

use std::time::Duration;

use super::catalog::AllowList;

/// Folio's own tables that hold nothing secret; every one is pinned to the caller's agency.
pub const DEFAULT_TABLES: &str = "public.agencies,public.users,public.clients,public.templates,public.proposals,public.line_items,public.pdf_renditions";

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

    /// Bytes of resolved shape definitions (where text, parameters and the parsed clause, as
    /// estimated) kept for requests to re-state; beyond, the least recently used are dropped.
    #[arg(long = "shape-definition-cache-bytes", env = "FOLIO_SHAPE_DEFINITION_CACHE_BYTES", default_value_t = 32 << 20)]
    pub definition_cache_bytes: usize,

    /// Longest `where` clause plus its `params`, bytes (400 beyond).
    #[arg(long = "shape-max-where-bytes", env = "FOLIO_SHAPE_MAX_WHERE_BYTES", default_value_t = 16 * 1024)]
    pub max_where_bytes: usize,

    /// Longest LIKE/ILIKE pattern in a `where` clause, characters (400 beyond).
    #[arg(long = "shape-max-like-pattern", env = "FOLIO_SHAPE_MAX_LIKE_PATTERN", default_value_t = 256)]
    pub max_like_pattern_chars: usize,

    /// Steps one shape's where clause may take on one change (about one step per node, per
    /// value compared, per 8-16 characters read, per character x 64 LIKE pattern elements).
    /// A shape over it is invalidated (409 for its clients) and its definition refused (400).
    #[arg(long = "shape-eval-budget", env = "FOLIO_SHAPE_EVAL_BUDGET", default_value_t = 1_000_000)]
    pub eval_budget: u64,

    /// Distinct shape definitions one agency may request within `FOLIO_SHAPE_DEFINITION_WINDOW`,
    /// across every edge (a token bucket shared through NATS KV; per edge with
    /// `FOLIO_DS_QUOTAS=off`). 429 beyond.
    #[arg(
        long = "shape-max-definitions-per-agency",
        env = "FOLIO_SHAPE_MAX_DEFINITIONS_PER_AGENCY",
        default_value_t = 1000
    )]
    pub max_definitions_per_agency: usize,

    /// The window distinct definitions are counted in.
    #[arg(long = "shape-definition-window", env = "FOLIO_SHAPE_DEFINITION_WINDOW", default_value = "10m", value_parser = humantime::parse_duration)]
    pub definition_window: Duration,

    /// Shapes one agency may hold live on this edge at once (429 beyond; a shape leaves after
    /// `FOLIO_SHAPE_IDLE_TIMEOUT` without requests).
    #[arg(
        long = "shape-max-live-shapes-per-agency",
        env = "FOLIO_SHAPE_MAX_LIVE_SHAPES_PER_AGENCY",
        default_value_t = 500
    )]
    pub max_live_shapes_per_agency: usize,

    /// Snapshots taken at once; more initial requests wait.
    #[arg(long = "shape-max-concurrent-snapshots", env = "FOLIO_SHAPE_MAX_CONCURRENT_SNAPSHOTS", default_value_t = 4)]
    pub max_concurrent_snapshots: usize,
}

impl ShapesConfig {
    /// What one where clause may cost on this edge.
    pub fn where_limits(&self) -> folio_shapes::Limits {
        folio_shapes::Limits {
            max_where_bytes: self.max_where_bytes,
            max_like_pattern_chars: self.max_like_pattern_chars,
            eval_steps: self.eval_budget,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        AllowList::parse(&self.tables).map_err(|e| format!("FOLIO_SHAPE_TABLES: {e}"))?;
        if self.chunk_bytes < 1024 {
            return Err("FOLIO_SHAPE_CHUNK_BYTES must be at least 1024".into());
        }
        if self.long_poll_timeout.is_zero() || self.long_poll_timeout > Duration::from_secs(40) {
            return Err("FOLIO_SHAPE_LONG_POLL_TIMEOUT must be between 0 and 40s (the client aborts at 45s)".into());
        }
        if self.max_where_bytes > folio_shapes::MAX_WHERE_LEN {
            return Err(format!("FOLIO_SHAPE_MAX_WHERE_BYTES must be at most {}", folio_shapes::MAX_WHERE_LEN));
        }
        if self.eval_budget == 0 || self.definition_window.is_zero() {
            return Err("FOLIO_SHAPE_EVAL_BUDGET and FOLIO_SHAPE_DEFINITION_WINDOW must be positive".into());
        }
        Ok(())
    }
}
