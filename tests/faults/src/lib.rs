//! Faults as tests (issue 18): real processes and real servers, broken on purpose while a writer
//! commits, then checked — every committed change once and in commit order in JetStream — with
//! the time each fault took to recover from. The test command runs the short suite
//! (`tests/faults.rs`); `fault-soak` repeats it for as long as asked.

pub mod api;
pub mod cluster;
pub mod ledger;
pub mod nats;
pub mod pdf_render;
pub mod postgres;
pub mod proxy;
pub mod suite;
pub mod wal_ingest;

use std::{path::PathBuf, sync::atomic::AtomicU64};

use anyhow::{Context as _, bail};

/// Unique per call in this process and across processes (names of streams, slots, directories).
pub fn unique_suffix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{}_{}_{n}", std::process::id(), nanos % 1_000_000_000)
}

/// `kill -<signal> <pid>`.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status()?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed");
    }
    Ok(())
}

/// Where the workspace's service binaries are: `FOLIO_BIN_DIR`, or the profile directory this
/// test or binary was built into (`target/<profile>`, the parent of `deps/`).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("FOLIO_BIN_DIR") {
        return Ok(dir.into());
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the executable's directory")?;
    let dir = if dir.ends_with("deps") { dir.parent().context("target/<profile>")? } else { dir };
    Ok(dir.to_path_buf())
}

/// A free loopback port, for a service whose admin address must be known in advance.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
