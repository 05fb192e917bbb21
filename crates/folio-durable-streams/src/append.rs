//! POST: append (optionally closing the stream), with idempotent producers and `Stream-Seq`.

use std::{collections::HashMap, sync::Arc};

use async_nats::HeaderMap as NatsHeaders;
use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use folio_bus::StreamSeq;

use super::{
    Streams,
    error::{Result, StorageError, StreamError},
    headers::{self as h, value},
    hub::LiveSnapshot,
    json, media,
    meta::{ProducerState, ProducerTuple, StreamMeta, normalize_media_type, now_ms},
    offset::Offset,
    producer::{self, Decision},
    quota::Charge,
    store::path_hash,
};

impl Streams {
    pub async fn append(self: &Arc<Self>, path: &str, headers: &HeaderMap, body: Bytes) -> Result<Response> {
        let producer = producer::parse(headers)?;
        let closing = h::is_true(headers, h::STREAM_CLOSED);
        let content_type = h::get(headers, header::CONTENT_TYPE.as_str());
        let stream_seq = h::get(headers, h::STREAM_SEQ).map(str::to_owned);
        // A close-only request's type is ignored (the protocol's rule); data must be a type a
        // stream may have, whatever the stream's own.
        if !body.is_empty()
            && let Some(ct) = headers.get(header::CONTENT_TYPE)
        {
            media::check(ct)?;
        }
        if let Some(ct) = content_type
            && producer.is_none()
            && stream_seq.is_none()
            && !closing
            && !body.is_empty()
        {
            match self.append_batched(path, ct, body.clone()).await? {
                Batched::Stored(tail) => return Ok(response(StatusCode::NO_CONTENT, tail, false, None)),
                Batched::Alone => {}
            }
        }
        self.append_alone(path, headers, body).await
    }

