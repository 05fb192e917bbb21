//! wal-ingest: parse the configuration, then run until SIGTERM (see `folio_runtime::service_main`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    folio_runtime::service_main::<wal_ingest::Config, _, _>("wal-ingest", wal_ingest::run).await
}
