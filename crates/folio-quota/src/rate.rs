//! Token-bucket rate limits shared by every replica, at the cost of a local lock per request.
//!
//! The shared bucket of a key lives in the KV bucket as `<tokens> <unix ms>` and refills at the
//! policy's rate up to its burst. A replica never asks it per request: it leases `rate x lease`
//! tokens with one compare-and-set and spends them locally, leasing the next batch in the
//! background once half is spent. A request waits on NATS only when its replica has no tokens
//! left and no lease on the way. When the shared bucket is empty, the replica refuses locally
//! until the next token is due, so a flood costs NATS nothing.
//!
//! Error bound: tokens only leave the shared bucket through leases, so over any window `T`
//! the admitted count is at most `burst + rate x T` plus what replicas held at the window's
//! start (each holds under 1.5 leases), and at least `rate x T - burst` minus what replicas
//! strand (leased, then forfeited after the lease TTL). With N replicas under load:
//! `|admitted - (burst + rate x T)| <= 1.5 x N x lease_tokens` (+ `rate x` clock skew, since the
//! refill uses each replica's wall clock; the stored time never moves backwards).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::{
    FailureMode, QuotaArgs, QuotaKey,
    store::{Bucket, StoreError, Write},
};

/// A rate: `rate` tokens a second, at most `burst` at once. The name labels metrics and headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePolicy {
    name: &'static str,
    rate: f64,
    burst: u32,
}

impl RatePolicy {
    /// `per_second` requests a second on average, up to `burst` at once (at least 1 each).
    pub fn per_second(name: &'static str, per_second: u32, burst: u32) -> Self {
        Self { name, rate: f64::from(per_second.max(1)), burst: burst.max(1) }
    }

    /// `quota` requests per `window` on average, all `quota` at once at most: for rates below
    /// one a second (shape definitions per 10 minutes).
    pub fn per_window(name: &'static str, quota: u32, window: Duration) -> Self {
        let quota = quota.max(1);
        Self { name, rate: f64::from(quota) / window.as_secs_f64().max(0.001), burst: quota }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Tokens a second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// How long an empty bucket takes to fill: the window `RateLimit-Policy` states.
    pub fn window(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.burst) / self.rate)
    }

    fn tokens_in(&self, time: Duration) -> u32 {
        ((self.rate * time.as_secs_f64()).round() as u32).clamp(1, self.burst)
    }
}

/// Whether a request may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    /// Over the limit: retry after [`Decision::retry_after`].
    Limited,
    /// NATS is unreachable and the limit fails closed.
    Unavailable,
}

/// A decision with what a response needs for its headers.
#[derive(Debug, Clone)]
pub struct Decision {
    pub outcome: Outcome,
    pub key: Arc<QuotaKey>,
    pub policy: RatePolicy,
    /// Requests left (an estimate across replicas: this replica's lease plus what the shared
    /// bucket held after its last lease).
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// Set when refused.
    pub retry_after: Option<Duration>,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        self.outcome == Outcome::Allowed
    }

    fn allowed(entry: &Entry, policy: RatePolicy, remaining: u32) -> Self {
        let remaining = remaining.min(policy.burst);
        let reset = Duration::from_secs_f64(f64::from(policy.burst - remaining) / policy.rate);
        Self { outcome: Outcome::Allowed, key: entry.key.clone(), policy, remaining, reset, retry_after: None }
    }

    fn refused(entry: &Entry, policy: RatePolicy, outcome: Outcome, retry_after: Duration) -> Self {
        let reset = policy.window();
        Self { outcome, key: entry.key.clone(), policy, remaining: 0, reset, retry_after: Some(retry_after) }
    }
}

/// Rate limits over the shared KV bucket. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    bucket: Bucket,
    entries: RwLock<HashMap<QuotaKey, Arc<Entry>>>,
    lease: Duration,
    lease_ttl: Duration,
    nats_timeout: Duration,
    on_nats_down: FailureMode,
    /// After a failed KV call, leases are not asked of NATS until then.
    nats_down_until: Mutex<Option<Instant>>,
    last_warning: Mutex<Option<Instant>>,
}

