//! Test harness shared by every Folio crate: a real PostgreSQL and a real NATS server, given by
//! `FOLIO_DATABASE_URL` / `FOLIO_NATS_URL` (the README's test command starts both and sets
//! them), an isolated database per test and a unique prefix per test for JetStream names.

use std::time::Duration;

pub mod grpc;
pub mod http;
pub mod sandbox;
pub use grpc::Bearer;
pub use sandbox::{Role, Sandbox};

use anyhow::Context;
use sqlx::{Connection, PgConnection, PgPool};

/// URL of a server-level PostgreSQL connection (the `postgres` database is fine).
pub fn database_url() -> String {
    std::env::var("FOLIO_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// URL of a NATS server with JetStream (>= 2.11).
pub fn nats_url() -> String {
    std::env::var("FOLIO_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4333".to_owned())
}

/// A unique lowercase token for names that must not collide between tests (streams, slots).
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A freshly created and migrated database, private to one test. Dropped databases are not
/// cleaned up automatically: `scripts/test.sh` removes `folio_test_*` before a run.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> anyhow::Result<Self> {
        let server_url = database_url();
        let name = format!("folio_test_{}", unique_suffix());
        let mut admin = PgConnection::connect(&server_url).await.with_context(|| {
            format!("failed to connect to {server_url}: is PostgreSQL running (scripts/test.sh starts it)?")
        })?;
        // The name is our own hex token, never user input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .context("create test database")?;
        admin.close().await.ok();
        let url = with_database(&server_url, &name);
        let pool = folio_db::connect(&url, 20).await?;
        folio_db::migrate(&pool).await?;
        Ok(Self { name, url, pool })
    }
}

impl TestDb {
    /// A database another process of the same test created (a service the test runs in a
    /// process of its own); already migrated.
    pub async fn existing(url: &str) -> anyhow::Result<Self> {
        let name = url.split('?').next().and_then(|u| u.rsplit('/').next()).unwrap_or_default().to_owned();
        let pool = folio_db::connect(url, 5).await?;
        Ok(Self { name, url: url.to_owned(), pool })
    }
}

pub use folio_db::with_database;

pub async fn nats() -> anyhow::Result<async_nats::Client> {
    let url = nats_url();
    async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5)).connect(&url).await.with_context(
        || format!("failed to connect to NATS at {url}: is nats-server >= 2.11 running (scripts/test.sh starts it)?"),
    )
}

/// Polls `check` until it returns `Some`, or fails after the patience (`FOLIO_TEST_PATIENCE_MS`,
/// default 15 s) so slow CI machines can be given more time without editing tests.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let patience = std::env::var("FOLIO_TEST_PATIENCE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(15_000);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(patience);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {patience} ms waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A private nats-server with JetStream (the shared one must never be restarted), on a free
/// port with its own store directory, for tests that stop and restart it. The binary is
/// `FOLIO_NATS_SERVER_BIN` (scripts/start-services.sh installs one).
pub struct PrivateNats {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<tokio::process::Child>,
}

/// How a [`PrivateNats`] is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: the server shuts down cleanly (lame duck, flushed store).
    Term,
    /// SIGKILL: the process is gone at once, as in a crash.
    Kill,
}

impl PrivateNats {
    fn binary() -> String {
        std::env::var("FOLIO_NATS_SERVER_BIN").unwrap_or_else(|_| "/opt/folio-nats/bin/nats-server".to_owned())
    }

    pub async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("folio-nats-{}", unique_suffix()));
        std::fs::create_dir_all(&dir)?;
        let mut nats = Self { port, dir, child: None };
        nats.spawn().await?;
        Ok(nats)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (`how`), waits for the process to end, leaves it down for `down`, and
    /// starts it again on the same port and store. Returns when it accepts connections.
    pub async fn restart(&mut self, how: Stop, down: Duration) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            match (how, child.id()) {
                (Stop::Term, Some(pid)) => {
                    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
                    if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                        child.kill().await?;
                    }
                }
                _ => child.kill().await?,
            }
        }
        tokio::time::sleep(down).await;
        self.spawn().await
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let child = tokio::process::Command::new(Self::binary())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start nats-server (set FOLIO_NATS_SERVER_BIN)")?;
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        eventually("the private nats-server to listen", || async {
            tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())
        })
        .await;
        Ok(())
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
