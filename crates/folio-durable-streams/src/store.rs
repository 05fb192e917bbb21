//! The storage mapping onto JetStream, in one place.
//!
//! - One JetStream stream `<prefix>_streams` holds every durable stream's messages, one subject
//!   per stream incarnation: `<prefix>.d.<incarnation>`. Its global sequence is the offset.
//! - One KV bucket `<prefix>_meta` holds a `StreamMeta` per stream path (key: SHA-256 of the
//!   path), updated with compare-and-set so concurrent edges cannot lose each other's writes.
//! - Core subject `<prefix>.n.<path hash>` carries change notices between edges (no payload
//!   stored) so long-polls and SSE readers on any edge wake on appends made elsewhere.

use async_nats::{
    HeaderMap,
    jetstream::{self, kv, message::StreamMessage, stream},
};
use bytes::Bytes;
use folio_bus::StreamSeq;
use futures::TryStreamExt;
use sha2::{Digest, Sha256};

use super::{
    error::StorageError,
    meta::{Segment, StreamMeta},
};

#[derive(Clone)]
pub struct Store {
    js: jetstream::Context,
    nats: async_nats::Client,
    data: stream::Stream,
    meta: kv::Store,
    prefix: String,
    data_name: String,
    /// This edge's id, carried by its change notices: it wakes its own readers directly
    /// (`Streams::announce`), so its notices coming back are skipped instead of waking them twice.
    origin: Bytes,
}

/// A stream's metadata with the KV revision it was read at.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub meta: StreamMeta,
    pub revision: u64,
}

type R<T> = Result<T, StorageError>;

