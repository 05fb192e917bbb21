//! pdf-render against real PostgreSQL, NATS JetStream and poppler-utils.

mod download;
mod helpers;
mod queue;
mod rendering;
mod sandbox;
mod signed_copy;
mod visibility;
