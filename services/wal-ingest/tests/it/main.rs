//! wal-ingest against a real PostgreSQL and a real nats-server (FOLIO_DATABASE_URL,
//! FOLIO_NATS_URL; see folio-testkit). Every test has its own database, slot and streams.

mod admin;
mod crash;
mod events_consumer_ts;
mod fencing;
mod helpers;
mod markers;
mod replicated_properties;
mod rows;
mod secrets;
mod takeover;
mod trace;
mod transactions;