/// One key's state in this replica.
struct Entry {
    key: Arc<QuotaKey>,
    slot: Mutex<Slot>,
    refilled: Notify,
}

struct Slot {
    /// Leased and not spent yet; void after `expires`.
    tokens: u32,
    expires: Instant,
    /// What the shared bucket held after the last lease, for `remaining`.
    shared_left: u32,
    /// The shared bucket was empty (or NATS down and failing closed): refuse until then.
    refused_until: Option<(Instant, Outcome)>,
    /// A lease is being fetched; requests without tokens wait for it.
    refilling: bool,
    /// NATS down, failing open: the next local lease is due then, so this replica alone keeps
    /// the rate.
    next_local_lease: Option<Instant>,
}

/// Keys kept in memory before idle ones are dropped.
const MAX_ENTRIES: usize = 10_000;

/// How long a refusal lasts while NATS is down and the limit fails closed, and between
/// attempts to reach NATS again.
const NATS_RETRY: Duration = Duration::from_secs(1);

enum Step {
    Done(Decision),
    /// Allowed, and the lease runs low: fetch the next one in the background.
    Prefetch(Decision),
    /// No tokens: start fetching a lease, then wait for it.
    Lead,
    /// No tokens, a lease is on its way.
    Wait,
}

/// The result of one lease from the shared bucket.
enum Lease {
    Granted { tokens: u32, left: u32 },
    Empty { retry_after: Duration },
}

impl RateLimiter {
    pub fn new(js: async_nats::jetstream::Context, args: &QuotaArgs, replicas: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                bucket: Bucket::rates(js, args, replicas),
                entries: RwLock::default(),
                lease: args.lease,
                lease_ttl: args.lease_ttl,
                nats_timeout: args.nats_timeout,
                on_nats_down: args.rates_on_nats_down,
                nats_down_until: Mutex::default(),
                last_warning: Mutex::default(),
            }),
        }
    }

    /// Spends one token of `key` under `policy`.
    pub async fn check(&self, key: &QuotaKey, policy: &RatePolicy) -> Decision {
        let entry = self.entry(key);
        // A fresh lease may be spent by other waiters before this one runs; a few rounds settle
        // it. A lease of a slow rate is one token, so N requests at once need N leases: they
        // keep waiting for theirs up to a KV round trip's timeout instead of being refused
        // while the shared bucket still holds tokens.
        let deadline = Instant::now() + self.inner.nats_timeout;
        let mut round = 0;
        while round < 3 || Instant::now() < deadline {
            round += 1;
            let notified = entry.refilled.notified();
            tokio::pin!(notified);
            // Registered before the state is read, so a lease landing in between still wakes us.
            notified.as_mut().enable();
            let step = self.step(&entry, policy, Instant::now());
            match step {
                Step::Done(decision) => return decision,
                Step::Prefetch(decision) => {
                    self.spawn_refill(&entry, *policy);
                    return decision;
                }
                Step::Lead => {
                    self.spawn_refill(&entry, *policy);
                    notified.await;
                }
                Step::Wait => notified.await,
            }
        }
        let retry_after = Duration::from_secs_f64(1.0 / policy.rate);
        Decision::refused(&entry, *policy, Outcome::Limited, retry_after)
    }

    /// The local part of a decision: no I/O, one lock.
    fn step(&self, entry: &Entry, policy: &RatePolicy, now: Instant) -> Step {
        let mut slot = entry.slot.lock();
        if slot.expires <= now {
            slot.tokens = 0;
        }
        if slot.tokens > 0 {
            slot.tokens -= 1;
            let decision = Decision::allowed(entry, *policy, slot.tokens.saturating_add(slot.shared_left));
            let want = policy.tokens_in(self.inner.lease);
            let refused = slot.refused_until.is_some_and(|(until, _)| now < until);
            if slot.tokens * 2 < want && !slot.refilling && !refused {
                slot.refilling = true;
                return Step::Prefetch(decision);
            }
            return Step::Done(decision);
        }
        if let Some((until, outcome)) = slot.refused_until {
            if now < until {
                return Step::Done(Decision::refused(entry, *policy, outcome, until - now));
            }
            slot.refused_until = None;
        }
        if slot.refilling {
            return Step::Wait;
        }
        slot.refilling = true;
        Step::Lead
    }

    fn entry(&self, key: &QuotaKey) -> Arc<Entry> {
        if let Some(entry) = self.inner.entries.read().get(key) {
            return entry.clone();
        }
        let mut entries = self.inner.entries.write();
        if entries.len() >= MAX_ENTRIES {
            let now = Instant::now();
            // Only entries nobody holds, with nothing leased and nothing pending: dropping them
            // forfeits nothing.
            entries.retain(|_, e| {
                Arc::strong_count(e) > 1 || {
                    let slot = e.slot.lock();
                    slot.refilling || (slot.tokens > 0 && slot.expires > now)
                }
            });
        }
        entries
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Entry {
                    key: Arc::new(key.clone()),
                    slot: Mutex::new(Slot {
                        tokens: 0,
                        expires: Instant::now(),
                        shared_left: 0,
                        refused_until: None,
                        refilling: false,
                        next_local_lease: None,
                    }),
                    refilled: Notify::new(),
                })
            })
            .clone()
    }

    /// In a task of its own, so a caller that gives up cannot leave `refilling` set forever.
    fn spawn_refill(&self, entry: &Arc<Entry>, policy: RatePolicy) {
        let (inner, entry) = (self.inner.clone(), entry.clone());
        tokio::spawn(async move { inner.refill(&entry, policy).await });
    }
}