    /// An append on its own, under the stream's write lock: the path of producers, `Stream-Seq`,
    /// closes, and of plain appends whose batch could not take them (see `append_batch`).
    async fn append_alone(&self, path: &str, headers: &HeaderMap, body: Bytes) -> Result<Response> {
        let producer = producer::parse(headers)?;
        let closing = h::is_true(headers, h::STREAM_CLOSED);
        let content_type = h::get(headers, header::CONTENT_TYPE.as_str());
        let stream_seq = h::get(headers, h::STREAM_SEQ).map(str::to_owned);
        let _guard = self.hub.write_lock(path).await;
        let wake_epoch = self.hub.wake_epoch();
        let v = self.live(path).await?;
        let mut meta = v.meta;
        let close_only = body.is_empty() && closing;
        if body.is_empty() && !closing {
            return Err(StreamError::bad("empty append: send data, or Stream-Closed: true to close"));
        }
        if meta.closed {
            // Even a refused or repeated close counts as a write for the idle TTL.
            self.hub.touch(&meta);
            if let (Some(p), Some(closer)) = (&producer, &meta.closed_by)
                && p == closer
            {
                let tail = self.store.tail(&meta).await?;
                return Ok(response(StatusCode::NO_CONTENT, tail, true, Some((p.epoch, p.seq))));
            }
            if close_only && producer.is_none() {
                let tail = self.store.tail(&meta).await?;
                return Ok(response(StatusCode::NO_CONTENT, tail, true, None));
            }
            let tail = self.store.tail(&meta).await?;
            return Err(StreamError::Closed { tail: Offset::at_seq(tail) });
        }
        if !close_only {
            check_type(content_type.ok_or_else(|| StreamError::bad("Content-Type is required with a body"))?, &meta)?;
        }
        let decision = match &producer {
            Some(p) => Some(producer::decide(meta.producers.get(&p.id).copied(), p, now_ms())?),
            None => None,
        };
        let decision = match (decision, &producer) {
            (Some(Decision::Accept(_)), Some(p)) if !close_only => {
                self.recover_producer(&mut meta, v.revision, p).await?.or(decision)
            }
            _ => decision,
        };
        if let (Some(Decision::Duplicate { last_seq }), Some(p)) = (decision, &producer) {
            self.hub.touch(&meta);
            let tail = self.store.tail(&meta).await?;
            return Ok(response(StatusCode::NO_CONTENT, tail, false, Some((p.epoch, last_seq))));
        }
        if let Some(seq) = &stream_seq
            && meta.last_stream_seq.as_ref().is_some_and(|last| seq.as_bytes() <= last.as_bytes())
        {
            return Err(StreamError::conflict("Stream-Seq must increase"));
        }
        let (payload, charge) = if close_only {
            (None, Charge::default())
        } else {
            let (payload, charge) = self.payload(path, &meta, &body).await?;
            (Some(payload), charge)
        };
        let tail = match payload {
            Some(payload) => {
                let subject = self.store.data_subject(&meta.incarnation);
                let bytes = payload.len() as u64;
                let stored = self.store.append(subject, producer_headers(producer.as_ref()), payload).await;
                let seq = match stored {
                    Ok(seq) => seq,
                    Err(e) => {
                        self.give_back(path, charge).await;
                        return Err(e.into());
                    }
                };
                metrics::counter!("folio_edge_stream_appends_total").increment(1);
                metrics::counter!("folio_edge_stream_appended_bytes_total").increment(bytes);
                seq
            }
            None => self.store.tail(&meta).await?,
        };
        // The bytes counted reach the metadata through the flusher (see `quota`), so delete and
        // expiry give back what was taken without a metadata write per append.
        if let Some(quotas) = &self.quotas {
            quotas.record_stored(&meta, charge.bytes);
        }
        let needs_meta = producer.is_some() || stream_seq.is_some() || closing;
        if needs_meta {
            let mut revision = v.revision;
            loop {
                if let (Some(Decision::Accept(state)), Some(p)) = (decision, &producer) {
                    meta.producers.insert(p.id.clone(), state);
                }
                if let Some(seq) = &stream_seq {
                    meta.last_stream_seq = Some(seq.clone());
                }
                if closing {
                    meta.closed = true;
                    meta.closed_by = producer.clone();
                }
                if self.store.update(&meta, revision).await?.is_some() {
                    break;
                }
                // Someone else (another edge, the access flusher) wrote: reapply on top.
                let fresh = self.store.load(path).await?.ok_or(StreamError::NotFound)?;
                if fresh.meta.incarnation != meta.incarnation {
                    return Err(StreamError::NotFound);
                }
                meta = fresh.meta;
                revision = fresh.revision;
            }
        }
        self.hub.touch(&meta);
        self.store.notify(path).await;
        // Still under the write lock: this edge's wake-ups of the path come in append order.
        self.hub.wake_with(&path_hash(path), wake_epoch, || LiveSnapshot { meta: meta.clone(), tail });
        self.subscriptions.stream_changed(path);
        let status = match (&producer, close_only) {
            (Some(_), false) => StatusCode::OK,
            _ => StatusCode::NO_CONTENT,
        };
        Ok(response(status, tail, closing, producer.as_ref().map(|p| (p.epoch, p.seq))))
    }
}

impl Streams {
    /// Producer state is written to the metadata after JetStream acknowledged the data, so a
    /// crash (or a failed metadata write) in between leaves the append stored but unrecorded.
    /// The stored message carries the producer headers: if the stream's last message is this
    /// producer's request (or a later one), the retry is a duplicate and the state is repaired.
    async fn recover_producer(
        &self,
        meta: &mut StreamMeta,
        revision: u64,
        p: &ProducerTuple,
    ) -> Result<Option<Decision>> {
        let Some(last) = self.store.last_message(&self.store.data_subject(&meta.incarnation)).await? else {
            return Ok(None);
        };
        let header = |name: &str| last.headers.get(name).map(|v| v.as_str().to_owned());
        let stored_seq = header("Producer-Seq").and_then(|s| s.parse::<u64>().ok());
        let same_producer = header("Producer-Id").as_deref() == Some(p.id.as_str())
            && header("Producer-Epoch").and_then(|e| e.parse::<u64>().ok()) == Some(p.epoch);
        match stored_seq {
            Some(seq) if same_producer && seq >= p.seq => {
                tracing::warn!(producer = %p.id, seq, "repairing producer state from the stored message");
                meta.producers
                    .insert(p.id.clone(), ProducerState { epoch: p.epoch, last_seq: seq, updated_ms: now_ms() });
                // Best effort: if this loses a race the next request repairs again.
                let _ = self.store.update(meta, revision).await?;
                Ok(Some(Decision::Duplicate { last_seq: seq }))
            }
            _ => Ok(None),
        }
    }
}

