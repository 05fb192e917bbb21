//! One JetStream subscription per table per edge process: an ordered consumer on the table's
//! subjects that applies every change event, in stream order, to every active shape of the
//! table and wakes their waiting clients.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use folio_proto::events::v1::{ChangeEvent, Operation};
use futures::{FutureExt, StreamExt};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use super::{
    catalog::TableInfo,
    error::{Result, ShapeError},
    messages::Prepared,
    shape::Shape,
};

/// Messages applied before waiting clients are woken: a transaction's events arrive together,
/// and one wake-up per batch keeps thousands of clients from waking per row.
const WAKE_BATCH: usize = 512;

pub struct TableFeed {
    pub filter: String,
    inner: Mutex<FeedInner>,
    /// Bumped on truncate and schema change: cached table descriptions are re-read.
    pub generation: AtomicU64,
    /// The subscription ended: the edge starts a new feed for the table's next request.
    pub dead: std::sync::atomic::AtomicBool,
}

struct FeedInner {
    /// Every event of the table up to here has been applied to the registered shapes.
    position: u64,
    shapes: Vec<Arc<Shape>>,
}

impl TableFeed {
    /// Starts the subscription right after the stream's current last sequence.
    pub async fn start(
        js: &jetstream::Context,
        stream_name: &str,
        filter: String,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| ShapeError::Unavailable(format!("{what}: {e}"));
        let mut stream = js
            .get_stream(stream_name)
            .await
            .map_err(|e| unavailable(&format!("open change stream {stream_name}"), &e))?;
        let last = stream.info().await.map_err(|e| unavailable("read change stream state", &e))?.state.last_sequence;
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: filter.clone(),
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: last + 1 },
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("subscribe to the table's changes", &e))?;
        let mut messages =
            consumer.messages().await.map_err(|e| unavailable("subscribe to the table's changes", &e))?;
        let feed = Arc::new(TableFeed {
            filter: filter.clone(),
            inner: Mutex::new(FeedInner { position: last, shapes: Vec::new() }),
            generation: AtomicU64::new(0),
            dead: std::sync::atomic::AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&feed);
        tokio::spawn(async move {
            tracing::debug!(filter, from = last + 1, "table feed started");
            loop {
                let first = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    m = messages.next() => m,
                };
                let mut batch = Vec::new();
                let mut broken = None;
                let mut next = first;
                loop {
                    match next {
                        Some(Ok(msg)) => {
                            let event =
                                msg.info().map_err(|e| format!("change message without metadata: {e}")).and_then(|i| {
                                    ChangeEvent::decode(msg.payload.as_ref())
                                        .map(|ev| (i.stream_sequence, ev))
                                        .map_err(|e| format!("undecodable change event at {}: {e}", i.stream_sequence))
                                });
                            match event {
                                Ok(e) => batch.push(e),
                                Err(e) => {
                                    // Skipping it would let shapes move past a change they never
                                    // applied: their clients start over instead.
                                    broken = Some(e);
                                    break;
                                }
                            }
                        }
                        Some(Err(e)) => {
                            // The ordered consumer recreates itself after a gap or reconnect.
                            tracing::warn!(filter, "table feed: {e}");
                            break;
                        }
                        None => {
                            broken = Some("the table's change subscription ended".to_owned());
                            break;
                        }
                    }
                    if batch.len() >= WAKE_BATCH {
                        break;
                    }
                    match messages.next().now_or_never() {
                        Some(m) => next = m,
                        None => break,
                    }
                }
                let Some(feed) = weak.upgrade() else { return };
                feed.apply(&batch);
                if let Some(reason) = broken {
                    tracing::error!(filter, "table feed stopped: {reason}");
                    feed.fail();
                    return;
                }
            }
        });
        Ok(feed)
    }

    fn apply(&self, batch: &[(u64, ChangeEvent)]) {
        let Some(&(last_seq, _)) = batch.last() else { return };
        if batch.iter().any(|(_, e)| {
            matches!(
                Operation::try_from(e.operation),
                Ok(Operation::Truncate | Operation::SchemaChange | Operation::ResnapshotRequired)
            )
        }) {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut touched = vec![false; inner.shapes.len()];
        for (seq, ev) in batch {
            // Shapes of one table description share the event's decoded rows.
            let mut prepared: Vec<Prepared<'_>> = Vec::with_capacity(1);
            for (i, shape) in inner.shapes.iter().enumerate() {
                let table: &TableInfo = &shape.def.table;
                let addr = table as *const TableInfo as usize;
                let k = match prepared.iter().position(|p| p.table == addr) {
                    Some(k) => k,
                    None => {
                        prepared.push(Prepared::new(table, ev));
                        prepared.len() - 1
                    }
                };
                touched[i] |= shape.apply(*seq, &prepared[k]);
            }
        }
        inner.position = inner.position.max(last_seq);
        for shape in &inner.shapes {
            shape.advance(last_seq);
        }
        let woken: Vec<Arc<Shape>> =
            inner.shapes.iter().zip(&touched).filter(|(_, t)| **t).map(|(s, _)| Arc::clone(s)).collect();
        inner.shapes.retain(|s| s.invalid_reason().is_none());
        drop(inner);
        for s in woken {
            s.notify();
        }
    }

    /// Ends the feed: its shapes are invalidated (their clients get 409 and start over on a new
    /// feed) and the edge creates a new feed for the table on the next request.
    fn fail(&self) {
        self.dead.store(true, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        let shapes = std::mem::take(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()).shapes);
        for s in shapes {
            s.invalidate("the table's change feed failed");
        }
    }

    /// Adds `shape`: from now on it receives every event after the feed's position, and its
    /// log starts there.
    pub fn register(&self, shape: Arc<Shape>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        shape.attach_at(inner.position);
        inner.shapes.push(shape);
    }

    /// Removes this very shape (not another one registered since under the same handle).
    pub fn unregister(&self, shape: &Arc<Shape>) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).shapes.retain(|s| !Arc::ptr_eq(s, shape));
    }
}
