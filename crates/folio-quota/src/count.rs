//! Counted quotas: streams, bytes, shape definitions, live shapes per agency. Every change is a
//! compare-and-set on the key's revision, so concurrent reservations from any number of
//! replicas never pass the limit together and no increment or decrement is lost.
//!
//! A quota spent on every request (stored bytes per append) is **leased** instead
//! ([`Counters::spend`]): a replica reserves a chunk of the budget with one compare-and-set and
//! spends it under a local lock, reserving the next chunk in the background once half is spent.
//! Leases come out of the shared count like any reservation, so the amount spent never passes
//! the limit; the shared count exceeds what was spent by the leases not spent yet (at most
//! 1.5 chunks per replica and key), given back after `lease_ttl` idle and by
//! [`Counters::give_back`] at shutdown. See [`Counters::spend`] for the bound.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

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
    lease_ttl: Duration,
    /// Leases this replica holds, per key.
    held: RwLock<HashMap<QuotaKey, Arc<Held>>>,
}

/// What this replica holds of one key's budget.
struct Held {
    key: QuotaKey,
    state: Mutex<HeldState>,
}

struct HeldState {
    /// Leased and not spent yet: counted in the shared count, not spent by anyone.
    left: u64,
    /// The shared count after this replica's last lease (an estimate of the usage).
    seen: u64,
    last_used: Instant,
    /// A lease is being fetched in the background.
    refilling: bool,
    /// A task gives `left` back once the key is idle for `lease_ttl`.
    returning: bool,
    /// Near the limit, or NATS failed: no background lease until then (spends that do not fit
    /// what is held take their amount with a compare-and-set of their own).
    no_prefetch_until: Option<Instant>,
}

