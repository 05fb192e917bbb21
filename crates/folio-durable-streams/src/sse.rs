//! `live=sse`: catch up, then follow the tail, as `data` + `control` event pairs.
//!
//! Each page read from JetStream becomes exactly one data event (one JSON array, or one base64
//! string for binary streams) followed by its control event, so every data event parses on its
//! own. The body is pulled by hyper: nothing is read from JetStream faster than the client
//! consumes it, which bounds memory per slow reader to one page.

use std::{pin::Pin, sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use bytes::Bytes;
use folio_bus::StreamSeq;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{
    Streams,
    chunk::{Chunk, SseEvents},
    error::{Result, StreamError},
    headers as h,
    hub::{LiveSnapshot, Watch},
    meta::StreamMeta,
    offset::{Offset, next_cursor},
    query::{ReadQuery, start_position},
    read::LiveGauge,
    store::path_hash,
};

struct Follow {
    streams: Arc<Streams>,
    path: String,
    after: StreamSeq,
    /// Offset of the last control event sent, so an idle tail is announced once.
    announced: Option<StreamSeq>,
    cursor: Option<String>,
    changes: Watch,
    base64: bool,
    /// The connection's end (`--ds-sse-max-age`), the keep-alive ticks and the edge's
    /// shutdown: registered once per connection, not again at each wait (with many
    /// subscribers, every event made each of them re-register three wake-ups).
    deadline: Pin<Box<tokio::time::Sleep>>,
    keepalive: tokio::time::Interval,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
    /// The state the last step saw (at first, loaded at connect time), reused by the step
    /// that follows without waiting in between; a wait drops it, so whatever wakes the
    /// reader (or a keep-alive) reads again.
    current: Option<Arc<LiveSnapshot>>,
    /// Notice version of the last wake-up: the key of the reads shared with other readers.
    woken: Option<u64>,
    _gauge: LiveGauge,
}

impl Streams {
    pub async fn sse(self: &Arc<Self>, path: &str, query: ReadQuery) -> Result<Response> {
        let this = Arc::clone(self);
        let changes = self.hub.watch(&path_hash(path));
        let meta = self.live(path).await?.meta;
        self.hub.touch(&meta);
        let tail = self.store.tail(&meta).await?;
        let (after, _) = start_position(query.offset, tail);
        let base64 = needs_base64(&meta.spec.media_type);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if base64 {
            headers.insert(h::STREAM_SSE_DATA_ENCODING, HeaderValue::from_static("base64"));
        }
        let follow = Follow {
            streams: this,
            path: path.to_owned(),
            after,
            announced: None,
            cursor: query.cursor,
            changes,
            base64,
            deadline: Box::pin(tokio::time::sleep(self.config.sse_max_age)),
            keepalive: {
                let period = self.config.long_poll_timeout.max(Duration::from_secs(1));
                let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                keepalive
            },
            shutdown: Box::pin(self.shutdown.clone().cancelled_owned()),
            done: false,
            current: Some(Arc::new(LiveSnapshot { meta, tail })),
            woken: None,
            _gauge: LiveGauge::new("sse"),
        };
        let body = futures::stream::unfold(follow, |mut f| async move {
            if f.done {
                return None;
            }
            let out = f.step().await;
            Some((Ok::<_, std::convert::Infallible>(out), f))
        });
        Ok((StatusCode::OK, headers, Body::from_stream(body)).into_response())
    }
}

impl Follow {
    async fn snapshot(&self) -> Result<Arc<LiveSnapshot>> {
        self.streams.live_snapshot(&self.path, self.changes.key(), self.woken).await
    }

    async fn page(&self, snapshot: &LiveSnapshot) -> Result<Arc<Chunk>> {
        self.streams.live_page(self.changes.key(), self.woken, snapshot, self.after).await
    }

    /// Produces the next events; waits while the reader is at an open tail.
    async fn step(&mut self) -> Bytes {
        loop {
            let snapshot = match self.current.clone() {
                Some(s) => s,
                None => match self.snapshot().await {
                    Ok(s) => s,
                    Err(StreamError::NotFound | StreamError::Gone) => {
                        // Deleted or expired while followed: end the response; the client's
                        // reconnect gets the definitive status.
                        self.done = true;
                        return Bytes::new();
                    }
                    Err(e) => {
                        tracing::warn!(error = %folio_runtime::error_chain(&e), "sse read failed");
                        self.done = true;
                        return Bytes::new();
                    }
                },
            };
            self.current = Some(snapshot.clone());
            let (meta, tail) = (&snapshot.meta, snapshot.tail);
            self.streams.hub.touch(meta);
            if self.after < tail {
                let chunk = match self.page(&snapshot).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %folio_runtime::error_chain(&e), "sse read failed");
                        self.done = true;
                        return Bytes::new();
                    }
                };
                let closed = meta.closed && chunk.up_to_date;
                self.after = chunk.next;
                self.announced = Some(chunk.next);
                self.done = closed;
                // The control event depends only on the page, the stream's state and the
                // reader's cursor, so readers that connected alike share one copy of both
                // events (a fan-out used to write, allocate and copy them once per reader).
                let shared = chunk.sse_events.get_or_init(|| SseEvents {
                    cursor: self.cursor.clone(),
                    closed,
                    bytes: self.page_events(&chunk, meta, closed, true),
                });
                if shared.cursor == self.cursor && shared.closed == closed {
                    return shared.bytes.clone();
                }
                return self.page_events(&chunk, meta, closed, false);
            }
            if meta.closed {
                let mut out = String::new();
                event(&mut out, "control", &self.control(tail.max(self.after), true, true));
                self.done = true;
                return Bytes::from(out);
            }
            if self.announced != Some(self.after) {
                self.announced = Some(self.after);
                let mut out = String::new();
                event(&mut out, "control", &self.control(self.after, true, false));
                return Bytes::from(out);
            }
            self.current = None;
            tokio::select! {
                changed = self.changes.changed() => match changed {
                    Ok(version) => self.woken = Some(version),
                    Err(_) => {
                        self.done = true;
                        return Bytes::new();
                    }
                },
                _ = self.keepalive.tick() => {
                    let mut out = String::new();
                    event(&mut out, "control", &self.control(self.after, true, false));
                    return Bytes::from(out);
                }
                _ = self.deadline.as_mut() => {
                    self.done = true;
                    return Bytes::new();
                }
                _ = self.shutdown.as_mut() => {
                    self.done = true;
                    return Bytes::new();
                }
            }
        }
    }

    /// The page's data event followed by this reader's control event, in one buffer. The data
    /// event is encoded straight into it for the page's shared events (`shared`), so a page
    /// read by readers that connected alike holds its data twice (the messages and the events),
    /// not three times; readers with another cursor share one encoded data event and copy it.
    fn page_events(&self, chunk: &Chunk, meta: &StreamMeta, closed: bool, shared: bool) -> Bytes {
        let encode = |out: &mut String| {
            let body = chunk.body(meta);
            if self.base64 {
                event(out, "data", &base64::engine::general_purpose::STANDARD.encode(&body));
            } else {
                event(out, "data", &String::from_utf8_lossy(&body));
            }
        };
        let mut out;
        if shared {
            out = String::new();
            encode(&mut out);
            out.reserve(CONTROL_EVENT_BYTES);
        } else {
            let data = chunk.sse_data.get_or_init(|| {
                let mut data = String::new();
                encode(&mut data);
                data
            });
            out = String::with_capacity(data.len() + CONTROL_EVENT_BYTES);
            out.push_str(data);
        }
        event(&mut out, "control", &self.control(chunk.next, chunk.up_to_date, closed));
        Bytes::from(out)
    }

    fn control(&self, next: StreamSeq, up_to_date: bool, closed: bool) -> String {
        control_json(next, self.cursor.as_deref(), up_to_date, closed)
    }
}

