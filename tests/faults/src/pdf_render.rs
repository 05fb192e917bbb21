//! pdf-render replicas as processes sharing one durable consumer, so a SIGKILL mid-render is
//! real and the job must come back to a replica that is alive.

use std::net::SocketAddr;

use crate::wal_ingest::IngestSetup;

/// What every replica of one run shares.
#[derive(Debug, Clone)]
pub struct RenderSetup {
    pub ingest: IngestSetup,
    pub bucket: String,
    pub consumer: String,
    pub dead_letters: String,
}

impl RenderSetup {
    pub fn new(ingest: &IngestSetup, tag: &str) -> Self {
        Self {
            ingest: ingest.clone(),
            bucket: format!("pdfs_{tag}"),
            consumer: format!("pdf_{tag}"),
            dead_letters: format!("F{tag}_JOBS_DEAD"),
        }
    }
}

pub struct Renderer {
    pub admin: SocketAddr,
    child: tokio::process::Child,
    setup: RenderSetup,
}

impl Renderer {
    pub async fn start(setup: &RenderSetup) -> anyhow::Result<Self> {
        let admin: SocketAddr = ([127, 0, 0, 1], crate::free_port()?).into();
        let child = spawn(setup, admin)?;
        Ok(Self { admin, child, setup: setup.clone() })
    }

    /// SIGKILL (its sandboxed render workers follow it: they watch their parent), then the same
    /// replica started again.
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        self.child = spawn(&self.setup, self.admin)?;
        Ok(())
    }
}

fn spawn(setup: &RenderSetup, admin: SocketAddr) -> anyhow::Result<tokio::process::Child> {
    let child = setup
        .ingest
        .service("pdf-render", admin)?
        .env("FOLIO_PDF_BUCKET", &setup.bucket)
        .env("FOLIO_PDF_CONSUMER", &setup.consumer)
        .env("FOLIO_PDF_DEAD_LETTER_STREAM", &setup.dead_letters)
        // A killed replica's job comes back after this long.
        .env("FOLIO_PDF_ACK_WAIT", "3s")
        .env("FOLIO_PDF_RETRY_BACKOFF", "200ms")
        .env("FOLIO_PDF_CONCURRENCY", "2")
        .spawn()?;
    Ok(child)
}
