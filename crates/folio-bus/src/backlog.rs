//! How far a worker's durable consumer is behind its stream, and how many messages wait in its
//! dead-letter stream: the two numbers an operator watches per worker (the notifier and
//! pdf-render export them as gauges; KEDA scales on the first).

use async_nats::jetstream::{self, context::GetStreamErrorKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Messages matching the consumer's filter not yet delivered to it (`num_pending`).
    pub pending: u64,
    /// Delivered but not yet acknowledged (`num_ack_pending`): work in progress or stuck.
    pub ack_pending: u64,
    /// Messages in the dead-letter stream; 0 when it was never declared (nothing ever failed).
    pub dead_letters: u64,
}

/// Asks JetStream for the consumer's and the dead-letter stream's state.
pub async fn measure(
    js: &jetstream::Context,
    stream: &str,
    consumer: &str,
    dead_letter_stream: &str,
) -> Result<Backlog, async_nats::Error> {
    let work = js.get_stream(stream).await?;
    let info = work.consumer_info(consumer).await?;
    let dead_letters = match js.get_stream(dead_letter_stream).await {
        Ok(mut dead) => dead.info().await?.state.messages,
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(ref js) if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) => {
            0
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Backlog { pending: info.num_pending, ack_pending: info.num_ack_pending as u64, dead_letters })
}
