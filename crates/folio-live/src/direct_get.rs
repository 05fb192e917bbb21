//! JetStream's batched direct get: many messages of a subject filter in one round trip.

use std::time::Duration;

use bytes::Bytes;
use folio_bus::StreamSeq;
use futures::StreamExt;

const BATCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("failed to subscribe for a batched read")]
    Subscribe(#[source] async_nats::SubscribeError),
    #[error("failed to request a batched read")]
    Request(#[source] async_nats::PublishError),
    #[error("a batched read timed out")]
    TimedOut,
    #[error("a batched read's subscription closed")]
    Closed,
    #[error("a batched read answered status {code} {description}")]
    Status { code: u16, description: String },
    #[error("a batched read returned a message without Nats-Sequence")]
    NoSequence,
}

/// Up to `max_msgs` messages of `subject` (wildcards allowed) from sequence `from` on, from the
/// stream `stream`, in one round trip: JetStream's batched direct get (NATS >= 2.11, needs
/// `allow_direct`). The server stops early once it has sent about `max_bytes`, but always sends
/// at least one message; an empty result means there is none.
pub async fn direct_get_batch(
    nats: &async_nats::Client,
    stream: &str,
    subject: &str,
    from: StreamSeq,
    max_msgs: usize,
    max_bytes: usize,
) -> Result<Vec<(StreamSeq, Bytes)>, BatchError> {
    let inbox = nats.new_inbox();
    let mut replies = nats.subscribe(inbox.clone()).await.map_err(BatchError::Subscribe)?;
    let request = serde_json::json!({
        "seq": from.get().max(1), "next_by_subj": subject, "batch": max_msgs, "max_bytes": max_bytes,
    });
    nats.publish_with_reply(folio_bus::Subjects::direct_get(stream), inbox, request.to_string().into())
        .await
        .map_err(BatchError::Request)?;
    let mut out = Vec::new();
    loop {
        let msg = tokio::time::timeout(BATCH_TIMEOUT, replies.next())
            .await
            .map_err(|_| BatchError::TimedOut)?
            .ok_or(BatchError::Closed)?;
        match msg.status.map(|s| s.as_u16()) {
            // 204 ends a batch; 404 means there was nothing to send.
            Some(204) | Some(404) => break,
            Some(code) => {
                return Err(BatchError::Status { code, description: msg.description.unwrap_or_default().to_string() });
            }
            None => {}
        }
        let seq = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Sequence"))
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .ok_or(BatchError::NoSequence)?;
        out.push((StreamSeq::new(seq), msg.payload));
        if out.len() >= max_msgs {
            break;
        }
    }
    let _ = replies.unsubscribe().await;
    Ok(out)
}
