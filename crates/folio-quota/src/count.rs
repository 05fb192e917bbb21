//! Counted quotas: streams, bytes, shape definitions, live shapes per agency. Every change is a
//! compare-and-set on the key's revision, so concurrent reservations from any number of
//! replicas never pass the limit together and no increment or decrement is lost.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;

use crate::{
    FailureMode, QuotaArgs, QuotaKey,
    rate::error_chain,
    store::{Bucket, StoreError, Write},
};

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error("quota {key} is {used} of {limit}: {requested} more would exceed it")]
    Exceeded { key: QuotaKey, limit: u64, used: u64, requested: u64 },
    #[error("quota {key} cannot be checked")]
    Unavailable { key: QuotaKey, source: StoreError },
}

/// A granted reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// The count after it; `None` when NATS was down and counts fail open, so nothing was
    /// recorded (reconcile with [`Counters::set`]).
    pub used: Option<u64>,
    pub limit: u64,
}

/// Counted quotas over the shared KV bucket. Cheap to clone.
#[derive(Clone)]
pub struct Counters {
    inner: Arc<CountersInner>,
}

struct CountersInner {
    bucket: Bucket,
    on_nats_down: FailureMode,
}

/// One counter call: a few KV round trips under contention, bounded as a whole.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl Counters {
    pub fn new(js: async_nats::jetstream::Context, args: &QuotaArgs, replicas: usize) -> Self {
        let bucket = Bucket::counts(js, args, replicas);
        Self { inner: Arc::new(CountersInner { bucket, on_nats_down: args.counts_on_nats_down }) }
    }

    /// Adds `amount` to `key` if the result stays within `limit`; refuses otherwise.
    pub async fn reserve(&self, key: &QuotaKey, amount: u64, limit: u64) -> Result<Reservation, QuotaError> {
        let changed = self
            .change(key, |used| match used.checked_add(amount) {
                Some(after) if after <= limit => Ok(after),
                _ => Err(QuotaError::Exceeded { key: key.clone(), limit, used, requested: amount }),
            })
            .await;
        match changed {
            Ok(used) => Ok(Reservation { used: Some(used), limit }),
            Err(QuotaError::Unavailable { key, source }) if self.inner.on_nats_down == FailureMode::Open => {
                metrics::counter!("folio_quota_nats_unavailable_total", "kind" => "count", "policy" => "reserve")
                    .increment(1);
                tracing::warn!(%key, error = %error_chain(&source), "quota reservation not recorded: NATS unreachable");
                Ok(Reservation { used: None, limit })
            }
            Err(e) => Err(e),
        }
    }

    /// Takes `amount` off `key` (not below zero) and returns the count after it. Always fails
    /// when NATS is down, whatever the mode: a dropped decrement would count a deleted thing for
    /// ever, so the caller must retry or reconcile.
    pub async fn release(&self, key: &QuotaKey, amount: u64) -> Result<u64, QuotaError> {
        self.change(key, |used| Ok(used.saturating_sub(amount))).await
    }

    /// Sets the count, for reconciling it with the source of truth.
    pub async fn set(&self, key: &QuotaKey, used: u64) -> Result<(), QuotaError> {
        self.change(key, |_| Ok(used)).await.map(|_| ())
    }

    /// The current count (0 when never counted).
    pub async fn usage(&self, key: &QuotaKey) -> Result<u64, QuotaError> {
        let unavailable = |source| QuotaError::Unavailable { key: key.clone(), source };
        let read = tokio::time::timeout(CALL_TIMEOUT, self.inner.bucket.read(key))
            .await
            .unwrap_or(Err(StoreError::TimedOut(CALL_TIMEOUT)))
            .map_err(unavailable)?;
        Ok(read.value.as_deref().map(decode).unwrap_or(0))
    }

    async fn change(&self, key: &QuotaKey, apply: impl Fn(u64) -> Result<u64, QuotaError>) -> Result<u64, QuotaError> {
        let unavailable = |source| QuotaError::Unavailable { key: key.clone(), source };
        let updated = self.inner.bucket.update(key, |current| {
            let used = current.map(decode).unwrap_or(0);
            match apply(used) {
                Ok(after) if after == used && current.is_some() => Write::Keep(Ok(after)),
                Ok(after) => Write::Put(Bytes::from(after.to_string()), Ok(after)),
                Err(refused) => Write::Keep(Err(refused)),
            }
        });
        tokio::time::timeout(CALL_TIMEOUT, updated)
            .await
            .unwrap_or(Err(StoreError::TimedOut(CALL_TIMEOUT)))
            .map_err(unavailable)?
    }
}

/// A count is a decimal integer; anything else reads as 0 (and the next write repairs it).
fn decode(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).unwrap_or(0)
}
