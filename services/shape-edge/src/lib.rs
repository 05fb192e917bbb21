//! shape-edge: Folio's HTTP edge. Composes two products on one NATS connection and one
//! listener: the Durable Streams protocol under `/v1/stream/*` (`folio-durable-streams`, with
//! Folio's proposal activity streams) and ElectricSQL's shape API under `/v1/shape`
//! (`folio-shape-api`). This crate holds the configuration, the composition and the admin
//! server; the products know nothing of each other.

use std::net::SocketAddr;

use folio_runtime::{AdminServer, CommonArgs, Readiness, Spawned};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

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

    /// The Yjs protocol on the streams (`/v1/yjs/*`): compaction and awareness settings.
    #[command(flatten)]
    pub yjs: folio_yjs::YjsConfig,

    /// Where the limits both APIs share with the other edges live (NATS KV) and how they lease.
    #[command(flatten)]
    pub quota: folio_quota::QuotaArgs,
}

impl Config {
    /// Checks what clap cannot; called before any port is bound.
    pub fn validate(&self) -> Result<(), String> {
        let jwt = &self.streams.jwt;
        self.common
            .environment
            .check_secret(folio_auth::JwtArgs::SECRET_VAR, &jwt.jwt_secret, folio_auth::DEVELOPMENT_SECRET)
            .map_err(|e| e.to_string())?;
        self.check_public_url()?;
        self.streams.validate()?;
        self.yjs.validate()?;
        self.shapes.validate()
    }
}

impl Config {
    /// `Location` headers and webhook links (callback, JWKS) are built from the public URL. A
    /// request's `Host` header is the caller's to choose, so outside development the URL must be
    /// configured (issue 13, finding 12); a local cluster may still derive it.
    fn check_public_url(&self) -> Result<(), String> {
        let Some(url) = &self.streams.public_url else {
            if self.common.environment.is_development() {
                return Ok(());
            }
            return Err("FOLIO_EDGE_PUBLIC_URL must be set outside development (e.g. https://edge.example.com): \
                        links the edge hands out are built from it, never from a request's Host header"
                .into());
        };
        let absolute = url
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some());
        if !absolute {
            return Err(format!("FOLIO_EDGE_PUBLIC_URL {url:?} is not an absolute http(s) URL"));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("failed to bind {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
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
    #[error("failed to serve HTTP")]
    Io(#[from] std::io::Error),
}

/// Binds the listeners and connects to NATS, then runs until `shutdown` (what `main` calls).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    bind(config).await?.run(shutdown).await
}

/// Checks the configuration, binds the public and admin listeners (port 0 works: the ports are
/// known from [`Bound::http_addr`] and [`Bound::admin_addr`]) and connects to NATS.
pub async fn bind(config: Config) -> Result<Bound, Error> {
    config.validate().map_err(Error::Config)?;
    let listen =
        |addr: SocketAddr| async move { TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source }) };
    let http = listen(config.listen_addr).await?;
    let admin = listen(config.common.admin_addr).await?;
    let (options, reconnects) = folio_live::Reconnects::options("shape-edge");
    // Without echo: every edge subscribes to all Durable Streams change notices, so with echo
    // nats-server sent each of this edge's own notices back to it (a message per append batch,
    // parsed and skipped). Nothing else on this connection subscribes to what the edge itself
    // publishes on core NATS (replies, consumers and direct gets come from the server); a
    // component that needs to hear its own messages needs a connection of its own.
    let nats = options
        .no_echo()
        .connect(&config.bus.nats_url)
        .await
        .map_err(|source| Error::Nats { url: config.bus.nats_url.clone(), source })?;
    Ok(Bound { config, http, admin, nats, reconnects, readiness: Readiness::default() })
}

/// An edge with its listeners bound and NATS connected, not serving yet.
pub struct Bound {
    config: Config,
    http: TcpListener,
    admin: TcpListener,
    nats: async_nats::Client,
    reconnects: folio_live::Reconnects,
    readiness: Readiness,
}

impl Bound {
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("a bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().expect("a bound listener has an address")
    }

    /// The flag `/readyz` reports: set once both APIs serve, cleared when draining starts.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Runs it as a task of this process (tests, embedders).
    pub fn spawn(self) -> Spawned<Error> {
        Spawned::spawn(self.readiness(), |shutdown| self.run(shutdown))
    }

