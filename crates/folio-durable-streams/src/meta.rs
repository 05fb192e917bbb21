//! What the edge persists about each durable stream besides its messages (JetStream KV, one key
//! per stream path). Kept small: the tail is never stored, it is read from the data subject.

use std::collections::BTreeMap;

use folio_bus::StreamSeq;
use serde::{Deserialize, Serialize};

/// `(Producer-Id, Producer-Epoch, Producer-Seq)` of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerTuple {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    pub epoch: u64,
    pub last_seq: u64,
    pub updated_ms: i64,
}

/// A slice of an ancestor's data a fork reads through: messages of `subject` up to `upto`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub subject: String,
    pub upto: u64,
}

impl Segment {
    /// The last sequence readers of the fork see in this segment.
    pub fn end(&self) -> StreamSeq {
        StreamSeq::new(self.upto)
    }
}

/// The create request as given, kept to decide whether a repeated PUT is the same create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSpec {
    /// Normalized media type (lower-case, parameters dropped).
    pub media_type: String,
    pub ttl_secs: Option<u64>,
    pub expires_at: Option<String>,
    pub forked_from: Option<String>,
    pub fork_offset: Option<String>,
    pub fork_sub_offset: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamMeta {
    pub path: String,
    /// Names this incarnation's data subject; a re-create after delete gets a new one.
    pub incarnation: String,
    /// Content type exactly as given at create, echoed on reads.
    pub content_type: String,
    pub spec: CreateSpec,
    /// Effective idle window (a fork without its own expiry inherits its source's).
    pub ttl_secs: Option<u64>,
    pub expires_at_ms: Option<i64>,
    pub expires_at: Option<String>,
    pub created_ms: i64,
    /// Last read or write as last flushed; the local access clock is more recent.
    pub last_access_ms: i64,
    pub closed: bool,
    pub closed_by: Option<ProducerTuple>,
    pub last_stream_seq: Option<String>,
    pub producers: BTreeMap<String, ProducerState>,
    /// Fork ancestry: segments of ancestors, oldest first, then this stream's own subject.
    pub inherited: Vec<Segment>,
    /// The offset this stream starts from (the fork point); 0 for plain streams.
    pub base_seq: u64,
    pub forked_from: Option<String>,
    /// Number of live forks reading through this stream's data.
    pub fork_count: u64,
    /// Deleted or expired while forks still read its data: invisible, but not purged.
    pub soft_deleted: bool,
    /// Bytes of this stream's own data counted against its agency's quota (recorded only while
    /// quotas are on), given back when the data is purged. Absent in metadata written before.
    #[serde(default)]
    pub stored_bytes: u64,
}

impl StreamMeta {
    /// The fork point: the sequence a fork's readers start after (zero for other streams).
    pub fn base(&self) -> StreamSeq {
        StreamSeq::new(self.base_seq)
    }

    pub fn is_json(&self) -> bool {
        self.spec.media_type == "application/json"
    }

    pub fn expired_at(&self, now_ms: i64, last_access_ms: i64) -> bool {
        if self.expires_at_ms.is_some_and(|at| now_ms >= at) {
            return true;
        }
        self.ttl_secs.is_some_and(|ttl| now_ms >= last_access_ms.max(self.last_access_ms) + ttl as i64 * 1000)
    }
}

/// `text/plain; charset=utf-8` → `text/plain`: the comparison the protocol uses for content types.
pub fn normalize_media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
