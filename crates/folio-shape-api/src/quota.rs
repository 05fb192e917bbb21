//! Per-agency caps on what one agency may hold on this edge: distinct shape definitions
//! requested within a window, and shapes live at once. One agency's viewer cannot fill the
//! edge's memory or CPU with shapes the others then pay for (issue 13, finding 4).
//!
//! Definitions are counted by every edge together when the edge gives [`AgencyQuota`] a
//! shared limiter (folio-quota, through NATS KV): a token bucket per agency holding
//! `quota` definitions, refilled at `quota / window`; a definition this edge already counted
//! within the window is free. Live shapes stay a per-edge cap: they are this edge's memory
//! and snapshots, which another edge's shapes do not use.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use folio_quota::{Outcome, QuotaKey, RateLimiter, RatePolicy};
use parking_lot::Mutex;

/// A refusal: which policy, its quota, and when to retry. Rendered as 429 with `Retry-After`
/// and IETF `RateLimit-Policy` / `RateLimit` headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agency over its {policy} quota of {quota}")]
pub struct OverQuota {
    /// `definitions` or `live-shapes`: the policy name in the RateLimit headers.
    pub policy: &'static str,
    pub quota: usize,
    /// The policy's window (definitions), None for a concurrency quota (live shapes).
    pub window: Option<Duration>,
    /// When a retry may be admitted.
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct QuotaLimits {
    pub definitions: usize,
    pub definition_window: Duration,
    pub live_shapes: usize,
    /// How long a shape stays live without requests: a refused caller may retry after it.
    pub idle_timeout: Duration,
}

#[derive(Default)]
struct AgencyUse {
    /// Definition hash → when it was last requested (counted while inside the window).
    definitions: HashMap<String, Instant>,
    live: usize,
}

pub struct AgencyQuota {
    limits: QuotaLimits,
    agencies: Arc<Mutex<HashMap<String, AgencyUse>>>,
    /// The definitions' bucket shared by every edge; `None` counts on this edge alone.
    shared: Option<(RateLimiter, RatePolicy)>,
}

/// Why a definition was not admitted.
#[derive(Debug)]
pub enum Refusal {
    Over(OverQuota),
    /// The shared limiter fails closed and NATS cannot be reached.
    Unavailable,
}

/// One live shape counted against its agency; dropping it (with the shape) frees the place.
pub struct LiveShapePermit {
    agencies: Arc<Mutex<HashMap<String, AgencyUse>>>,
    agency: String,
}

impl Drop for LiveShapePermit {
    fn drop(&mut self) {
        let mut agencies = self.agencies.lock();
        if let Some(u) = agencies.get_mut(&self.agency) {
            u.live = u.live.saturating_sub(1);
            if u.live == 0 && u.definitions.is_empty() {
                agencies.remove(&self.agency);
            }
        }
    }
}

impl AgencyQuota {
    pub fn new(limits: QuotaLimits) -> Self {
        AgencyQuota { limits, agencies: Arc::default(), shared: None }
    }

    /// Definitions counted by every edge through `rates`.
    pub fn shared(limits: QuotaLimits, rates: RateLimiter) -> Self {
        let quota = u32::try_from(limits.definitions).unwrap_or(u32::MAX);
        let policy = RatePolicy::per_window("definitions", quota, limits.definition_window);
        AgencyQuota { limits, agencies: Arc::default(), shared: Some((rates, policy)) }
    }

