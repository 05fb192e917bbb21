//! Quotas and rate limits per agency and per token, shared by every replica through NATS
//! JetStream KV (see the README for the defaults and the error bound).
//!
//! - [`RateLimiter`]: token buckets leased in batches, so a request costs a local lock;
//! - [`Counters`]: counted quotas with a check-and-reserve that never passes the limit;
//! - a refusal maps to HTTP 429 ([`Decision::to_http_response`]) or gRPC `RESOURCE_EXHAUSTED`
//!   ([`Decision::to_status`]).

mod args;
mod count;
mod key;
mod rate;
mod respond;
mod store;

pub use args::{FailureMode, QuotaArgs};
pub use count::{Counters, QuotaError, Reservation};
pub use key::{KeyError, QuotaKey};
pub use rate::{Decision, Outcome, RateLimiter, RatePolicy};
pub use respond::{RATELIMIT, RATELIMIT_POLICY};
pub use store::{RATE_KEY_MAX_AGE, StoreError};

/// Both kinds of limit over one NATS connection.
#[derive(Clone)]
pub struct Quotas {
    pub rates: RateLimiter,
    pub counts: Counters,
}

impl Quotas {
    /// Opens nothing yet: the buckets are created on first use, so this works while NATS is
    /// down. `replicas` is the deployment's `FOLIO_STREAM_REPLICAS`.
    pub fn new(nats: async_nats::Client, args: &QuotaArgs, replicas: usize) -> Self {
        let js = async_nats::jetstream::new(nats);
        Self { rates: RateLimiter::new(js.clone(), args, replicas), counts: Counters::new(js, args, replicas) }
    }
}
