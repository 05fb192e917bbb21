//! Per-agency and per-token limits on the streams API, shared by every edge through NATS KV
//! (`folio-quota`): streams and stored bytes per agency (counted), appends a second per agency
//! and per token (rate limits).
//!
//! Only streams inside an agency's namespace (`agencies/<id>/…`) are counted, against that
//! agency, whoever writes them (a member or a service token). Open mode (`--ds-open`) has no
//! agencies and no limits. A refusal is a [`StreamError`], answered 429 in `error.rs`.
//!
//! Stored bytes are spent on every append, so they are leased (`Counters::spend`): an edge
//! reserves a chunk of its agency's budget (`max(1 MiB, limit / 1000)`) with one compare-and-set
//! and spends appends from it locally. The bytes stored never pass the limit; the shared count
//! exceeds them by the edges' unspent chunks (at most 1.5 chunks per edge and agency), given
//! back after `FOLIO_QUOTA_LEASE_TTL` idle and when the edge shuts down.
//!
//! What each stream holds is recorded in its metadata (`stored_bytes`) so its deletion gives the
//! bytes back. Writing the metadata on every append would double an append's cost, so an edge
//! keeps what it appended per stream in memory ([`StreamQuotas::record_stored`]) and adds it to
//! the metadata about once a second ([`run_stored_bytes_flusher`]) and when it drains. Bytes
//! whose stream was deleted before they were flushed are given back by the flusher; the edge
//! that deletes a stream gives back its own unflushed bytes at once. An edge that dies loses at
//! most a second of them: the agency's count then stays high by that much (never low).

use std::{collections::HashMap, sync::Arc, time::Duration};

use folio_domain::AgencyId;
use folio_quota::{Decision, QuotaKey, Quotas, RatePolicy};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::{
    StreamsConfig,
    access::Principal,
    error::{Result, StreamError},
    meta::StreamMeta,
    path::namespace_of,
    store::Store,
};

const STREAMS: &str = "ds-streams";
const BYTES: &str = "ds-bytes";
const APPENDS: &str = "ds-appends";

/// The limits of one edge, `None` in [`super::Streams`] when off or in open mode.
#[derive(Clone)]
pub struct StreamQuotas {
    quotas: Quotas,
    max_streams: u64,
    max_bytes: u64,
    agency_appends: RatePolicy,
    token_appends: RatePolicy,
    service_appends: RatePolicy,
    /// Bytes appended on this edge and not yet added to their stream's metadata, by incarnation.
    unflushed: Arc<Mutex<HashMap<String, Unflushed>>>,
}

struct Unflushed {
    path: String,
    bytes: u64,
}

impl StreamQuotas {
    /// `None` when the configuration switches them off or serves open mode.
    pub fn new(quotas: Option<Quotas>, config: &StreamsConfig) -> Option<Self> {
        if config.open || !config.quotas {
            return None;
        }
        let rate = |name, per_sec: u32| RatePolicy::per_second(name, per_sec, per_sec.saturating_mul(2));
        Some(Self {
            quotas: quotas?,
            max_streams: config.max_streams_per_agency,
            max_bytes: config.max_bytes_per_agency,
            agency_appends: rate("agency-appends", config.agency_appends_per_sec),
            token_appends: rate("token-appends", config.token_appends_per_sec),
            service_appends: rate("service-appends", config.service_appends_per_sec),
            unflushed: Arc::default(),
        })
    }

    /// Spends one append of `principal` on the stream at `path`: the token's budget first, so
    /// one noisy user does not spend the agency's. The agency's decision (for the RateLimit
    /// headers of the answer) when admitted.
    pub async fn admit_append(&self, principal: &Principal, path: &str) -> Result<Option<Decision>> {
        let Some(agency) = namespace_of(path) else { return Ok(None) };
        let token = match principal {
            Principal::Member(caller) => Some((QuotaKey::token(caller.user_id, APPENDS), &self.token_appends)),
            Principal::Service(name) => Some((QuotaKey::token(name, APPENDS), &self.service_appends)),
            _ => None,
        };
        if let Some((Ok(key), policy)) = token {
            let decision = self.quotas.rates.check(&key, policy).await;
            if !decision.is_allowed() {
                return Err(StreamError::RateLimited(Box::new(decision)));
            }
        }
        let Ok(key) = QuotaKey::agency(agency, APPENDS) else { return Ok(None) };
        let decision = self.quotas.rates.check(&key, &self.agency_appends).await;
        if !decision.is_allowed() {
            return Err(StreamError::RateLimited(Box::new(decision)));
        }
        Ok(Some(decision))
    }

    /// Reserves one stream and its first `bytes` for the stream at `path` being created. What
    /// was reserved is returned, for [`Self::release`] if the create fails after all.
    pub async fn reserve_stream(&self, path: &str, bytes: u64) -> Result<Charge> {
        let Some(agency) = namespace_of(path) else { return Ok(Charge::default()) };
        let streams = u64::from(self.max_streams > 0);
        let bytes = if self.max_bytes > 0 { bytes } else { 0 };
        if streams > 0 {
            self.reserve(agency, STREAMS, 1, self.max_streams).await?;
        }
        if let Err(e) = self.spend_bytes(agency, bytes).await {
            self.release(path, Charge { streams, bytes: 0 }).await;
            return Err(e);
        }
        Ok(Charge { streams, bytes })
    }

