use clap::Parser;
use notifier::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    folio_runtime::install_crypto_provider();
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { 64 } else { 0 });
        }
    };
    if let Err(e) = config.validate() {
        eprintln!("notifier: {}", notifier::chain(&e));
        return std::process::ExitCode::from(64);
    }
    let telemetry = match folio_runtime::telemetry::init("notifier", &config.common) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("notifier: bad telemetry configuration: {e:#}");
            return std::process::ExitCode::from(64);
        }
    };
    let result = notifier::run(config, folio_runtime::shutdown_on_signal()).await;
    telemetry.shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("notifier failed: {}", notifier::chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
