//! Webhooks as the Standard Webhooks spec defines them: signing (`folio_webhook::sign`, shared
//! with the API, which generates endpoint secrets), and delivery through `folio-webhook` (the
//! SSRF-checked client the edge's webhook subscriptions use too).

pub mod deliver;
pub use folio_webhook::sign;
