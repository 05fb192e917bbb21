//! Taking snapshots within this edge's limits: how many run at once, and how many bytes of
//! snapshot chunks its shapes hold (the least recently used are dropped beyond the budget).

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use bytes::Bytes;
use folio_bus::StreamSeq;
use sqlx::PgPool;

use super::{
    error::{Result, ShapeError},
    feed::{TableFeed, Tap},
    messages::Stitch,
    shape::{self, Shape, ShapeDef},
    subset::{self, Subset},
};

/// A shape's snapshot as [`Snapshots::take`] took it.
pub struct Taken {
    pub seq0: StreamSeq,
    pub stitch: Stitch,
    pub chunks: Vec<Bytes>,
    pub sets: Vec<folio_shapes::ValueSet>,
    pub rows: super::messages::RowMap,
    pub tap: Option<Arc<Tap>>,
}

/// A subset snapshot's response body, with the snapshot it was read in and its row count.
pub struct SubsetAnswer {
    pub stitch: Stitch,
    pub rows: usize,
    pub body: Bytes,
}

pub struct Snapshots {
    pool: PgPool,
    /// Target size of one snapshot chunk.
    chunk_bytes: usize,
    /// Shared with subquery shapes re-reading their rows after a move.
    slots: Arc<tokio::sync::Semaphore>,
    /// Bytes of snapshot chunks held by this edge's shapes (each shape counts its own in).
    held: Arc<AtomicUsize>,
    budget: usize,
}

impl Snapshots {
    pub fn new(pool: PgPool, chunk_bytes: usize, max_concurrent: usize, budget: usize) -> Self {
        Snapshots {
            pool,
            chunk_bytes,
            slots: Arc::new(tokio::sync::Semaphore::new(max_concurrent.max(1))),
            held: Arc::default(),
            budget,
        }
    }

    /// Waits for one of the concurrent snapshot slots.
    pub async fn slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.slots.acquire().await.map_err(|e| ShapeError::internal("snapshot slots", e))
    }

    /// Takes `def`'s snapshot, stitched to the change stream at the feed's last transaction
    /// end: every transaction of the table up to it was committed before the snapshot starts
    /// (and the snapshot is retried until it sees them). A shape with subqueries gets the
    /// feed's events from there kept in a [`Tap`] (it registers with them), what its subqueries
    /// yield and its rows.
    pub async fn take(&self, def: &ShapeDef, feed: &TableFeed) -> Result<Taken> {
        let (tap, seq0, open) = match def.has_subqueries() {
            true => {
                let (tap, seq0, open) = feed.tap();
                (Some(tap), seq0, open)
            }
            false => (None, feed.committed(), None),
        };
        let sees = |s: &Stitch| feed.snapshot_sees_recent(s) && open.is_none_or(|xid| s.saw(xid));
        let (stitch, chunks, sets, rows) = shape::take_snapshot(&self.pool, def, seq0, self.chunk_bytes, sees).await?;
        Ok(Taken { seq0, stitch, chunks, sets, rows, tap })
    }

    /// What a subquery shape re-reads its rows with after a move.
    pub fn resync(&self, feed: &Arc<TableFeed>) -> shape::Resync {
        shape::Resync { pool: self.pool.clone(), feed: Arc::downgrade(feed), slots: Arc::clone(&self.slots) }
    }

    /// Runs a subset of `def` (see [`subset`](super::subset)) in a snapshot that sees every
    /// transaction `feed` has applied, within the same concurrency slots as shapes' snapshots.
    pub async fn subset(&self, def: &ShapeDef, feed: &TableFeed, subset: &Subset) -> Result<SubsetAnswer> {
        let _slot = self.slot().await?;
        let mark = subset::new_snapshot_mark();
        let (stitch, rows, body) =
            subset::query(&self.pool, def, subset, feed.committed(), mark, |s| feed.snapshot_sees_recent(s)).await?;
        Ok(SubsetAnswer { stitch, rows, body })
    }

    /// The counter a new shape adds its chunks to.
    pub fn counter(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.held)
    }

    /// Over the memory budget: the least recently used of the shapes `held` lists drop their
    /// snapshots (their handles stay valid for clients past the snapshot).
    pub fn trim(&self, held: impl FnOnce() -> Vec<Arc<Shape>>) {
        if self.held.load(Ordering::SeqCst) > self.budget {
            let mut held = held();
            held.sort_by_key(|s| s.last_used.load(Ordering::Relaxed));
            for s in held {
                if self.held.load(Ordering::SeqCst) <= self.budget {
                    break;
                }
                s.drop_snapshot();
            }
        }
        metrics::gauge!("folio_edge_shape_snapshot_bytes").set(self.held.load(Ordering::SeqCst) as f64);
    }
}
