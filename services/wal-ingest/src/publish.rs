//! JetStream side: stream declaration, the startup fence, and pipelined publishing with
//! `Nats-Msg-Id` dedupe, a `Nats-Expected-Last-Msg-Id` chain and acks awaited in order.
//!
//! Every message names the id of the message published before it on the same stream. The
//! server checks dedupe first and the chain second, so a replay is answered "duplicate" while
//! a publish after a lost one is refused (err 10070): the stream can neither skip nor reorder
//! an event, however many publishes are in flight. Changes and jobs are separate streams, so
//! each has its own chain and fence.

use std::{collections::VecDeque, future::Future, pin::Pin, time::Duration};

use async_nats::{
    HeaderMap,
    jetstream::{
        self, Context,
        context::PublishErrorKind,
        message::PublishMessage,
        publish::PublishAck,
        stream::{DiscardPolicy, RetentionPolicy, StorageType},
    },
};
use bytes::Bytes;
use futures::{StreamExt, stream::FuturesOrdered};
use prost::Message as _;
use tokio::time::Instant;

use crate::events::{Body, Outgoing, Target};
use folio_bus::{MsgKey, Subjects};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("failed to declare stream {stream}")]
    Declare {
        stream: String,
        #[source]
        source: async_nats::jetstream::context::CreateStreamError,
    },
    #[error("failed to read the last message of stream {stream} (the startup fence)")]
    Fence {
        stream: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to publish {key} on {subject}")]
    Send {
        key: MsgKey,
        subject: String,
        #[source]
        source: async_nats::jetstream::context::PublishError,
    },
    #[error("jetstream refused {key}")]
    Ack {
        key: MsgKey,
        #[source]
        source: async_nats::jetstream::context::PublishError,
    },
}

impl PublishError {
    /// A refused chain means another writer or a lost publish: the session must re-fence.
    pub fn is_broken_chain(&self) -> bool {
        matches!(self, PublishError::Ack { source, .. } if source.kind() == PublishErrorKind::WrongLastMessageId)
    }
}

#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub changes_stream: String,
    pub jobs_stream: String,
    pub replicas: usize,
    pub duplicate_window: Duration,
    pub changes_max_age: Duration,
    pub changes_max_bytes: i64,
    pub jobs_max_messages: i64,
}

/// Declares both streams; safe to run on every start (create or update to this config).
pub async fn declare_streams(js: &Context, subjects: &Subjects, s: &StreamSettings) -> Result<(), PublishError> {
    // The server caps the duplicate window at max_age; keep the window meaningful.
    let changes = jetstream::stream::Config {
        name: s.changes_stream.clone(),
        description: Some("Every committed row change, in commit order (wal-ingest).".into()),
        subjects: vec![subjects.changes_filter()],
        storage: StorageType::File,
        num_replicas: s.replicas,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_age: s.changes_max_age,
        max_bytes: s.changes_max_bytes,
        duplicate_window: s.duplicate_window,
        allow_direct: true,
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    };
    let jobs = jetstream::stream::Config {
        name: s.jobs_stream.clone(),
        description: Some("Jobs written in Postgres transactions (pg_logical_emit_message), in commit order.".into()),
        subjects: vec![subjects.jobs_filter()],
        storage: StorageType::File,
        num_replicas: s.replicas,
        retention: RetentionPolicy::WorkQueue,
        // A full queue refuses new jobs (ingest stalls and alerts) instead of dropping work.
        discard: DiscardPolicy::New,
        max_messages: s.jobs_max_messages,
        duplicate_window: s.duplicate_window,
        ..Default::default()
    };
    for config in [changes, jobs] {
        let stream = config.name.clone();
        js.create_or_update_stream(config).await.map_err(|source| PublishError::Declare { stream, source })?;
    }
    Ok(())
}

/// What a stream already holds: its last event's key (skip everything at or before it) and
/// message id (the head of the chain).
#[derive(Debug, Clone, Default)]
struct Lane {
    stream: String,
    fence: Option<MsgKey>,
    chain: Option<String>,
}

async fn load_lane(js: &Context, stream: &str) -> Result<Lane, PublishError> {
    let fence_err =
        |source: Box<dyn std::error::Error + Send + Sync>| PublishError::Fence { stream: stream.to_owned(), source };
    let mut handle = js.get_stream(stream).await.map_err(|e| fence_err(e.into()))?;
    let info = handle.info().await.map_err(|e| fence_err(e.into()))?;
    let (messages, last) = (info.state.messages, info.state.last_sequence);
    let mut lane = Lane { stream: stream.to_owned(), ..Default::default() };
    if messages == 0 || last == 0 {
        return Ok(lane);
    }
    match handle.get_raw_message(last).await {
        Ok(msg) => {
            let id = msg.headers.get(async_nats::header::NATS_MESSAGE_ID).map(|v| v.as_str().to_owned());
            lane.fence = id.as_deref().and_then(MsgKey::parse);
            lane.chain = id;
        }
        // A work queue deletes consumed jobs: the last one may be gone. The chain then starts
        // unanchored and the duplicate window alone covers replays of jobs.
        Err(e) if e.kind() == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound => {}
        Err(e) => return Err(fence_err(e.into())),
    }
    Ok(lane)
}