/// Plain appends (data only: no producer, no `Stream-Seq`, no close) waiting for their stream's
/// batch writer, by path. A path has an entry while its writer runs.
#[derive(Default)]
pub struct Queue(Mutex<HashMap<String, Vec<Pending>>>);

pub struct Pending {
    content_type: String,
    body: Bytes,
    reply: oneshot::Sender<Result<Batched>>,
}

pub enum Batched {
    /// Stored and acknowledged at this sequence.
    Stored(StreamSeq),
    /// The batch could not take it (the stream is missing, closed or unreadable): the request
    /// goes through `append_alone`, which gives the exact answer.
    Alone,
}

/// Appends written per batch at most (bounds the acknowledgements awaited at once).
const MAX_BATCH: usize = 256;

impl Queue {
    /// Queues `item`; true if the path has no writer yet (the caller starts one).
    fn push(&self, path: &str, item: Pending) -> bool {
        let mut map = self.0.lock();
        match map.get_mut(path) {
            Some(waiting) => {
                waiting.push(item);
                false
            }
            None => {
                map.insert(path.to_owned(), vec![item]);
                true
            }
        }
    }

    /// The next batch of `path`; empty (and the path's writer is done) when none is waiting.
    fn take(&self, path: &str) -> Vec<Pending> {
        let mut map = self.0.lock();
        match map.get_mut(path) {
            Some(waiting) if !waiting.is_empty() => {
                let n = waiting.len().min(MAX_BATCH);
                waiting.drain(..n).collect()
            }
            _ => {
                map.remove(path);
                Vec::new()
            }
        }
    }
}

impl Streams {
    /// Group commit for plain appends. Concurrent appends to one stream used to queue on its
    /// write lock, each paying a metadata read and a JetStream round trip in turn; now one
    /// writer task per stream takes everything waiting, reads the metadata once, publishes the
    /// batch back to back (JetStream stores one connection's publishes in order, so the
    /// offsets follow the queue) and answers each request with its own acknowledged sequence.
    /// Every append is still acknowledged only after JetStream acknowledged it, and checked
    /// against metadata read after it arrived. The writer is a task of its own so a client
    /// that goes away cannot abandon the others' appends half-way.
    async fn append_batched(self: &Arc<Self>, path: &str, content_type: &str, body: Bytes) -> Result<Batched> {
        let (reply, answer) = oneshot::channel();
        let item = Pending { content_type: content_type.to_owned(), body, reply };
        if self.appends.push(path, item) {
            let (streams, path) = (Arc::clone(self), path.to_owned());
            self.tasks.spawn(async move {
                loop {
                    let batch = streams.appends.take(&path);
                    if batch.is_empty() {
                        return;
                    }
                    streams.append_batch(&path, batch).await;
                }
            });
        }
        answer.await.map_err(|_| StorageError::new("append", "the stream's batch writer stopped"))?
    }

