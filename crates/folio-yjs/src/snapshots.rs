//! Snapshot bytes in a JetStream object store (`<prefix>_yjs_snapshots`): one immutable object
//! per snapshot, any size (a message or KV value stops at NATS's max payload, about 1 MiB, and a
//! document's state can outgrow it). Named `<hash of the update log's path>/<incarnation>/<label>`.

use async_nats::jetstream::{self, object_store};
use folio_durable_streams::{StorageError, store::path_hash};
use tokio::io::AsyncReadExt;

#[derive(Clone)]
pub struct Snapshots {
    bucket: object_store::ObjectStore,
}

impl Snapshots {
    pub async fn open(nats: async_nats::Client, prefix: &str) -> Result<Self, StorageError> {
        let js = jetstream::new(nats);
        let name = format!("{prefix}_yjs_snapshots");
        let bucket = match js.get_object_store(&name).await {
            Ok(b) => b,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: name.clone(),
                    description: Some("Yjs document snapshots written by compaction".into()),
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| StorageError::new("create the Yjs snapshot bucket", e))?,
        };
        Ok(Snapshots { bucket })
    }

    pub fn object_name(updates_path: &str, incarnation: &str, label: &str) -> String {
        format!("{}/{incarnation}/{label}", path_hash(updates_path))
    }

    pub async fn put(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let mut reader = bytes;
        self.bucket.put(name, &mut reader).await.map_err(|e| StorageError::new("store a Yjs snapshot", e))?;
        Ok(())
    }

    /// The snapshot's bytes; `None` when there is no such object (deleted by a newer one).
    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let mut object = match self.bucket.get(name).await {
            Ok(o) => o,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::new("read a Yjs snapshot", e)),
        };
        let mut bytes = Vec::new();
        object.read_to_end(&mut bytes).await.map_err(|e| StorageError::new("read a Yjs snapshot", e))?;
        Ok(Some(bytes))
    }

    /// Deletes a snapshot; one already gone is fine.
    pub async fn delete(&self, name: &str) -> Result<(), StorageError> {
        match self.bucket.delete(name).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::new("delete a Yjs snapshot", e)),
        }
    }
}
