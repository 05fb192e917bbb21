//! Proposal activity as read-only durable streams: `/v1/stream/proposals/<proposal_id>/activity`.
//!
//! The data is wal-ingest's change events for the `proposals` table (JetStream stream
//! `FOLIO_CHANGES`, subjects `folio.changes.proposals.<agency_id>`), filtered to one proposal
//! and served as JSON messages. Offsets are that stream's sequences, so a reader resumes on any
//! edge; nothing is copied. Writes are refused with 405.
//!
//! Reads need the API's bearer token and only ever touch the caller's agency subject, so
//! another agency's proposal id finds nothing (404 is not needed: its events are never read).

use std::{sync::Arc, time::Duration};

use async_nats::jetstream;
use axum::{
    extract::Request,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use folio_bus::StreamSeq;
use folio_domain::{Lsn, ProposalId};
use folio_live::{Follower, Reconnects, direct_get_batch};
use folio_proto::{
    events::v1::{ChangeEvent, ColumnValue, Operation, column_value},
    prost::Message,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    Streams, StreamsConfig,
    error::{Result, StorageError, StreamError},
    headers::{self as h, value},
    hub::{Hub, Watch},
    offset::{Offset, next_cursor},
    query::{Live, parse_read_query, start_position},
    sse,
};

/// Most change events one response looks at, so a proposal with little activity in a long
/// stream cannot hold a request for an unbounded scan; the reader continues from the offset.
const MAX_SCAN: usize = 5_000;
const MAX_EVENTS: usize = 500;
const SCAN_BATCH: usize = 256;

pub struct Activity {
    js: jetstream::Context,
    nats: async_nats::Client,
    stream_name: String,
    subjects: folio_bus::Subjects,
    auth: folio_auth::Authenticator,
    /// Live readers' wake-ups, keyed by agency subject. They come from a JetStream consumer, so
    /// JetStream has stored the event before a reader is woken: a core NATS subscription to the
    /// same subject is told of a publish before the stream holds it, and a reader woken that way
    /// could read the tail too early, find nothing, and sleep until its timeout.
    hub: Arc<Hub>,
    /// Set once the edge follows the proposals' subjects (on the first live read).
    following: tokio::sync::OnceCell<()>,
    reconnects: Reconnects,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Activity {
    pub fn new(
        nats: async_nats::Client,
        config: &StreamsConfig,
        bus: &folio_bus::BusArgs,
        hub: Arc<Hub>,
        reconnects: Reconnects,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Activity {
            js: jetstream::new(nats.clone()),
            nats,
            stream_name: bus.changes_stream.clone(),
            subjects: bus.subjects(),
            auth: config.jwt.authenticator(),
            hub,
            following: tokio::sync::OnceCell::new(),
            reconnects,
            shutdown,
            tasks,
        }
    }

    /// A live reader's wake-ups for `subject`. The edge follows the proposals' subjects from
    /// before this returns, so every event stored after the reader then reads the tail wakes it.
    async fn watch(&self, stream: &jetstream::stream::Stream<()>, subject: &str) -> Result<Watch> {
        self.following
            .get_or_try_init(|| async {
                let from = self.tail(stream).await?;
                let mut follower = Follower::new(
                    self.js.clone(),
                    &self.stream_name,
                    self.subjects.table_filter("public", "proposals"),
                    from,
                    &self.reconnects,
                    self.shutdown.clone(),
                )
                .headers_only();
                let hub = Arc::downgrade(&self.hub);
                self.tasks.spawn(async move {
                    while let Some(batch) = follower.next_batch(256).await {
                        let Some(hub) = hub.upgrade() else { return };
                        for msg in batch {
                            hub.wake(msg.subject.as_str());
                        }
                    }
                });
                Ok::<_, StreamError>(())
            })
            .await?;
        Ok(self.hub.watch(subject))
    }

    /// The only subject a caller's reads touch: their own agency's proposal events.
    fn subject_for(&self, agency: folio_domain::AgencyId) -> String {
        self.subjects.row("public", "proposals", Some(&agency.to_string()))
    }

    async fn stream(&self) -> Result<jetstream::stream::Stream<()>> {
        self.js
            .get_stream_no_info(&self.stream_name)
            .await
            .map_err(|e| StorageError::new("open the change event stream", e).into())
    }

    async fn tail(&self, stream: &jetstream::stream::Stream<()>) -> Result<StreamSeq> {
        let info = stream.get_info().await.map_err(|e| StorageError::new("read the change event stream's state", e))?;
        Ok(StreamSeq::new(info.state.last_sequence))
    }

    /// Events of `proposal` after `after`, up to `tail`; returns them with the position reached.
    async fn read(
        &self,
        subject: &str,
        proposal: ProposalId,
        after: StreamSeq,
        tail: StreamSeq,
    ) -> Result<(Vec<serde_json::Value>, StreamSeq)> {
        let mut events = Vec::new();
        let mut cursor = after;
        let mut scanned = 0;
        'scan: while cursor < tail && scanned < MAX_SCAN && events.len() < MAX_EVENTS {
            let batch =
                direct_get_batch(&self.nats, &self.stream_name, subject, cursor.next(), SCAN_BATCH, 4 * 1024 * 1024)
                    .await
                    .map_err(|e| StorageError::new("read change events", e))?;
            if batch.is_empty() {
                break;
            }
            for (seq, payload) in batch {
                if seq > tail || scanned >= MAX_SCAN || events.len() >= MAX_EVENTS {
                    break 'scan;
                }
                cursor = seq;
                scanned += 1;
                match ChangeEvent::decode(payload.as_ref()) {
                    Ok(event) if concerns(&event, proposal) => events.push(event_json(&event, seq)),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(%seq, error = %folio_runtime::error_chain(&e), "skipping undecodable change event")
                    }
                }
            }
        }
        // Nothing further for this proposal up to the tail: the reader is caught up.
        if cursor < tail && scanned < MAX_SCAN && events.len() < MAX_EVENTS {
            cursor = tail;
        }
        Ok((events, cursor))
    }
}

