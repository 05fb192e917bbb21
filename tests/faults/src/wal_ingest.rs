//! wal-ingest replicas as processes (so SIGKILL is real), each on a known admin port to ask
//! which one is active.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};

pub use folio_testkit::http::{HttpAnswer, get as http_get};

/// What every replica of one run shares: where it reads and publishes.
#[derive(Debug, Clone)]
pub struct IngestSetup {
    pub database_url: String,
    pub nats_url: String,
    pub slot: String,
    pub subject_root: String,
    pub changes_stream: String,
    pub jobs_stream: String,
}

impl IngestSetup {
    /// `binary` (a workspace service, from [`crate::bin_dir`]) on this run's database, NATS,
    /// subjects and streams, its admin server on `admin`, logging `FOLIO_FAULTS_LOG` (off by
    /// default: its errors are the faults' expected effects), killed with the test.
    pub fn service(&self, binary: &str, admin: SocketAddr) -> anyhow::Result<tokio::process::Command> {
        let path = crate::bin_dir()?.join(binary);
        anyhow::ensure!(path.exists(), "no {} (cargo build -p {binary}, or set FOLIO_BIN_DIR)", path.display());
        let mut command = tokio::process::Command::new(path);
        command
            .env("FOLIO_ENV", "development")
            .env("FOLIO_DATABASE_URL", &self.database_url)
            .env("FOLIO_NATS_URL", &self.nats_url)
            .env("FOLIO_SUBJECT_ROOT", &self.subject_root)
            .env("FOLIO_CHANGES_STREAM", &self.changes_stream)
            .env("FOLIO_JOBS_STREAM", &self.jobs_stream)
            .env("FOLIO_ADMIN_ADDR", admin.to_string())
            .env("RUST_LOG", std::env::var("FOLIO_FAULTS_LOG").unwrap_or_else(|_| "off".into()))
            .kill_on_drop(true);
        Ok(command)
    }
}

pub struct Replica {
    pub admin: SocketAddr,
    child: tokio::process::Child,
    setup: IngestSetup,
    /// What it logged, when started with [`Replica::start_logging`].
    log: Option<Arc<Mutex<String>>>,
}

impl Replica {
    pub async fn start(setup: &IngestSetup) -> anyhow::Result<Self> {
        let admin: SocketAddr = ([127, 0, 0, 1], crate::free_port()?).into();
        let child = spawn(setup, admin, None)?;
        Ok(Self { admin, child, setup: setup.clone(), log: None })
    }

    /// Started with `RUST_LOG=<filter>`, keeping what it logs for [`Replica::log`].
    pub async fn start_logging(setup: &IngestSetup, filter: &str) -> anyhow::Result<Self> {
        let admin: SocketAddr = ([127, 0, 0, 1], crate::free_port()?).into();
        let mut child = spawn(setup, admin, Some(filter))?;
        let log = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().context("piped stdout")?;
        let err = child.stderr.take().context("piped stderr")?;
        tokio::spawn(keep_lines(BufReader::new(out).lines(), log.clone()));
        tokio::spawn(keep_lines(BufReader::new(err).lines(), log.clone()));
        Ok(Self { admin, child, setup: setup.clone(), log: Some(log) })
    }

    /// What it logged so far (empty unless started with [`Replica::start_logging`]).
    pub fn log(&self) -> String {
        self.log.as_ref().map(|l| l.lock().expect("not poisoned").clone()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether this replica streams the slot now (`/readyz` answers 200 only on the active one).
    pub async fn is_active(&self) -> bool {
        http_status(self.admin, "/readyz").await == Some(200)
    }

    /// SIGKILL, then the same replica started again (it comes back as the standby).
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.child = spawn(&self.setup, self.admin, None)?;
        Ok(())
    }

    /// SIGKILL, and wait until it is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// The replica's Prometheus metrics, as text.
    pub async fn metrics(&self) -> Option<String> {
        http_get(self.admin, "/metrics").await.map(|r| r.body)
    }
}

async fn keep_lines<R: tokio::io::AsyncBufRead + Unpin>(mut lines: tokio::io::Lines<R>, log: Arc<Mutex<String>>) {
    while let Ok(Some(line)) = lines.next_line().await {
        let mut log = log.lock().expect("not poisoned");
        log.push_str(&line);
        log.push('\n');
    }
}

fn spawn(setup: &IngestSetup, admin: SocketAddr, log_filter: Option<&str>) -> anyhow::Result<tokio::process::Child> {
    let mut command = setup.service("wal-ingest", admin)?;
    command
        .env("FOLIO_WAL_SLOT", &setup.slot)
        .env("FOLIO_RETRY_BACKOFF", "200ms")
        .env("FOLIO_STANDBY_POLL", "200ms")
        // A silent NATS link must end the session within the suite's patience.
        .env("FOLIO_ACK_TIMEOUT", "2s")
        // The slot's gauges follow a fault closely.
        .env("FOLIO_LAG_INTERVAL", "200ms");
    if let Some(filter) = log_filter {
        command.env("RUST_LOG", filter).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    }
    Ok(command.spawn()?)
}

/// The status code of `GET path`; None if nothing answers.
async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    http_get(addr, path).await.map(|r| r.status)
}
