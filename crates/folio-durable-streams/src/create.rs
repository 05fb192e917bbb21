//! PUT: create a stream (optionally closed, with TTL or deadline, or as a fork), idempotently.

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
    json,
    lifecycle::Lookup,
    media,
    meta::{CreateSpec, Segment, StreamMeta, normalize_media_type, now_ms},
    offset::Offset,
    path::StreamPath,
    quota::Charge,
    store::{Versioned, path_hash},
};

const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// A PUT request, parsed.
struct CreateRequest {
    content_type: Option<String>,
    spec: CreateSpec,
    expires_at_ms: Option<i64>,
    closed: bool,
}

fn parse_decimal(s: &str) -> Option<u64> {
    let ok = s == "0" || (!s.is_empty() && !s.starts_with('0') && s.bytes().all(|c| c.is_ascii_digit()));
    if ok { s.parse().ok() } else { None }
}

/// The stream a PUT forks (`Stream-Forked-From`, a URL path on this server), if any.
pub fn fork_source(headers: &HeaderMap) -> Result<Option<StreamPath>> {
    match headers.get(h::STREAM_FORKED_FROM) {
        None => Ok(None),
        Some(v) => {
            let v = v.to_str().map_err(|_| StreamError::bad("Stream-Forked-From must be a stream's path"))?;
            Ok(Some(StreamPath::from_reference(v.trim())?))
        }
    }
}

impl CreateRequest {
    fn parse(headers: &HeaderMap) -> Result<Self> {
        // A type outside the allow-list is refused, not replaced: the writer meant that type.
        let content_type = headers.get(header::CONTENT_TYPE).map(media::check).transpose()?.map(str::to_owned);
        let ttl_secs = match h::get(headers, h::STREAM_TTL) {
            Some(v) => Some(
                parse_decimal(v.trim())
                    .ok_or_else(|| StreamError::bad("Stream-TTL must be a non-negative integer of seconds"))?,
            ),
            None => None,
        };
        let expires_at = h::get(headers, h::STREAM_EXPIRES_AT).map(|s| s.trim().to_owned());
        let expires_at_ms = match &expires_at {
            Some(s) => {
                let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| StreamError::bad("Stream-Expires-At must be an RFC 3339 timestamp"))?;
                Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
            }
            None => None,
        };
        if ttl_secs.is_some() && expires_at.is_some() {
            return Err(StreamError::bad("give either Stream-TTL or Stream-Expires-At, not both"));
        }
        let forked_from = fork_source(headers)?.map(|p| p.as_str().to_owned());
        let fork_offset = h::get(headers, h::STREAM_FORK_OFFSET).map(|s| s.trim().to_owned());
        let fork_sub_offset = match h::get(headers, h::STREAM_FORK_SUB_OFFSET) {
            Some(v) => {
                let n = parse_decimal(v.trim())
                    .ok_or_else(|| StreamError::bad("Stream-Fork-Sub-Offset must be a non-negative integer"))?;
                if forked_from.is_none() {
                    return Err(StreamError::bad("Stream-Fork-Sub-Offset needs Stream-Forked-From"));
                }
                n
            }
            None => 0,
        };
        if fork_offset.is_some() && forked_from.is_none() {
            return Err(StreamError::bad("Stream-Fork-Offset needs Stream-Forked-From"));
        }
        if let Some(o) = &fork_offset {
            Offset::parse(o).map_err(|_| StreamError::bad("malformed Stream-Fork-Offset"))?;
        }
        let spec = CreateSpec {
            media_type: normalize_media_type(content_type.as_deref().unwrap_or(DEFAULT_CONTENT_TYPE)),
            ttl_secs,
            expires_at,
            forked_from,
            fork_offset,
            fork_sub_offset,
        };
        Ok(CreateRequest { content_type, spec, expires_at_ms, closed: h::is_true(headers, h::STREAM_CLOSED) })
    }

    /// Same create as the one that made `existing`? (A fork's type may be inherited.)
    fn matches(&self, existing: &StreamMeta) -> bool {
        let mut spec = self.spec.clone();
        if self.content_type.is_none() && spec.forked_from.is_some() {
            spec.media_type = existing.spec.media_type.clone();
        }
        spec == existing.spec && self.closed == existing.closed
    }
}