impl Streams {
    /// `rest` is what follows `proposals/` (the whole `proposals/` root is reserved for these
    /// streams): `<proposal-id>/activity`, anything else is not found.
    pub async fn activity_request(self: &Arc<Self>, rest: &str, req: Request) -> Result<Response> {
        let proposal =
            rest.strip_suffix("/activity").and_then(|id| ProposalId::parse(id).ok()).ok_or(StreamError::NotFound)?;
        match *req.method() {
            Method::GET | Method::HEAD => {}
            _ => {
                let mut res = StreamError::MethodNotAllowed.into_response();
                res.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, OPTIONS"));
                return Ok(res);
            }
        }
        let activity = &self.activity;
        let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let caller = activity.auth.verify_header(authorization)?;
        let subject = activity.subject_for(caller.agency_id);
        let stream = activity.stream().await?;
        let tail = activity.tail(&stream).await?;
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if req.method() == Method::HEAD {
            headers.insert(h::STREAM_NEXT_OFFSET, value(Offset::at_seq(tail)));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return Ok((StatusCode::OK, headers).into_response());
        }
        let query = parse_read_query(req.uri().query())?;
        let (after, at_now) = start_position(query.offset, tail);
        let after = after.min(tail);
        if query.live == Live::No && at_now {
            headers.insert(h::STREAM_NEXT_OFFSET, value(Offset::at_seq(tail)));
            headers.insert(h::STREAM_UP_TO_DATE, HeaderValue::from_static("true"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return Ok((StatusCode::OK, headers, "[]").into_response());
        }
        if query.live == Live::No {
            let (events, next) = activity.read(&subject, proposal, after, tail).await?;
            return Ok(events_response(headers, events, next, next >= tail));
        }
        // Live reads register for wake-ups before reading, so an event stored in between still
        // wakes them. (The starting tail above may be older than that: reading again is cheap.)
        let mut wake = activity.watch(&stream, &subject).await?;
        if query.live == Live::Sse {
            return Ok(self.activity_sse(stream, subject, proposal, after, wake, query.cursor));
        }
        headers.insert(h::STREAM_CURSOR, value(next_cursor(query.cursor.as_deref())));
        let deadline = tokio::time::Instant::now() + self.config.long_poll_timeout;
        let mut position = after;
        loop {
            let tail = activity.tail(&stream).await?;
            let (events, next) = activity.read(&subject, proposal, position, tail).await?;
            position = next;
            if !events.is_empty() {
                return Ok(events_response(headers, events, next, next >= tail));
            }
            if next < tail {
                // A scan limit stopped the read short of the tail: go on without waiting.
                continue;
            }
            let woke = tokio::select! {
                w = tokio::time::timeout_at(deadline, wake.changed()) => matches!(w, Ok(Ok(_))),
                _ = self.shutdown.cancelled() => false,
            };
            if !woke {
                headers.insert(h::STREAM_NEXT_OFFSET, value(Offset::at_seq(position)));
                headers.insert(h::STREAM_UP_TO_DATE, HeaderValue::from_static("true"));
                headers.remove(header::CONTENT_TYPE);
                return Ok((StatusCode::NO_CONTENT, headers).into_response());
            }
        }
    }

    /// SSE over the change events: one data event (a JSON array) plus a control event per page,
    /// as for any JSON durable stream. The `@durable-streams/client` picks SSE for JSON streams.
    fn activity_sse(
        self: &Arc<Self>,
        stream: jetstream::stream::Stream<()>,
        subject: String,
        proposal: ProposalId,
        after: StreamSeq,
        wake: Watch,
        cursor: Option<String>,
    ) -> Response {
        struct Follow {
            streams: Arc<Streams>,
            stream: jetstream::stream::Stream<()>,
            subject: String,
            proposal: ProposalId,
            after: StreamSeq,
            announced: Option<StreamSeq>,
            wake: Watch,
            cursor: Option<String>,
            deadline: tokio::time::Instant,
            done: bool,
        }
        let follow = Follow {
            streams: Arc::clone(self),
            stream,
            subject,
            proposal,
            after,
            announced: None,
            wake,
            cursor,
            deadline: tokio::time::Instant::now() + self.config.sse_max_age,
            done: false,
        };
        let body = futures::stream::unfold(follow, |mut f| async move {
            if f.done {
                return None;
            }
            loop {
                let activity = &f.streams.activity;
                let page = match activity.tail(&f.stream).await {
                    Ok(tail) => activity.read(&f.subject, f.proposal, f.after, tail).await.map(|(e, n)| (e, n, tail)),
                    Err(e) => Err(e),
                };
                let (events, next, tail) = match page {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %folio_runtime::error_chain(&e), "activity sse read failed");
                        f.done = true;
                        return Some((Ok::<_, std::convert::Infallible>(Bytes::new()), f));
                    }
                };
                let mut out = String::new();
                if !events.is_empty() {
                    sse::event(&mut out, "data", &serde_json::Value::Array(events).to_string());
                }
                f.after = next;
                if !out.is_empty() || f.announced != Some(next) {
                    f.announced = Some(next);
                    sse::event(&mut out, "control", &sse::control_json(next, f.cursor.as_deref(), next >= tail, false));
                    return Some((Ok(Bytes::from(out)), f));
                }
                let keepalive = f.streams.config.long_poll_timeout.max(Duration::from_secs(1));
                tokio::select! {
                    w = f.wake.changed() => if w.is_err() { f.done = true; return Some((Ok(Bytes::new()), f)); },
                    _ = tokio::time::sleep(keepalive) => {
                        let mut out = String::new();
                        sse::event(&mut out, "control", &sse::control_json(f.after, f.cursor.as_deref(), true, false));
                        return Some((Ok(Bytes::from(out)), f));
                    }
                    _ = tokio::time::sleep_until(f.deadline) => { f.done = true; return Some((Ok(Bytes::new()), f)); }
                    _ = f.streams.shutdown.cancelled() => { f.done = true; return Some((Ok(Bytes::new()), f)); }
                }
            }
        });
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        (StatusCode::OK, headers, axum::body::Body::from_stream(body)).into_response()
    }
}