type AckFuture = Pin<Box<dyn Future<Output = Result<PublishAck, async_nats::jetstream::context::PublishError>> + Send>>;

/// Publishes in order on one connection and yields acks in the same order.
pub struct Publisher {
    js: Context,
    lanes: [Lane; 2],
    acks: FuturesOrdered<AckFuture>,
    /// `(sequence from Confirmations, key, sent at)` for each ack future, same order.
    pending: VecDeque<(u64, MsgKey, Instant)>,
    /// Traces are exported: put the transaction span's context in each message's headers.
    propagate_trace: bool,
}

pub struct Acked {
    pub seq: u64,
    pub latency: Duration,
}

impl Publisher {
    /// Reads both fences. Run at the start of every session: after a crash the streams may
    /// hold events the slot never confirmed.
    pub async fn start(js: Context, settings: &StreamSettings, propagate_trace: bool) -> Result<Self, PublishError> {
        let changes = load_lane(&js, &settings.changes_stream).await?;
        let jobs = load_lane(&js, &settings.jobs_stream).await?;
        for lane in [&changes, &jobs] {
            tracing::info!(stream = %lane.stream, fence = ?lane.fence.map(|k| k.to_string()), "startup fence");
        }
        Ok(Self { js, lanes: [changes, jobs], acks: FuturesOrdered::new(), pending: VecDeque::new(), propagate_trace })
    }

    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether `event` is already in its stream (at or before the fence) and must be skipped.
    pub fn is_fenced(&self, event: &Outgoing) -> bool {
        self.lanes[lane_index(event.target)].fence.is_some_and(|f| event.key <= f)
    }

    /// Sends one event (the caller checked the fence and counted it as `seq`); its ack is
    /// collected later through [`Publisher::next_ack`]. With traces exported, the event carries
    /// the current span's context (the transaction's); otherwise `traceparent`, the one its
    /// transaction recorded, so consumers still continue the writer's trace.
    pub async fn send(&mut self, event: Outgoing, seq: u64, traceparent: Option<&str>) -> Result<(), PublishError> {
        let id = event.key.to_string();
        let lane = &mut self.lanes[lane_index(event.target)];
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        if let Some(prev) = &lane.chain {
            headers.insert(async_nats::header::NATS_EXPECTED_LAST_MESSAGE_ID, prev.as_str());
        }
        headers.insert(folio_bus::headers::COMMIT_LSN, event.key.commit_lsn.to_string().as_str());
        headers.insert(folio_bus::headers::XID, event.xid.to_string().as_str());
        if event.last_in_transaction {
            headers.insert(folio_bus::headers::LAST_IN_TRANSACTION, "true");
        }
        if self.propagate_trace {
            folio_bus::trace_context::inject_into_nats(&mut headers);
        } else if let Some(traceparent) = traceparent {
            headers.insert(folio_bus::headers::TRACEPARENT, traceparent);
        }
        let payload = match event.body {
            Body::Change(mut change) => {
                change.position = event.key.position;
                change.last_in_transaction = event.last_in_transaction;
                change.commit_end_lsn = event.commit_end_lsn.map(|l| l.0).unwrap_or(0);
                // Concatenated protobuf fields merge: the pre-encoded column types complete it.
                let mut buf = Vec::with_capacity(change.encoded_len() + event.encoded_suffix.len());
                change.encode(&mut buf).expect("a Vec grows as needed");
                buf.extend_from_slice(&event.encoded_suffix);
                Bytes::from(buf)
            }
            Body::Job(bytes) => bytes,
        };
        let key = event.key;
        let ack = self
            .js
            .send_publish(event.subject.clone(), PublishMessage::build().payload(payload).headers(headers))
            .await
            .map_err(|source| PublishError::Send { key, subject: event.subject, source })?;
        lane.chain = Some(id);
        self.acks.push_back(std::future::IntoFuture::into_future(ack));
        self.pending.push_back((seq, key, Instant::now()));
        Ok(())
    }

    /// The next ack in publish order; pending forever when nothing is in flight.
    pub async fn next_ack(&mut self) -> Result<Acked, PublishError> {
        let Some(result) = self.acks.next().await else { return std::future::pending().await };
        let (seq, key, sent) = self.pending.pop_front().expect("one pending entry per ack future");
        let ack = result.map_err(|source| PublishError::Ack { key, source })?;
        if ack.duplicate {
            tracing::debug!(%key, "jetstream dropped a duplicate");
            metrics::counter!("folio_wal_ingest_duplicates_total").increment(1);
        }
        Ok(Acked { seq, latency: sent.elapsed() })
    }
}

fn lane_index(target: Target) -> usize {
    match target {
        Target::Changes => 0,
        Target::Jobs => 1,
    }
}
