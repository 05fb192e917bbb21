//! pdf-render: turns `RenderPdfJob`s from the `folio.jobs.pdf` work queue into PDFs with typst,
//! stores them content-addressed in a JetStream Object Store bucket, and records each
//! rendition's status in PostgreSQL.

pub mod config;
pub mod document;
pub mod render;
pub mod store;
pub mod worker;

use std::sync::Arc;

use async_nats::jetstream;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// What every job handler shares.
pub struct Shared {
    pub config: Config,
    pub pool: sqlx::PgPool,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub bucket: jetstream::object_store::ObjectStore,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Db(#[from] folio_db::DbError),
    #[error("nats: {0}")]
    Nats(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("failed to bind {addr}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
}

/// Runs the worker (and the admin server) until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let addr = config.common.admin_addr;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| RunError::Bind { addr, source })?;
    let admin = folio_runtime::AdminServer::start(listener, shutdown.clone())
        .await
        .map_err(|source| RunError::Bind { addr, source })?;
    let shared = connect(config).await?;
    admin.readiness.set(true);
    tracing::info!(admin = %admin.local_addr, "pdf-render started");
    serve(shared, shutdown).await
}

pub async fn connect(config: Config) -> Result<Arc<Shared>, RunError> {
    let pool = folio_db::connect(&config.database_url, config.concurrency() as u32 * 2 + 2).await?;
    let nats = async_nats::connect(&config.nats_url)
        .await
        .map_err(|e| RunError::Nats(format!("connect {}: {e}", config.nats_url)))?;
    let js = jetstream::new(nats.clone());
    let bucket = store::open_bucket(&js, &config.bucket, config.replicas).await?;
    js.get_or_create_stream(jetstream::stream::Config {
        name: config.dead_letter_stream.clone(),
        description: Some("PDF jobs that could not be rendered, with the error in Folio-Error".into()),
        subjects: vec![folio_bus::Subjects::new(config.subject_root.clone()).dead_letters(worker::JOB_KIND)],
        storage: jetstream::stream::StorageType::File,
        num_replicas: config.replicas,
        max_age: std::time::Duration::from_secs(30 * 24 * 3600),
        ..Default::default()
    })
    .await
    .map_err(|e| RunError::Nats(format!("declare {}: {e}", config.dead_letter_stream)))?;
    Ok(Arc::new(Shared { config, pool, nats, js, bucket }))
}

/// The worker and the exhausted-job watcher on an already connected `Shared` (tests use this).
pub async fn serve(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<(), RunError> {
    let watcher = tokio::spawn(worker::watch_exhausted_jobs(shared.clone(), shutdown.clone()));
    let result = worker::run(shared, shutdown).await;
    watcher.abort();
    result
}
