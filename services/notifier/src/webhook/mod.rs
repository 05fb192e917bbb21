//! Webhooks as the Standard Webhooks spec defines them: signing, SSRF-safe delivery.

pub mod deliver;
pub mod sign;
pub mod ssrf;
