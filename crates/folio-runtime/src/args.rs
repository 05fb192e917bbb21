//! Flags every Folio service takes, flattened into each service's own `Config`.

use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Whether this process may run with what a local cluster needs: built-in (public) secrets and
/// URLs derived from requests. Everything else is production, which refuses both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Environment {
    #[default]
    Production,
    Development,
}

/// A secret that would let anyone forge what it protects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "{var} is the built-in development secret, which is public: set a secret of your own (at least {MIN_SECRET_BYTES} random bytes), or FOLIO_ENV=development on a local cluster"
    )]
    BuiltIn { var: &'static str },
    #[error("{var} is {len} bytes long; it must be at least {MIN_SECRET_BYTES} (random) bytes")]
    TooShort { var: &'static str, len: usize },
}

/// Shortest secret any service starts with, in every environment.
pub const MIN_SECRET_BYTES: usize = 32;

impl Environment {
    pub fn is_development(self) -> bool {
        self == Environment::Development
    }

    /// Checks a secret the service was configured with; `built_in` is its public default.
    /// Development accepts the built-in one, loudly, so that a local cluster starts with no set-up.
    pub fn check_secret(self, var: &'static str, value: &str, built_in: &str) -> Result<(), SecretError> {
        if value.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort { var, len: value.len() });
        }
        if value == built_in {
            if !self.is_development() {
                return Err(SecretError::BuiltIn { var });
            }
            tracing::warn!(
                secret = var,
                "FOLIO_ENV=development: using the built-in secret, which is public; anyone can forge what it signs. Never expose this process"
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// `production` refuses built-in secrets and needs public URLs configured; `development`
    /// (set by `scripts/dev-up.sh`) accepts them with a warning, for a local cluster only.
    #[arg(long = "env", env = "FOLIO_ENV", value_enum, default_value = "production")]
    pub environment: Environment,

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

    /// Timeouts and the connection limit of every HTTP/gRPC listener of the service.
    #[command(flatten)]
    pub http: crate::http::ConnectionLimits,

    /// How long in-flight work may take to drain after SIGTERM.
    #[arg(long, env = "FOLIO_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime_duration)]
    pub shutdown_grace: std::time::Duration,
}

fn humantime_duration(s: &str) -> Result<std::time::Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}
