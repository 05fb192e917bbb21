//! Shared runtime for Folio binaries: flags every service takes, telemetry, the admin HTTP
//! server (health and Prometheus metrics) and SIGTERM-driven shutdown.

pub mod admin;
pub mod args;
pub mod shutdown;
pub mod telemetry;
pub mod trace_context;

pub use admin::{AdminServer, Readiness};
pub use args::{CommonArgs, LogFormat};
pub use shutdown::shutdown_on_signal;
pub use telemetry::TelemetryHandle;

/// Makes ring rustls' process-wide crypto provider. Call first thing in `main`: a workspace
/// build can enable both of rustls' providers (pgwire-replication turns on its defaults), and
/// then any TLS client that relies on the default panics instead of choosing.
pub fn install_crypto_provider() {
    // Err means one is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
