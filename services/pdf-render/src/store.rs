//! Where renditions go: the PDF into a JetStream Object Store bucket under its SHA-256, its
//! status and facts into `pdf_renditions` (which syncs to browsers through the shape edge).

use async_nats::jetstream::{self, object_store::ObjectStore};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use uuid::Uuid;

use crate::render::RenderedPdf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to update the rendition")]
    Db(#[from] sqlx::Error),
    #[error("failed to open the object store bucket {bucket}")]
    Bucket { bucket: String, source: jetstream::context::CreateObjectStoreError },
    #[error("failed to store the PDF {sha256}")]
    Put { sha256: String, source: jetstream::object_store::PutError },
    #[error("failed to read the PDF {sha256}")]
    Get { sha256: String, source: std::io::Error },
    #[error("the stored PDF {sha256} is missing")]
    Missing { sha256: String, source: jetstream::object_store::GetError },
    #[error("the stored PDF {sha256} does not hash to its name")]
    Corrupt { sha256: String },
}

impl StoreError {
    /// No retry can bring back a PDF that is gone or damaged.
    pub fn is_permanent(&self) -> bool {
        match self {
            StoreError::Missing { source, .. } => source.kind() == jetstream::object_store::GetErrorKind::NotFound,
            StoreError::Corrupt { .. } => true,
            _ => false,
        }
    }
}

pub async fn open_bucket(js: &jetstream::Context, bucket: &str, replicas: usize) -> Result<ObjectStore, StoreError> {
    match js.get_object_store(bucket).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_object_store(jetstream::object_store::Config {
                bucket: bucket.to_owned(),
                description: Some("Folio proposal PDFs, named by SHA-256".into()),
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|source| StoreError::Bucket { bucket: bucket.to_owned(), source }),
    }
}

/// Content-addressed: identical bytes are stored once, whichever rendition produced them.
pub async fn put_pdf(store: &ObjectStore, pdf: &RenderedPdf) -> Result<(), StoreError> {
    if store.info(&pdf.sha256).await.is_ok() {
        return Ok(());
    }
    let meta = jetstream::object_store::ObjectMetadata {
        name: pdf.sha256.clone(),
        description: Some("application/pdf".into()),
        ..Default::default()
    };
    store
        .put(meta, &mut pdf.bytes.as_slice())
        .await
        .map(|_| ())
        .map_err(|source| StoreError::Put { sha256: pdf.sha256.clone(), source })
}

/// The PDF named `sha256`, checked against its name: a signed copy must show exactly the bytes
/// that were signed.
pub async fn get_pdf(store: &ObjectStore, sha256: &str) -> Result<Vec<u8>, StoreError> {
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncReadExt as _;
    let mut object =
        store.get(sha256).await.map_err(|source| StoreError::Missing { sha256: sha256.to_owned(), source })?;
    let mut bytes = Vec::new();
    object.read_to_end(&mut bytes).await.map_err(|source| StoreError::Get { sha256: sha256.to_owned(), source })?;
    let actual: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    if actual != sha256 {
        return Err(StoreError::Corrupt { sha256: sha256.to_owned() });
    }
    Ok(bytes)
}

/// A session-level advisory lock on one rendition: held by the one worker rendering it, and
/// released by Postgres if that worker dies, so a redelivered job can be picked up at once.
pub struct RenditionLock {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
    key: String,
}

impl RenditionLock {
    pub async fn try_acquire(pool: &PgPool, rendition: Uuid) -> Result<Option<Self>, StoreError> {
        let mut conn = pool.acquire().await?;
        let key = rendition.to_string();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(&key)
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then(|| Self { conn: Some(conn), key }))
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("held until released")
    }

    pub async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                .bind(&self.key)
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                // Closing the session releases the lock; never return a locked session to the pool.
                let _ = conn.detach();
            }
        }
    }
}

impl Drop for RenditionLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.detach();
        }
    }
}

/// What a job renders: a rendition of a proposal version, or the signed copy of an acceptance.
/// Both record their progress in the same columns of their own table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Rendition(Uuid),
    /// Keyed by the acceptance (`proposal_responses.id`).
    SignedCopy(Uuid),
}

impl Target {
    pub fn id(self) -> Uuid {
        match self {
            Target::Rendition(id) | Target::SignedCopy(id) => id,
        }
    }

    /// `(table, key column)`: fixed names, never input, so the formatted SQL below is safe.
    fn table(self) -> (&'static str, &'static str) {
        match self {
            Target::Rendition(_) => ("pdf_renditions", "id"),
            Target::SignedCopy(_) => ("signed_copies", "response_id"),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Rendition(id) => write!(f, "rendition {id}"),
            Target::SignedCopy(id) => write!(f, "signed copy of acceptance {id}"),
        }
    }
}

pub async fn current_status(conn: &mut PgConnection, target: Target) -> Result<Option<String>, StoreError> {
    let (table, key) = target.table();
    Ok(sqlx::query_scalar(AssertSqlSafe(format!("SELECT status FROM {table} WHERE {key} = $1")))
        .bind(target.id())
        .fetch_optional(conn)
        .await?)
}

pub async fn mark_rendering(conn: &mut PgConnection, target: Target) -> Result<(), StoreError> {
    let (table, key) = target.table();
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {table} SET status = 'rendering', failure_reason = NULL WHERE {key} = $1 AND status <> 'ready'"
    )))
    .bind(target.id())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn mark_ready(conn: &mut PgConnection, target: Target, pdf: &RenderedPdf) -> Result<(), StoreError> {
    let (table, key) = target.table();
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {table} SET status = 'ready', failure_reason = NULL, pdf_sha256 = $2, size_bytes = $3, \
         page_count = $4, rendered_at = now() WHERE {key} = $1"
    )))
    .bind(target.id())
    .bind(&pdf.sha256)
    .bind(pdf.bytes.len() as i64)
    .bind(pdf.pages as i32)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn mark_failed(pool: &PgPool, target: Target, reason: &str) -> Result<(), StoreError> {
    // Reasons are shown to users; keep them readable and bounded.
    let reason: String = reason.chars().take(2_000).collect();
    let (table, key) = target.table();
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {table} SET status = 'failed', failure_reason = $2 WHERE {key} = $1 AND status <> 'ready'"
    )))
    .bind(target.id())
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
}
