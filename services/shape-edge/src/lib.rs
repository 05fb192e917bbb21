//! shape-edge: Folio's HTTP edge. Composes two products on one NATS connection and one
//! listener: the Durable Streams protocol under `/v1/stream/*` (`folio-durable-streams`, with
//! Folio's proposal activity streams) and ElectricSQL's shape API under `/v1/shape`
//! (`folio-shape-api`). This crate holds the configuration, the composition and the admin
//! server; the products know nothing of each other.

use std::{net::SocketAddr, sync::Arc};

use folio_runtime::{AdminServer, CommonArgs};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use folio_durable_streams::{self as streams, StreamsConfig};
pub use folio_shape_api::{self as shapes, ShapesConfig};

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "shape-edge", version, about = "Folio's HTTP edge: Durable Streams (and shapes) over NATS JetStream")]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Address of the public HTTP server.
    #[arg(long, env = "FOLIO_EDGE_ADDR", default_value = "127.0.0.1:4437")]
    pub listen_addr: SocketAddr,

    /// NATS, the subject root and wal-ingest's change stream.
    #[command(flatten)]
    pub bus: folio_bus::BusArgs,

    #[command(flatten)]
    pub streams: StreamsConfig,

    #[command(flatten)]
    pub shapes: ShapesConfig,
}

impl Config {
    /// Checks what clap cannot; called before any port is bound.
    pub fn validate(&self) -> Result<(), String> {
        self.streams.validate()?;
        self.shapes.validate()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to connect to NATS at {url}")]
    Nats {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("failed to set up JetStream storage")]
    Storage(#[from] streams::StorageError),
    #[error("failed to set up shapes")]
    Shapes(#[from] shapes::StartError),
    #[error("failed to bind or serve HTTP")]
    Io(#[from] std::io::Error),
}

/// Binds the public and admin listeners from `config` and runs until `shutdown`.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let listener = TcpListener::bind(config.listen_addr).await?;
    let admin = AdminServer::start(TcpListener::bind(config.common.admin_addr).await?, shutdown.clone()).await?;
    tracing::info!(addr = %listener.local_addr()?, admin = %admin.local_addr, "shape-edge listening");
    let readiness = admin.readiness.clone();
    let result = run_with_readiness(config, listener, shutdown, Some(readiness)).await;
    let _ = admin.task.await;
    result
}

/// Serves the edge on `listener` until `shutdown` is cancelled, then drains in-flight requests.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), Error> {
    run_with_readiness(config, listener, shutdown, None).await
}

async fn run_with_readiness(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    readiness: Option<folio_runtime::Readiness>,
) -> Result<(), Error> {
    let (options, reconnects) = folio_live::Reconnects::options("shape-edge");
    let nats = options
        .connect(&config.bus.nats_url)
        .await
        .map_err(|source| Error::Nats { url: config.bus.nats_url.clone(), source })?;
    // Background tasks and live readers stop when draining starts; requests in flight finish.
    let streams = streams::Streams::start(
        nats.clone(),
        config.streams.clone(),
        &config.bus,
        reconnects.clone(),
        shutdown.clone(),
    )
    .await?;
    let shapes = shapes::Shapes::start(
        nats,
        config.shapes.clone(),
        &config.streams.prefix,
        config.streams.jwt.authenticator(),
        &config.bus,
        reconnects,
        shutdown.clone(),
    )
    .await?;
    let app = router(Arc::clone(&streams), shapes);
    if let Some(r) = &readiness {
        r.set(true);
    }
    let grace = config.common.shutdown_grace;
    let drain_started = shutdown.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move { drain_started.cancelled().await });
    let server = tokio::spawn(async move { server.await });
    shutdown.cancelled().await;
    if let Some(r) = &readiness {
        r.set(false);
    }
    // Live readers (long-poll, SSE) hold connections open; give them the grace period at most.
    match tokio::time::timeout(grace, server).await {
        Ok(Ok(r)) => r.map_err(Error::Io),
        Ok(Err(join)) => Err(Error::Io(std::io::Error::other(join))),
        Err(_) => {
            tracing::warn!("open connections outlived the shutdown grace period");
            Ok(())
        }
    }
}

/// The edge's public routes: Durable Streams and Electric's shape API.
pub fn router(streams: Arc<streams::Streams>, shapes: Arc<shapes::Shapes>) -> axum::Router {
    axum::Router::new().merge(streams::router(streams)).merge(shapes::router(shapes))
}

impl folio_runtime::ServiceConfig for Config {
    fn common(&self) -> &CommonArgs {
        &self.common
    }

    fn check(&self) -> Result<(), String> {
        self.validate()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn flags_are_consistent() {
        use clap::CommandFactory;
        super::Config::command().debug_assert();
    }
}
