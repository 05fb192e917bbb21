//! What every fault test starts from: a private PostgreSQL with Folio's schema, a private
//! nats-server, and the names one run's services share.

use crate::{nats::PrivateNats, postgres::PrivatePostgres, wal_ingest::IngestSetup};

pub struct Base {
    pub pg: PrivatePostgres,
    pub nats: PrivateNats,
    /// The `folio` database, migrated, reached directly (not through a fault proxy).
    pub pool: sqlx::PgPool,
    pub url: String,
    /// Unique per run: stream, slot, bucket and consumer names derive from it.
    pub tag: String,
}

impl Base {
    /// `pg_settings` are extra PostgreSQL settings (`name=value`).
    pub async fn start(pg_settings: &[&str]) -> anyhow::Result<Self> {
        let pg = PrivatePostgres::start(pg_settings).await?;
        let admin = sqlx::PgPool::connect(&pg.url("postgres")).await?;
        sqlx::query("CREATE DATABASE folio").execute(&admin).await?;
        admin.close().await;
        let url = pg.url("folio");
        let pool = folio_db::connect(&url, 4).await?;
        folio_db::migrate(&pool).await?;
        let nats = PrivateNats::start().await?;
        Ok(Self { pg, nats, pool, url, tag: crate::unique_suffix().replace('_', "") })
    }

    /// wal-ingest's names for this run, reaching PostgreSQL and NATS directly.
    pub fn ingest_setup(&self) -> IngestSetup {
        let tag = &self.tag;
        IngestSetup {
            database_url: self.url.clone(),
            nats_url: self.nats.url(),
            slot: format!("faults_{tag}"),
            subject_root: format!("f{tag}"),
            changes_stream: format!("F{tag}_CHANGES"),
            jobs_stream: format!("F{tag}_JOBS"),
        }
    }
}
