//! Where renditions go: the PDF into a JetStream Object Store bucket under its SHA-256, its
//! status and facts into `pdf_renditions` (which syncs to browsers through the shape edge).

use async_nats::jetstream::{self, object_store::ObjectStore};
use sqlx::{PgConnection, PgPool};
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

pub async fn current_status(conn: &mut PgConnection, rendition: Uuid) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT status FROM pdf_renditions WHERE id = $1")
        .bind(rendition)
        .fetch_optional(conn)
        .await?)
}

pub async fn mark_rendering(conn: &mut PgConnection, rendition: Uuid) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE pdf_renditions SET status = 'rendering', failure_reason = NULL WHERE id = $1 AND status <> 'ready'",
    )
    .bind(rendition)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn mark_ready(conn: &mut PgConnection, rendition: Uuid, pdf: &RenderedPdf) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE pdf_renditions SET status = 'ready', failure_reason = NULL, pdf_sha256 = $2, size_bytes = $3, \
         page_count = $4, rendered_at = now() WHERE id = $1",
    )
    .bind(rendition)
    .bind(&pdf.sha256)
    .bind(pdf.bytes.len() as i64)
    .bind(pdf.pages as i32)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn mark_failed(pool: &PgPool, rendition: Uuid, reason: &str) -> Result<(), StoreError> {
    // Reasons are shown to users; keep them readable and bounded.
    let reason: String = reason.chars().take(2_000).collect();
    sqlx::query("UPDATE pdf_renditions SET status = 'failed', failure_reason = $2 WHERE id = $1 AND status <> 'ready'")
        .bind(rendition)
        .bind(reason)
        .execute(pool)
        .await?;
    Ok(())
}
