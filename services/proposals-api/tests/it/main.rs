//! proposals-api against a real PostgreSQL through a real gRPC client on a random port.

mod client_links;
mod concurrency;
mod errors;
mod helpers;
mod hygiene;
mod lifecycle;
mod members;
mod notification_preferences;
mod renditions;
mod transports;
mod txids;
mod webhooks_admin;
