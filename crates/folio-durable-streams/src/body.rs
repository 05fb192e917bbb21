//! Request bodies with a size limit that answers 413 instead of resetting the connection.

use axum::body::{Body, HttpBody};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::error::{Result, StreamError};

/// Past this much, an oversized body is no longer drained: the connection is dropped instead.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Reads the body if it fits in `limit`. An oversized body is read to the end and discarded
/// (up to a bound) before answering, so HTTP/1.1 clients still receive the 413.
pub async fn read_limited(body: Body, limit: usize) -> Result<Bytes> {
    // Sized once from Content-Length: growing by doubling copied a 1 MB append about twice over.
    let expected = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX).min(limit);
    let mut stream = body.into_data_stream();
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(StreamError::BodyRead)?;
        seen += chunk.len();
        if seen > limit {
            if seen > DRAIN_LIMIT {
                return Err(StreamError::TooLarge { limit });
            }
            first = None;
            buf.clear();
            continue;
        }
        // A body that arrives in one chunk is kept as it came, without a copy.
        match first.take() {
            None if buf.is_empty() => first = Some(chunk),
            Some(head) => {
                buf.reserve(expected.max(head.len() + chunk.len()));
                buf.extend_from_slice(&head);
                buf.extend_from_slice(&chunk);
            }
            None => buf.extend_from_slice(&chunk),
        }
    }
    if seen > limit {
        return Err(StreamError::TooLarge { limit });
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}
