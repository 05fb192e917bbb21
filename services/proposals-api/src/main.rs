//! proposals-api: parse the configuration, then run until SIGTERM (see `folio_runtime::service_main`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    folio_runtime::service_main::<proposals_api::Config, _, _>("proposals-api", proposals_api::run).await
}