    /// Counts a request for definition `hash` by `agency`: a definition already counted in
    /// the window is always admitted (and stays counted), a new one only below the cap.
    pub async fn admit_definition(&self, agency: &str, hash: &str) -> Result<(), Refusal> {
        if self.seen(agency, hash) {
            return Ok(());
        }
        let Some((rates, policy)) = &self.shared else {
            return self.admit_locally(agency, hash).map_err(Refusal::Over);
        };
        // Agencies are UUIDs; anything else has no shared bucket and is counted here.
        let Ok(key) = QuotaKey::agency(agency, "shape-definitions") else {
            return self.admit_locally(agency, hash).map_err(Refusal::Over);
        };
        let decision = rates.check(&key, policy).await;
        match decision.outcome {
            Outcome::Allowed => {
                let mut agencies = self.agencies.lock();
                agencies.entry(agency.to_owned()).or_default().definitions.insert(hash.to_owned(), Instant::now());
                Ok(())
            }
            Outcome::Limited => Err(Refusal::Over(OverQuota {
                policy: "definitions",
                quota: self.limits.definitions,
                window: Some(self.limits.definition_window),
                retry_after: decision.retry_after.unwrap_or_default().max(Duration::from_secs(1)),
            })),
            Outcome::Unavailable => Err(Refusal::Unavailable),
        }
    }

    /// Whether `hash` was counted for `agency` within the window (and if so, counts it again).
    fn seen(&self, agency: &str, hash: &str) -> bool {
        let now = Instant::now();
        let window = self.limits.definition_window;
        let mut agencies = self.agencies.lock();
        let Some(usage) = agencies.get_mut(agency) else { return false };
        usage.definitions.retain(|_, seen| now.duration_since(*seen) < window);
        match usage.definitions.get_mut(hash) {
            Some(seen) => {
                *seen = now;
                true
            }
            None => false,
        }
    }

    fn admit_locally(&self, agency: &str, hash: &str) -> Result<(), OverQuota> {
        let now = Instant::now();
        let window = self.limits.definition_window;
        let mut agencies = self.agencies.lock();
        let usage = agencies.entry(agency.to_owned()).or_default();
        if usage.definitions.len() >= self.limits.definitions {
            let oldest = usage.definitions.values().min().copied().unwrap_or(now);
            return Err(OverQuota {
                policy: "definitions",
                quota: self.limits.definitions,
                window: Some(window),
                retry_after: window.saturating_sub(now.duration_since(oldest)).max(Duration::from_secs(1)),
            });
        }
        usage.definitions.insert(hash.to_owned(), now);
        Ok(())
    }

    /// A place for one more live shape of `agency`, held as long as the permit is.
    pub fn admit_live_shape(&self, agency: &str) -> Result<LiveShapePermit, OverQuota> {
        let mut agencies = self.agencies.lock();
        let usage = agencies.entry(agency.to_owned()).or_default();
        if usage.live >= self.limits.live_shapes {
            return Err(OverQuota {
                policy: "live-shapes",
                quota: self.limits.live_shapes,
                window: None,
                retry_after: self.limits.idle_timeout.max(Duration::from_secs(1)),
            });
        }
        usage.live += 1;
        Ok(LiveShapePermit { agencies: Arc::clone(&self.agencies), agency: agency.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(definitions: usize, live_shapes: usize) -> AgencyQuota {
        AgencyQuota::new(QuotaLimits {
            definitions,
            definition_window: Duration::from_secs(600),
            live_shapes,
            idle_timeout: Duration::from_secs(300),
        })
    }

    #[tokio::test]
    async fn definitions_are_counted_per_agency_and_repeats_are_free() {
        let q = quota(2, 10);
        assert!(q.admit_definition("a", "h1").await.is_ok());
        assert!(q.admit_definition("a", "h2").await.is_ok());
        assert!(q.admit_definition("a", "h1").await.is_ok());
        let Err(Refusal::Over(over)) = q.admit_definition("a", "h3").await else { panic!("admitted") };
        assert_eq!((over.policy, over.quota), ("definitions", 2));
        assert!(over.retry_after > Duration::from_secs(590));
        assert!(q.admit_definition("b", "h3").await.is_ok());
    }

    #[test]
    fn live_shapes_are_freed_with_their_permits() {
        let q = quota(10, 2);
        let one = q.admit_live_shape("a").unwrap();
        let _two = q.admit_live_shape("a").unwrap();
        assert_eq!(q.admit_live_shape("a").err().map(|e| e.policy), Some("live-shapes"));
        assert!(q.admit_live_shape("b").is_ok());
        drop(one);
        assert!(q.admit_live_shape("a").is_ok());
    }
}
