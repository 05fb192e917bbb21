//! The two KV buckets and the one compare-and-set loop both kinds of limit use.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::{QuotaArgs, QuotaKey};

/// A rate key left alone this long is deleted by the server; an absent key reads as a full
/// bucket, which it would be by then unless a policy takes longer than this to refill.
pub const RATE_KEY_MAX_AGE: Duration = Duration::from_secs(3600);

/// Why a KV call did not complete.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no answer from NATS within {0:?}")]
    TimedOut(Duration),
    #[error("failed to open KV bucket {bucket}")]
    Bucket { bucket: String, source: async_nats::Error },
    #[error("KV call on {key} failed")]
    Kv { key: String, source: async_nats::Error },
    #[error("{key} kept changing under us ({attempts} attempts)")]
    Contention { key: String, attempts: u32 },
}

/// Opens (creating on first use) one bucket. Creation is lazy and retried on the next call, so a
/// service starts while NATS is down.
pub(crate) struct Bucket {
    js: jetstream::Context,
    config: kv::Config,
    store: OnceCell<kv::Store>,
    timeout: Duration,
}

/// One value read with the revision a write must expect (`0`: the key is absent).
pub(crate) struct Read {
    pub value: Option<Bytes>,
    pub revision: u64,
}

/// What [`Bucket::update`] should write.
pub(crate) enum Write<T> {
    /// Write this and return `T` once it is stored.
    Put(Bytes, T),
    /// Write nothing and return `T`.
    Keep(T),
}

/// How many compare-and-set rounds one update may take before giving up. Each lost round means
/// another writer succeeded, so this bounds waiting, not correctness.
const MAX_ATTEMPTS: u32 = 64;

impl Bucket {
    pub(crate) fn rates(js: jetstream::Context, args: &QuotaArgs, replicas: usize) -> Self {
        Self::new(
            js,
            kv::Config {
                bucket: args.rate_bucket.clone(),
                description: "Folio rate-limit buckets (folio-quota)".into(),
                history: 1,
                max_age: RATE_KEY_MAX_AGE,
                storage: jetstream::stream::StorageType::Memory,
                num_replicas: replicas,
                ..Default::default()
            },
            args.nats_timeout,
        )
    }

    pub(crate) fn counts(js: jetstream::Context, args: &QuotaArgs, replicas: usize) -> Self {
        Self::new(
            js,
            kv::Config {
                bucket: args.count_bucket.clone(),
                description: "Folio counted quotas (folio-quota)".into(),
                history: 1,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            },
            args.nats_timeout,
        )
    }

    fn new(js: jetstream::Context, config: kv::Config, timeout: Duration) -> Self {
        Self { js, config, store: OnceCell::new(), timeout }
    }

    async fn store(&self) -> Result<&kv::Store, StoreError> {
        self.store
            .get_or_try_init(|| async {
                let name = self.config.bucket.clone();
                let bucket_err = |source: async_nats::Error| StoreError::Bucket { bucket: name.clone(), source };
                // Creating with an identical configuration succeeds; a bucket another replica created
                // with different settings is used as it is.
                let created = self.bounded(self.js.create_key_value(self.config.clone())).await?;
                match created {
                    Ok(store) => Ok(store),
                    Err(create) => match self.bounded(self.js.get_key_value(name.clone())).await? {
                        Ok(store) => Ok(store),
                        Err(_) => Err(bucket_err(create.into())),
                    },
                }
            })
            .await
    }

    async fn bounded<F: Future>(&self, f: F) -> Result<F::Output, StoreError> {
        tokio::time::timeout(self.timeout, f).await.map_err(|_| StoreError::TimedOut(self.timeout))
    }

    pub(crate) async fn read(&self, key: &QuotaKey) -> Result<Read, StoreError> {
        let store = self.store().await?;
        let kv_err = |source: async_nats::Error| StoreError::Kv { key: key.to_string(), source };
        let entry = self.bounded(store.entry(key.as_kv())).await?.map_err(|e| kv_err(e.into()))?;
        Ok(match entry {
            Some(e) if e.operation == kv::Operation::Put => Read { value: Some(e.value), revision: e.revision },
            // A delete or purge marker: absent, but a write must expect its revision.
            Some(e) => Read { value: None, revision: e.revision },
            None => Read { value: None, revision: 0 },
        })
    }

    /// Reads `key`, lets `decide` compute the new value from the current one, and writes it only
    /// if nobody wrote in between; otherwise reads again. No update is ever lost.
    pub(crate) async fn update<T>(
        &self,
        key: &QuotaKey,
        mut decide: impl FnMut(Option<&[u8]>) -> Write<T>,
    ) -> Result<T, StoreError> {
        let store = self.store().await?;
        let kv_err = |source: async_nats::Error| StoreError::Kv { key: key.to_string(), source };
        for attempt in 0..MAX_ATTEMPTS {
            let current = self.read(key).await?;
            let (bytes, out) = match decide(current.value.as_deref()) {
                Write::Keep(out) => return Ok(out),
                Write::Put(bytes, out) => (bytes, out),
            };
            let written = if current.revision == 0 {
                self.bounded(store.create(key.as_kv(), bytes)).await?.map_err(|e| {
                    if e.kind() == kv::CreateErrorKind::AlreadyExists { None } else { Some(kv_err(e.into())) }
                })
            } else {
                self.bounded(store.update(key.as_kv(), bytes, current.revision)).await?.map_err(|e| {
                    if e.kind() == kv::UpdateErrorKind::WrongLastRevision { None } else { Some(kv_err(e.into())) }
                })
            };
            match written {
                Ok(_) => return Ok(out),
                Err(Some(e)) => return Err(e),
                // Lost the race: back off a little, growing and jittered so rivals spread out.
                Err(None) => tokio::time::sleep(backoff(attempt)).await,
            }
        }
        Err(StoreError::Contention { key: key.to_string(), attempts: MAX_ATTEMPTS })
    }
}

fn backoff(attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    // Doubling to 51 ms: with a linear ceiling of a few milliseconds, 16 rivals on one key of a
    // loaded machine could lose 64 rounds in a row (seen in CI with the load average at 9).
    let ceiling_us = 200u64 << attempt.min(8);
    Duration::from_micros(u64::from(nanos) % ceiling_us)
}
