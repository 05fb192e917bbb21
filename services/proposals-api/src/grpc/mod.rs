//! gRPC handlers: parse the request into domain values, call the store, convert the result.

pub mod admin_webhooks;
pub mod clients;
pub mod convert;
pub mod fields;
pub mod members;
pub mod preferences;
pub mod proposals;
pub mod templates;