impl Inner {
    async fn refill(&self, entry: &Entry, policy: RatePolicy) {
        let want = policy.tokens_in(self.lease);
        let down = self.nats_down_until.lock().is_some_and(|until| Instant::now() < until);
        let leased = if down { None } else { Some(self.lease_from_bucket(&entry.key, policy, want).await) };
        let now = Instant::now();
        {
            let mut slot = entry.slot.lock();
            slot.refilling = false;
            match leased {
                Some(Ok(Lease::Granted { tokens, left })) => {
                    if slot.expires <= now {
                        slot.tokens = 0;
                    }
                    slot.tokens += tokens;
                    slot.expires = now + self.lease_ttl;
                    slot.shared_left = left;
                    slot.refused_until = None;
                    slot.next_local_lease = None;
                    metrics::counter!("folio_quota_leases_total", "policy" => policy.name).increment(1);
                }
                Some(Ok(Lease::Empty { retry_after })) => {
                    slot.shared_left = 0;
                    slot.refused_until = Some((now + retry_after, Outcome::Limited));
                }
                Some(Err(StoreError::Contention { .. })) => {
                    // Other replicas are leasing this key as fast as NATS takes writes: it is busy,
                    // not broken.
                    slot.refused_until = Some((now + self.lease, Outcome::Limited));
                }
                Some(Err(e)) => {
                    *self.nats_down_until.lock() = Some(now + NATS_RETRY);
                    self.warn_unavailable(&e);
                    self.lease_while_down(&mut slot, policy, want, now);
                }
                None => self.lease_while_down(&mut slot, policy, want, now),
            }
        }
        entry.refilled.notify_waiters();
    }

    fn lease_while_down(&self, slot: &mut Slot, policy: RatePolicy, want: u32, now: Instant) {
        metrics::counter!("folio_quota_nats_unavailable_total", "kind" => "rate", "policy" => policy.name).increment(1);
        match self.on_nats_down {
            FailureMode::Closed => slot.refused_until = Some((now + NATS_RETRY, Outcome::Unavailable)),
            FailureMode::Open => {
                let due = slot.next_local_lease.unwrap_or(now);
                if now < due {
                    slot.refused_until = Some((due, Outcome::Limited));
                } else {
                    slot.tokens = want;
                    slot.expires = now + self.lease_ttl;
                    slot.shared_left = 0;
                    slot.next_local_lease = Some(now + Duration::from_secs_f64(f64::from(want) / policy.rate));
                }
            }
        }
    }

