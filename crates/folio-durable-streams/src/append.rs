//! POST: append (optionally closing the stream), with idempotent producers and `Stream-Seq`.

use async_nats::HeaderMap as NatsHeaders;
use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;

use folio_bus::StreamSeq;

use super::{
    Streams,
    error::{Result, StreamError},
    headers::{self as h, value},
    json, media,
    meta::{ProducerState, ProducerTuple, StreamMeta, normalize_media_type, now_ms},
    offset::Offset,
    producer::{self, Decision},
    quota::Charge,
    store::path_hash,
};

impl Streams {
    pub async fn append(&self, path: &str, headers: &HeaderMap, body: Bytes) -> Result<Response> {
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
        let _guard = self.hub.write_lock(path).await;
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
            let ct = content_type.ok_or_else(|| StreamError::bad("Content-Type is required with a body"))?;
            if normalize_media_type(ct) != meta.spec.media_type {
                return Err(StreamError::conflict(format!(
                    "content type {ct:?} does not match the stream's {:?}",
                    meta.content_type
                )));
            }
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
        let payload = if close_only {
            None
        } else if meta.is_json() {
            Some(Bytes::from(json::split_values(&body, false)?.0))
        } else {
            Some(body)
        };
        if payload.as_ref().is_some_and(|p| p.len() > self.max_append) {
            return Err(StreamError::TooLarge { limit: self.max_append });
        }
        let charge = match (&self.quotas, &payload) {
            (Some(quotas), Some(p)) => quotas.reserve_bytes(path, p.len() as u64).await?,
            _ => Charge::default(),
        };
        let tail = match payload {
            Some(payload) => {
                let subject = self.store.data_subject(&meta.incarnation);
                let bytes = payload.len() as u64;
                let stored = self.store.append(subject, producer_headers(producer.as_ref()), payload).await;
                let seq = match (stored, &self.quotas) {
                    (Err(e), Some(quotas)) => {
                        quotas.release(path, charge).await;
                        return Err(e.into());
                    }
                    (stored, _) => stored?,
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
        self.hub.wake(&path_hash(path));
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
