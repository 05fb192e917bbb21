//! Webhooks as the Standard Webhooks spec defines them: signing, and delivery through
//! `folio-webhook` (the SSRF-checked client the edge's webhook subscriptions use too).

pub mod deliver;
pub mod sign;
