//! wal-ingest: every committed Postgres change onto NATS JetStream, effectively once.
//!
//! `run` owns the process: the admin server, the slot's advisory lock (standby until it is
//! ours), and a loop of replication sessions (`session.rs`) that restarts after any failure.
//! See README.md for subjects, message ids, durability and restart behaviour.

pub mod config;
pub mod confirm;
pub mod decode;
pub mod events;
pub mod publish;
pub mod replication;
pub mod schema;
pub mod session;
pub mod slot;

use std::time::Duration;

use folio_runtime::{AdminServer, Readiness, Spawned};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::{publish::StreamSettings, schema::Catalog, session::Ingest, slot::SlotOwner};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to bind the admin server on {addr}")]
    Admin {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to set up the NATS connection to {url}")]
    Nats {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
}

/// Binds the admin listener and runs until `shutdown` is cancelled (the binary's whole life).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    bind(config).await?.run(shutdown).await
}

/// wal-ingest with its admin listener bound (port 0 works), not yet streaming.
pub struct Bound {
    config: Config,
    admin: TcpListener,
    readiness: Readiness,
}

/// Binds the admin listener. Postgres and NATS are reached in [`Bound::run`], which retries them
/// until they answer, so a cluster can start in any order.
pub async fn bind(config: Config) -> Result<Bound, Error> {
    let addr = config.common.admin_addr;
    let admin = TcpListener::bind(addr).await.map_err(|source| Error::Admin { addr, source })?;
    Ok(Bound { config, admin, readiness: Readiness::default() })
}

impl Bound {
    pub fn admin_addr(&self) -> std::net::SocketAddr {
        self.admin.local_addr().expect("a bound listener has an address")
    }

    /// Ready while it streams its slot: changes committed from then on reach the stream.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Runs until `shutdown` is cancelled; failures of Postgres or NATS are retried, not returned.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Bound { config, admin, readiness } = self;
        let addr = config.common.admin_addr;
        let servers = CancellationToken::new();
        let admin = AdminServer::start_with(admin, readiness.clone(), config.common.http, servers.clone())
            .await
            .map_err(|source| Error::Admin { addr, source })?;
        tracing::info!(admin = %admin.local_addr, "wal-ingest admin server listening");
        let result = ingest(config, shutdown, readiness).await;
        servers.cancel();
        let _ = admin.task.await;
        result
    }

    /// Runs it as a task of this process (tests, benchmarks, embedders).
    pub fn spawn(self) -> Spawned<Error> {
        Spawned::spawn(self.readiness(), |shutdown| self.run(shutdown))
    }
}

/// Holds the slot (or stands by for it) and streams it, restarting sessions after failures.
async fn ingest(config: Config, shutdown: CancellationToken, readiness: Readiness) -> Result<(), Error> {
    let (disconnected, nats_disconnects) = tokio::sync::watch::channel(0u64);
    let client = async_nats::ConnectOptions::new()
        .name(format!("wal-ingest:{}", config.slot))
        .connection_timeout(Duration::from_secs(5))
        // Start even when NATS is down; sessions retry until it answers.
        .retry_on_initial_connect()
        // The acks of publishes in flight are lost with the connection, and would only fail at
        // the ack timeout: the session ends as soon as this counter moves.
        .event_callback(move |event| {
            let disconnected = disconnected.clone();
            async move {
                if matches!(event, async_nats::Event::Disconnected) {
                    disconnected.send_modify(|n| *n += 1);
                }
            }
        })
        // The default doubles the pause up to 4 s, which can leave ingest idle for seconds
        // after a restarted server is back. Retrying a down server every 250 ms is cheap.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64).saturating_sub(1) * 50).min(Duration::from_millis(250))
        })
        .connect(&config.bus.nats_url)
        .await
        .map_err(|source| Error::Nats { url: config.bus.nats_url.clone(), source })?;
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(config.ack_timeout)
        // Our own window gates reads below this, so a publish never waits for a permit.
        .max_ack_inflight(config.publish_window * 2 + 64)
        .backpressure_on_inflight(true)
        .build(client);
    let mut ingest = Ingest {
        js,
        subjects: config.bus.subjects(),
        streams: StreamSettings {
            changes_stream: config.bus.changes_stream.clone(),
            jobs_stream: config.bus.jobs_stream.clone(),
            replicas: config.bus.stream_replicas,
            duplicate_window: config.duplicate_window,
            changes_max_age: config.changes_max_age,
            changes_max_bytes: config.changes_max_bytes,
            jobs_max_messages: config.jobs_max_messages,
        },
        database_url: config.db.database_url.clone(),
        slot: config.slot.clone(),
        publication: config.publication.clone(),
        publish_window: config.publish_window.max(1),
        status_interval: config.status_interval,
        lag_interval: config.lag_interval,
        shutdown_grace: config.common.shutdown_grace,
        catalog: Catalog::default(),
        readiness,
        propagate_trace: config.common.otlp_endpoint.is_some(),
        nats_disconnects,
    };

    // The counters alerts watch exist from the start at 0: `increase()` over a series that
    // first appears at 1 misses that first event.
    for counter in [
        "folio_wal_ingest_slot_invalidations_total",
        "folio_wal_ingest_session_restarts_total",
        "folio_wal_ingest_fenced_total",
        "folio_wal_ingest_duplicates_total",
    ] {
        metrics::counter!(counter).increment(0);
    }
    // 1 while this replica holds the slot's lock (streams it), 0 while it stands by: their sum
    // over replicas is the number of active replicas, which must be 1.
    let slot_held = metrics::gauge!("folio_wal_ingest_slot_held");
    slot_held.set(0.0);
    let watcher = tokio::spawn(slot::watch(
        config.db.database_url.clone(),
        config.slot.clone(),
        config.lag_interval,
        shutdown.child_token(),
    ));
    'owner: while !shutdown.is_cancelled() {
        slot_held.set(0.0);
        let mut owner =
            match SlotOwner::acquire(&config.db.database_url, &config.slot, config.standby_poll, &shutdown).await {
                Ok(Some(owner)) => owner,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("failed to reach postgres for the slot lock, retrying: {}", chain(&e));
                    backoff(config.retry_backoff, &shutdown).await;
                    continue;
                }
            };
        tracing::info!(slot = %config.slot, "holding the slot");
        slot_held.set(1.0);
        while !shutdown.is_cancelled() {
            match session::run(&mut ingest, &mut owner, &shutdown).await {
                Ok(session::SessionEnd::Shutdown) => break 'owner,
                Err(e) => {
                    metrics::counter!("folio_wal_ingest_session_restarts_total").increment(1);
                    tracing::error!(slot = %config.slot, "replication session failed, restarting: {}", chain(&e));
                    // The next session's first request waits for the reconnect by itself.
                    if !matches!(e, session::SessionError::NatsDisconnected) {
                        backoff(config.retry_backoff, &shutdown).await;
                    }
                    if e.owner_lost() {
                        continue 'owner;
                    }
                }
            }
        }
    }
    slot_held.set(0.0);
    watcher.abort();
    tracing::info!("wal-ingest stopped");
    Ok(())
}

async fn backoff(pause: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(pause) => {}
    }
}

/// `error: cause: cause`, so one log line carries the whole chain.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
