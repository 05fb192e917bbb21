//! GET: catch-up reads and long-poll, plus the paging primitive SSE shares.

use std::sync::Arc;

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use folio_bus::StreamSeq;

use super::{
    Streams,
    chunk::Chunk,
    error::{Result, StreamError},
    headers::{self as h, value},
    hub::LiveSnapshot,
    meta::StreamMeta,
    offset::{Offset, next_cursor},
    query::{Live, ReadQuery, start_position, start_without_tail},
    store::path_hash,
};

/// Messages asked for per JetStream round trip.
const BATCH_MESSAGES: usize = 256;

/// A catch-up page being filled, bounded by the page size (the first message always fits).
struct Page {
    payloads: Vec<Bytes>,
    bytes: usize,
    max: usize,
    /// The last message taken (where the read started, before any).
    cursor: StreamSeq,
}

impl Page {
    fn new(after: StreamSeq, max: usize) -> Self {
        Page { payloads: Vec::new(), bytes: 0, max, cursor: after }
    }

    /// What is left of the page's size.
    fn left(&self) -> usize {
        self.max.saturating_sub(self.bytes)
    }

    /// Takes the message unless the page is full; whether it did.
    fn take(&mut self, seq: StreamSeq, payload: Bytes) -> bool {
        if !self.payloads.is_empty() && self.bytes + payload.len() > self.max {
            return false;
        }
        self.bytes += payload.len();
        self.cursor = seq;
        self.payloads.push(payload);
        true
    }

    fn into_chunk(self, next: StreamSeq, up_to_date: bool) -> Chunk {
        metrics::counter!("folio_edge_stream_read_bytes_total").increment(self.bytes as u64);
        Chunk {
            payloads: self.payloads,
            next,
            up_to_date,
            sse_data: Default::default(),
            sse_events: Default::default(),
        }
    }
}

