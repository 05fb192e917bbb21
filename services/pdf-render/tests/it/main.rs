//! pdf-render against real PostgreSQL, NATS JetStream and poppler-utils.

mod helpers;
mod queue;
mod rendering;
