//! Awareness streams stay small while in use.
//!
//! Presence is ephemeral: the provider reads an awareness stream from `now` and every client
//! re-sends its state every 15 s, so nobody needs the stream's history beyond the last few
//! heartbeats. Without trimming it would grow by one message per client per heartbeat for as
//! long as the document is open (the idle TTL only ends a stream nobody uses). Every
//! [`TRIM_EVERY`] appends through an edge, the stream is trimmed to its last [`KEPT`] messages.

use std::sync::Arc;

use folio_durable_streams::{StreamError, path::StreamPath};

use super::Yjs;

/// Messages an awareness stream keeps when trimmed: several heartbeats of a busy document, so a
/// reader catching up from a recent offset still finds everyone's state.
pub(crate) const KEPT: u64 = 64;
/// Appends to one awareness stream through this edge between trims.
pub(crate) const TRIM_EVERY: u32 = 64;
/// Awareness streams whose appends an edge counts; past this, the counts start again (a trim
/// then comes a little later).
const MAX_COUNTED_STREAMS: usize = 100_000;

impl Yjs {
    /// Counts an append to the awareness stream `path` and trims it every [`TRIM_EVERY`]
    /// appends, in the background. Never blocks or fails the append.
    pub(crate) fn awareness_appended(self: &Arc<Self>, path: &StreamPath) {
        {
            let mut counts = self.awareness_appends.lock();
            if counts.len() >= MAX_COUNTED_STREAMS && !counts.contains_key(path.as_str()) {
                counts.clear();
            }
            // Every cursor move comes through here: the path is copied only for a new stream.
            let count = match counts.get_mut(path.as_str()) {
                Some(count) => {
                    *count += 1;
                    count
                }
                None => counts.entry(path.as_str().to_owned()).or_insert(1),
            };
            if *count < TRIM_EVERY {
                return;
            }
            *count = 0;
        }
        let this = Arc::clone(self);
        let path = path.clone();
        self.tasks.spawn(async move {
            let trimmed = async {
                let meta = this.streams.live(path.as_str()).await?.meta;
                // A fork (through the streams API) reads through this stream's data: never
                // purged under it, as everywhere else in the streams.
                if meta.fork_count > 0 {
                    return Ok(false);
                }
                let store = this.streams.store();
                store.trim(&store.data_subject(&meta.incarnation), KEPT).await?;
                Ok::<_, StreamError>(true)
            };
            match trimmed.await {
                Ok(true) => metrics::counter!("folio_edge_yjs_awareness_trims_total").increment(1),
                Ok(false) => {}
                // Expired or deleted meanwhile: nothing left to trim.
                Err(StreamError::NotFound | StreamError::Gone) => {}
                Err(e) => tracing::warn!(stream = %path.as_str(), error = %folio_runtime::error_chain(&e), "failed to trim an awareness stream"),
            }
        });
    }
}
