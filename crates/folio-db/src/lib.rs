//! The schema's single owner: migrations, the pool, and the transactional job outbox.

use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction, postgres::PgPoolOptions};

/// Every migration of Folio's schema, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Where every service finds Folio's database, flattened into each service's `Config` so there
/// is one flag and one default: `all-in-one` with default settings replicates the database its
/// API writes to.
#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// PostgreSQL holding Folio's schema (`wal_level=logical`). wal-ingest's role needs
    /// REPLICATION (or superuser) to stream the slot.
    #[arg(long = "database-url", env = "FOLIO_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
}

/// The local cluster's database (`scripts/dev-up.sh`).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/folio";

impl DbArgs {
    pub fn new(database_url: impl Into<String>) -> Self {
        DbArgs { database_url: database_url.into() }
    }
}

/// The publication wal-ingest reads.
pub const PUBLICATION: &str = "folio_changes";

/// How Postgres renders values as text in Folio's change events: wal-ingest pins these on its
/// replication session and the edge on its snapshot transactions, so a value (and a row key
/// built from it) reads the same on both paths. Values hold no spaces or quotes.
pub const TEXT_OUTPUT_SETTINGS: [(&str, &str); 5] = [
    ("datestyle", "ISO,MDY"),
    ("timezone", "UTC"),
    ("intervalstyle", "iso_8601"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
];

/// [`TEXT_OUTPUT_SETTINGS`] as connection options (`-c name=value …`).
pub fn text_output_options() -> String {
    TEXT_OUTPUT_SETTINGS.iter().map(|(k, v)| format!("-c {k}={v}")).collect::<Vec<_>>().join(" ")
}

/// [`TEXT_OUTPUT_SETTINGS`] as statements for the current transaction (`SET LOCAL …; …`).
pub fn text_output_set_local() -> String {
    TEXT_OUTPUT_SETTINGS.iter().map(|(k, v)| format!("SET LOCAL {k} = '{v}'")).collect::<Vec<_>>().join("; ")
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("failed to connect to postgres")]
    Connect(#[source] sqlx::Error),
    #[error("failed to migrate the schema")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Opens a pool; fails fast when the database is unreachable.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(DbError::Connect)
}

pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await.map_err(DbError::Migrate)
}

/// Writes a job into the WAL inside `tx`: it reaches `folio.jobs.<kind>` through wal-ingest if
/// and only if the transaction commits (DESIGN.md: no dual writes).
pub async fn emit_job(tx: &mut Transaction<'_, Postgres>, kind: &str, payload: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_logical_emit_message(true, $1, $2)")
        .bind(folio_bus::subjects::job_message_prefix(kind))
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records the W3C trace context of the call writing `tx` as the transaction's first record in
/// the WAL, so that wal-ingest publishes every event of the transaction in that trace
/// (`folio_bus::trace_context`). Transactional: a rolled-back transaction leaves no trace.
/// Call it before the transaction's first change: wal-ingest publishes each change as it reads
/// it, and a change read before the message goes out without the trace.
pub async fn emit_trace_context(tx: &mut Transaction<'_, Postgres>, traceparent: &str) -> Result<(), sqlx::Error> {
    // Not `emit_job`'s text: sqlx caches a statement by its text with the parameter types of
    // its first use, and a job's bytes sent as `text` are refused (they hold NULs).
    sqlx::query("SELECT pg_logical_emit_message(true, $1, $2::text)")
        .bind(folio_bus::trace_context::WAL_MESSAGE_PREFIX)
        .bind(traceparent)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Replaces the database name of a postgres URL.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn with_database_swaps_only_the_name() {
        assert_eq!(with_database("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(with_database("postgres://u@h/postgres?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}

#[cfg(test)]
mod text_output_tests {
    #[test]
    fn the_same_settings_as_options_and_as_statements() {
        assert_eq!(
            super::text_output_options(),
            "-c datestyle=ISO,MDY -c timezone=UTC -c intervalstyle=iso_8601 -c extra_float_digits=3 -c bytea_output=hex"
        );
        assert_eq!(
            super::text_output_set_local(),
            "SET LOCAL datestyle = 'ISO,MDY'; SET LOCAL timezone = 'UTC'; SET LOCAL intervalstyle = 'iso_8601'; \
             SET LOCAL extra_float_digits = '3'; SET LOCAL bytea_output = 'hex'"
        );
    }
}
