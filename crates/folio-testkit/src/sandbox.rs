//! One sandbox for every cross-service test: a fresh database, names on the shared NATS server
//! that no other test uses (subject root, streams, slot, consumers, bucket), and any subset of
//! Folio's services started in-process on port 0 through their own `bind` → `Bound::run`, the
//! same path their binaries take. Roles are cargo features, so a service's tests build only
//! the services they start.

// Built with no role (a crate that only wants the database and NATS), what serves roles is idle.
#![cfg_attr(
    not(any(
        feature = "wal-ingest",
        feature = "notifier",
        feature = "proposals-api",
        feature = "pdf-render",
        feature = "shape-edge"
    )),
    allow(dead_code, clippy::never_loop)
)]

use std::{future::Future, pin::Pin, time::Duration};

use anyhow::Context as _;
use async_nats::jetstream;
use folio_runtime::Spawned;

use crate::TestDb;

/// The JWT secret every service in a sandbox shares.
pub const JWT_SECRET: &str = "sandbox-jwt-secret-sandbox-jwt-secret-0123";

/// The notifier's unsubscribe secret in a sandbox: the services run as in production, which
/// refuses built-in secrets.
pub const UNSUBSCRIBE_SECRET: &str = "sandbox-unsubscribe-secret-sandbox-0123456";

/// How long a started service may take to report ready (wal-ingest: streaming its slot).
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A Folio service a sandbox can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    #[cfg(feature = "wal-ingest")]
    WalIngest,
    #[cfg(feature = "notifier")]
    Notifier,
    #[cfg(feature = "proposals-api")]
    Api,
    #[cfg(feature = "pdf-render")]
    PdfRender,
    #[cfg(feature = "shape-edge")]
    Edge,
}

type StopFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A running service whose error type the sandbox does not need to know.
trait Stoppable: Send + Sync {
    fn stop(self: Box<Self>) -> StopFuture;
}

impl<E: std::error::Error + Send + 'static> Stoppable for Spawned<E> {
    fn stop(self: Box<Self>) -> StopFuture {
        Box::pin(Spawned::stop(*self))
    }
}

pub struct Sandbox {
    pub db: TestDb,
    /// The NATS contract of this sandbox: server, subject root, stream names.
    pub bus: folio_bus::BusArgs,
    /// wal-ingest's replication slot.
    pub slot: String,
    /// A token unique to this sandbox, for any further name a test needs.
    pub suffix: String,
    pub js: jetstream::Context,
    /// Addresses of the services started, once started.
    pub addrs: Addrs,
    running: Vec<(&'static str, Box<dyn Stoppable>)>,
}

/// Where the started services listen.
#[derive(Debug, Clone, Default)]
pub struct Addrs {
    pub api: Option<std::net::SocketAddr>,
    pub edge: Option<std::net::SocketAddr>,
    pub notifier: Option<std::net::SocketAddr>,
}

impl Sandbox {
    /// A sandbox on the shared NATS server (`FOLIO_NATS_URL`).
    pub async fn new() -> anyhow::Result<Self> {
        Self::with_nats(crate::nats_url()).await
    }

    /// A sandbox on the given NATS server (a [`crate::PrivateNats`] a test restarts).
    pub async fn with_nats(nats_url: String) -> anyhow::Result<Self> {
        Self::assemble(TestDb::new().await?, nats_url, crate::unique_suffix()).await
    }

    /// The sandbox another process of the same test made (its database URL, NATS server and
    /// [`Sandbox::suffix`]): the same names, so a service started here in a process of its own
    /// (with its own telemetry) joins that sandbox's cluster. Cleaning up (the slot, the
    /// streams) is left to the maker.
    pub async fn attach(database_url: &str, nats_url: String, suffix: String) -> anyhow::Result<Self> {
        Self::assemble(TestDb::existing(database_url).await?, nats_url, suffix).await
    }

    async fn assemble(db: TestDb, nats_url: String, suffix: String) -> anyhow::Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect()
            .connect(&nats_url)
            .await
            .with_context(|| format!("failed to connect to NATS at {nats_url}"))?;
        Ok(Sandbox {
            db,
            bus: folio_bus::BusArgs::for_names(&nats_url, &format!("s{suffix}"), &format!("S{suffix}")),
            slot: format!("sandbox_{suffix}"),
            suffix,
            js: jetstream::new(client),
            addrs: Addrs::default(),
            running: Vec::new(),
        })
    }

    /// A sandbox with `roles` started with their default sandbox configuration.
    pub async fn start(roles: &[Role]) -> anyhow::Result<Self> {
        let mut sandbox = Self::new().await?;
        sandbox.start_roles(roles).await?;
        Ok(sandbox)
    }

