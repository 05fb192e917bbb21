//! Flags every Folio service takes, flattened into each service's own `Config`.

use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Log output: human-readable or one JSON object per line.
    #[arg(long, env = "FOLIO_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,

    /// tracing filter directives, e.g. `info,folio=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// OTLP/gRPC endpoint for traces; traces are not exported when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Address of the admin server: `/healthz`, `/readyz` and Prometheus `/metrics`.
    #[arg(long, env = "FOLIO_ADMIN_ADDR", default_value = "127.0.0.1:0")]
    pub admin_addr: SocketAddr,

    /// How long in-flight work may take to drain after SIGTERM.
    #[arg(long, env = "FOLIO_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime_duration)]
    pub shutdown_grace: std::time::Duration,
}

fn humantime_duration(s: &str) -> Result<std::time::Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}
