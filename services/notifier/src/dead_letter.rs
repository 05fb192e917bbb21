//! Where change events the notifier cannot read go: `<root>.dead.notifier`, on the notifier's
//! own stream `<changes stream>_NOTIFIER_DEAD` (30 days), with the reason in `Folio-Error`.
//!
//! Dropping such an event would silently lose every notification it stood for (a proposal's
//! "sent" email included); parking it keeps it for an operator to read, count and replay, and
//! lets the consumer move on to the next event.

use std::time::Duration;

use async_nats::jetstream::{self, stream::Config as StreamConfig};
use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::transitions::RowError;

/// The job-kind token of the notifier's dead letters: `<root>.dead.notifier`.
pub const KIND: &str = "notifier";
/// Header naming the subject the event was read from.
pub const SUBJECT: &str = "Folio-Subject";
/// Header with the reason's metric label (the full reason is in `Folio-Error`).
pub const REASON: &str = "Folio-Reason";
/// Longest `Folio-Error` value; a reason quoting a huge column value is cut.
const MAX_ERROR_LEN: usize = 1024;

/// Why an event was parked; the label of `folio_notifier_dead_letters_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The payload is not a `ChangeEvent`.
    Undecodable,
    /// A column the notifier needs is not in the row.
    MissingColumn,
    /// A value cannot be parsed (a uuid, a number, a date out of range…).
    UnreadableValue,
    /// An insert, update or delete without its row.
    NoRow,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Undecodable => "undecodable",
            Reason::MissingColumn => "missing_column",
            Reason::UnreadableValue => "unreadable_value",
            Reason::NoRow => "no_row",
        }
    }
}

impl From<&RowError> for Reason {
    fn from(e: &RowError) -> Self {
        match e {
            RowError::Missing(_) => Reason::MissingColumn,
            RowError::Unreadable { .. } => Reason::UnreadableValue,
            RowError::NoRow(_) => Reason::NoRow,
        }
    }
}

/// One event to park.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    /// The event's id (its `Nats-Msg-Id`): also the dead letter's, so parking it again after a
    /// redelivery is dropped by JetStream's duplicate window.
    pub event_id: &'a str,
    pub subject: &'a str,
    pub payload: Bytes,
    pub reason: Reason,
    /// The error chain.
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("failed to declare the dead-letter stream {stream}")]
    Stream {
        stream: String,
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    #[error("failed to publish to {subject}")]
    Publish {
        subject: String,
        #[source]
        source: jetstream::context::PublishError,
    },
}

/// The notifier's dead-letter stream, declared on first use (most deployments never need it).
pub struct DeadLetters {
    js: jetstream::Context,
    stream: String,
    subject: String,
    replicas: usize,
    declared: OnceCell<()>,
}

impl DeadLetters {
    pub fn new(js: jetstream::Context, bus: &folio_bus::BusArgs) -> Self {
        Self {
            js,
            stream: stream_name(bus),
            subject: bus.subjects().dead_letters(KIND),
            replicas: bus.stream_replicas,
            declared: OnceCell::new(),
        }
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Publishes the event with its reason and waits for the stream's ack; logged at WARN and
    /// counted. The caller acks the event only after this returned `Ok`.
    pub async fn park(&self, letter: DeadLetter<'_>) -> Result<(), DeadLetterError> {
        self.declared
            .get_or_try_init(|| async {
                self.js
                    .get_or_create_stream(StreamConfig {
                        name: self.stream.clone(),
                        description: Some("change events the notifier could not read, reason in Folio-Error".into()),
                        subjects: vec![self.subject.clone()],
                        num_replicas: self.replicas,
                        max_age: Duration::from_secs(30 * 24 * 3600),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
                    .map_err(|source| DeadLetterError::Stream { stream: self.stream.clone(), source })
            })
            .await?;
        let reason = letter.reason.as_str();
        let detail = header_safe(&format!("{reason}: {}", letter.detail));
        let mut headers = async_nats::HeaderMap::new();
        if !letter.event_id.is_empty() {
            headers.insert(folio_bus::headers::MSG_ID, letter.event_id);
        }
        headers.insert(folio_bus::headers::ERROR, detail.as_str());
        headers.insert(REASON, reason);
        headers.insert(SUBJECT, header_safe(letter.subject).as_str());
        let publish = |source| DeadLetterError::Publish { subject: self.subject.clone(), source };
        let ack = self.js.publish_with_headers(self.subject.clone(), headers, letter.payload).await.map_err(publish)?;
        let ack = ack.await.map_err(publish)?;
        if !ack.duplicate {
            metrics::counter!("folio_notifier_dead_letters_total", "reason" => reason).increment(1);
        }
        tracing::warn!(
            event_id = letter.event_id,
            subject = letter.subject,
            reason,
            dead_letter_seq = ack.sequence,
            "parked an unreadable change event on the dead-letter subject: {}",
            letter.detail
        );
        Ok(())
    }
}

/// `<changes stream>_NOTIFIER_DEAD`: derived, so every deployment (and every test sandbox)
/// whose changes stream has its own name gets its own dead letters.
pub fn stream_name(bus: &folio_bus::BusArgs) -> String {
    format!("{}_NOTIFIER_DEAD", bus.changes_stream)
}

/// One header line: no CR or LF, at most [`MAX_ERROR_LEN`] bytes.
fn header_safe(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if out.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fit_on_one_header_line() {
        let long = format!("bad\r\nvalue {}", "é".repeat(2000));
        let safe = header_safe(&long);
        assert!(!safe.contains(['\r', '\n']));
        assert!(safe.len() <= MAX_ERROR_LEN);
    }
}
