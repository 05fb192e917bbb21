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
    Ok(direct_get_batch_counted(nats, stream, subject, from, max_msgs, max_bytes).await?.messages)
}

/// One batched direct get's answer: its messages, and how many messages of the filter the
/// server still held after the last of them when it ended the batch.
#[derive(Debug, Default)]
pub struct Batch {
    pub messages: Vec<(StreamSeq, Bytes)>,
    /// `Nats-Num-Pending` of the end-of-batch marker, counted by the server as it ended the
    /// batch (recounted if the stream grew meanwhile): `Some(0)` means the last message returned
    /// was the filter's last. `None` when the server said nothing (no marker, or no count in it)
    /// or there was no message at all.
    pub pending: Option<u64>,
}

/// [`direct_get_batch`], with what the server counted after the batch ([`Batch::pending`]).
pub async fn direct_get_batch_counted(
    nats: &async_nats::Client,
    stream: &str,
    subject: &str,
    from: StreamSeq,
    max_msgs: usize,
    max_bytes: usize,
) -> Result<Batch, BatchError> {
    let inbox = nats.new_inbox();
    let mut replies = nats.subscribe(inbox.clone()).await.map_err(BatchError::Subscribe)?;
    let request = serde_json::json!({
        "seq": from.get().max(1), "next_by_subj": subject, "batch": max_msgs, "max_bytes": max_bytes,
    });
    nats.publish_with_reply(folio_bus::Subjects::direct_get(stream), inbox, request.to_string().into())
        .await
        .map_err(BatchError::Request)?;
    let mut out = Batch::default();
    loop {
        let msg = tokio::time::timeout(BATCH_TIMEOUT, replies.next())
            .await
            .map_err(|_| BatchError::TimedOut)?
            .ok_or(BatchError::Closed)?;
        match msg.status.map(|s| s.as_u16()) {
            // 204 ends a batch (with the count left after it); 404 means there was nothing to
            // send (and no end marker follows).
            Some(204) => {
                out.pending = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Num-Pending"))
                    .and_then(|v| v.as_str().parse::<u64>().ok())
                    .filter(|_| !out.messages.is_empty());
                break;
            }
            Some(404) => break,
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
        out.messages.push((StreamSeq::new(seq), msg.payload));
        // The server sends at most `max_msgs` messages, then its end marker, which carries the
        // count: read on to it.
        if out.messages.len() > max_msgs {
            break;
        }
    }
    let _ = replies.unsubscribe().await;
    Ok(out)
}
