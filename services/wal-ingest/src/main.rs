use clap::Parser;
use wal_ingest::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    folio_runtime::install_crypto_provider();
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return std::process::ExitCode::from(64);
        }
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::SUCCESS;
        }
    };
    let telemetry = match folio_runtime::telemetry::init("wal-ingest", &config.common) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("wal-ingest: bad telemetry configuration: {e:#}");
            return std::process::ExitCode::from(64);
        }
    };
    let result = wal_ingest::run(config, folio_runtime::shutdown_on_signal()).await;
    telemetry.shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("wal-ingest failed: {:#}", anyhow::Error::from(e));
            std::process::ExitCode::FAILURE
        }
    }
}
