//! shape-edge: parse the configuration, then run until SIGTERM (see `folio_runtime::service_main`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    folio_runtime::service_main::<shape_edge::Config, _, _>("shape-edge", shape_edge::run).await
}
