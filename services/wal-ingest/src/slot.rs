//! The replication slot's life on an ordinary Postgres session: exclusive ownership through an
//! advisory lock, creation, ending a stale walsender, lag, and invalidation.
//!
//! The session that holds the lock is kept for the process lifetime (a standby blocks on it),
//! so a second replica takes over exactly when the first one's session ends.

use std::time::Duration;

use folio_domain::Lsn;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("postgres query failed while {doing}")]
    Query {
        doing: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "slot {slot} exists but is not a pgoutput slot of this database (plugin {plugin:?}, database {database:?})"
    )]
    Foreign { slot: String, plugin: Option<String>, database: Option<String> },
}

fn query(doing: &'static str) -> impl FnOnce(sqlx::Error) -> SlotError {
    move |source| SlotError::Query { doing, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotState {
    pub confirmed_flush: Lsn,
    /// `wal_status = 'lost'`: the WAL the slot needs is gone.
    pub invalidated: bool,
}

/// `(plugin, database, confirmed_flush_lsn, wal_status)` of `pg_replication_slots`.
type SlotRow = (Option<String>, Option<String>, Option<String>, Option<String>);

/// The ordinary session that owns the slot while it holds the advisory lock.
pub struct SlotOwner {
    pub conn: PgConnection,
    slot: String,
}

impl SlotOwner {
    /// Waits (as a standby) until this process holds the slot's advisory lock. `None` when
    /// shutdown came first.
    pub async fn acquire(
        database_url: &str,
        slot: &str,
        poll: Duration,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, SlotError> {
        let mut conn = PgConnection::connect(database_url).await.map_err(query("connecting"))?;
        let mut announced = false;
        loop {
            let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock(hashtext('folio.wal-ingest:' || $1))")
                .bind(slot)
                .fetch_one(&mut conn)
                .await
                .map_err(query("taking the slot's advisory lock"))?;
            if locked {
                return Ok(Some(Self { conn, slot: slot.to_owned() }));
            }
            if !announced {
                tracing::info!(slot, "another ingester holds the slot; waiting as a standby");
                announced = true;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Creates the slot if missing and returns its state.
    pub async fn ensure(&mut self) -> Result<SlotState, SlotError> {
        let (version,): (i32,) = sqlx::query_as("SELECT current_setting('server_version_num')::int")
            .fetch_one(&mut self.conn)
            .await
            .map_err(query("reading the server version"))?;
        if let Some(state) = self.state().await? {
            if version >= FAILOVER_SLOTS_SINCE {
                self.warn_unless_failover().await?;
            }
            return Ok(state);
        }
        sqlx::query(create_slot_sql(version))
            .bind(&self.slot)
            .execute(&mut self.conn)
            .await
            .map_err(query("creating the replication slot"))?;
        tracing::info!(slot = %self.slot, failover = version >= FAILOVER_SLOTS_SINCE, "created replication slot");
        Ok(self.state().await?.expect("slot just created"))
    }

    /// A slot created before the server was upgraded to 17 (or by hand) is not synchronised to
    /// standbys; only the replication protocol can change that, so say how.
    async fn warn_unless_failover(&mut self) -> Result<(), SlotError> {
        let failover: Option<bool> =
            sqlx::query_scalar("SELECT failover FROM pg_replication_slots WHERE slot_name = $1")
                .bind(&self.slot)
                .fetch_optional(&mut self.conn)
                .await
                .map_err(query("reading the slot"))?;
        if failover == Some(false) {
            tracing::warn!(
                slot = %self.slot,
                "the replication slot is not a failover slot: a promoted standby will not have it, and changes \
                 committed since the last acknowledged position would be lost; stop wal-ingest and run \
                 `ALTER_REPLICATION_SLOT {} (FAILOVER true)` on a replication connection (docs/deploy.md)",
                self.slot
            );
        }
        Ok(())
    }

    pub async fn state(&mut self) -> Result<Option<SlotState>, SlotError> {
        let row: Option<SlotRow> = sqlx::query_as(
            "SELECT plugin::text, database::text, confirmed_flush_lsn::text, wal_status \
             FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&self.slot)
        .fetch_optional(&mut self.conn)
        .await
        .map_err(query("reading the slot"))?;
        let Some((plugin, database, confirmed, wal_status)) = row else { return Ok(None) };
        let (current_db,): (String,) = sqlx::query_as("SELECT current_database()::text")
            .fetch_one(&mut self.conn)
            .await
            .map_err(query("reading the slot"))?;
        if plugin.as_deref() != Some("pgoutput") || database.as_deref() != Some(current_db.as_str()) {
            return Err(SlotError::Foreign { slot: self.slot.clone(), plugin, database });
        }
        let confirmed_flush = confirmed.and_then(|c| c.parse().ok()).unwrap_or_default();
        Ok(Some(SlotState { confirmed_flush, invalidated: wal_status.as_deref() == Some("lost") }))
    }

    /// Ends a walsender still streaming the slot. We hold the lock, so it belongs to an ingester
    /// that died (or one of our own earlier sessions); waiting for `wal_sender_timeout` would
    /// only delay the takeover.
    pub async fn end_stale_walsender(&mut self) -> Result<(), SlotError> {
        let pid: Option<(i32,)> = sqlx::query_as(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
        )
        .bind(&self.slot)
        .fetch_optional(&mut self.conn)
        .await
        .map_err(query("reading the slot's walsender"))?;
        if let Some((pid,)) = pid {
            tracing::warn!(slot = %self.slot, pid, "ending a stale walsender that still holds the slot");
            sqlx::query("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .execute(&mut self.conn)
                .await
                .map_err(query("ending the stale walsender"))?;
            for _ in 0..50 {
                let active: Option<(i32,)> = sqlx::query_as(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
                )
                .bind(&self.slot)
                .fetch_optional(&mut self.conn)
                .await
                .map_err(query("reading the slot's walsender"))?;
                if active.is_none() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Drops an invalidated slot and creates it afresh; returns the new start position.
    pub async fn recreate(&mut self) -> Result<SlotState, SlotError> {
        sqlx::query("SELECT pg_drop_replication_slot($1)")
            .bind(&self.slot)
            .execute(&mut self.conn)
            .await
            .map_err(query("dropping the invalidated slot"))?;
        self.ensure().await
    }

    /// Every table of the publication, for table-wide control events.
    pub async fn published_tables(&mut self, publication: &str) -> Result<Vec<(String, String)>, SlotError> {
        sqlx::query_as(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2",
        )
        .bind(publication)
        .fetch_all(&mut self.conn)
        .await
        .map_err(query("listing the publication's tables"))
    }
}

/// PostgreSQL 17 keeps logical slots created with `failover` on its standbys
/// (`sync_replication_slots`), so the slot survives a promotion with its position: without it a
/// failover loses the slot and every change not yet acknowledged (Electric's issue 3848).
const FAILOVER_SLOTS_SINCE: i32 = 170_000;

/// The slot's creation: a failover slot where the server (`server_version_num`) has them.
fn create_slot_sql(server_version_num: i32) -> &'static str {
    if server_version_num >= FAILOVER_SLOTS_SINCE {
        // (slot_name, plugin, temporary, twophase, failover)
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)"
    } else {
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')"
    }
}

/// `(lag, retained, wal_status)` of `pg_replication_slots`: bytes to `confirmed_flush_lsn` and to
/// `restart_lsn` from the server's current position.
type SlotMeasure = (Option<i64>, Option<i64>, Option<String>);

/// What every replica, active or standing by, measures of the slot on a connection of its own
/// every `interval`: sessions come and go (NATS down, PostgreSQL restarting), and the slot's lag
/// matters most exactly when no session streams it. Exported as gauges; a slot that lost its WAL
/// is logged as an error when it is first seen.
pub async fn watch(database_url: String, slot: String, interval: Duration, shutdown: CancellationToken) {
    let lag = metrics::gauge!("folio_wal_ingest_slot_lag_bytes");
    let retained = metrics::gauge!("folio_wal_ingest_slot_retained_wal_bytes");
    let lost = metrics::gauge!("folio_wal_ingest_slot_lost");
    lost.set(0.0);
    let mut conn: Option<PgConnection> = None;
    let mut was_lost = false;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if conn.is_none() {
            conn = PgConnection::connect(&database_url).await.ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        let row: Result<Option<SlotMeasure>, _> = sqlx::query_as(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8, wal_status \
             FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&slot)
        .fetch_optional(&mut *c)
        .await;
        let (unconfirmed, kept, wal_status) = match row {
            Ok(Some(row)) => row,
            // Not created yet (a first start), or dropped to be made afresh.
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(%slot, "measuring the slot failed, reconnecting: {e}");
                conn = None;
                continue;
            }
        };
        let is_lost = wal_status.as_deref() == Some("lost");
        lost.set(if is_lost { 1.0 } else { 0.0 });
        if is_lost && !was_lost {
            tracing::error!(%slot, "replication slot invalidated: PostgreSQL removed WAL it had not confirmed (max_slot_wal_keep_size); changes committed meanwhile are lost, and consumers are told to re-snapshot once the slot is recreated");
        }
        was_lost = is_lost;
        if let (Some(unconfirmed), Some(kept)) = (unconfirmed, kept) {
            lag.set(unconfirmed as f64);
            retained.set(kept as f64);
            tracing::info!(%slot, lag_bytes = unconfirmed, retained_bytes = kept, wal_status = wal_status.as_deref().unwrap_or(""), "slot lag");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slots_are_failover_slots_from_postgres_17() {
        assert!(super::create_slot_sql(170_000).ends_with("false, false, true)"));
        assert!(super::create_slot_sql(180_002).ends_with("false, false, true)"));
        assert_eq!(super::create_slot_sql(150_019), "SELECT pg_create_logical_replication_slot($1, 'pgoutput')");
    }
}
