//! Per-edge coordination state: change notices for live readers, the write lock per stream,
//! and the local access clock behind sliding TTLs. Everything here is an optimisation or a
//! wake-up; the truth stays in JetStream.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use folio_bus::StreamSeq;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{OnceCell, watch};
use tokio_util::sync::CancellationToken;

use super::{
    chunk::Chunk,
    meta::{StreamMeta, now_ms},
    store::Store,
};

/// A stream's metadata and tail as one wake-up found them, shared by every reader woken by it.
pub struct LiveSnapshot {
    pub meta: StreamMeta,
    pub tail: StreamSeq,
}

type Shared<T> = Arc<OnceCell<Arc<T>>>;

/// Reads shared by the live readers of one path for one wake-up (notice version): with many
/// SSE subscribers on a stream, an append costs one metadata read, one tail read and one page
/// read on this edge, not one per subscriber.
#[derive(Default)]
struct SharedReads {
    version: u64,
    snapshot: Shared<LiveSnapshot>,
    pages: HashMap<StreamSeq, Shared<Chunk>>,
}

#[derive(Default)]
pub struct Hub {
    /// Keyed by path hash (what the notice subject carries). A sender is removed once no reader
    /// holds a receiver, so the map only grows with live readers.
    watchers: Mutex<HashMap<String, watch::Sender<u64>>>,
    writers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    shared: Mutex<HashMap<String, SharedReads>>,
    /// Source of notice versions. Global, so a version is never reused for a path even after
    /// its entries were dropped and re-created (a reused one could hit a stale shared read).
    versions: AtomicU64,
    /// Wake-ups that carried no snapshot (remote notices, deletes, reconnections), counted
    /// under the `watchers` lock: a writer's snapshot is only handed to readers when none
    /// happened since the writer read the metadata (see `wake_with`).
    plain_wakes: AtomicU64,
    access: Mutex<HashMap<String, Access>>,
}

struct Access {
    path: String,
    at_ms: i64,
    flushed: bool,
}

impl Hub {
    /// Subscribe before reading state, so a change between the read and the wait is not lost.
    pub fn watch(self: &Arc<Self>, path_hash: &str) -> Watch {
        let mut map = self.watchers.lock();
        let rx = map.entry(path_hash.to_owned()).or_insert_with(|| watch::channel(0).0).subscribe();
        Watch { rx, hub: Arc::clone(self), key: path_hash.to_owned() }
    }

    pub fn wake(&self, path_hash: &str) {
        let mut map = self.watchers.lock();
        self.plain_wakes.fetch_add(1, Ordering::SeqCst);
        if let Some(tx) = map.get(path_hash) {
            if tx.receiver_count() == 0 {
                map.remove(path_hash);
            } else {
                tx.send_replace(self.versions.fetch_add(1, Ordering::Relaxed) + 1);
            }
        }
    }

    pub fn wake_all(&self) {
        let mut map = self.watchers.lock();
        self.plain_wakes.fetch_add(1, Ordering::SeqCst);
        map.retain(|_, tx| tx.receiver_count() > 0);
        for tx in map.values() {
            tx.send_replace(self.versions.fetch_add(1, Ordering::Relaxed) + 1);
        }
    }

    /// Taken by a writer before it reads the metadata it will hand to readers in `wake_with`.
    pub fn wake_epoch(&self) -> u64 {
        let _map = self.watchers.lock();
        self.plain_wakes.load(Ordering::SeqCst)
    }

    /// Wakes the readers of `path_hash` with the state a local writer just produced (its
    /// metadata and acknowledged tail), so they skip the metadata and tail reads.
    ///
    /// Sound only if that state includes every change whose wake-up the readers might coalesce
    /// with this one. Local writes to a path are serialized (`write_lock`), and every other
    /// change (another edge's notice, a delete) wakes without a snapshot and bumps
    /// `plain_wakes`: if any happened since `epoch` (taken before the writer's metadata read),
    /// this falls back to a plain wake and the readers read for themselves. A change made after
    /// the writer's read arrives as a later notice, which wakes the readers again.
    pub fn wake_with(&self, path_hash: &str, epoch: u64, snapshot: impl FnOnce() -> LiveSnapshot) {
        let mut map = self.watchers.lock();
        if self.plain_wakes.load(Ordering::SeqCst) != epoch {
            drop(map);
            return self.wake(path_hash);
        }
        let Some(tx) = map.get(path_hash) else { return };
        if tx.receiver_count() == 0 {
            map.remove(path_hash);
            return;
        }
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        let cell = Arc::new(OnceCell::new_with(Some(Arc::new(snapshot()))));
        self.shared.lock().insert(path_hash.to_owned(), SharedReads { version, snapshot: cell, pages: HashMap::new() });
        tx.send_replace(version);
    }

