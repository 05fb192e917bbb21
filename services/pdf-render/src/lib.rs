//! pdf-render: turns `RenderPdfJob`s from the `folio.jobs.pdf` work queue into PDFs with typst,
//! stores them content-addressed in a JetStream Object Store bucket, and records each
//! rendition's status in PostgreSQL.

pub mod config;
pub mod document;
pub mod render;
pub mod sandbox;
pub mod store;
pub mod worker;

use std::{net::SocketAddr, sync::Arc};

use async_nats::jetstream;
use folio_runtime::{Readiness, Spawned};
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// What every job handler shares.
pub struct Shared {
    pub config: Config,
    pub pool: sqlx::PgPool,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub bucket: jetstream::object_store::ObjectStore,
    /// Where templates run: sandboxed worker processes.
    pub renderers: sandbox::Pool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Db(#[from] folio_db::DbError),
    #[error("failed to bind {addr}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("failed to connect to NATS at {url}")]
    Nats { url: String, source: async_nats::ConnectError },
    #[error("failed to declare the stream {stream}")]
    DeclareStream { stream: String, source: jetstream::context::CreateStreamError },
    #[error("failed to create the consumer {consumer}")]
    CreateConsumer { consumer: String, source: jetstream::stream::ConsumerError },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    WorkerNotFound(#[from] sandbox::WorkerNotFound),
    #[error("failed to start the render workers")]
    Sandbox(#[source] sandbox::SandboxError),
}

/// Runs the worker (and the admin server) until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    bind(config).await?.run(shutdown).await
}

/// Binds the admin listener (port 0 works; see [`Bound::admin_addr`]), starts the sandboxed
/// render workers, connects PostgreSQL and NATS, and declares the PDF bucket and the
/// dead-letter stream.
pub async fn bind(config: Config) -> Result<Bound, Error> {
    let program = sandbox::locate_worker(config.worker_bin.as_deref())?;
    let renderers = sandbox::Pool::start(sandbox::Settings {
        program,
        memory: config.sandbox_memory,
        time: config.render_timeout,
        workers: config.sandbox_workers(),
    })
    .await
    .map_err(Error::Sandbox)?;
    let addr = config.common.admin_addr;
    let admin = tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
    let admin_addr = admin.local_addr().map_err(|source| Error::Bind { addr, source })?;
    let pool = folio_db::connect(&config.db.database_url, config.concurrency() as u32 * 2 + 2).await?;
    let url = &config.bus.nats_url;
    let nats = async_nats::connect(url).await.map_err(|source| Error::Nats { url: url.clone(), source })?;
    let js = jetstream::new(nats.clone());
    let replicas = config.bus.stream_replicas;
    let bucket = store::open_bucket(&js, &config.bus.pdf_bucket, replicas).await?;
    js.get_or_create_stream(jetstream::stream::Config {
        name: config.dead_letter_stream.clone(),
        description: Some("PDF jobs that could not be rendered, with the error in Folio-Error".into()),
        subjects: vec![config.bus.subjects().dead_letters(worker::JOB_KIND)],
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        max_age: std::time::Duration::from_secs(30 * 24 * 3600),
        ..Default::default()
    })
    .await
    .map_err(|source| Error::DeclareStream { stream: config.dead_letter_stream.clone(), source })?;
    let shared = Arc::new(Shared { config, pool, nats, js, bucket, renderers });
    Ok(Bound { shared, admin, admin_addr, readiness: Readiness::default() })
}

/// pdf-render connected and its admin listener bound, not consuming yet.
pub struct Bound {
    shared: Arc<Shared>,
    admin: tokio::net::TcpListener,
    admin_addr: SocketAddr,
    readiness: Readiness,
}

impl Bound {
    /// `/healthz`, `/readyz` and `/metrics`.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Ready once it consumes jobs.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Runs it as a task of this process (tests, embedders).
    pub fn spawn(self) -> Spawned<Error> {
        Spawned::spawn(self.readiness(), |shutdown| self.run(shutdown))
    }

    /// The worker and the exhausted-job watcher until `shutdown`; renders in flight then get
    /// the grace period to finish.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Bound { shared, admin, admin_addr, readiness } = self;
        let admin =
            folio_runtime::AdminServer::start_with(admin, readiness, shared.config.common.http, shutdown.clone())
                .await
                .map_err(|source| Error::Bind { addr: admin_addr, source })?;
        admin.readiness.set(true);
        tracing::info!(admin = %admin.local_addr, "pdf-render started");
        let watcher = tokio::spawn(worker::watch_exhausted_jobs(shared.clone(), shutdown.clone()));
        let backlog = tokio::spawn(worker::report_backlog(shared.clone(), shutdown.clone()));
        let result = worker::run(shared, shutdown).await;
        watcher.abort();
        backlog.abort();
        result
    }
}