/// Room for one control event (`event: control`, offset, cursor, flags) with its framing.
const CONTROL_EVENT_BYTES: usize = 160;

/// A control event's payload; the cursor is omitted once the stream is closed. Written by hand
/// (every SSE subscriber gets its own on each event): the keys in serde_json's order, the
/// values digits and `_` only (offsets and cursors), so nothing needs escaping.
pub fn control_json(next: StreamSeq, client_cursor: Option<&str>, up_to_date: bool, closed: bool) -> String {
    use std::fmt::Write as _;
    let mut control = String::with_capacity(112);
    control.push('{');
    if closed {
        control.push_str("\"streamClosed\":true,");
    } else {
        control.push_str("\"streamCursor\":\"");
        control.push_str(&next_cursor(client_cursor));
        control.push_str("\",");
    }
    let _ = write!(control, "\"streamNextOffset\":\"{}\"", Offset::at_seq(next));
    if up_to_date {
        control.push_str(",\"upToDate\":true");
    }
    control.push('}');
    control
}

/// Text and JSON travel as text; anything else is base64 so arbitrary bytes survive SSE.
fn needs_base64(media_type: &str) -> bool {
    !(media_type.starts_with("text/") || media_type == "application/json")
}

/// Writes one event; every line break style in the payload starts a new `data:` line, so a
/// payload can never inject its own event boundary.
pub fn event(out: &mut String, kind: &str, data: &str) {
    out.push_str("event: ");
    out.push_str(kind);
    out.push('\n');
    if !data.contains(['\r', '\n']) {
        out.push_str("data:");
        out.push_str(data);
        out.push_str("\n\n");
        return;
    }
    let normalized = data.replace("\r\n", "\n").replace('\r', "\n");
    for line in normalized.split('\n') {
        out.push_str("data:");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_line_breaks_cannot_forge_events() {
        let mut out = String::new();
        event(&mut out, "data", "a\r\n\r\nevent: control\rb");
        assert_eq!(out, "event: data\ndata:a\ndata:\ndata:event: control\ndata:b\n\n");
        let mut out = String::new();
        event(&mut out, "data", "[1,2]");
        assert_eq!(out, "event: data\ndata:[1,2]\n\n");
    }

    #[test]
    fn control_events_are_the_json_they_always_were() {
        // What serde_json wrote before the payload was written by hand.
        let old = |next: StreamSeq, cursor: Option<&str>, up_to_date: bool, closed: bool| {
            let mut control = serde_json::Map::new();
            control.insert("streamNextOffset".into(), Offset::at_seq(next).to_string().into());
            if closed {
                control.insert("streamClosed".into(), true.into());
            } else {
                control.insert("streamCursor".into(), cursor.unwrap_or("0").into());
            }
            if up_to_date {
                control.insert("upToDate".into(), true.into());
            }
            serde_json::Value::Object(control).to_string()
        };
        for (up_to_date, closed) in [(false, false), (true, false), (true, true), (false, true)] {
            let next = StreamSeq::new(42);
            let new = control_json(next, None, up_to_date, closed);
            let parsed: serde_json::Value = serde_json::from_str(&new).unwrap();
            let cursor = parsed.get("streamCursor").and_then(|c| c.as_str()).map(str::to_owned);
            assert_eq!(new, old(next, cursor.as_deref().or(Some("0")), up_to_date, closed));
        }
    }
}
