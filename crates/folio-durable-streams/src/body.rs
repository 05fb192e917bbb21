//! Request bodies with a size limit that answers 413 instead of resetting the connection.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::error::{Result, StreamError};

/// Past this much, an oversized body is no longer drained: the connection is dropped instead.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Reads the body if it fits in `limit`. An oversized body is read to the end and discarded
/// (up to a bound) before answering, so HTTP/1.1 clients still receive the 413.
pub async fn read_limited(body: Body, limit: usize) -> Result<Bytes> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(StreamError::BodyRead)?;
        seen += chunk.len();
        if seen > limit {
            if seen > DRAIN_LIMIT {
                return Err(StreamError::TooLarge { limit });
            }
            buf.clear();
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if seen > limit {
        return Err(StreamError::TooLarge { limit });
    }
    Ok(buf.freeze())
}