    /// Starts `roles` with their default sandbox configuration, wal-ingest first: writes made
    /// before its slot exists would never reach the stream.
    pub async fn start_roles(&mut self, roles: &[Role]) -> anyhow::Result<()> {
        #[cfg(feature = "wal-ingest")]
        if roles.contains(&Role::WalIngest) {
            self.start_wal_ingest(self.wal_ingest_config()).await?;
        }
        for role in roles {
            // Every arm is behind its feature: with none enabled, `Role` has no variants.
            match *role {
                #[cfg(feature = "wal-ingest")]
                Role::WalIngest => {}
                #[cfg(feature = "notifier")]
                Role::Notifier => {
                    self.start_notifier(self.notifier_config()).await?;
                }
                #[cfg(feature = "proposals-api")]
                Role::Api => {
                    self.start_api(self.api_config()).await?;
                }
                #[cfg(feature = "pdf-render")]
                Role::PdfRender => {
                    self.start_pdf_render(self.pdf_render_config()).await?;
                }
                #[cfg(feature = "shape-edge")]
                Role::Edge => {
                    self.start_edge(self.edge_config()).await?;
                }
            }
        }
        Ok(())
    }

    pub fn subjects(&self) -> folio_bus::Subjects {
        self.bus.subjects()
    }

    pub fn changes_stream(&self) -> &str {
        &self.bus.changes_stream
    }

    pub fn jobs_stream(&self) -> &str {
        &self.bus.jobs_stream
    }

    /// A bearer token for `caller`, accepted by every service of this sandbox.
    pub fn token(&self, caller: &folio_auth::Caller) -> String {
        folio_auth::Authenticator::new(JWT_SECRET.as_bytes()).issue(caller, Duration::from_secs(3600))
    }

    /// Keeps a service the test started itself, so [`Sandbox::stop`] stops it too.
    pub fn keep<E: std::error::Error + Send + 'static>(&mut self, name: &'static str, service: Spawned<E>) {
        self.running.push((name, Box::new(service)));
    }

    /// Waits until `service` is ready, then keeps it.
    async fn keep_ready<E: std::error::Error + Send + 'static>(
        &mut self,
        name: &'static str,
        service: Spawned<E>,
    ) -> anyhow::Result<()> {
        if let Err(e) = service.ready(READY_WITHIN).await {
            let stopped = service.stop().await;
            anyhow::bail!("{name}: {e} ({stopped:?})");
        }
        self.keep(name, service);
        Ok(())
    }

    /// Stops every service (the last started first) and removes what the sandbox made outside
    /// its database: the replication slot (it would pin WAL) and the streams.
    pub async fn stop(mut self) {
        while let Some((name, service)) = self.running.pop() {
            if let Err(e) = service.stop().await {
                eprintln!("sandbox: {name} stopped with an error: {e}");
            }
        }
        self.clean_up().await;
    }

    /// Removes what the sandbox's names hold outside its database: the replication slot and
    /// the streams (pdf-render's dead letters and object store too, when it ran). For a test
    /// that runs the services itself and keeps the sandbox behind an `Arc`.
    pub async fn clean_up(&self) {
        drop_slot(&self.db.pool, &self.slot).await;
        let (dead, pdfs) = (format!("S{}_DEAD", self.suffix), format!("OBJ_{}", self.bus.pdf_bucket));
        // The notifier's dead letters (notifier::dead_letter::stream_name), made on the first.
        let notifier_dead = format!("{}_NOTIFIER_DEAD", self.bus.changes_stream);
        for stream in [&self.bus.changes_stream, &self.bus.jobs_stream, &dead, &pdfs, &notifier_dead] {
            let _ = self.js.delete_stream(stream).await;
        }
    }
}

