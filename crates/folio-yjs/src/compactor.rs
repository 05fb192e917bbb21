//! Compaction of a document's update log into a snapshot (YJS-PROTOCOL §8), one edge at a time.
//!
//! 1. Take the lease in the document's record (compare-and-set; another edge holding an
//!    unexpired one means it is compacting: stop).
//! 2. Load the current snapshot and read the update log after it up to its tail `T`.
//! 3. Replay both with `yrs` on a blocking thread (`compact`).
//! 4. Store the new snapshot as an object, then move the pointer with compare-and-set, only if
//!    the record still belongs to the same incarnation of the update log, still points at the
//!    snapshot we started from and the lease is still ours; otherwise drop what we wrote.
//! 5. Delete the previous snapshot at once (clients holding its label get 404 and discover
//!    again). Updates are never deleted: readers of any earlier offset keep working.
//!
//! The resume offset (spec §4.3): the pointer stores `next = T`, and the label is
//! `<epoch>_<T - 1>` so that the reference client's arithmetic (`label + 1`) lands on `T`; a
//! label is never turned back into an offset here.

use std::{sync::Arc, time::Duration};

use folio_bus::StreamSeq;
use folio_durable_streams::{
    StorageError, StreamError,
    meta::{StreamMeta, now_ms},
    offset::Offset,
    path::StreamPath,
};

use super::{
    Yjs,
    compact::{self, CorruptSnapshot},
    path::DocAddress,
    record::{Change, DocRecord, Lease, SnapshotPointer, Stale},
    snapshots::Snapshots,
};

/// How long a compaction (or a proposal document's persist) may hold the document's lease; an
/// edge that dies holding one delays the next compaction and persist of that document by at
/// most this. Short, because a persist waits for it; a compaction outliving it is still safe
/// (its pointer move checks the lease is still its own, else it drops what it wrote).
pub(crate) const LEASE: Duration = Duration::from_secs(30);

/// A compaction that found the lease held tries again this often, until the lease must have
/// expired (its holder may have died, and no further update may come to trigger it).
const BUSY_RETRY: Duration = Duration::from_secs(5);

/// Documents whose appended bytes an edge keeps counting; past this many, the counts of
/// documents not compacting are forgotten (they are hints: those documents compact a threshold
/// later), so the map never grows with every document ever written.
const MAX_COUNTED_DOCUMENTS: usize = 100_000;