    /// Reserves `bytes` more stored data for the stream at `path`.
    pub async fn reserve_bytes(&self, path: &str, bytes: u64) -> Result<Charge> {
        let Some(agency) = namespace_of(path) else { return Ok(Charge::default()) };
        if self.max_bytes == 0 {
            return Ok(Charge::default());
        }
        self.spend_bytes(agency, bytes).await?;
        Ok(Charge { streams: 0, bytes })
    }

    /// Spends `bytes` of the agency's stored-bytes budget from this edge's lease.
    async fn spend_bytes(&self, agency: AgencyId, bytes: u64) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        let Ok(key) = QuotaKey::agency(agency, BYTES) else { return Ok(()) };
        let chunk = bytes_chunk(self.max_bytes);
        self.quotas.counts.spend(&key, bytes, self.max_bytes, chunk).await.map_err(StreamError::Quota)?;
        Ok(())
    }

    /// Records `bytes` appended to the stream `meta` describes, for the flusher to add to its
    /// metadata.
    pub fn record_stored(&self, meta: &StreamMeta, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut map = self.unflushed.lock();
        let entry =
            map.entry(meta.incarnation.clone()).or_insert_with(|| Unflushed { path: meta.path.clone(), bytes: 0 });
        entry.bytes = entry.bytes.saturating_add(bytes);
    }

    /// This edge's unflushed bytes of a stream incarnation being purged, now its own to give back.
    pub fn take_unflushed(&self, incarnation: &str) -> u64 {
        self.unflushed.lock().remove(incarnation).map_or(0, |u| u.bytes)
    }

    /// Adds every stream's unflushed bytes to its metadata; bytes of a stream that is gone are
    /// given back, and those NATS refused stay for the next flush.
    pub async fn flush_stored(&self, store: &Store) {
        let batch = std::mem::take(&mut *self.unflushed.lock());
        for (incarnation, unflushed) in batch {
            if let Err(e) = self.flush_one(store, &incarnation, &unflushed).await {
                tracing::debug!(error = %folio_runtime::error_chain(&e), path = %unflushed.path, "stored bytes not flushed yet");
                let mut map = self.unflushed.lock();
                let entry =
                    map.entry(incarnation).or_insert_with(|| Unflushed { path: unflushed.path.clone(), bytes: 0 });
                entry.bytes = entry.bytes.saturating_add(unflushed.bytes);
            }
        }
    }

    async fn flush_one(&self, store: &Store, incarnation: &str, unflushed: &Unflushed) -> Result<()> {
        loop {
            match store.load(&unflushed.path).await? {
                Some(mut v) if v.meta.incarnation == incarnation => {
                    v.meta.stored_bytes = v.meta.stored_bytes.saturating_add(unflushed.bytes);
                    if store.update(&v.meta, v.revision).await?.is_some() {
                        return Ok(());
                    }
                    // Another write won: add on top of it.
                }
                // Purged (or re-created) before this edge's bytes reached its metadata.
                _ => {
                    self.release(&unflushed.path, Charge { streams: 0, bytes: unflushed.bytes }).await;
                    return Ok(());
                }
            }
        }
    }

    /// Gives back the stored-bytes leases this edge holds (at shutdown).
    pub async fn give_back(&self) {
        self.quotas.counts.give_back().await;
    }

    async fn reserve(&self, agency: AgencyId, name: &str, amount: u64, limit: u64) -> Result<()> {
        let Ok(key) = QuotaKey::agency(agency, name) else { return Ok(()) };
        self.quotas.counts.reserve(&key, amount, limit).await.map_err(StreamError::Quota)?;
        Ok(())
    }

    /// Gives back what a deleted, expired or failed stream held. Never fails the request that
    /// retires it: a release NATS refuses is logged and counted (the count then stays high
    /// until reconciled), since the stream is gone either way.
    pub async fn release(&self, path: &str, charge: Charge) {
        let Some(agency) = namespace_of(path) else { return };
        // A quota switched off (0) counts nothing, so it gives nothing back either.
        let streams = if self.max_streams > 0 { charge.streams } else { 0 };
        for (name, amount) in [(STREAMS, streams), (BYTES, charge.bytes)] {
            if amount == 0 {
                continue;
            }
            let Ok(key) = QuotaKey::agency(agency, name) else { continue };
            if let Err(e) = self.quotas.counts.release(&key, amount).await {
                metrics::counter!("folio_edge_stream_quota_release_failed_total", "quota" => name).increment(1);
                tracing::warn!(error = %folio_runtime::error_chain(&e), %key, amount, "quota release failed");
            }
        }
    }
}

/// One lease of stored bytes: 1 MiB, or a thousandth of the budget when that is more (10 MiB
/// of the 10 GiB default).
pub fn bytes_chunk(limit: u64) -> u64 {
    (1 << 20).max(limit / 1000)
}

/// What a stream holds of its agency's counted quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charge {
    pub streams: u64,
    pub bytes: u64,
}

/// Adds appended bytes to their streams' metadata about once a second; when the edge drains,
/// flushes what is left and gives back its unspent leases.
pub async fn run_stored_bytes_flusher(quotas: StreamQuotas, store: Store, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => quotas.flush_stored(&store).await,
        }
    }
    quotas.flush_stored(&store).await;
    quotas.give_back().await;
}