    fn warn_unavailable(&self, error: &StoreError) {
        let now = Instant::now();
        let mut last = self.last_warning.lock();
        // One line per interval, not one per key and lease.
        if last.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10)) {
            *last = Some(now);
            let mode = match self.on_nats_down {
                FailureMode::Open => "admitting under per-replica limits",
                FailureMode::Closed => "refusing",
            };
            tracing::warn!(error = %error_chain(error), "rate limits cannot reach NATS: {mode}");
        }
    }

    /// One compare-and-set on the shared bucket: refill it to now, take up to `want` tokens.
    async fn lease_from_bucket(&self, key: &QuotaKey, policy: RatePolicy, want: u32) -> Result<Lease, StoreError> {
        let started = Instant::now();
        let leased = tokio::time::timeout(
            self.nats_timeout * 2,
            self.bucket.update(key, |current| {
                let now_ms = unix_ms();
                let state = current.and_then(SharedBucket::decode);
                let (tokens, at_ms) = match state {
                    // The stored time never moves back, whatever this replica's clock says.
                    Some(s) => (s.refilled(policy, now_ms), s.at_ms.max(now_ms)),
                    None => (f64::from(policy.burst), now_ms),
                };
                if tokens < 1.0 {
                    let retry_after = Duration::from_secs_f64((1.0 - tokens) / policy.rate);
                    return Write::Keep(Lease::Empty { retry_after });
                }
                let take = tokens.floor().min(f64::from(want));
                let left = tokens - take;
                let lease = Lease::Granted { tokens: take as u32, left: left as u32 };
                Write::Put(SharedBucket { tokens: left, at_ms }.encode(), lease)
            }),
        )
        .await
        .unwrap_or(Err(StoreError::TimedOut(self.nats_timeout * 2)));
        metrics::histogram!("folio_quota_lease_seconds").record(started.elapsed().as_secs_f64());
        leased
    }
}

/// The shared state of one key, as stored.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SharedBucket {
    tokens: f64,
    at_ms: u64,
}

impl SharedBucket {
    fn refilled(&self, policy: RatePolicy, now_ms: u64) -> f64 {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        (self.tokens + elapsed * policy.rate).min(f64::from(policy.burst))
    }

    /// `<micro-tokens> <unix ms>`: readable when inspecting the bucket, exact in integers.
    fn encode(&self) -> Bytes {
        Bytes::from(format!("{} {}", (self.tokens * 1e6) as u64, self.at_ms))
    }

    /// A value this version cannot read counts as absent (a full bucket) rather than an error:
    /// limits must not fail requests over a stray key.
    fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (tokens, at) = text.split_once(' ')?;
        Some(Self { tokens: tokens.parse::<u64>().ok()? as f64 / 1e6, at_ms: at.parse().ok()? })
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_bucket_refills_at_the_rate_up_to_the_burst() {
        let policy = RatePolicy::per_second("t", 50, 100);
        let state = SharedBucket { tokens: 10.0, at_ms: 1_000 };
        assert_eq!(state.refilled(policy, 1_100), 15.0);
        assert_eq!(state.refilled(policy, 60_000), 100.0);
        // A replica whose clock is behind adds nothing rather than removing tokens.
        assert_eq!(state.refilled(policy, 500), 10.0);
    }

    #[test]
    fn the_shared_bucket_survives_encoding_and_ignores_garbage() {
        let state = SharedBucket { tokens: 12.5, at_ms: 1_234 };
        assert_eq!(SharedBucket::decode(&state.encode()), Some(state));
        assert_eq!(SharedBucket::decode(b"nonsense"), None);
    }

    #[test]
    fn a_lease_is_the_rate_times_the_lease_time_within_one_and_the_burst() {
        let policy = RatePolicy::per_second("t", 50, 100);
        assert_eq!(policy.tokens_in(Duration::from_millis(100)), 5);
        assert_eq!(policy.tokens_in(Duration::from_millis(1)), 1);
        assert_eq!(policy.tokens_in(Duration::from_secs(10)), 100);
    }
}