impl Streams {
    pub async fn create(&self, path: &str, headers: &HeaderMap, body: Bytes) -> Result<Response> {
        let req = CreateRequest::parse(headers)?;
        let _guard = self.hub.write_lock(path).await;
        match self.lookup(path).await? {
            Lookup::SoftDeleted(_) => {
                return Err(StreamError::conflict("a deleted stream at this path is still referenced by forks"));
            }
            Lookup::Live(v) => {
                if !req.matches(&v.meta) {
                    return Err(StreamError::conflict("stream exists with a different configuration"));
                }
                self.hub.touch(&v.meta);
                let tail = self.store.tail(&v.meta).await?;
                return Ok(created_response(&v.meta, tail, StatusCode::OK, None));
            }
            Lookup::Missing => {}
        }
        let incarnation = uuid::Uuid::new_v4().simple().to_string();
        let now = now_ms();
        let mut meta = StreamMeta {
            path: path.to_owned(),
            incarnation,
            content_type: req.content_type.clone().unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
            spec: req.spec.clone(),
            ttl_secs: req.spec.ttl_secs,
            expires_at_ms: req.expires_at_ms,
            expires_at: req.spec.expires_at.clone(),
            created_ms: now,
            last_access_ms: now,
            closed: req.closed,
            closed_by: None,
            last_stream_seq: None,
            producers: Default::default(),
            inherited: Vec::new(),
            base_seq: 0,
            forked_from: None,
            fork_count: 0,
            soft_deleted: false,
            stored_bytes: 0,
        };
        let mut prefix: Option<Bytes> = None;
        let mut source: Option<Versioned> = None;
        if let Some(source_path) = &req.spec.forked_from {
            let src = match self.lookup(source_path).await? {
                Lookup::Live(v) => v,
                Lookup::Missing => return Err(StreamError::NotFound),
                Lookup::SoftDeleted(_) => return Err(StreamError::conflict("fork source was deleted")),
            };
            if req.content_type.is_some() && src.meta.spec.media_type != req.spec.media_type {
                return Err(StreamError::conflict("fork content type differs from its source"));
            }
            if req.content_type.is_none() {
                meta.content_type = src.meta.content_type.clone();
                meta.spec.media_type = src.meta.spec.media_type.clone();
            }
            let src_tail = self.store.tail(&src.meta).await?;
            let fork_at = match &req.spec.fork_offset {
                Some(o) => Offset::parse(o).ok().and_then(Offset::seq).filter(|s| *s <= src_tail),
                None => Some(src_tail),
            }
            .ok_or_else(|| StreamError::bad("Stream-Fork-Offset is beyond the source's tail"))?;
            if req.spec.fork_sub_offset > 0 {
                prefix = Some(self.fork_prefix(&src.meta, fork_at, req.spec.fork_sub_offset).await?);
            }
            meta.inherited = self
                .store
                .view(&src.meta)
                .into_iter()
                .map(|s| Segment { upto: s.upto.min(fork_at.get()), subject: s.subject })
                .filter(|s| s.upto > 0)
                .collect();
            meta.base_seq = fork_at.get();
            meta.forked_from = Some(source_path.clone());
            if meta.ttl_secs.is_none() && meta.expires_at_ms.is_none() {
                meta.ttl_secs = src.meta.ttl_secs;
                meta.expires_at_ms = src.meta.expires_at_ms;
                meta.expires_at = src.meta.expires_at.clone();
            }
            source = Some(src);
        }
        // Validate the initial data before anything is written.
        let initial = match body {
            b if b.is_empty() => None,
            b if meta.is_json() => {
                let record = json::split_values(&b, true)?;
                (!record.0.is_empty()).then(|| Bytes::from(record.0))
            }
            b => Some(b),
        };
        if initial.as_ref().is_some_and(|b| b.len() > self.max_append) {
            return Err(StreamError::TooLarge { limit: self.max_append });
        }
        let charge = match &self.quotas {
            Some(quotas) => {
                let bytes = [&prefix, &initial].into_iter().flatten().map(|b| b.len() as u64).sum();
                quotas.reserve_stream(path, bytes).await?
            }
            None => Charge::default(),
        };
        meta.stored_bytes = charge.bytes;
        let tail = match self.store_new(&meta, source.as_ref(), [prefix, initial]).await {
            Ok(tail) => tail,
            Err(e) => {
                if let Some(quotas) = &self.quotas {
                    quotas.release(path, charge).await;
                }
                return Err(e);
            }
        };
        self.hub.touch(&meta);
        self.hub.wake(&path_hash(path));
        self.subscriptions.stream_changed(path);
        let location = match &self.config.public_url {
            Some(base) => Some(format!("{}/v1/stream/{path}", base.trim_end_matches('/'))),
            None => headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|host| format!("http://{host}/v1/stream/{path}")),
        };
        Ok(created_response(&meta, tail, StatusCode::CREATED, location))
    }

    /// Writes a new stream's data and metadata; its tail.
    async fn store_new(
        &self,
        meta: &StreamMeta,
        source: Option<&Versioned>,
        data: [Option<Bytes>; 2],
    ) -> Result<StreamSeq> {
        if let Some(src) = source {
            self.add_fork_reference(src).await?;
        }
        let subject = self.store.data_subject(&meta.incarnation);
        let mut tail = meta.base();
        for payload in data.into_iter().flatten() {
            tail = self.store.append(subject.clone(), NatsHeaders::new(), payload).await?;
        }
        if self.store.create(meta).await?.is_none() {
            // Another edge created it between our lookup and now: undo ours; a retry of this PUT
            // is then compared with theirs like any re-create.
            self.store.purge(&subject).await?;
            if let Some(src) = &meta.forked_from {
                self.release_fork_reference(src).await?;
            }
            return Err(StreamError::conflict("stream was created concurrently, retry"));
        }
        Ok(tail)
    }

    /// The first `n` bytes (or JSON values) of the source's first message after `fork_at`.
    async fn fork_prefix(&self, source: &StreamMeta, fork_at: StreamSeq, n: u64) -> Result<Bytes> {
        let tail = self.store.tail(source).await?;
        let mut found = None;
        for segment in self.store.view(source) {
            if fork_at >= segment.end().min(tail) {
                continue;
            }
            if let Some(msg) = self.store.next(&segment.subject, fork_at.next()).await?
                && StreamSeq::new(msg.sequence) <= segment.end().min(tail)
            {
                found = Some(msg.payload);
                break;
            }
        }
        let payload =
            found.ok_or_else(|| StreamError::bad("Stream-Fork-Sub-Offset: no append starts at the fork offset"))?;
        if source.is_json() {
            json::prefix_values(&payload, n)
                .map(Bytes::from)
                .ok_or_else(|| StreamError::bad("Stream-Fork-Sub-Offset is larger than the append"))
        } else if n as usize <= payload.len() {
            Ok(payload.slice(..n as usize))
        } else {
            Err(StreamError::bad("Stream-Fork-Sub-Offset is larger than the append"))
        }
    }
}

fn created_response(meta: &StreamMeta, tail: StreamSeq, status: StatusCode, location: Option<String>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, value(&meta.content_type));
    headers.insert(h::STREAM_NEXT_OFFSET, value(Offset::at_seq(tail)));
    if meta.closed {
        headers.insert(h::STREAM_CLOSED, HeaderValue::from_static("true"));
    }
    if let Some(l) = location {
        headers.insert(header::LOCATION, value(l));
    }
    (status, headers).into_response()
}
