//! What the edge keeps about a document besides its streams: one record per document in the
//! Durable Streams metadata bucket (key `y.<hash of the update log's path>`), written with
//! compare-and-set. It holds the snapshot pointer, the names of the awareness streams created
//! (for the cascade on delete), the lease (one edge compacts or persists a document at a time)
//! and, for a proposal's document, what it last agreed on with the proposal. A record belongs to one incarnation of
//! the update log: after a delete and re-create, the old document's pointer is never followed.

use std::collections::BTreeSet;

use async_nats::jetstream::kv;
use bytes::Bytes;
use folio_durable_streams::{StorageError, store::path_hash};
use serde::{Deserialize, Serialize};

/// The current snapshot of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPointer {
    /// The label in `?offset=<label>_snapshot`.
    pub label: String,
    /// JetStream sequence of the last update the snapshot covers: readers resume after it.
    pub next: u64,
    /// The object holding the snapshot's bytes.
    pub object: String,
    pub bytes: u64,
    pub created_ms: i64,
}

/// The compaction lease: one edge compacts a document at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: String,
    pub until_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocRecord {
    /// The update log's incarnation this record describes.
    pub incarnation: String,
    pub snapshot: Option<SnapshotPointer>,
    /// Awareness streams created besides `default`, by any route (PUT or POST auto-create).
    pub awareness: BTreeSet<String>,
    pub lease: Option<Lease>,
    /// For a proposal's document: SHA-256 (hex) of the content the document and the proposal
    /// last agreed on. A proposal whose content no longer hashes to it was changed by someone
    /// else (the API), and the document follows it rather than overwriting it.
    #[serde(default)]
    pub persisted: Option<String>,
}

impl DocRecord {
    fn fresh(incarnation: &str) -> Self {
        DocRecord {
            incarnation: incarnation.to_owned(),
            snapshot: None,
            awareness: BTreeSet::new(),
            lease: None,
            persisted: None,
        }
    }
}

/// What a modification wants written.
pub enum Change {
    Write,
    Keep,
}

/// How `modify` treats a record of another incarnation (or none).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// The caller has just seen `incarnation` live: start a fresh record over the old one.
    Replace,
    /// Only this incarnation's record may be changed (the compactor's pointer move).
    Abort,
}

/// The outcome of `modify`: the record as stored afterwards (`None`: no record of this
/// incarnation, with `Stale::Abort`), and the snapshot object of a replaced stale record.
pub struct Modified {
    pub record: Option<DocRecord>,
    pub orphaned_object: Option<String>,
}

#[derive(Clone)]
pub struct Records {
    kv: kv::Store,
}

fn key(updates_path: &str) -> String {
    format!("y.{}", path_hash(updates_path))
}

impl Records {
    pub fn new(kv: kv::Store) -> Self {
        Records { kv }
    }

    async fn entry(&self, key: &str) -> Result<Option<(DocRecord, u64)>, StorageError> {
        let entry = self.kv.entry(key).await.map_err(|e| StorageError::new("read a document record", e))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else { return Ok(None) };
        let record =
            serde_json::from_slice(&entry.value).map_err(|e| StorageError::new("decode a document record", e))?;
        Ok(Some((record, entry.revision)))
    }

    /// This incarnation's record, if there is one.
    pub async fn load(&self, updates_path: &str, incarnation: &str) -> Result<Option<DocRecord>, StorageError> {
        Ok(self.entry(&key(updates_path)).await?.map(|(r, _)| r).filter(|r| r.incarnation == incarnation))
    }

    /// Applies `change` with compare-and-set, retrying on concurrent writes.
    pub async fn modify(
        &self,
        updates_path: &str,
        incarnation: &str,
        stale: Stale,
        mut change: impl FnMut(&mut DocRecord) -> Change,
    ) -> Result<Modified, StorageError> {
        let key = key(updates_path);
        loop {
            let current = self.entry(&key).await?;
            let mut orphaned_object = None;
            let (mut record, revision) = match current {
                Some((r, rev)) if r.incarnation == incarnation => (r, Some(rev)),
                other if stale == Stale::Abort => {
                    let _ = other;
                    return Ok(Modified { record: None, orphaned_object: None });
                }
                Some((old, rev)) => {
                    orphaned_object = old.snapshot.map(|s| s.object);
                    (DocRecord::fresh(incarnation), Some(rev))
                }
                None => (DocRecord::fresh(incarnation), None),
            };
            if let Change::Keep = change(&mut record) {
                let record = revision.is_some().then_some(record).filter(|r| r.incarnation == incarnation);
                return Ok(Modified { record, orphaned_object: None });
            }
            let value =
                Bytes::from(serde_json::to_vec(&record).map_err(|e| StorageError::new("encode a document record", e))?);
            let written = match revision {
                Some(rev) => match self.kv.update(&key, value, rev).await {
                    Ok(_) => true,
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => false,
                    Err(e) => return Err(StorageError::new("update a document record", e)),
                },
                None => match self.kv.create(&key, value).await {
                    Ok(_) => true,
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => false,
                    Err(e) => return Err(StorageError::new("create a document record", e)),
                },
            };
            if written {
                return Ok(Modified { record: Some(record), orphaned_object });
            }
        }
    }

    /// Forgets the document (any incarnation); what it was, to clean up after.
    pub async fn remove(&self, updates_path: &str) -> Result<Option<DocRecord>, StorageError> {
        let key = key(updates_path);
        let current = self.entry(&key).await?;
        self.kv.purge(&key).await.map_err(|e| StorageError::new("remove a document record", e))?;
        Ok(current.map(|(r, _)| r))
    }
}
