//! One page of a stream's messages, the unit of catch-up reads, long-polls and SSE events.

use bytes::Bytes;
use folio_bus::StreamSeq;

use super::{json, meta::StreamMeta};

/// Messages of one page with the position after them.
pub struct Chunk {
    pub payloads: Vec<Bytes>,
    /// Sequence after the last message returned (the tail when up to date).
    pub next: StreamSeq,
    pub up_to_date: bool,
    /// The page as one SSE `data` event, encoded once for the live readers sharing the page
    /// that cannot send `sse_events` (they connected with another cursor).
    pub sse_data: std::sync::OnceLock<String>,
    /// The page's data event with its control event, as the first live reader to send it
    /// wrote them; readers that connected alike (the same cursor, or none) send these very
    /// bytes instead of writing their own.
    pub sse_events: std::sync::OnceLock<SseEvents>,
}

/// A page's SSE events for readers that connected with `cursor`.
pub struct SseEvents {
    pub cursor: Option<String>,
    pub closed: bool,
    pub bytes: bytes::Bytes,
}

impl Chunk {
    pub fn body(&self, meta: &StreamMeta) -> Vec<u8> {
        if meta.is_json() { json::array_of(self.payloads.iter().map(|b| b.as_ref())) } else { self.payloads.concat() }
    }
}
