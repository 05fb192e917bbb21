//! Looking a stream up (with lazy expiry), deleting it, and the fork reference counts that
//! decide whether deleted data may be purged.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{
    Streams,
    error::{Result, StreamError},
    meta::now_ms,
    quota::Charge,
    store::{Versioned, path_hash},
};

/// How a lookup treats a stream that exists but may not be used.
pub enum Lookup {
    Live(Versioned),
    Missing,
    /// Deleted or expired while forks still read its data.
    SoftDeleted(Versioned),
}

impl Streams {
    /// Loads `path`, expiring it first if its TTL or deadline has passed.
    pub async fn lookup(&self, path: &str) -> Result<Lookup> {
        for _ in 0..8 {
            let Some(v) = self.store.load(path).await? else { return Ok(Lookup::Missing) };
            if v.meta.soft_deleted {
                return Ok(Lookup::SoftDeleted(v));
            }
            let last = self.hub.last_access(&v.meta.incarnation);
            if !v.meta.expired_at(now_ms(), last) {
                return Ok(Lookup::Live(v));
            }
            // Retry the lookup if another request changed the metadata meanwhile.
            self.retire(v).await?;
        }
        Err(StreamError::conflict("stream metadata is changing too fast, retry"))
    }

    /// Tells the other edges that `path` changed and wakes this edge's readers of it.
    pub(crate) async fn announce(&self, path: &str) {
        self.store.notify(path).await;
        self.hub.wake(&path_hash(path));
    }

    /// Like `lookup`, but only a live stream is an answer.
    pub async fn live(&self, path: &str) -> Result<Versioned> {
        match self.lookup(path).await? {
            Lookup::Live(v) => Ok(v),
            Lookup::Missing => Err(StreamError::NotFound),
            Lookup::SoftDeleted(_) => Err(StreamError::Gone),
        }
    }

    /// Deletes a stream: soft when forks still read through it, otherwise purges its data and
    /// releases its own reference on its source (which may cascade). `Ok(false)` when the
    /// metadata moved underneath and the caller should look again.
    pub async fn retire(&self, v: Versioned) -> Result<bool> {
        let Versioned { mut meta, revision } = v;
        if meta.fork_count > 0 {
            meta.soft_deleted = true;
            let done = self.store.update(&meta, revision).await?.is_some();
            if done {
                self.announce(&meta.path).await;
            }
            return Ok(done);
        }
        if !self.store.remove(&meta.path, revision).await? {
            return Ok(false);
        }
        self.store.purge(&self.store.data_subject(&meta.incarnation)).await?;
        // Its data is gone: the agency gets the stream's place and stored bytes back (a
        // soft-deleted stream keeps both while forks still read its data).
        if let Some(quotas) = &self.quotas {
            let bytes = meta.stored_bytes.saturating_add(quotas.take_unflushed(&meta.incarnation));
            quotas.release(&meta.path, Charge { streams: 1, bytes }).await;
        }
        self.hub.forget(&meta.incarnation);
        self.announce(&meta.path).await;
        self.subscriptions.stream_removed(&meta.path);
        if let Some(source) = meta.forked_from {
            Box::pin(self.release_fork_reference(&source)).await?;
        }
        Ok(true)
    }

    pub async fn add_fork_reference(&self, source: &Versioned) -> Result<()> {
        let mut current = source.clone();
        loop {
            current.meta.fork_count += 1;
            if self.store.update(&current.meta, current.revision).await?.is_some() {
                return Ok(());
            }
            current = self.store.load(&current.meta.path).await?.ok_or(StreamError::NotFound)?;
            if current.meta.incarnation != source.meta.incarnation || current.meta.soft_deleted {
                return Err(StreamError::conflict("fork source changed during fork creation"));
            }
        }
    }

    /// Drops one fork reference from `path`; purges it if it was only kept for its forks.
    pub async fn release_fork_reference(&self, path: &str) -> Result<()> {
        loop {
            let Some(mut v) = self.store.load(path).await? else { return Ok(()) };
            v.meta.fork_count = v.meta.fork_count.saturating_sub(1);
            if v.meta.soft_deleted && v.meta.fork_count == 0 {
                // Undo the soft-delete flag so retire() takes the purge path.
                v.meta.soft_deleted = false;
                if self.retire(v).await? {
                    return Ok(());
                }
                continue;
            }
            if self.store.update(&v.meta, v.revision).await?.is_some() {
                return Ok(());
            }
        }
    }
}

/// Slack before the sweep retires a stream, so reads on other edges whose access clock is not
/// flushed yet (about a second) cannot lose a race with it.
const SWEEP_SLACK_MS: i64 = 5_000;

/// Retires expired streams nobody reads any more; requests only expire what they touch.
pub async fn run_expiry_sweep(streams: Arc<Streams>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let keys = match streams.store.stream_keys().await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %folio_runtime::error_chain(&e), "expiry sweep failed to list streams");
                continue;
            }
        };
        let mut retired = 0u64;
        for key in keys {
            if shutdown.is_cancelled() {
                return;
            }
            let Ok(Some(v)) = streams.store.load_key(&key).await else { continue };
            let last = streams.hub.last_access(&v.meta.incarnation);
            if v.meta.soft_deleted || !v.meta.expired_at(now_ms() - SWEEP_SLACK_MS, last) {
                continue;
            }
            match streams.retire(v).await {
                Ok(true) => retired += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %folio_runtime::error_chain(&e), "expiry sweep failed to retire a stream")
                }
            }
        }
        if retired > 0 {
            tracing::info!(retired, "expiry sweep retired streams");
        }
    }
}
