//! Shared runtime for Folio binaries: flags every service takes, telemetry, the admin HTTP
//! server (health and Prometheus metrics) and SIGTERM-driven shutdown.

pub mod admin;
pub mod args;
pub mod http;
pub mod red;
pub mod shutdown;
pub mod spawned;
pub mod telemetry;
pub mod trace_context;

pub use admin::{AdminServer, Readiness};
pub use args::{CommonArgs, Environment, LogFormat, MIN_SECRET_BYTES, SecretError};
pub use shutdown::shutdown_on_signal;
pub use spawned::Spawned;
pub use telemetry::TelemetryHandle;

/// Makes ring rustls' process-wide crypto provider. Call first thing in `main`: a workspace
/// build can enable both of rustls' providers (pgwire-replication turns on its defaults), and
/// then any TLS client that relies on the default panics instead of choosing.
pub fn install_crypto_provider() {
    // Err means one is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What `service_main` needs of a service's configuration.
pub trait ServiceConfig: clap::Parser {
    fn common(&self) -> &CommonArgs;

    /// Checks clap cannot express; a failure exits with 64 before any port is bound.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The whole of a service's `main`: crypto provider, config (bad config exits 64 with one
/// line), telemetry, `run` until SIGTERM, telemetry flush, and the error chain logged on failure.
pub async fn service_main<C, E, Fut>(
    name: &'static str,
    run: impl FnOnce(C, tokio_util::sync::CancellationToken) -> Fut,
) -> std::process::ExitCode
where
    C: ServiceConfig,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::error::Error,
{
    use std::process::ExitCode;
    install_crypto_provider();
    let config = match C::try_parse() {
        Ok(config) => config,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(64) } else { ExitCode::SUCCESS };
        }
    };
    if let Err(e) = config.check() {
        eprintln!("{name}: invalid configuration: {e}");
        return ExitCode::from(64);
    }
    let telemetry = match telemetry::init(name, config.common()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name}: bad telemetry configuration: {e:#}");
            return ExitCode::from(64);
        }
    };
    let result = run(config, shutdown_on_signal()).await;
    if let Err(e) = &result {
        tracing::error!("{name} failed: {}", error_chain(e));
    }
    telemetry.shutdown();
    if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// `error: cause: root cause` in one line, as logs and operators need it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