    fn shared_reads<T>(&self, key: &str, version: u64, pick: impl FnOnce(&mut SharedReads) -> T) -> T {
        let mut map = self.shared.lock();
        // Every reader woken by a notice comes here twice (snapshot, page): no key copy then.
        if !map.contains_key(key) {
            map.insert(key.to_owned(), SharedReads::default());
        }
        let entry = map.get_mut(key).expect("inserted above");
        if entry.version > version {
            // A reader still on an older wake-up reads for itself. Moving the entry back would
            // let readers of that wake-up share a page built from another snapshot than theirs:
            // one that saw the stream closed at a later tail would send `streamClosed` after a
            // page that ends before the close's data, and stop.
            return pick(&mut SharedReads { version, ..Default::default() });
        }
        if entry.version < version {
            *entry = SharedReads { version, ..Default::default() };
        }
        pick(entry)
    }

    /// The once-per-wake-up snapshot cell of `key` at notice `version`.
    pub fn snapshot_cell(&self, key: &str, version: u64) -> Shared<LiveSnapshot> {
        self.shared_reads(key, version, |e| e.snapshot.clone())
    }

    /// The once-per-wake-up page cell of `key` at notice `version`, starting after `after`.
    pub fn page_cell(&self, key: &str, version: u64, after: StreamSeq) -> Shared<Chunk> {
        self.shared_reads(key, version, |e| e.pages.entry(after).or_default().clone())
    }

    /// Serializes writes to one stream on this edge (validate-then-append must not interleave).
    pub async fn write_lock(&self, path: &str) -> WriteGuard<'_> {
        let lock = {
            let mut map = self.writers.lock();
            map.entry(path.to_owned()).or_default().clone()
        };
        let guard = lock.clone().lock_owned().await;
        WriteGuard { hub: self, path: path.to_owned(), lock, _guard: guard }
    }

    /// Records a read or write for the sliding TTL (only streams with a TTL need the clock).
    pub fn touch(&self, meta: &StreamMeta) {
        if meta.ttl_secs.is_none() {
            return;
        }
        let mut map = self.access.lock();
        map.insert(meta.incarnation.clone(), Access { path: meta.path.clone(), at_ms: now_ms(), flushed: false });
    }

    pub fn last_access(&self, incarnation: &str) -> i64 {
        let map = self.access.lock();
        map.get(incarnation).map(|a| a.at_ms).unwrap_or(0)
    }

    pub fn forget(&self, incarnation: &str) {
        self.access.lock().remove(incarnation);
    }

    fn take_unflushed(&self) -> Vec<(String, String, i64)> {
        let mut map = self.access.lock();
        let now = now_ms();
        // Flushed entries idle for 10 minutes are dropped: the persisted clock is exact for them.
        map.retain(|_, a| !(a.flushed && now - a.at_ms > 600_000));
        map.iter_mut()
            .filter(|(_, a)| !a.flushed)
            .map(|(k, a)| {
                a.flushed = true;
                (a.path.clone(), k.clone(), a.at_ms)
            })
            .collect()
    }
}

/// A live reader's wake-up channel; the last one dropped removes the path's entry.
pub struct Watch {
    rx: watch::Receiver<u64>,
    hub: Arc<Hub>,
    key: String,
}

impl Watch {
    /// Waits for the next notice; returns its version (the key of the shared reads).
    pub async fn changed(&mut self) -> Result<u64, watch::error::RecvError> {
        self.rx.changed().await?;
        Ok(*self.rx.borrow_and_update())
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut map = self.hub.watchers.lock();
        // Our own receiver is still alive here, hence 1.
        if map.get(&self.key).is_some_and(|tx| tx.receiver_count() <= 1) {
            map.remove(&self.key);
            self.hub.shared.lock().remove(&self.key);
        }
    }
}

pub struct WriteGuard<'a> {
    hub: &'a Hub,
    path: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.hub.writers.lock();
        // Two references: the map's and ours (the owned guard holds a third while alive).
        if Arc::strong_count(&self.lock) <= 3 {
            map.remove(&self.path);
        }
    }
}

