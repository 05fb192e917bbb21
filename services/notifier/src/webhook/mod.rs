//! Webhooks as the Standard Webhooks spec defines them: signing, SSRF-safe delivery.

pub mod deliver;
pub mod sign;
/// The SSRF policy lives in `folio-webhook`, shared with the edge's webhook subscriptions.
pub use folio_webhook::ssrf;
