//! pdf-render configuration: flags with `FOLIO_…` environment overrides.

use std::{path::PathBuf, time::Duration};

use folio_runtime::CommonArgs;

use crate::sandbox::ByteSize;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "pdf-render", version, about = "Renders proposal PDFs from the folio.jobs.pdf work queue")]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub db: folio_db::DbArgs,

    /// NATS, the subject root (jobs arrive on `<root>.jobs.pdf`), the jobs stream wal-ingest
    /// writes to, and the replicas of the bucket and dead-letter stream declared here.
    #[command(flatten)]
    pub bus: folio_bus::BusArgs,

    /// Durable consumer shared by every pdf-render replica.
    #[arg(long, env = "FOLIO_PDF_CONSUMER", default_value = "pdf-render")]
    pub consumer: String,

    /// Where jobs that cannot be rendered go, with the error (`<root>.dead.pdf`).
    #[arg(long, env = "FOLIO_PDF_DEAD_LETTER_STREAM", default_value = "FOLIO_JOBS_DEAD")]
    pub dead_letter_stream: String,

    /// Renders at once; one render uses one core. 0 = the number of cores.
    #[arg(long, env = "FOLIO_PDF_CONCURRENCY", default_value_t = 0)]
    pub concurrency: usize,

    /// How long JetStream waits for an ack before redelivering; long renders send progress.
    #[arg(long, env = "FOLIO_PDF_ACK_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ack_wait: Duration,

    /// Longest a single render may take; a template that runs longer fails (permanently, "the
    /// template ran longer than …"): its sandboxed worker is killed and replaced.
    #[arg(long, env = "FOLIO_PDF_RENDER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub render_timeout: Duration,

    /// Heap one template may use in its sandboxed worker, above the warm worker's own (about
    /// 30 MiB); a template that needs more fails (permanently, "the template used more than …").
    #[arg(long, env = "FOLIO_PDF_SANDBOX_MEMORY", default_value = "128MiB")]
    pub sandbox_memory: ByteSize,

    /// Sandboxed worker processes kept started (fonts loaded, reused across renders). 0 = the
    /// render concurrency.
    #[arg(long, env = "FOLIO_PDF_SANDBOX_WORKERS", default_value_t = 0)]
    pub sandbox_workers: usize,

    /// The `pdf-render-worker` binary. Default: next to the running executable, or in its
    /// parent directory.
    #[arg(long, env = "FOLIO_PDF_WORKER_BIN")]
    pub worker_bin: Option<PathBuf>,

    /// Deliveries of one job before it is dead-lettered.
    #[arg(long, env = "FOLIO_PDF_MAX_DELIVER", default_value_t = 5)]
    pub max_deliver: i64,

    /// First retry delay after a transient error; doubles per attempt, capped at 5 minutes.
    #[arg(long, env = "FOLIO_PDF_RETRY_BACKOFF", default_value = "2s", value_parser = humantime::parse_duration)]
    pub retry_backoff: Duration,
}

impl Config {
    pub fn concurrency(&self) -> usize {
        if self.concurrency > 0 {
            self.concurrency
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }

    pub fn sandbox_workers(&self) -> usize {
        if self.sandbox_workers > 0 { self.sandbox_workers } else { self.concurrency() }
    }

    /// The longest one job can stay unfinished once a worker first takes it: every delivery may
    /// run up to the render timeout (a hung render) or the ack wait (a killed worker), then wait
    /// out the longer of its retry backoff and the ack wait before the next. After this, the job
    /// is rendered, failed or dead-lettered. `None` when deliveries are unlimited. A rendition
    /// still `queued` or `rendering` this long after its job was queued (plus time waiting in
    /// the queue) has lost its job: proposals-api's `FOLIO_PDF_REQUEUE_AFTER` must exceed this.
    pub fn retry_budget(&self) -> Option<Duration> {
        if self.max_deliver <= 0 {
            return None;
        }
        let attempt = self.render_timeout.max(self.ack_wait);
        Some(
            (1..=self.max_deliver)
                .map(|d| attempt + crate::worker::backoff(self.retry_backoff, d).max(self.ack_wait))
                .sum(),
        )
    }

    /// Defaults, with the two connection URLs given: for tests and embedding.
    pub fn new(database_url: impl Into<String>, nats_url: impl Into<String>) -> Self {
        let mut config = <Self as clap::Parser>::parse_from(["pdf-render"]);
        config.db = folio_db::DbArgs::new(database_url);
        config.bus.nats_url = nats_url.into();
        config
    }
}

impl folio_runtime::ServiceConfig for Config {
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}