/// One counter call: a few KV round trips under contention, bounded as a whole.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl Counters {
    pub fn new(js: async_nats::jetstream::Context, args: &QuotaArgs, replicas: usize) -> Self {
        let bucket = Bucket::counts(js, args, replicas);
        Self {
            inner: Arc::new(CountersInner {
                bucket,
                on_nats_down: args.counts_on_nats_down,
                lease_ttl: args.lease_ttl,
                held: RwLock::default(),
            }),
        }
    }

    /// Spends `amount` of `key`'s budget `limit` from a lease this replica holds: a local lock
    /// when the lease covers it, one compare-and-set otherwise, which takes the rest of `amount`
    /// plus up to `chunk` more (at most half of what is left under the limit, so near the limit
    /// leases shrink and the last of the budget is taken exactly). Once half a chunk is spent the
    /// next chunk is leased in the background. Undo a spend with [`Self::release`] (exact).
    ///
    /// Error bound, with N replicas spending one key: the amount spent never exceeds `limit`
    /// (leases come out of the shared count under its compare-and-set, like [`Self::reserve`]);
    /// the shared count exceeds what was spent by the unspent leases, at most `N × 1.5 × chunk`,
    /// so near the limit a replica may refuse while another still holds unspent budget, until
    /// that one gives it back (after `lease_ttl` idle, or at shutdown). A replica that dies
    /// holding a lease leaves it counted until the count is reconciled ([`Self::set`]).
    pub async fn spend(&self, key: &QuotaKey, amount: u64, limit: u64, chunk: u64) -> Result<Reservation, QuotaError> {
        if amount == 0 {
            return Ok(Reservation { used: None, limit });
        }
        let held = self.held(key);
        let now = Instant::now();
        let have = {
            let mut s = held.state.lock();
            s.last_used = now;
            if s.left >= amount {
                s.left -= amount;
                let used = Some(s.seen.saturating_sub(s.left));
                let prefetch = s.left.saturating_mul(2) < chunk
                    && !s.refilling
                    && s.no_prefetch_until.is_none_or(|until| until <= now);
                if prefetch {
                    s.refilling = true;
                }
                let start_returning = !s.returning;
                s.returning = true;
                drop(s);
                if prefetch {
                    self.spawn_refill(&held, limit, chunk);
                }
                if start_returning {
                    self.spawn_return(&held);
                }
                return Ok(Reservation { used, limit });
            }
            std::mem::take(&mut s.left)
        };
        // What is held does not cover it: lease the rest and the next chunk in one go.
        let need = amount - have;
        let leased = self
            .change_with(key, |used| match used.checked_add(need) {
                Some(after) if after <= limit => {
                    let extra = chunk.min((limit - after) / 2);
                    Ok((after + extra, (after + extra, extra)))
                }
                _ => Err(QuotaError::Exceeded {
                    key: key.clone(),
                    limit,
                    used: used.saturating_sub(have),
                    requested: amount,
                }),
            })
            .await;
        let mut s = held.state.lock();
        match leased {
            Ok((after, extra)) => {
                s.left += extra;
                s.seen = after;
                if extra < chunk {
                    s.no_prefetch_until = Some(Instant::now() + self.inner.lease_ttl);
                }
                let used = Some(after.saturating_sub(s.left));
                let start_returning = s.left > 0 && !s.returning;
                s.returning |= start_returning;
                drop(s);
                if start_returning {
                    self.spawn_return(&held);
                }
                metrics::counter!("folio_quota_leases_total", "policy" => "count").increment(1);
                Ok(Reservation { used, limit })
            }
            Err(e) => {
                // Nothing was taken: what was held stays held.
                s.left += have;
                drop(s);
                match e {
                    QuotaError::Unavailable { key, source } if self.inner.on_nats_down == FailureMode::Open => {
                        metrics::counter!("folio_quota_nats_unavailable_total", "kind" => "count", "policy" => "spend")
                            .increment(1);
                        tracing::warn!(%key, error = %error_chain(&source), "quota spend not recorded: NATS unreachable");
                        Ok(Reservation { used: None, limit })
                    }
                    e => Err(e),
                }
            }
        }
    }

    /// Gives back every lease this replica holds (at shutdown). A give-back NATS refuses stays
    /// held, for the idle task to retry.
    pub async fn give_back(&self) {
        let held: Vec<_> = self.inner.held.read().values().cloned().collect();
        for h in held {
            let amount = std::mem::take(&mut h.state.lock().left);
            if amount == 0 {
                continue;
            }
            if let Err(e) = self.release(&h.key, amount).await {
                tracing::warn!(key = %h.key, amount, error = %error_chain(&e), "quota lease not given back");
                h.state.lock().left += amount;
            }
        }
    }

    fn held(&self, key: &QuotaKey) -> Arc<Held> {
        if let Some(h) = self.inner.held.read().get(key) {
            return h.clone();
        }
        self.inner
            .held
            .write()
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Held {
                    key: key.clone(),
                    state: Mutex::new(HeldState {
                        left: 0,
                        seen: 0,
                        last_used: Instant::now(),
                        refilling: false,
                        returning: false,
                        no_prefetch_until: None,
                    }),
                })
            })
            .clone()
    }

    /// Leases the next chunk in a task of its own, so a caller that gives up cannot leave
    /// `refilling` set.
    fn spawn_refill(&self, held: &Arc<Held>, limit: u64, chunk: u64) {
        let (this, held) = (self.clone(), held.clone());
        tokio::spawn(async move {
            let leased = this
                .change_with(&held.key, |used| {
                    let extra = chunk.min(limit.saturating_sub(used) / 2);
                    if extra == 0 { Err(None::<QuotaError>) } else { Ok((used + extra, (used + extra, extra))) }
                })
                .await;
            let mut s = held.state.lock();
            s.refilling = false;
            match leased {
                Ok((after, extra)) => {
                    s.left += extra;
                    s.seen = after;
                    if extra < chunk {
                        s.no_prefetch_until = Some(Instant::now() + this.inner.lease_ttl);
                    }
                    metrics::counter!("folio_quota_leases_total", "policy" => "count").increment(1);
                }
                // Nothing left to lease, or NATS failed: spends go to NATS when what is held runs
                // out, and no background lease is tried for a while.
                Err(_) => s.no_prefetch_until = Some(Instant::now() + this.inner.lease_ttl.max(Duration::from_secs(1))),
            }
        });
    }

    /// Gives `held`'s lease back once the key has been idle for `lease_ttl`; ends when nothing
    /// is held.
    fn spawn_return(&self, held: &Arc<Held>) {
        let (this, held) = (self.clone(), held.clone());
        let ttl = self.inner.lease_ttl;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl).await;
                let amount = {
                    let mut s = held.state.lock();
                    if s.left == 0 && !s.refilling {
                        s.returning = false;
                        return;
                    }
                    if s.refilling || s.last_used.elapsed() < ttl {
                        continue;
                    }
                    std::mem::take(&mut s.left)
                };
                if let Err(e) = this.release(&held.key, amount).await {
                    tracing::warn!(key = %held.key, amount, error = %error_chain(&e), "quota lease not given back; retrying");
                    held.state.lock().left += amount;
                }
            }
        });
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
        self.change_with(key, |used| apply(used).map(|after| (after, after))).await
    }

    /// One compare-and-set loop: `apply` maps the count to the new count and what to return.
    async fn change_with<T, E: From<QuotaError>>(
        &self,
        key: &QuotaKey,
        apply: impl Fn(u64) -> Result<(u64, T), E>,
    ) -> Result<T, E> {
        let unavailable = |source| QuotaError::Unavailable { key: key.clone(), source };
        let updated = self.inner.bucket.update(key, |current| {
            let used = current.map(decode).unwrap_or(0);
            match apply(used) {
                Ok((after, out)) if after == used && current.is_some() => Write::Keep(Ok(out)),
                Ok((after, out)) => Write::Put(Bytes::from(after.to_string()), Ok(out)),
                Err(refused) => Write::Keep(Err(refused)),
            }
        });
        tokio::time::timeout(CALL_TIMEOUT, updated)
            .await
            .unwrap_or(Err(StoreError::TimedOut(CALL_TIMEOUT)))
            .map_err(|e| E::from(unavailable(e)))?
    }
}

/// A count is a decimal integer; anything else reads as 0 (and the next write repairs it).
fn decode(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).unwrap_or(0)
}
