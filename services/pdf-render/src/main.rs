use clap::Parser;
use pdf_render::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    folio_runtime::install_crypto_provider();
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { std::process::ExitCode::from(64) } else { std::process::ExitCode::SUCCESS };
        }
    };
    let telemetry = match folio_runtime::telemetry::init("pdf-render", &config.common) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("pdf-render: bad telemetry configuration: {e:#}");
            return std::process::ExitCode::from(64);
        }
    };
    let result = pdf_render::run(config, folio_runtime::shutdown_on_signal()).await;
    telemetry.shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("pdf-render failed: {:#}", anyhow::Error::from(e));
            std::process::ExitCode::FAILURE
        }
    }
}