    async fn append_batch(&self, path: &str, batch: Vec<Pending>) {
        let _guard = self.hub.write_lock(path).await;
        let wake_epoch = self.hub.wake_epoch();
        let meta = match self.live(path).await {
            Ok(v) if !v.meta.closed => v.meta,
            _ => {
                for p in batch {
                    let _ = p.reply.send(Ok(Batched::Alone));
                }
                return;
            }
        };
        let subject = self.store.data_subject(&meta.incarnation);
        let mut sent = Vec::with_capacity(batch.len());
        for p in batch {
            let (payload, charge) = match self.prepare(path, &meta, &p).await {
                Ok(prepared) => prepared,
                Err(e) => {
                    let _ = p.reply.send(Err(e));
                    continue;
                }
            };
            let bytes = payload.len() as u64;
            match self.store.send(subject.clone(), NatsHeaders::new(), payload).await {
                Ok(ack) => sent.push((p, ack, charge, bytes)),
                Err(e) => {
                    self.give_back(path, charge).await;
                    let _ = p.reply.send(Err(e.into()));
                }
            }
        }
        let mut tail = None;
        for (p, ack, charge, bytes) in sent {
            match ack.await {
                Ok(ack) => {
                    let seq = StreamSeq::new(ack.sequence);
                    if let Some(quotas) = &self.quotas {
                        quotas.record_stored(&meta, charge.bytes);
                    }
                    metrics::counter!("folio_edge_stream_appends_total").increment(1);
                    metrics::counter!("folio_edge_stream_appended_bytes_total").increment(bytes);
                    tail = tail.max(Some(seq));
                    let _ = p.reply.send(Ok(Batched::Stored(seq)));
                }
                Err(e) => {
                    self.give_back(path, charge).await;
                    let _ = p.reply.send(Err(StorageError::new("get the JetStream acknowledgement", e).into()));
                }
            }
        }
        let Some(tail) = tail else { return };
        self.hub.touch(&meta);
        self.store.notify(path).await;
        self.hub.wake_with(&path_hash(path), wake_epoch, || LiveSnapshot { meta: meta.clone(), tail });
        self.subscriptions.stream_changed(path);
    }

    /// What one queued append stores, checked against the stream's metadata, and its quota.
    async fn prepare(&self, path: &str, meta: &StreamMeta, p: &Pending) -> Result<(Bytes, Charge)> {
        check_type(&p.content_type, meta)?;
        self.payload(path, meta, &p.body).await
    }

    /// What an append's body stores (a JSON stream's values split out), within the size limit,
    /// with its bytes reserved against the quotas. Alone or batched, an append goes through here.
    async fn payload(&self, path: &str, meta: &StreamMeta, body: &Bytes) -> Result<(Bytes, Charge)> {
        let payload = if meta.is_json() { Bytes::from(json::split_values(body, false)?.0) } else { body.clone() };
        if payload.len() > self.max_append {
            return Err(StreamError::TooLarge { limit: self.max_append });
        }
        let charge = match &self.quotas {
            Some(quotas) => quotas.reserve_bytes(path, payload.len() as u64).await?,
            None => Charge::default(),
        };
        Ok((payload, charge))
    }

    async fn give_back(&self, path: &str, charge: Charge) {
        if let Some(quotas) = &self.quotas {
            quotas.release(path, charge).await;
        }
    }
}

/// Data must be of the stream's own type.
fn check_type(content_type: &str, meta: &StreamMeta) -> Result<()> {
    if normalize_media_type(content_type) != meta.spec.media_type {
        return Err(StreamError::conflict(format!(
            "content type {content_type:?} does not match the stream's {:?}",
            meta.content_type
        )));
    }
    Ok(())
}

/// Recorded on each message so the producer history can be audited from JetStream alone.
fn producer_headers(p: Option<&ProducerTuple>) -> NatsHeaders {
    let mut headers = NatsHeaders::new();
    if let Some(p) = p {
        headers.insert("Producer-Id", p.id.as_str());
        headers.insert("Producer-Epoch", p.epoch.to_string().as_str());
        headers.insert("Producer-Seq", p.seq.to_string().as_str());
    }
    headers
}

fn response(status: StatusCode, tail: StreamSeq, closed: bool, producer: Option<(u64, u64)>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(h::STREAM_NEXT_OFFSET, value(Offset::at_seq(tail)));
    if closed {
        headers.insert(h::STREAM_CLOSED, HeaderValue::from_static("true"));
    }
    if let Some((epoch, seq)) = producer {
        headers.insert(h::PRODUCER_EPOCH, value(epoch));
        headers.insert(h::PRODUCER_SEQ, value(seq));
    }
    (status, headers).into_response()
}