/// Drops a replication slot, ending the walsender that may still hold it.
pub async fn drop_slot(pool: &sqlx::PgPool, slot: &str) {
    for _ in 0..50 {
        let _ = sqlx::query(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
              WHERE slot_name = $1 AND active_pid IS NOT NULL",
        )
        .bind(slot)
        .execute(pool)
        .await;
        let dropped =
            sqlx::query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1")
                .bind(slot)
                .execute(pool)
                .await;
        let left: Option<i64> = sqlx::query_scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1")
            .bind(slot)
            .fetch_one(pool)
            .await
            .ok();
        if dropped.is_ok() && left == Some(0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(feature = "wal-ingest")]
impl Sandbox {
    /// wal-ingest on this sandbox's database, slot and names; quick retries for tests.
    pub fn wal_ingest_config(&self) -> wal_ingest::Config {
        let mut c = <wal_ingest::Config as clap::Parser>::parse_from(["wal-ingest"]);
        c.db = folio_db::DbArgs::new(&self.db.url);
        c.bus = self.bus.clone();
        c.slot = self.slot.clone();
        c.common.admin_addr = ([127, 0, 0, 1], 0).into();
        c.retry_backoff = Duration::from_millis(200);
        c.standby_poll = Duration::from_millis(200);
        c
    }

    /// Starts wal-ingest as a task the test owns (to stop or restart it); ready once it streams.
    pub async fn spawn_wal_ingest(config: wal_ingest::Config) -> anyhow::Result<Spawned<wal_ingest::Error>> {
        Ok(wal_ingest::bind(config).await?.spawn())
    }

    /// Starts wal-ingest and waits until it streams its slot.
    pub async fn start_wal_ingest(&mut self, config: wal_ingest::Config) -> anyhow::Result<()> {
        let service = Self::spawn_wal_ingest(config).await?;
        self.keep_ready("wal-ingest", service).await
    }
}

#[cfg(feature = "notifier")]
impl Sandbox {
    /// The notifier on this sandbox's database and changes stream, with its own consumer, reading
    /// the stream from its start. Mail and webhook settings are the test's.
    pub fn notifier_config(&self) -> notifier::Config {
        let mut c = notifier::Config::new(&self.db.url, &self.bus.nats_url);
        c.bus = self.bus.clone();
        c.common.admin_addr = ([127, 0, 0, 1], 0).into();
        c.common.shutdown_grace = Duration::from_secs(5);
        c.http_addr = ([127, 0, 0, 1], 0).into();
        c.consumer = format!("notifier_{}", self.suffix);
        c.deliver_from = "all".into();
        c.jwt.jwt_secret = JWT_SECRET.into();
        c.unsubscribe_secret = UNSUBSCRIBE_SECRET.into();
        c.migrate = false;
        c
    }

    /// Starts the notifier and waits for its consumer; returns its HTTP address.
    pub async fn start_notifier(&mut self, config: notifier::Config) -> anyhow::Result<std::net::SocketAddr> {
        let bound = notifier::bind(config).await?;
        let addr = bound.http_addr();
        self.keep_ready("notifier", bound.spawn()).await?;
        self.addrs.notifier = Some(addr);
        Ok(addr)
    }
}

#[cfg(feature = "proposals-api")]
impl Sandbox {
    /// The API on this sandbox's database (already migrated), its PDFs read from the sandbox's
    /// bucket on its NATS server.
    pub fn api_config(&self) -> proposals_api::Config {
        let mut c = proposals_api::Config::new(&self.db.url, JWT_SECRET);
        c.listen_addr = ([127, 0, 0, 1], 0).into();
        c.common.admin_addr = ([127, 0, 0, 1], 0).into();
        c.bus = self.bus.clone();
        c.pdf_downloads = true;
        c.migrate = false;
        c
    }

    /// Starts the API; returns its gRPC (and gRPC-Web) address.
    pub async fn start_api(&mut self, config: proposals_api::Config) -> anyhow::Result<std::net::SocketAddr> {
        let bound = proposals_api::bind(config).await?;
        let addr = bound.addr();
        self.keep_ready("proposals-api", bound.spawn()).await?;
        self.addrs.api = Some(addr);
        Ok(addr)
    }
}

#[cfg(feature = "pdf-render")]
impl Sandbox {
    /// pdf-render on this sandbox's jobs stream, with its own consumer, bucket and dead letters.
    pub fn pdf_render_config(&self) -> pdf_render::Config {
        let mut c = pdf_render::Config::new(self.db.url.clone(), self.bus.nats_url.clone());
        c.bus = self.bus.clone();
        c.common.admin_addr = ([127, 0, 0, 1], 0).into();
        c.consumer = format!("pdf_{}", self.suffix);
        c.dead_letter_stream = format!("S{}_DEAD", self.suffix);
        c
    }

    pub async fn start_pdf_render(&mut self, config: pdf_render::Config) -> anyhow::Result<()> {
        let bound = pdf_render::bind(config).await?;
        self.keep_ready("pdf-render", bound.spawn()).await
    }
}

#[cfg(feature = "shape-edge")]
impl Sandbox {
    /// The edge on this sandbox's database and change stream, its Durable Streams under a
    /// prefix of its own, tokens signed with the sandbox's secret.
    pub fn edge_config(&self) -> shape_edge::Config {
        let mut c = <shape_edge::Config as clap::Parser>::parse_from(["shape-edge"]);
        c.common.admin_addr = ([127, 0, 0, 1], 0).into();
        c.listen_addr = ([127, 0, 0, 1], 0).into();
        c.bus = self.bus.clone();
        c.shapes.db = folio_db::DbArgs::new(&self.db.url);
        c.streams.prefix = format!("ds_{}", self.suffix);
        c.streams.jwt.jwt_secret = JWT_SECRET.into();
        // Production requires it; tests follow links by their path.
        c.streams.public_url = Some("http://edge.sandbox.test".into());
        c
    }

    /// Starts the edge; returns its HTTP address (shapes and Durable Streams).
    pub async fn start_edge(&mut self, config: shape_edge::Config) -> anyhow::Result<std::net::SocketAddr> {
        let bound = shape_edge::bind(config).await?;
        let addr = bound.http_addr();
        self.keep_ready("shape-edge", bound.spawn()).await?;
        self.addrs.edge = Some(addr);
        Ok(addr)
    }
}
