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
