//! proposals-api replicas as processes on fixed ports, so a SIGKILL mid-call is real and a
//! client's channel finds the same replica again once it is back.

use std::{net::SocketAddr, time::Duration};

use anyhow::bail;

use crate::wal_ingest::{IngestSetup, http_get};

/// The bearer tokens' secret every replica of a run shares.
pub const JWT_SECRET: &str = "folio-faults-jwt-secret-at-least-32-bytes";

pub struct ApiReplica {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    child: tokio::process::Child,
    setup: IngestSetup,
}

impl ApiReplica {
    /// Starts a replica and returns once it is ready.
    pub async fn start(setup: &IngestSetup) -> anyhow::Result<Self> {
        let addr: SocketAddr = ([127, 0, 0, 1], crate::free_port()?).into();
        let admin: SocketAddr = ([127, 0, 0, 1], crate::free_port()?).into();
        let child = spawn(setup, addr, admin)?;
        let replica = Self { addr, admin, child, setup: setup.clone() };
        replica.ready(Duration::from_secs(60)).await?;
        Ok(replica)
    }

    /// SIGKILL, and wait until it is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// The same replica (same ports) started again; returns once it is ready.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.child = spawn(&self.setup, self.addr, self.admin)?;
        self.ready(Duration::from_secs(60)).await
    }

    async fn ready(&self, patience: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + patience;
        while tokio::time::Instant::now() < deadline {
            if http_get(self.admin, "/readyz").await.is_some_and(|a| a.status == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("proposals-api on {} was not ready within {patience:?}", self.addr)
    }
}

fn spawn(setup: &IngestSetup, addr: SocketAddr, admin: SocketAddr) -> anyhow::Result<tokio::process::Child> {
    let child = setup
        .service("proposals-api", admin)?
        .env("FOLIO_API_ADDR", addr.to_string())
        .env("FOLIO_JWT_SECRET", JWT_SECRET)
        // The test's writer goes faster than a user may; the limits are not what is tested.
        .env("FOLIO_API_RATE_LIMITS", "off")
        // The run's database is migrated once, before any replica starts.
        .env("FOLIO_MIGRATE", "false")
        .spawn()?;
    Ok(child)
}