    /// Sets up JetStream, serves both APIs until `shutdown`, then drains: live readers and
    /// background tasks stop, requests in flight and tracked tasks get the shutdown grace.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Bound { config, http, admin, nats, reconnects, readiness } = self;
        let admin = AdminServer::start_with(admin, readiness.clone(), config.common.http, shutdown.clone()).await?;
        tracing::info!(addr = %http.local_addr()?, admin = %admin.local_addr, "shape-edge listening");
        // Every long-lived task of both APIs; cancelled with `shutdown`, awaited below.
        let tasks = TaskTracker::new();
        let started = async {
            // One limiter for both APIs, over the edge's NATS connection: the buckets are
            // created on first use, so the edge starts while JetStream is still coming up.
            let quotas = folio_quota::Quotas::new(nats.clone(), &config.quota, config.bus.stream_replicas);
            let streams = streams::Streams::start(
                nats.clone(),
                config.streams.clone(),
                Some(quotas.clone()),
                &config.bus,
                reconnects.clone(),
                shutdown.clone(),
                tasks.clone(),
            )
            .await?;
            // Yjs documents are streams of this API, served in process on the same JetStream;
            // proposals' documents are checked in the database and persisted through the API.
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(std::time::Duration::from_secs(5))
                .connect_lazy(&config.shapes.db.database_url)
                .map_err(|e| Error::Config(format!("FOLIO_DATABASE_URL: {e}")))?;
            let proposals = folio_yjs::proposal::Proposals::new(pool, &config.yjs, config.streams.jwt.authenticator())
                .map_err(|e| Error::Config(format!("--yjs-proposals-api: {e}")))?;
            let yjs = folio_yjs::Yjs::start_with_proposals(
                streams.clone(),
                config.yjs.clone(),
                &config.streams.prefix,
                Some(proposals),
                shutdown.clone(),
                tasks.clone(),
            )
            .await?;
            yjs.follow_proposal_edits(&config.bus, &reconnects).await;
            let shapes = shapes::Shapes::start(
                nats,
                config.shapes.clone(),
                config.streams.quotas.then(|| quotas.rates.clone()),
                &config.streams.prefix,
                config.streams.jwt.authenticator(),
                &config.bus,
                reconnects,
                shutdown.clone(),
                tasks.clone(),
            )
            .await?;
            Ok::<_, Error>(folio_runtime::red::EDGE.instrument(router(streams, shapes).merge(folio_yjs::router(yjs))))
        };
        let app = match started.await {
            Ok(app) => app,
            Err(e) => {
                shutdown.cancel();
                tasks.close();
                tasks.wait().await;
                let _ = admin.task.await;
                return Err(e);
            }
        };
        readiness.set(true);
        // Live clients on HTTP/2 share connections: their events go out together (see
        // `ConnectionLimits::write_coalesce`; docs/benchmarks.md, issue 16's 50,000 clients).
        let limits = config.common.http.coalescing(std::time::Duration::from_millis(5));
        let server = tokio::spawn(folio_runtime::http::serve("edge", http, app, limits, shutdown.clone()));
        shutdown.cancelled().await;
        readiness.set(false);
        // Live readers (long-poll, SSE) hold connections open, webhook deliveries may be in
        // flight: the grace period bounds both.
        let deadline = tokio::time::Instant::now() + config.common.shutdown_grace;
        let served = match tokio::time::timeout_at(deadline, server).await {
            Ok(Ok(r)) => r.map_err(Error::Io),
            Ok(Err(join)) => Err(Error::Io(std::io::Error::other(join))),
            Err(_) => {
                tracing::warn!("open connections outlived the shutdown grace period");
                Ok(())
            }
        };
        tasks.close();
        if tokio::time::timeout_at(deadline, tasks.wait()).await.is_err() {
            tracing::warn!(tasks = tasks.len(), "background tasks outlived the shutdown grace period");
        }
        let _ = admin.task.await;
        served
    }
}

/// The edge's public routes: Durable Streams and Electric's shape API. Routes match the path
/// exactly as sent (no decoding, no merging of slashes, no `.` or `..`): a look-alike of
/// `/v1/shape` (`/v1/shape/`, `/v1//shape`, `/v1/%73hape`, `/V1/shape`) is no route at all and
/// gets a JSON 404, and each handler authenticates for itself, so no spelling of a path can
/// reach data without the handler's own check.
pub fn router(streams: std::sync::Arc<streams::Streams>, shapes: std::sync::Arc<shapes::Shapes>) -> axum::Router {
    axum::Router::new()
        .merge(streams::router(streams))
        .merge(shapes::router(shapes))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn no_route() -> axum::response::Response {
    json_refusal(axum::http::StatusCode::NOT_FOUND, "Not found")
}

async fn method_not_allowed() -> axum::response::Response {
    json_refusal(axum::http::StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

fn json_refusal(status: axum::http::StatusCode, message: &'static str) -> axum::response::Response {
    use axum::{http::header, response::IntoResponse};
    let headers = [(header::CONTENT_TYPE, "application/json; charset=utf-8"), (header::CACHE_CONTROL, "no-store")];
    (status, headers, format!("{{\"message\":\"{message}\"}}")).into_response()
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
