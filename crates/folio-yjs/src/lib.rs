//! The Yjs protocol of Durable Streams (`@durable-streams/y-durable-streams`, YJS-PROTOCOL.md)
//! under `/v1/yjs/{service}/docs/{*docPath}`, so the unmodified `YjsProvider` syncs documents
//! through the edge.
//!
//! A document is ordinary Durable Streams (an update log and awareness streams, `path`), served
//! in process through `folio_durable_streams::Streams::serve`: reads, SSE, long-poll, appends and
//! their access rules are the streams' own, and offsets are JetStream sequences. What this crate
//! adds: the URL and error shapes of the protocol (`routes`, `error`), snapshot discovery, and
//! compaction (`compactor`, `compact`): once a document's log has grown by the threshold since
//! its last snapshot, one edge (a lease in the document's record, `record`) replays it with
//! `yrs`, stores the state as one update (`snapshots`) and moves the pointer with
//! compare-and-set. Updates are never deleted.

mod awareness;
pub mod compact;
mod compactor;
mod error;
pub mod frames;
pub mod path;
pub mod proposal;
mod proposal_edits;
mod record;
mod routes;
mod snapshots;

use std::{collections::HashMap, sync::Arc, time::Duration};

use folio_durable_streams::{StorageError, Streams};
use parking_lot::Mutex;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use compactor::Outcome;
pub use error::YjsError;
pub use routes::router;

/// Yjs settings, flattened into the edge's `Config`.
#[derive(Debug, Clone, clap::Args)]
pub struct YjsConfig {
    /// Bytes of updates a document's log may grow by after its last snapshot before the edge
    /// compacts it into a new snapshot (clients then load the snapshot and the updates after it).
    #[arg(long = "yjs-compaction-threshold", env = "FOLIO_YJS_COMPACTION_THRESHOLD", default_value_t = 1024 * 1024)]
    pub compaction_threshold: u64,

    /// Idle time after which an awareness (presence) stream expires; a client's next write
    /// creates it again.
    #[arg(long = "yjs-awareness-ttl", env = "FOLIO_YJS_AWARENESS_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub awareness_ttl: Duration,

    /// Largest POST body on a document (bytes); bodies larger than one append are stored as
    /// several appends cut at update boundaries.
    #[arg(long = "yjs-max-post-bytes", env = "FOLIO_YJS_MAX_POST_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_post_bytes: usize,

    /// gRPC address of proposals-api, through which the edge writes a proposal document's text
    /// into the proposal (UpdateProposal: the API's rules, version bump, draft only).
    #[arg(long = "yjs-proposals-api", env = "FOLIO_YJS_PROPOSALS_API", default_value = "http://127.0.0.1:50051")]
    pub proposals_api: String,

    /// Quiet time after the last update of a proposal's document before its text is written
    /// into the proposal.
    #[arg(long = "yjs-persist-debounce", env = "FOLIO_YJS_PERSIST_DEBOUNCE", default_value = "1s", value_parser = humantime::parse_duration)]
    pub persist_debounce: Duration,
}

impl YjsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.compaction_threshold == 0 {
            return Err("--yjs-compaction-threshold must be positive".into());
        }
        if self.awareness_ttl.as_secs() == 0 {
            return Err("--yjs-awareness-ttl must be at least one second".into());
        }
        if self.max_post_bytes == 0 {
            return Err("--yjs-max-post-bytes must be positive".into());
        }
        if self.proposals_api.parse::<tonic::transport::Uri>().map_or(true, |u| u.authority().is_none()) {
            return Err(format!("--yjs-proposals-api {:?} is not an absolute URL", self.proposals_api));
        }
        Ok(())
    }
}

/// Shared state of the Yjs route.
pub struct Yjs {
    streams: Arc<Streams>,
    config: YjsConfig,
    records: record::Records,
    snapshots: snapshots::Snapshots,
    /// Bytes appended through this edge per document since its last compaction: only a hint
    /// of when to try (the compactor counts the real bytes), so restarts and other edges are
    /// harmless. Keyed by the update log's stream path.
    pending: Mutex<HashMap<String, Pending>>,
    /// Proposal documents: the database and API they are checked against and persisted
    /// through; `None` on an edge without them (proposal documents then answer 503).
    proposals: Option<proposal::Proposals>,
    /// Appends to awareness streams through this edge since their last trim, by stream path.
    awareness_appends: Mutex<HashMap<String, u32>>,
    /// Proposal documents waiting for their debounced persist, by update log path.
    persists: Mutex<HashMap<String, proposal::Scheduled>>,
    /// Names this edge in compaction leases.
    edge_id: String,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

#[derive(Default)]
struct Pending {
    bytes: u64,
    compacting: bool,
}

impl Yjs {
    /// Opens the snapshot bucket; compactions run on `tasks` and stop with `shutdown`. Without
    /// proposal documents (see [`Yjs::start_with_proposals`]).
    pub async fn start(
        streams: Arc<Streams>,
        config: YjsConfig,
        prefix: &str,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Arc<Self>, StorageError> {
        Self::start_with_proposals(streams, config, prefix, None, shutdown, tasks).await
    }

    /// As [`Yjs::start`], serving proposal documents from `proposals`; their persists also run
    /// on `tasks`.
    pub async fn start_with_proposals(
        streams: Arc<Streams>,
        config: YjsConfig,
        prefix: &str,
        proposals: Option<proposal::Proposals>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Arc<Self>, StorageError> {
        let store = streams.store();
        let snapshots = snapshots::Snapshots::open(store.nats().clone(), prefix).await?;
        let records = record::Records::new(store.kv().clone());
        // At 0 from the start, so the alert on failed compactions sees the first one.
        metrics::counter!("folio_edge_yjs_compactions_total", "outcome" => "failed").increment(0);
        Ok(Arc::new(Yjs {
            streams,
            config,
            records,
            snapshots,
            pending: Mutex::new(HashMap::new()),
            proposals,
            awareness_appends: Mutex::new(HashMap::new()),
            persists: Mutex::new(HashMap::new()),
            edge_id: uuid::Uuid::new_v4().simple().to_string(),
            shutdown,
            tasks,
        }))
    }
}
