//! What the edge's two HTTP products share for live reads over JetStream: a [`Follower`] that
//! hands out a subject filter's messages exactly once across NATS restarts, the batched
//! [`direct_get_batch`] every catch-up read uses, and the [`next_cursor`] that keeps live
//! request URLs from repeating. Positions are [`folio_bus::StreamSeq`]s throughout.

pub mod cursor;
pub mod direct_get;
pub mod follow;

pub use cursor::{CursorScale, next_cursor, unix_now};
pub use direct_get::{Batch, BatchError, direct_get_batch, direct_get_batch_counted};
pub use follow::{Follower, Reconnects};
