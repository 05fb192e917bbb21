//! wal-ingest's configuration: every flag also reads a `FOLIO_…` variable. Defaults run
//! against the local cluster (`scripts/`), a single-node NATS and the schema's publication.

use std::time::Duration;

use clap::Parser;
use folio_runtime::CommonArgs;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "wal-ingest",
    about = "Streams every committed Postgres change onto NATS JetStream, effectively once."
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub db: folio_db::DbArgs,

    #[command(flatten)]
    pub bus: folio_bus::BusArgs,

    /// Logical replication slot (pgoutput), created on first start. One active ingester per slot.
    #[arg(long, env = "FOLIO_WAL_SLOT", default_value = "folio_wal_ingest", value_parser = parse_slot_name)]
    pub slot: String,

    /// Publication the slot streams; tables added to it later flow without a restart.
    #[arg(long, env = "FOLIO_WAL_PUBLICATION", default_value = folio_db::PUBLICATION)]
    pub publication: String,

    /// JetStream duplicate window. Replays after a crash are dropped inside it; the startup
    /// fence covers longer outages.
    #[arg(long, env = "FOLIO_DUPLICATE_WINDOW", default_value = "10m", value_parser = humantime::parse_duration)]
    pub duplicate_window: Duration,

    /// How long change events are kept (0 = forever). Consumers behind the stream's first
    /// sequence must re-snapshot.
    #[arg(long, env = "FOLIO_CHANGES_MAX_AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub changes_max_age: Duration,

    /// Size cap of the changes stream in bytes (-1 = unlimited); the oldest events go first.
    #[arg(long, env = "FOLIO_CHANGES_MAX_BYTES", default_value_t = -1, allow_hyphen_values = true)]
    pub changes_max_bytes: i64,

    /// Cap on unconsumed jobs (-1 = unlimited). A full jobs stream refuses new jobs, which
    /// stalls ingest rather than dropping work.
    #[arg(long, env = "FOLIO_JOBS_MAX_MESSAGES", default_value_t = -1, allow_hyphen_values = true)]
    pub jobs_max_messages: i64,

    /// Publishes awaiting their JetStream ack at once.
    #[arg(long, env = "FOLIO_PUBLISH_WINDOW", default_value_t = 4096)]
    pub publish_window: usize,

    /// How long a JetStream ack may take before the session restarts.
    #[arg(long, env = "FOLIO_ACK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub ack_timeout: Duration,

    /// Standby status updates to Postgres at least this often (also while publishing stalls).
    #[arg(long, env = "FOLIO_STATUS_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub status_interval: Duration,

    /// How often slot lag is measured, exported and logged.
    #[arg(long, env = "FOLIO_LAG_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lag_interval: Duration,

    /// How often a standby retries the slot's advisory lock.
    #[arg(long, env = "FOLIO_STANDBY_POLL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub standby_poll: Duration,

    /// Pause before a failed session (Postgres or NATS unreachable) is retried.
    #[arg(long, env = "FOLIO_RETRY_BACKOFF", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_backoff: Duration,
}

fn parse_slot_name(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        Ok(s.to_owned())
    } else {
        Err(format!("slot name {s:?} must be 1-63 of [a-z0-9_]"))
    }
}

impl Config {
    /// A configuration for tests and tools: defaults, with the names that must not collide
    /// between concurrent runs replaced.
    pub fn for_names(database_url: &str, nats_url: &str, slot: &str, subject_root: &str, stream_prefix: &str) -> Self {
        let mut config = Config::parse_from(["wal-ingest"]);
        config.db = folio_db::DbArgs::new(database_url);
        config.bus = folio_bus::BusArgs::for_names(nats_url, subject_root, stream_prefix);
        config.slot = slot.to_owned();
        config
    }
}

impl folio_runtime::ServiceConfig for Config {
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}
