//! shape-edge binary: parse config, start telemetry and the admin server, serve until SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use shape_edge::Config;

#[tokio::main]
async fn main() -> ExitCode {
    folio_runtime::install_crypto_provider();
    let config = Config::parse();
    if let Err(e) = config.validate() {
        eprintln!("invalid configuration: {e}");
        return ExitCode::from(64);
    }
    let telemetry = match folio_runtime::telemetry::init("shape-edge", &config.common) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("failed to initialise telemetry: {e:#}");
            return ExitCode::from(70);
        }
    };
    let result = shape_edge::serve(config, folio_runtime::shutdown_on_signal()).await;
    if let Err(e) = &result {
        tracing::error!("shape-edge failed: {e:#}");
    }
    telemetry.shutdown();
    if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
