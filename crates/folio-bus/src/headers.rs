//! Header names on Folio's JetStream messages.

/// JetStream's de-duplication id: a [`crate::MsgKey`] in text form on change and job messages.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// The previous message's id on the same stream: JetStream refuses a publish that skips one.
pub const EXPECTED_LAST_MSG_ID: &str = "Nats-Expected-Last-Msg-Id";
/// The transaction's commit LSN, `X/Y`.
pub const COMMIT_LSN: &str = "Folio-Commit-Lsn";
pub const XID: &str = "Folio-Xid";
/// `true` on a transaction's last message on a stream.
pub const LAST_IN_TRANSACTION: &str = "Folio-Last-In-Transaction";
/// W3C trace context of the span that published the message: wal-ingest's span of the
/// transaction, itself a child of the API call that committed it (see
/// [`crate::trace_context`]). Absent when the writer recorded no trace.
pub const TRACEPARENT: &str = "traceparent";
/// Why a dead-lettered job failed, and how often it was delivered.
pub const ERROR: &str = "Folio-Error";
pub const DELIVERIES: &str = "Folio-Deliveries";
