//! Folio's NATS contract, end to end: the subjects of the change and job streams
//! (`<root>.changes.<table>.<tenant>`, `…._all`, `…._txn`, `<root>.jobs.<kind>`), the message
//! id every event carries, the header names, the tenant rule, and the flags that name the
//! server, the subject root and the streams. Every service, bench and test asks this crate;
//! nothing else builds a subject.

pub mod args;
pub mod backlog;
pub mod headers;
pub mod msg_id;
pub mod seq;
pub mod subjects;
pub mod tenant;
pub mod trace_context;

pub use args::BusArgs;
pub use msg_id::{MsgKey, Part};
pub use seq::StreamSeq;
pub use subjects::Subjects;