/// What one compaction attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new snapshot is current.
    Compacted { label: String, next: StreamSeq, skipped: usize },
    /// Another compaction holds the lease (on this edge or another), or took it meanwhile.
    Busy,
    /// No update after the current snapshot.
    NothingNew,
    /// Fewer bytes than the threshold after the current snapshot.
    BelowThreshold { bytes: u64 },
    /// The document was deleted.
    Gone,
}

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("failed to read the update log")]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Corrupt(#[from] CorruptSnapshot),
    #[error("the snapshot builder panicked")]
    Panicked(#[source] tokio::task::JoinError),
}

/// A document's snapshot and the update log after it (`after..tail`).
pub(crate) struct Stored {
    pub previous: Option<Vec<u8>>,
    pub after: StreamSeq,
    pub tail: StreamSeq,
    pub messages: Vec<bytes::Bytes>,
    pub bytes: u64,
}

/// A compaction lease held on one incarnation of a document.
#[derive(Debug)]
pub struct HeldLease {
    updates: String,
    incarnation: String,
    holder: String,
}

impl Yjs {
    /// Counts `bytes` appended to `doc` through this edge and starts a compaction in the
    /// background once they reach the threshold. Never blocks or fails the append.
    pub(crate) fn appended(self: &Arc<Self>, doc: &DocAddress, bytes: u64) {
        let updates = doc.updates();
        let key = updates.as_str().to_owned();
        {
            let mut pending = self.pending.lock();
            if pending.len() >= MAX_COUNTED_DOCUMENTS && !pending.contains_key(&key) {
                pending.retain(|_, p| p.compacting);
            }
            let p = pending.entry(key.clone()).or_default();
            p.bytes += bytes;
            if p.bytes < self.config.compaction_threshold || p.compacting {
                return;
            }
            p.compacting = true;
        }
        let this = Arc::clone(self);
        self.tasks.spawn(async move {
            let mut waited = Duration::ZERO;
            let outcome = loop {
                let outcome = tokio::select! {
                    outcome = this.compact(&updates) => outcome,
                    _ = this.shutdown.cancelled() => return,
                };
                if !matches!(outcome, Ok(Outcome::Busy)) || waited > LEASE {
                    break outcome;
                }
                tokio::select! {
                    _ = tokio::time::sleep(BUSY_RETRY) => waited += BUSY_RETRY,
                    _ = this.shutdown.cancelled() => return,
                }
            };
            let mut pending = this.pending.lock();
            match outcome {
                Ok(Outcome::Compacted { .. } | Outcome::Gone) => {
                    // Bytes appended while it ran are forgotten: at worst the next compaction
                    // comes a little later.
                    pending.remove(&key);
                }
                other => {
                    if let Err(e) = &other {
                        tracing::warn!(doc = %key, error = %folio_runtime::error_chain(e), "compaction failed");
                    }
                    if let Some(p) = pending.get_mut(&key) {
                        p.compacting = false;
                        if let Ok(Outcome::BelowThreshold { bytes }) = other {
                            p.bytes = bytes;
                        }
                    }
                }
            }
        });
    }

    /// Compacts `doc` now if its log grew by the threshold since its snapshot.
    pub async fn compact_document(&self, doc: &DocAddress) -> Result<Outcome, CompactError> {
        self.compact(&doc.updates()).await
    }

    /// Takes the compaction lease of `doc` (what a compaction does first); `None` when another
    /// holds it or the document does not exist.
    pub async fn try_lease(&self, doc: &DocAddress) -> Result<Option<HeldLease>, CompactError> {
        let updates = doc.updates();
        let Some(meta) = self.live_meta(&updates).await? else { return Ok(None) };
        self.lease(updates.as_str(), &meta).await.map(|l| l.map(|(lease, _)| lease))
    }

    /// Gives a lease back (compactions do on every path but success, which clears it with the
    /// pointer move).
    pub async fn release(&self, lease: HeldLease) -> Result<(), StorageError> {
        self.records
            .modify(&lease.updates, &lease.incarnation, Stale::Abort, |r| {
                if r.lease.as_ref().is_some_and(|l| l.holder == lease.holder) {
                    r.lease = None;
                    Change::Write
                } else {
                    Change::Keep
                }
            })
            .await
            .map(drop)
    }

    pub(crate) async fn live_meta(&self, updates: &StreamPath) -> Result<Option<StreamMeta>, StreamError> {
        match self.streams.live(updates.as_str()).await {
            Ok(v) => Ok(Some(v.meta)),
            Err(StreamError::NotFound | StreamError::Gone) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn lease(
        &self,
        updates: &str,
        meta: &StreamMeta,
    ) -> Result<Option<(HeldLease, DocRecord)>, CompactError> {
        let holder = format!("{}-{}", self.edge_id, uuid::Uuid::new_v4().simple());
        let now = now_ms();
        let until_ms = now + LEASE.as_millis() as i64;
        let modified = self
            .records
            .modify(updates, &meta.incarnation, Stale::Replace, |r| {
                if r.lease.as_ref().is_some_and(|l| l.until_ms > now) {
                    return Change::Keep;
                }
                r.lease = Some(Lease { holder: holder.clone(), until_ms });
                Change::Write
            })
            .await?;
        self.delete_orphan(modified.orphaned_object).await;
        Ok(modified.record.filter(|r| r.lease.as_ref().is_some_and(|l| l.holder == holder)).map(|record| {
            (HeldLease { updates: updates.to_owned(), incarnation: meta.incarnation.clone(), holder }, record)
        }))
    }

    pub(crate) async fn delete_orphan(&self, object: Option<String>) {
        if let Some(object) = object
            && let Err(e) = self.snapshots.delete(&object).await
        {
            tracing::warn!(error = %folio_runtime::error_chain(&e), "failed to delete an orphaned snapshot");
        }
    }

    async fn compact(&self, updates: &StreamPath) -> Result<Outcome, CompactError> {
        let outcome = self.compact_once(updates).await;
        let label = match &outcome {
            Ok(Outcome::Compacted { .. }) => "compacted",
            Ok(Outcome::Busy) => "busy",
            Ok(Outcome::NothingNew | Outcome::BelowThreshold { .. }) => "below_threshold",
            Ok(Outcome::Gone) => "gone",
            Err(_) => "failed",
        };
        metrics::counter!("folio_edge_yjs_compactions_total", "outcome" => label).increment(1);
        outcome
    }

    async fn compact_once(&self, updates: &StreamPath) -> Result<Outcome, CompactError> {
        let Some(meta) = self.live_meta(updates).await? else { return Ok(Outcome::Gone) };
        let Some((lease, record)) = self.lease(updates.as_str(), &meta).await? else { return Ok(Outcome::Busy) };
        let outcome = self.compact_leased(&meta, &record, &lease).await;
        if !matches!(outcome, Ok(Outcome::Compacted { .. }))
            && let Err(e) = self.release(lease).await
        {
            tracing::warn!(error = %folio_runtime::error_chain(&e), "failed to release a compaction lease");
        }
        outcome
    }

    /// The document as stored: its current snapshot and the update log after it, read up to
    /// date.
    pub(crate) async fn read_stored(&self, meta: &StreamMeta, record: &DocRecord) -> Result<Stored, CompactError> {
        let updates = meta.path.as_str();
        let (previous, after) = match &record.snapshot {
            Some(p) => match self.snapshots.get(&p.object).await? {
                Some(bytes) => (Some(bytes), StreamSeq::new(p.next)),
                None => {
                    tracing::warn!(doc = %updates, "the current snapshot's object is missing: reading the whole log");
                    (None, meta.base())
                }
            },
            None => (None, meta.base()),
        };
        let tail = self.streams.store().tail(meta).await?;
        let mut messages = Vec::new();
        let mut bytes = 0u64;
        let mut cursor = after;
        while cursor < tail {
            let chunk = self.streams.read_chunk(meta, cursor, tail).await?;
            bytes += chunk.payloads.iter().map(|p| p.len() as u64).sum::<u64>();
            messages.extend(chunk.payloads);
            cursor = chunk.next;
            if chunk.up_to_date {
                break;
            }
        }
        Ok(Stored { previous, after, tail, messages, bytes })
    }

    async fn compact_leased(
        &self,
        meta: &StreamMeta,
        record: &DocRecord,
        lease: &HeldLease,
    ) -> Result<Outcome, CompactError> {
        let updates = lease.updates.as_str();
        let Stored { previous, after, tail, messages, bytes } = self.read_stored(meta, record).await?;
        if tail <= after {
            return Ok(Outcome::NothingNew);
        }
        if bytes < self.config.compaction_threshold {
            return Ok(Outcome::BelowThreshold { bytes });
        }
        let built = tokio::task::spawn_blocking(move || compact::compact(previous.as_deref(), &messages))
            .await
            .map_err(CompactError::Panicked)??;
        if built.skipped > 0 {
            tracing::warn!(doc = %updates, skipped = built.skipped, "compaction left out updates that do not decode");
        }
        let label = Offset::at_seq(StreamSeq::new(tail.get() - 1)).to_string();
        let object = Snapshots::object_name(updates, &meta.incarnation, &label);
        self.snapshots.put(&object, &built.snapshot).await?;
        let pointer = SnapshotPointer {
            label: label.clone(),
            next: tail.get(),
            object: object.clone(),
            bytes: built.snapshot.len() as u64,
            created_ms: now_ms(),
        };
        let started_from = record.snapshot.as_ref().map(|p| p.object.clone());
        let moved = self
            .records
            .modify(updates, &meta.incarnation, Stale::Abort, |r| {
                let ours = r.lease.as_ref().is_some_and(|l| l.holder == lease.holder);
                if !ours || r.snapshot.as_ref().map(|p| &p.object) != started_from.as_ref() {
                    return Change::Keep;
                }
                r.snapshot = Some(pointer.clone());
                r.lease = None;
                Change::Write
            })
            .await?;
        let Some(current) = moved.record else {
            // Deleted (or deleted and created again) meanwhile.
            self.snapshots.delete(&object).await?;
            return Ok(Outcome::Gone);
        };
        if current.snapshot.as_ref() != Some(&pointer) {
            if current.snapshot.as_ref().map(|p| &p.object) != Some(&object) {
                self.snapshots.delete(&object).await?;
            }
            return Ok(Outcome::Busy);
        }
        if let Some(old) = started_from {
            // The pointer has moved: nobody is sent to the old snapshot any more.
            self.snapshots.delete(&old).await?;
        }
        metrics::counter!("folio_edge_yjs_snapshot_bytes_written_total").increment(pointer.bytes);
        tracing::debug!(doc = %updates, %label, bytes = pointer.bytes, "compacted");
        Ok(Outcome::Compacted { label, next: tail, skipped: built.skipped })
    }
}
