//! A private nats-server with JetStream (>= 2.11; `FOLIO_NATS_SERVER_BIN`), on its own port and
//! store, so a test can end it with SIGTERM or SIGKILL and start it again where it was.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};

pub struct PrivateNats {
    pub port: u16,
    dir: PathBuf,
    child: tokio::process::Child,
}

impl PrivateNats {
    pub async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("folio-faults-nats-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&dir)?;
        let child = spawn(port, &dir).await?;
        Ok(Self { port, dir, child })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, and wait until it is gone (until [`PrivateNats::start_again`]).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        crate::signal(self.child.id().context("nats-server runs")?, "TERM")?;
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await.is_err() {
            self.child.kill().await?;
        }
        Ok(())
    }

    /// Started again on the same port and store after [`PrivateNats::stop`].
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.child = spawn(self.port, &self.dir).await?;
        Ok(())
    }

    /// Ends the server with `signal` (TERM or KILL), waits until it is gone, and starts it again
    /// on the same port and store; returns once it listens.
    pub async fn restart(&mut self, signal: &str) -> anyhow::Result<()> {
        crate::signal(self.child.id().context("nats-server runs")?, signal)?;
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await.is_err() {
            self.child.kill().await?;
        }
        self.child = spawn(self.port, &self.dir).await?;
        Ok(())
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn spawn(port: u16, dir: &std::path::Path) -> anyhow::Result<tokio::process::Child> {
    let binary = std::env::var("FOLIO_NATS_SERVER_BIN").unwrap_or_else(|_| "/opt/folio-nats/bin/nats-server".into());
    let child = tokio::process::Command::new(&binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {binary} (set FOLIO_NATS_SERVER_BIN to a nats-server >= 2.11)"))?;
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("nats-server did not listen on {addr}")
}
