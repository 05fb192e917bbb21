//! pdf-render: parse the configuration, then run until SIGTERM (see `folio_runtime::service_main`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    folio_runtime::service_main::<pdf_render::Config, _, _>("pdf-render", pdf_render::run).await
}