/// Wakes local readers whenever any edge announces a change, and all of them after a
/// reconnection to NATS (notices sent while the connection was down are lost; a reader woken
/// for nothing just reads again).
pub async fn run_notice_listener(
    store: Store,
    hub: Arc<Hub>,
    mut reconnects: folio_live::Reconnects,
    shutdown: CancellationToken,
) {
    let mut sub = match store.nats().subscribe(store.notify_wildcard()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("failed to subscribe to change notices, live reads fall back to timeouts: {e:#}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = reconnects.next() => hub.wake_all(),
            msg = sub.next() => match msg {
                Some(msg) => {
                    if store.is_own_notice(&msg.payload) {
                        continue;
                    }
                    if let Some(hash) = msg.subject.rsplit('.').next() {
                        hub.wake(hash);
                    }
                }
                None => return,
            }
        }
    }
}

/// Persists the local access clock of streams with a TTL, about once a second, so other edges
/// and a restarted edge see reads and writes made here.
pub async fn run_access_flusher(store: Store, hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (path, incarnation, at_ms) in hub.take_unflushed() {
            if let Ok(Some(mut v)) = store.load(&path).await
                && v.meta.incarnation == incarnation
                && v.meta.ttl_secs.is_some()
                && v.meta.last_access_ms < at_ms
            {
                v.meta.last_access_ms = at_ms;
                // Losing this race to a concurrent metadata write only delays the flush.
                let _ = store.update(&v.meta, v.revision).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::CreateSpec;

    fn snapshot(tail: u64) -> LiveSnapshot {
        let meta = StreamMeta {
            path: "p".into(),
            incarnation: "i".into(),
            content_type: "text/plain".into(),
            spec: CreateSpec {
                media_type: "text/plain".into(),
                ttl_secs: None,
                expires_at: None,
                forked_from: None,
                fork_offset: None,
                fork_sub_offset: 0,
            },
            ttl_secs: None,
            expires_at_ms: None,
            expires_at: None,
            created_ms: 0,
            last_access_ms: 0,
            closed: false,
            closed_by: None,
            last_stream_seq: None,
            producers: Default::default(),
            inherited: vec![],
            base_seq: 0,
            forked_from: None,
            fork_count: 0,
            soft_deleted: false,
            stored_bytes: 0,
        };
        LiveSnapshot { meta, tail: StreamSeq::new(tail) }
    }

    #[tokio::test]
    async fn a_writer_snapshot_reaches_readers_only_if_nothing_else_woke_them() {
        let hub = Arc::new(Hub::default());
        let mut reader = hub.watch("k");

        let epoch = hub.wake_epoch();
        hub.wake_with("k", epoch, || snapshot(7));
        let version = reader.changed().await.unwrap();
        let cell = hub.snapshot_cell("k", version);
        assert_eq!(cell.get().map(|s| s.tail), Some(StreamSeq::new(7)), "the writer's snapshot is shared");

        // Another edge's notice between the writer's metadata read and its wake-up: the
        // writer's state may miss that change, so readers must read for themselves.
        let epoch = hub.wake_epoch();
        hub.wake("other-path");
        hub.wake_with("k", epoch, || snapshot(9));
        let version = reader.changed().await.unwrap();
        assert!(hub.snapshot_cell("k", version).get().is_none(), "a plain wake-up, nothing pre-read");
    }

    #[test]
    fn a_reader_of_an_older_wake_up_reads_alone_and_leaves_the_newer_reads_shared() {
        let hub = Hub::default();
        let newer = hub.snapshot_cell("k", 2);
        let newer_page = hub.page_cell("k", 2, StreamSeq::new(5));
        assert!(newer.set(Arc::new(snapshot(9))).is_ok());

        let older = hub.snapshot_cell("k", 1);
        let older_page = hub.page_cell("k", 1, StreamSeq::new(5));
        assert!(!Arc::ptr_eq(&older, &newer) && older.get().is_none(), "the older reader reads its own snapshot");
        assert!(!Arc::ptr_eq(&older_page, &newer_page), "and its own page");
        assert!(!Arc::ptr_eq(&older_page, &hub.page_cell("k", 1, StreamSeq::new(5))), "unshared, not a second entry");

        assert!(Arc::ptr_eq(&newer, &hub.snapshot_cell("k", 2)), "the newer wake-up's reads are still shared");
        assert!(Arc::ptr_eq(&newer_page, &hub.page_cell("k", 2, StreamSeq::new(5))));
        assert!(!Arc::ptr_eq(&newer, &hub.snapshot_cell("k", 3)), "a later wake-up starts afresh");
    }
}
