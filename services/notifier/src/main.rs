//! notifier: parse the configuration, then run until SIGTERM (see `folio_runtime::service_main`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    folio_runtime::service_main::<notifier::Config, _, _>("notifier", notifier::run).await
}