fn events_response(
    mut headers: HeaderMap,
    events: Vec<serde_json::Value>,
    next: StreamSeq,
    up_to_date: bool,
) -> Response {
    headers.insert(h::STREAM_NEXT_OFFSET, value(Offset::at_seq(next)));
    if up_to_date {
        headers.insert(h::STREAM_UP_TO_DATE, HeaderValue::from_static("true"));
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if up_to_date { "no-cache" } else { "private, max-age=60" }),
    );
    (StatusCode::OK, headers, axum::Json(serde_json::Value::Array(events))).into_response()
}

/// Whether the event is about `proposal`: its key column `id` is the proposal's id.
fn concerns(event: &ChangeEvent, proposal: ProposalId) -> bool {
    let id = proposal.to_string();
    event.primary_key.iter().any(|c| {
        c.name == "id" && matches!(&c.value, Some(column_value::Value::Text(t)) if t.eq_ignore_ascii_case(&id))
    })
}

fn row_json(columns: &[ColumnValue]) -> serde_json::Value {
    let mut row = serde_json::Map::new();
    for c in columns {
        let v = match &c.value {
            Some(column_value::Value::Text(t)) => serde_json::Value::String(t.clone()),
            Some(column_value::Value::UnchangedToast(true)) => serde_json::json!({ "unchanged_toast": true }),
            _ => serde_json::Value::Null,
        };
        row.insert(c.name.clone(), v);
    }
    serde_json::Value::Object(row)
}

fn event_json(e: &ChangeEvent, seq: StreamSeq) -> serde_json::Value {
    let operation = match Operation::try_from(e.operation).unwrap_or(Operation::Unspecified) {
        Operation::Insert => "insert",
        Operation::Update => "update",
        Operation::Delete => "delete",
        Operation::Truncate => "truncate",
        Operation::SchemaChange => "schema_change",
        Operation::ResnapshotRequired => "resnapshot_required",
        Operation::TransactionEnd => "transaction_end",
        Operation::Unspecified => "unspecified",
    };
    let commit_time = e.commit_time.as_ref().and_then(|t| {
        time::OffsetDateTime::from_unix_timestamp_nanos(t.seconds as i128 * 1_000_000_000 + t.nanos as i128)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
    });
    serde_json::json!({
        "offset": Offset::at_seq(seq).to_string(),
        "commit_lsn": Lsn(e.commit_lsn).to_string(),
        "xid": e.xid,
        "position": e.position,
        "commit_time": commit_time,
        "table": e.table,
        "operation": operation,
        "tenant": e.tenant,
        "primary_key": row_json(&e.primary_key),
        "new_row": if e.new_row.is_empty() { serde_json::Value::Null } else { row_json(&e.new_row) },
        "old_row": if e.old_row.is_empty() { serde_json::Value::Null } else { row_json(&e.old_row) },
    })
}