impl Streams {
    /// Reads messages after `after` up to `tail`, stopping at the page size, so memory per
    /// reader is bounded by about one page.
    pub async fn read_chunk(&self, meta: &StreamMeta, after: StreamSeq, tail: StreamSeq) -> Result<Chunk> {
        let mut page = Page::new(after, self.config.max_read_bytes);
        let mut full = false;
        'segments: for segment in self.store.view(meta) {
            let bound = segment.end().min(tail);
            while page.cursor < bound {
                if page.left() == 0 {
                    full = true;
                    break 'segments;
                }
                // Ask for what is left of the page: JetStream's batch sends messages until their
                // bytes reach the budget, the one that crosses it included, and always at least
                // one (a message larger than the budget still comes, alone). Asking for more
                // than the page takes costs NATS and the edge bytes that are thrown away.
                let batch = self.store.batch(&segment.subject, page.cursor.next(), BATCH_MESSAGES, page.left()).await?;
                if batch.messages.is_empty() {
                    break;
                }
                for (seq, payload) in batch.messages {
                    if seq > bound {
                        continue 'segments;
                    }
                    if !page.take(seq, payload) {
                        full = true;
                        break 'segments;
                    }
                }
            }
        }
        let next = if full { page.cursor } else { tail };
        Ok(page.into_chunk(next, !full))
    }

    /// A catch-up page of a stream without inherited data, read without asking for its tail
    /// first: the end of each JetStream batch says how many messages of the stream's subject
    /// are left after it, so a page that reaches the end knows the tail from its own last
    /// message (the tail as of that batch, later than a tail read before it would be). Saves
    /// a round trip per page, and the last message that `last_by_subj` would send whole.
    /// `None` when the first batch is empty (the read starts at or past the tail): the caller
    /// reads the tail then, as before.
    async fn read_own_chunk(&self, meta: &StreamMeta, after: StreamSeq) -> Result<Option<Chunk>> {
        let subject = self.store.data_subject(&meta.incarnation);
        let base = StreamSeq::new(meta.base_seq);
        let mut page = Page::new(after, self.config.max_read_bytes);
        let up_to_date = loop {
            // What is left of the page, as in `read_chunk`.
            let batch = self.store.batch(&subject, page.cursor.next(), BATCH_MESSAGES, page.left()).await?;
            if batch.messages.is_empty() {
                if page.payloads.is_empty() {
                    return Ok(None);
                }
                // Nothing after `cursor`, one of the subject's own messages: it is the tail.
                break true;
            }
            let last = batch.messages.last().map(|(seq, _)| *seq);
            for (seq, payload) in batch.messages {
                if !page.take(seq, payload) {
                    break;
                }
            }
            // All of the batch taken and nothing after it: up to date.
            let taken_all = last == Some(page.cursor);
            if taken_all && batch.pending == Some(0) {
                break true;
            }
            if !taken_all || page.left() == 0 {
                break false;
            }
        };
        let next = if up_to_date { page.cursor.max(base) } else { page.cursor };
        Ok(Some(page.into_chunk(next, up_to_date)))
    }

    /// Metadata and tail for a live reader; after a wake-up (`woken` = notice version) the read
    /// is shared with every reader of the path woken by the same notice.
    pub async fn live_snapshot(&self, path: &str, key: &str, woken: Option<u64>) -> Result<Arc<LiveSnapshot>> {
        let fetch = || async {
            let meta = self.live(path).await?.meta;
            let tail = self.store.tail(&meta).await?;
            Ok::<_, StreamError>(Arc::new(LiveSnapshot { meta, tail }))
        };
        match woken {
            Some(version) => self.hub.snapshot_cell(key, version).get_or_try_init(fetch).await.cloned(),
            None => fetch().await,
        }
    }

    /// The page after `after` for a live reader, shared like `live_snapshot`.
    pub async fn live_page(
        &self,
        key: &str,
        woken: Option<u64>,
        snapshot: &LiveSnapshot,
        after: StreamSeq,
    ) -> Result<Arc<Chunk>> {
        let fetch = || async { self.read_chunk(&snapshot.meta, after, snapshot.tail).await.map(Arc::new) };
        match woken {
            Some(version) => self.hub.page_cell(key, version, after).get_or_try_init(fetch).await.cloned(),
            None => fetch().await,
        }
    }

    pub async fn get(self: &Arc<Self>, path: &str, query: ReadQuery, req: &HeaderMap) -> Result<Response> {
        match query.live {
            Live::No => self.catch_up(path, query, req).await,
            Live::LongPoll => self.long_poll(path, query, req).await,
            Live::Sse => self.sse(path, query).await,
        }
    }

    async fn catch_up(&self, path: &str, query: ReadQuery, req: &HeaderMap) -> Result<Response> {
        let v = self.live(path).await?;
        let meta = v.meta;
        self.hub.touch(&meta);
        // From a known position on a stream of its own data only, the page comes first and the
        // tail only if it found nothing.
        if meta.inherited.is_empty()
            && let Some(after) = start_without_tail(query.offset)
            && let Some(chunk) = self.read_own_chunk(&meta, after).await?
        {
            return Ok(self.data_response(&meta, after, &chunk, None, req));
        }
        let tail = self.store.tail(&meta).await?;
        let (after, at_now) = start_position(query.offset, tail);
        if at_now {
            let mut headers = base_headers(&meta);
            headers.insert(h::STREAM_NEXT_OFFSET, value(Offset::at_seq(tail)));
            headers.insert(h::STREAM_UP_TO_DATE, HeaderValue::from_static("true"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if meta.closed {
                headers.insert(h::STREAM_CLOSED, HeaderValue::from_static("true"));
            }
            let body = if meta.is_json() { b"[]".to_vec() } else { Vec::new() };
            return Ok((StatusCode::OK, headers, body).into_response());
        }
        let chunk = self.read_chunk(&meta, after, tail).await?;
        Ok(self.data_response(&meta, after, &chunk, None, req))
    }

    async fn long_poll(&self, path: &str, query: ReadQuery, req: &HeaderMap) -> Result<Response> {
        let mut changes = self.hub.watch(&path_hash(path));
        let _live = LiveGauge::new("long-poll");
        let deadline = tokio::time::Instant::now() + self.config.long_poll_timeout;
        let mut woken = None;
        let mut after = None;
        loop {
            let snapshot = self.live_snapshot(path, changes.key(), woken).await?;
            let (meta, tail) = (&snapshot.meta, snapshot.tail);
            self.hub.touch(meta);
            let after = *after.get_or_insert_with(|| start_position(query.offset, tail).0);
            if after < tail {
                let chunk = self.live_page(changes.key(), woken, &snapshot, after).await?;
                return Ok(self.data_response(meta, after, &chunk, Some(query.cursor.as_deref()), req));
            }
            if meta.closed {
                return Ok(no_content(meta, tail, None));
            }
            tokio::select! {
                changed = changes.changed() => match changed {
                    Ok(version) => woken = Some(version),
                    Err(_) => return Ok(no_content(meta, tail, Some(query.cursor.as_deref()))),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return Ok(no_content(meta, tail, Some(query.cursor.as_deref())));
                }
                _ = self.shutdown.cancelled() => {
                    return Ok(no_content(meta, tail, Some(query.cursor.as_deref())));
                }
            }
        }
    }

    fn data_response(
        &self,
        meta: &StreamMeta,
        after: StreamSeq,
        chunk: &Chunk,
        cursor: Option<Option<&str>>,
        req: &HeaderMap,
    ) -> Response {
        let closed_here = meta.closed && chunk.up_to_date;
        let etag = format!(
            "\"{}:{}:{}{}\"",
            meta.incarnation,
            Offset::at_seq(after),
            Offset::at_seq(chunk.next),
            if closed_here { ":c" } else { "" }
        );
        let mut headers = base_headers(meta);
        headers.insert(h::STREAM_NEXT_OFFSET, value(Offset::at_seq(chunk.next)));
        headers.insert(header::ETAG, value(&etag));
        if chunk.up_to_date {
            headers.insert(h::STREAM_UP_TO_DATE, HeaderValue::from_static("true"));
        }
        if closed_here {
            headers.insert(h::STREAM_CLOSED, HeaderValue::from_static("true"));
        }
        if let Some(client_cursor) = cursor
            && !closed_here
        {
            headers.insert(h::STREAM_CURSOR, value(next_cursor(client_cursor)));
        }
        // Pages behind the tail never change, so caches may keep them; the tail moves. Only an
        // open edge lets shared caches (CDNs) keep them: otherwise the page is one caller's,
        // and `public` would let a shared cache hand it to a request without a token.
        let cache = match (chunk.up_to_date, self.gate.is_open()) {
            (true, _) => "no-cache",
            (false, true) => "public, max-age=60, stale-while-revalidate=300",
            (false, false) => "private, max-age=60, stale-while-revalidate=300",
        };
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        let matches = req
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        if matches {
            headers.remove(header::CONTENT_TYPE);
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        (StatusCode::OK, headers, Body::from(chunk.body(meta))).into_response()
    }
}

pub fn base_headers(meta: &StreamMeta) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, value(&meta.content_type));
    headers
}

fn no_content(meta: &StreamMeta, tail: StreamSeq, cursor: Option<Option<&str>>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(h::STREAM_NEXT_OFFSET, value(Offset::at_seq(tail)));
    headers.insert(h::STREAM_UP_TO_DATE, HeaderValue::from_static("true"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if meta.closed {
        headers.insert(h::STREAM_CLOSED, HeaderValue::from_static("true"));
    } else if let Some(client_cursor) = cursor {
        headers.insert(h::STREAM_CURSOR, value(next_cursor(client_cursor)));
    }
    (StatusCode::NO_CONTENT, headers).into_response()
}

/// Counts open live readers (`folio_edge_stream_live_readers{mode}`) for as long as it is alive.
pub struct LiveGauge(&'static str);

impl LiveGauge {
    pub fn new(mode: &'static str) -> Self {
        metrics::gauge!("folio_edge_stream_live_readers", "mode" => mode).increment(1.0);
        LiveGauge(mode)
    }
}

impl Drop for LiveGauge {
    fn drop(&mut self) {
        metrics::gauge!("folio_edge_stream_live_readers", "mode" => self.0).decrement(1.0);
    }
}
