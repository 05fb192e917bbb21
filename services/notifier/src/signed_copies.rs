//! The signed copy an acceptance's emails carry (issue 20). pdf-render makes it from the job the
//! acceptance commits, usually within a second of the event reaching the notifier; an email
//! that needs it waits a little for it within its attempt, then retries on the usual schedule.

use std::time::Duration;

use async_nats::jetstream;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt as _;
use uuid::Uuid;

use crate::{Ctx, email::PdfAttachment, store::Delivery};

/// Longest one attempt waits for the signed copy before it counts as a failed attempt.
const MAX_WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(200);

/// The wait and the SMTP exchange after it must end well inside the delivery's lease, or
/// another replica could claim the delivery and send it too.
fn wait(config: &crate::Config) -> Duration {
    (config.delivery_lease.saturating_sub(config.smtp_timeout) / 2).min(MAX_WAIT)
}

#[derive(Debug, thiserror::Error)]
pub enum SignedCopyError {
    #[error("the signed copy is not rendered yet (waited {0:?})")]
    NotReady(Duration),
    #[error("the signed copy could not be rendered: {0}")]
    Failed(String),
    #[error("the signed copy's acceptance {0} does not exist")]
    Unknown(Uuid),
    #[error("failed to read the signed copy's status")]
    Db(#[from] sqlx::Error),
    #[error("failed to open the PDF bucket {bucket}")]
    Bucket { bucket: String, source: jetstream::context::ObjectStoreError },
    #[error("failed to read the signed copy {sha256} from the PDF bucket")]
    Get { sha256: String, source: jetstream::object_store::GetError },
    #[error("failed to read the signed copy {sha256}")]
    Read { sha256: String, source: std::io::Error },
    #[error("the stored signed copy {0} does not hash to its name")]
    Corrupt(String),
}

impl SignedCopyError {
    /// A failed render or a missing acceptance cannot come right by waiting.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SignedCopyError::Failed(_) | SignedCopyError::Unknown(_) | SignedCopyError::Corrupt(_))
    }
}

/// status, pdf_sha256, failure_reason, the proposal's title, the version signed.
type CopyRow = (String, Option<String>, Option<String>, String, i64);

/// The acceptance whose signed copy `delivery` must carry, if any.
pub fn wanted(delivery: &Delivery) -> Option<Uuid> {
    delivery.payload.0.get("signed_copy").and_then(|v| v.as_str()).and_then(|s| Uuid::parse_str(s).ok())
}

/// The signed copy of acceptance `response`, once rendered.
pub async fn fetch(ctx: &Ctx, response: Uuid) -> Result<PdfAttachment, SignedCopyError> {
    let started = tokio::time::Instant::now();
    let wait = wait(&ctx.config);
    let (sha256, title, version) = loop {
        let row: Option<CopyRow> = sqlx::query_as(
            "SELECT s.status, s.pdf_sha256, s.failure_reason, p.title, r.proposal_version FROM signed_copies s \
             JOIN proposal_responses r ON r.id = s.response_id JOIN proposals p ON p.id = s.proposal_id \
             WHERE s.response_id = $1",
        )
        .bind(response)
        .fetch_optional(&ctx.pool)
        .await?;
        let Some((status, sha256, failure, title, version)) = row else {
            return Err(SignedCopyError::Unknown(response));
        };
        match (status.as_str(), sha256) {
            ("ready", Some(sha256)) => break (sha256, title, version),
            ("failed", _) => return Err(SignedCopyError::Failed(failure.unwrap_or_default())),
            _ if started.elapsed() >= wait => return Err(SignedCopyError::NotReady(wait)),
            _ => tokio::time::sleep(POLL).await,
        }
    };
    let bucket = &ctx.config.bus.pdf_bucket;
    let store = ctx
        .js
        .get_object_store(bucket)
        .await
        .map_err(|source| SignedCopyError::Bucket { bucket: bucket.clone(), source })?;
    let mut object =
        store.get(&sha256).await.map_err(|source| SignedCopyError::Get { sha256: sha256.clone(), source })?;
    let mut bytes = Vec::new();
    object.read_to_end(&mut bytes).await.map_err(|source| SignedCopyError::Read { sha256: sha256.clone(), source })?;
    let actual: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    if actual != sha256 {
        return Err(SignedCopyError::Corrupt(sha256));
    }
    Ok(PdfAttachment { filename: folio_domain::file_names::signed_copy(&title, version), bytes })
}