impl Store {
    pub async fn open(nats: async_nats::Client, prefix: &str) -> R<Self> {
        let js = jetstream::new(nats.clone());
        let data_name = format!("{prefix}_streams");
        let data = js
            .get_or_create_stream(stream::Config {
                name: data_name.clone(),
                subjects: vec![format!("{prefix}.d.*")],
                allow_direct: true,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| StorageError::new("create the durable streams JetStream stream", e))?;
        let bucket = format!("{prefix}_meta");
        let meta = match js.get_key_value(&bucket).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config { bucket: bucket.clone(), history: 1, ..Default::default() })
                .await
                .map_err(|e| StorageError::new("create the durable streams metadata bucket", e))?,
        };
        let origin = Bytes::from(uuid::Uuid::new_v4().simple().to_string());
        Ok(Store { js, nats, data, meta, prefix: prefix.to_owned(), data_name, origin })
    }

    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    pub fn kv(&self) -> &kv::Store {
        &self.meta
    }

    pub fn data_subject(&self, incarnation: &str) -> String {
        format!("{}.d.{incarnation}", self.prefix)
    }

    pub fn notify_subject(&self, path: &str) -> String {
        format!("{}.n.{}", self.prefix, path_hash(path))
    }

    pub fn notify_wildcard(&self) -> String {
        format!("{}.n.*", self.prefix)
    }

    pub async fn load(&self, path: &str) -> R<Option<Versioned>> {
        self.load_key(&meta_key(path)).await
    }

    /// Metadata keys of every stream (for the expiry sweep).
    pub async fn stream_keys(&self) -> R<Vec<String>> {
        let keys = self.meta.keys().await.map_err(|e| StorageError::new("list stream metadata", e))?;
        let keys: Vec<String> = keys.try_collect().await.map_err(|e| StorageError::new("list stream metadata", e))?;
        Ok(keys.into_iter().filter(|k| k.starts_with("s.")).collect())
    }

    pub async fn load_key(&self, key: &str) -> R<Option<Versioned>> {
        let entry = self.meta.entry(key).await.map_err(|e| StorageError::new("read stream metadata", e))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else { return Ok(None) };
        let meta: StreamMeta =
            serde_json::from_slice(&entry.value).map_err(|e| StorageError::new("decode stream metadata", e))?;
        Ok(Some(Versioned { meta, revision: entry.revision }))
    }

    /// Stores metadata for a path that has none; `None` if another request created it first.
    pub async fn create(&self, meta: &StreamMeta) -> R<Option<u64>> {
        match self.meta.create(meta_key(&meta.path), encode(meta)?).await {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(StorageError::new("create stream metadata", e)),
        }
    }

    /// Compare-and-set; `None` when the revision moved (someone else wrote first).
    pub async fn update(&self, meta: &StreamMeta, revision: u64) -> R<Option<u64>> {
        match self.meta.update(meta_key(&meta.path), encode(meta)?, revision).await {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(StorageError::new("update stream metadata", e)),
        }
    }

    pub async fn remove(&self, path: &str, revision: u64) -> R<bool> {
        match self.meta.purge_expect_revision(meta_key(path), Some(revision)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == kv::PurgeErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(StorageError::new("remove stream metadata", e)),
        }
    }

    /// Appends one message and waits for JetStream's acknowledgement; returns its sequence.
    pub async fn append(&self, subject: String, headers: HeaderMap, payload: Bytes) -> R<StreamSeq> {
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| StorageError::new("publish to JetStream", e))?
            .await
            .map_err(|e| StorageError::new("get the JetStream acknowledgement", e))?;
        Ok(StreamSeq::new(ack.sequence))
    }

    /// Publishes one message without waiting for its acknowledgement, for callers that send
    /// several back to back and then await each (`jetstream::context::PublishAckFuture`).
    pub async fn send(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> R<jetstream::context::PublishAckFuture> {
        self.js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| StorageError::new("publish to JetStream", e))
    }

    pub async fn last_seq(&self, subject: &str) -> R<Option<StreamSeq>> {
        match self.data.direct_get_last_for_subject(subject).await {
            Ok(m) => Ok(Some(StreamSeq::new(m.sequence))),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::new("read the last message of a stream", e)),
        }
    }

    pub async fn last_message(&self, subject: &str) -> R<Option<StreamMessage>> {
        match self.data.direct_get_last_for_subject(subject).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::new("read the last message of a stream", e)),
        }
    }

    /// Up to `max_msgs` messages of `subject` from sequence `from` on, with how many of
    /// `subject` the server held after them (see [`folio_live::direct_get_batch_counted`]).
    pub async fn batch(
        &self,
        subject: &str,
        from: StreamSeq,
        max_msgs: usize,
        max_bytes: usize,
    ) -> R<folio_live::Batch> {
        folio_live::direct_get_batch_counted(&self.nats, &self.data_name, subject, from, max_msgs, max_bytes)
            .await
            .map_err(|e| StorageError::new("read a batch", e))
    }

    /// The first message of `subject` with sequence >= `from`.
    pub async fn next(&self, subject: &str, from: StreamSeq) -> R<Option<StreamMessage>> {
        match self.data.direct_get_next_for_subject(subject, Some(from.get().max(1))).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::new("read a stream message", e)),
        }
    }

    pub async fn purge(&self, subject: &str) -> R<()> {
        self.data.purge().filter(subject).await.map_err(|e| StorageError::new("purge stream data", e))?;
        Ok(())
    }

    /// Drops all but the last `keep` messages of `subject`: for streams whose history nobody
    /// reads (readers of an ephemeral stream start at its tail).
    pub async fn trim(&self, subject: &str, keep: u64) -> R<()> {
        self.data.purge().filter(subject).keep(keep).await.map_err(|e| StorageError::new("trim stream data", e))?;
        Ok(())
    }

    /// Tells the other edges that `path` changed (this edge skips its own notices).
    pub async fn notify(&self, path: &str) {
        if let Err(e) = self.nats.publish(self.notify_subject(path), self.origin.clone()).await {
            tracing::warn!("failed to publish a change notice: {e:#}");
        }
    }

    /// A notice this edge sent itself (edges of earlier releases send an empty payload); only
    /// seen on a connection that echoes (the edge's does not, see shape-edge's `bind`).
    pub fn is_own_notice(&self, payload: &[u8]) -> bool {
        payload == self.origin.as_ref()
    }

    /// Last sequence this stream's readers can see: its own last message, else its fork point.
    pub async fn tail(&self, meta: &StreamMeta) -> R<StreamSeq> {
        let own = self.last_seq(&self.data_subject(&meta.incarnation)).await?;
        Ok(own.unwrap_or(StreamSeq::ZERO).max(StreamSeq::new(meta.base_seq)))
    }

    /// The data a reader of `meta` sees, oldest first.
    pub fn view(&self, meta: &StreamMeta) -> Vec<Segment> {
        let mut v = meta.inherited.clone();
        v.push(Segment { subject: self.data_subject(&meta.incarnation), upto: u64::MAX });
        v
    }
}

pub fn path_hash(path: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(path.as_bytes());
    let mut hash = String::with_capacity(40);
    for b in &digest[..20] {
        hash.push(char::from(HEX[usize::from(b >> 4)]));
        hash.push(char::from(HEX[usize::from(b & 15)]));
    }
    hash
}

fn meta_key(path: &str) -> String {
    format!("s.{}", path_hash(path))
}

fn encode(meta: &StreamMeta) -> R<Bytes> {
    serde_json::to_vec(meta).map(Bytes::from).map_err(|e| StorageError::new("encode stream metadata", e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_hashes_are_the_first_20_bytes_of_sha256_in_lower_hex() {
        // Keys and notice subjects already stored depend on this exact spelling.
        assert_eq!(super::path_hash("a/b"), "c14cddc033f64b9dea80ea675cf280a015e67251");
    }
}
