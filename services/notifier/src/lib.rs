//! notifier: tells people (email) and systems (signed webhooks) when proposals change.
//!
//! The path of one change: JetStream `folio.changes.proposals.<agency>` → [`worker`] (at the
//! end of each transaction, its changes of one proposal folded into one by [`txn`]; old/new
//! row → [`transitions`] → one `notification_deliveries` row per (event, channel, recipient),
//! written in one transaction, then the JetStream ack; unreadable events go to
//! [`dead_letter`]) → [`scheduler`] (claims due rows with
//! `FOR UPDATE SKIP LOCKED` and a lease) → [`email`] or [`webhook::deliver`] → the attempt
//! log and, on failure, the next attempt from [`retry`]. Postgres holds every delivery's
//! state, so restarts and replicas neither lose nor repeat one.

pub mod client_links;
pub mod config;
pub mod dead_letter;
pub mod email;
pub mod error;
pub mod fanout;
pub mod http;
pub mod invitations;
pub mod preferences;
pub mod retry;
pub mod scheduler;
pub mod signed_copies;
pub mod store;
pub mod transitions;
pub mod txn;
pub mod unsubscribe;
pub mod webhook;
pub mod worker;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use folio_runtime::{AdminServer, Readiness, Spawned};
use sqlx::PgPool;
use tokio::{net::TcpListener, sync::Notify};
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::Error;

use crate::{email::Mailer, retry::RetrySchedule, unsubscribe::UnsubscribeTokens, webhook::deliver::WebhookSender};

/// What the worker, the scheduler and the HTTP routes share.
pub struct Ctx {
    pub pool: PgPool,
    pub config: Config,
    pub schedule: RetrySchedule,
    pub mailer: Mailer,
    pub webhooks: WebhookSender,
    pub tokens: UnsubscribeTokens,
    /// Poked after new deliveries are written, so they go out without waiting for a poll.
    pub wake: Notify,
    /// This process's lease owner id: a claim it did not make is never finished by it.
    pub replica: uuid::Uuid,
    /// Verifies the API's bearer tokens for the HTTP API.
    pub auth: folio_auth::Authenticator,
    /// Where events that cannot be read are parked instead of dropped.
    pub dead_letters: dead_letter::DeadLetters,
    /// Sends invitation emails from `folio.jobs.invitation`.
    pub invitations: invitations::InvitationMailer,
    /// Reads the signed copies emails carry from the PDF bucket.
    pub js: async_nats::jetstream::Context,
}

/// The notifier with its listeners bound, not yet running.
pub struct Bound {
    config: Config,
    http: TcpListener,
    admin: TcpListener,
    readiness: Readiness,
}

/// Binds the configured addresses and runs until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    bind(config).await?.run(shutdown).await
}

/// Validates the configuration and binds the HTTP and admin listeners (port 0 in tests).
pub async fn bind(config: Config) -> Result<Bound, Error> {
    config.validate()?;
    let bind =
        |addr: SocketAddr| async move { TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source }) };
    let http = bind(config.http_addr).await?;
    let admin = bind(config.common.admin_addr).await?;
    Ok(Bound { config, http, admin, readiness: Readiness::default() })
}

impl Bound {
    /// Ready once its JetStream consumer is in place.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Runs it as a task of this process (tests, benchmarks, embedders).
    pub fn spawn(self) -> Spawned<Error> {
        Spawned::spawn(self.readiness(), |shutdown| self.run(shutdown))
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("a bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown`, then stops intake (no more JetStream pulls or claims), lets
    /// in-flight deliveries finish within the grace period, and stops the servers.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Bound { config, http, admin, readiness } = self;
        let pool = folio_db::connect(&config.db.database_url, config.db_max_connections).await?;
        if config.migrate {
            folio_db::migrate(&pool).await?;
        }
        let nats = async_nats::ConnectOptions::new()
            .name("notifier")
            .connection_timeout(Duration::from_secs(5))
            // Start while NATS is down; the worker waits for it.
            .retry_on_initial_connect()
            .connect(&config.bus.nats_url)
            .await
            .map_err(|source| Error::Nats { url: config.bus.nats_url.clone(), source })?;
        let ctx = Arc::new(Ctx {
            mailer: Mailer::new(&config)?,
            invitations: invitations::InvitationMailer::new(&config)?,
            webhooks: WebhookSender::new(&config)?,
            tokens: UnsubscribeTokens::new(config.unsubscribe_secret.as_bytes()),
            schedule: config.schedule(),
            pool,
            wake: Notify::new(),
            replica: uuid::Uuid::new_v4(),
            auth: config.jwt.authenticator(),
            dead_letters: dead_letter::DeadLetters::new(async_nats::jetstream::new(nats.clone()), &config.bus),
            js: async_nats::jetstream::new(nats.clone()),
            config,
        });

        let servers = CancellationToken::new();
        let admin = AdminServer::start_with(admin, readiness, ctx.config.common.http, servers.clone())
            .await
            .map_err(Error::Serve)?;
        let http_addr = http.local_addr().map_err(Error::Serve)?;
        let router = folio_runtime::red::NOTIFIER.instrument(http::router(ctx.clone()));
        let http_servers = servers.clone();
        let limits = ctx.config.common.http;
        let http_task = tokio::spawn(folio_runtime::http::serve("notifier", http, router, limits, http_servers));
        tracing::info!(http = %http_addr, admin = %admin.local_addr, replica = %ctx.replica, "notifier listening");

        let intake = shutdown.child_token();
        let invitations = tokio::spawn(invitations::run(ctx.clone(), nats.clone(), intake.clone()));
        let worker = tokio::spawn(worker::run(ctx.clone(), nats, intake.clone(), admin.readiness.clone()));
        let scheduler = tokio::spawn(scheduler::run(ctx.clone(), intake.clone()));
        let backlog = tokio::spawn(worker::report_backlog(ctx.clone(), intake.clone()));

        shutdown.cancelled().await;
        tracing::info!("notifier draining");
        let grace = ctx.config.common.shutdown_grace;
        // The worker finishes the event in hand; the scheduler waits for in-flight deliveries
        // (bounded by the grace) and hands back the claims it could not finish.
        let drained = tokio::time::timeout(grace + Duration::from_secs(1), async {
            let _ = worker.await;
            let _ = scheduler.await;
            let _ = invitations.await;
            let _ = backlog.await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(?grace, "deliveries still running after the grace period; their leases will expire");
        }
        servers.cancel();
        let _ = http_task.await;
        let _ = admin.task.await;
        ctx.pool.close().await;
        tracing::info!("notifier stopped");
        Ok(())
    }
}

/// The error with its causes in one line (the workspace's one formatter).
pub use folio_runtime::error_chain as chain;
