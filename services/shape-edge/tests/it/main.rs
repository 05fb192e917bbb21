//! Integration tests: the real edge on port 0 against the real NATS server
//! (`FOLIO_NATS_URL`, default nats://127.0.0.1:4333), each test with its own JetStream prefix.

mod activity;
mod helpers;
mod index;
mod live;
mod path_tricks;
mod quotas;
mod recovery;
mod security;
mod shape_limits;
mod shapes;
mod streams;
mod subqueries;
mod subscriptions;
mod subsets;
mod transactions;
mod wakeups;
