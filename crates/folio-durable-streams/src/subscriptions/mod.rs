//! Reserved subscription APIs (`/v1/stream/__ds/…`): webhook and pull-wake subscriptions to
//! stream paths (explicit or by glob), Ed25519-signed webhook wakes, and leases.
//!
//! A subscription lives in the metadata bucket under `sub.<key>` and is changed only with
//! compare-and-set. Its key is its id, or `<agency>.<id>` for an agency's subscription: each
//! agency has its own id space (model.rs), so no agency can take, see or touch another's. Every edge keeps a read cache of all subscriptions (a KV watch) so that an
//! append only costs a map scan when nothing subscribes. A write that touches a subscribed
//! stream queues a notice for this edge's delivery task, which links the stream, opens a wake
//! (a new generation fencing older ones) and delivers it: a signed POST for webhooks, a wake
//! event appended to the JSON `wake_stream` for pull-wake.

mod model;
mod routes;
mod signing;
mod webhook;

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_nats::jetstream::kv;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use folio_bus::StreamSeq;
use futures::StreamExt;
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use routes::handle;
pub use webhook::WebhookUrlRejected;

use self::{
    model::{LinkType, Subscription, Wake, WakeStream, wake_streams_json},
    signing::Signer,
    webhook::WebhookUrl,
};
use super::{
    Streams, StreamsConfig,
    access::constant_time_eq,
    error::{BoxError, StorageError, StreamError},
    lifecycle::Lookup,
    meta::now_ms,
    store::Store,
};

const NOTICE_QUEUE: usize = 10_000;

/// A stream write the delivery task must look at.
enum Notice {
    Changed(String),
    Removed(String),
    /// A wake was acknowledged: open the next one if data is pending.
    Rewake(String),
}

pub struct Engine {
    kv: kv::Store,
    cache: RwLock<HashMap<String, Subscription>>,
    signer: Signer,
    http: folio_webhook::WebhookClient,
    notices: mpsc::Sender<Notice>,
    receiver: Mutex<Option<mpsc::Receiver<Notice>>>,
    allow_loopback: bool,
}

type SubResult<T> = Result<T, StreamError>;

/// The KV key of the subscription with cache key `key` (`Subscription::key`).
fn kv_key(key: &str) -> String {
    format!("sub.{key}")
}

impl Engine {
    pub async fn open(store: &Store, config: &StreamsConfig) -> Result<Self, StorageError> {
        let kv = store.kv().clone();
        let signer = Signer::load_or_create(&kv).await?;
        let (tx, rx) = mpsc::channel(NOTICE_QUEUE);
        Ok(Engine {
            kv,
            cache: RwLock::new(HashMap::new()),
            signer,
            http: webhook::client(folio_webhook::AddressPolicy::new(config.webhook_allowed_subnets.clone()))
                .map_err(|e| StorageError::new("build the webhook client", e))?,
            notices: tx,
            receiver: Mutex::new(Some(rx)),
            allow_loopback: config.webhook_allow_loopback,
        })
    }

    fn any_match(&self, path: &str) -> bool {
        let cache = self.cache.read();
        cache.values().any(|s| s.matches(path).is_some())
    }

    /// Called after every successful write to `path`.
    pub fn stream_changed(&self, path: &str) {
        if self.any_match(path) && self.notices.try_send(Notice::Changed(path.to_owned())).is_err() {
            tracing::warn!(path, "subscription notice queue full; the wake waits for the next write");
        }
    }

    pub fn stream_removed(&self, path: &str) {
        if self.any_match(path) {
            let _ = self.notices.try_send(Notice::Removed(path.to_owned()));
        }
    }

    fn cache_put(&self, sub: &Subscription) {
        self.cache.write().insert(sub.key(), sub.clone());
    }

    async fn load(&self, key: &str) -> SubResult<Option<(Subscription, u64)>> {
        let entry = self.kv.entry(kv_key(key)).await.map_err(|e| StorageError::new("read a subscription", e))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else { return Ok(None) };
        let sub = serde_json::from_slice(&entry.value).map_err(|e| StorageError::new("decode a subscription", e))?;
        Ok(Some((sub, entry.revision)))
    }

    /// Compare-and-set; `false` when someone else wrote first.
    async fn save(&self, sub: &Subscription, revision: u64) -> SubResult<bool> {
        let bytes = serde_json::to_vec(sub).map_err(|e| StorageError::new("encode a subscription", e))?;
        let result = if revision == 0 {
            self.kv.create(kv_key(&sub.key()), bytes.into()).await.map(|_| ()).map_err(BoxError::from)
        } else {
            match self.kv.update(kv_key(&sub.key()), bytes.into(), revision).await {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => return Ok(false),
                Err(e) => Err(BoxError::from(e)),
            }
        };
        match result {
            Ok(()) => {
                self.cache_put(sub);
                Ok(true)
            }
            Err(_) if revision == 0 => Ok(false),
            Err(e) => Err(StorageError::new("write a subscription", e).into()),
        }
    }

    /// Applies `change` to the stored subscription with compare-and-set, retrying on races.
    async fn modify<T>(
        &self,
        key: &str,
        mut change: impl FnMut(&mut Subscription) -> SubResult<T>,
    ) -> SubResult<(T, Subscription)> {
        for _ in 0..16 {
            let (mut sub, revision) = self.load(key).await?.ok_or(StreamError::NotFound)?;
            let out = change(&mut sub)?;
            if self.save(&sub, revision).await? {
                return Ok((out, sub));
            }
        }
        Err(StreamError::conflict("subscription is changing too fast, retry"))
    }
}

impl Streams {
    /// Current tails of every stream linked to `sub`.
    async fn snapshot(&self, sub: &Subscription) -> SubResult<Vec<WakeStream>> {
        let mut out = Vec::with_capacity(sub.links.len());
        for (path, link) in &sub.links {
            let tail = match self.lookup(path).await? {
                Lookup::Live(v) => self.store.tail(&v.meta).await?.get(),
                _ => link.acked_seq,
            };
            out.push(WakeStream {
                path: path.clone(),
                link_type: link.link_type,
                acked_seq: link.acked_seq,
                tail_seq: tail,
            });
        }
        Ok(out)
    }

    /// Opens a new wake if `sub` has pending data and no live wake; delivers it.
    async fn maybe_wake(self: &Arc<Self>, key: &str) -> SubResult<()> {
        let engine = &self.subscriptions;
        let Some((sub, _)) = engine.load(key).await? else { return Ok(()) };
        if sub.wake.as_ref().is_some_and(|w| w.lease_expires_ms.is_none_or(|at| at > now_ms())) {
            return Ok(());
        }
        let streams = self.snapshot(&sub).await?;
        let pending = streams.iter().any(|s| s.tail_seq > s.acked_seq);
        let (wake, sub) = engine
            .modify(key, |s| {
                if s.wake.as_ref().is_some_and(|w| w.lease_expires_ms.is_none_or(|at| at > now_ms())) {
                    return Ok(None);
                }
                if !pending {
                    s.wake = None;
                    return Ok(None);
                }
                s.generation += 1;
                let wake = Wake {
                    wake_id: format!("w_{}", uuid::Uuid::new_v4().simple()),
                    generation: s.generation,
                    token: random_token(),
                    holder: None,
                    lease_expires_ms: match s.kind {
                        model::Kind::Webhook => Some(now_ms() + s.lease_ttl_ms as i64),
                        model::Kind::PullWake => None,
                    },
                    streams: streams.clone(),
                };
                s.wake = Some(wake.clone());
                Ok(Some(wake))
            })
            .await?;
        let Some(wake) = wake else { return Ok(()) };
        match sub.kind {
            model::Kind::Webhook => {
                let this = Arc::clone(self);
                self.tasks.spawn(async move { this.deliver_webhook(sub, wake).await });
            }
            model::Kind::PullWake => self.append_wake_events(&sub, &wake).await,
        }
        Ok(())
    }

    async fn append_wake_events(self: &Arc<Self>, sub: &Subscription, wake: &Wake) {
        let Some(wake_stream) = &sub.wake_stream else { return };
        let events: Vec<_> = wake
            .streams
            .iter()
            .filter(|s| s.tail_seq > s.acked_seq)
            .map(|s| {
                serde_json::json!({
                    "type": "wake",
                    "subscription_id": sub.id,
                    "stream": s.path,
                    "generation": wake.generation,
                    "wake_id": wake.wake_id,
                    "ts": now_ms(),
                })
            })
            .collect();
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
        let body = Bytes::from(serde_json::Value::Array(events).to_string());
        if let Err(e) = Box::pin(self.append(wake_stream, &headers, body)).await {
            tracing::warn!(subscription = %sub.id, error = %folio_runtime::error_chain(&e), "failed to append a wake event");
        }
    }

    /// POSTs the wake until it is answered or superseded; `{"done": true}` acknowledges it.
    async fn deliver_webhook(self: Arc<Self>, sub: Subscription, wake: Wake) {
        let engine = &self.subscriptions;
        let Some(url) =
            sub.webhook_url.as_deref().and_then(|u| WebhookUrl::parse(u, engine.allow_loopback, &engine.http).ok())
        else {
            return;
        };
        let body = serde_json::json!({
            "subscription_id": sub.id,
            "wake_id": wake.wake_id,
            "generation": wake.generation,
            "streams": wake_streams_json(&wake.streams),
            "callback_url": sub.callback_url(),
            "callback_token": wake.token,
        });
        let body = Bytes::from(body.to_string());
        let mut backoff = Duration::from_secs(1);
        loop {
            let signature = engine.signer.signature_header(folio_live::unix_now(), &body);
            let sent = tokio::select! {
                sent = webhook::post(&engine.http, &url, &signature, body.clone()) => sent,
                _ = self.shutdown.cancelled() => return,
            };
            match sent {
                Ok(res) if (200..300).contains(&res.status) => {
                    let done = serde_json::from_slice::<serde_json::Value>(&res.body)
                        .ok()
                        .and_then(|v| v.get("done").and_then(|d| d.as_bool()))
                        .unwrap_or(false);
                    if done {
                        let acks: Vec<_> =
                            wake.streams.iter().map(|s| (s.path.clone(), StreamSeq::new(s.tail_seq))).collect();
                        match self.finish_wake(&sub.key(), &wake.wake_id, wake.generation, None, &acks, true).await {
                            Ok(true) => {
                                let _ = engine.notices.try_send(Notice::Rewake(sub.key()));
                            }
                            Ok(false) => {}
                            Err(e) => {
                                tracing::warn!(subscription = %sub.id, error = %folio_runtime::error_chain(&e), "failed to auto-ack a wake")
                            }
                        }
                    }
                    return;
                }
                Ok(res) => {
                    tracing::warn!(subscription = %sub.id, status = res.status, "webhook receiver refused a wake")
                }
                Err(e) => {
                    tracing::warn!(subscription = %sub.id, error = %folio_runtime::error_chain(&e), "webhook delivery failed")
                }
            }
            // Stop retrying once a newer wake (or an ack) superseded this one.
            match engine.load(&sub.key()).await {
                Ok(Some((current, _))) if current.wake.as_ref().is_some_and(|w| w.generation == wake.generation) => {}
                _ => return,
            }
            let jitter = 0.8 + rand::random::<f64>() * 0.4;
            tokio::select! {
                _ = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
                _ = self.shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }

    /// Applies acks for the wake `(wake_id, generation)`; `Ok(false)` if it is no longer current.
    /// `done` closes the wake; otherwise the lease is extended (a heartbeat).
    async fn finish_wake(
        &self,
        key: &str,
        wake_id: &str,
        generation: u64,
        token: Option<&str>,
        acks: &[(String, StreamSeq)],
        done: bool,
    ) -> SubResult<bool> {
        let (ok, _) = self
            .subscriptions
            .modify(key, |s| {
                let current = s.wake.as_ref().is_some_and(|w| {
                    w.generation == generation
                        && w.wake_id == wake_id
                        && token.is_none_or(|t| constant_time_eq(t.as_bytes(), w.token.as_bytes()))
                });
                if !current {
                    return Ok(false);
                }
                for (path, seq) in acks {
                    if let Some(link) = s.links.get_mut(path) {
                        link.acked_seq = link.acked_seq.max(seq.get());
                    }
                }
                if done {
                    s.wake = None;
                } else if let Some(w) = s.wake.as_mut()
                    && w.lease_expires_ms.is_some()
                {
                    w.lease_expires_ms = Some(now_ms() + s.lease_ttl_ms as i64);
                }
                Ok(true)
            })
            .await?;
        Ok(ok)
    }

    /// Whether any linked stream has data past its acked offset.
    async fn has_pending(&self, key: &str) -> SubResult<bool> {
        let Some((sub, _)) = self.subscriptions.load(key).await? else { return Ok(false) };
        Ok(self.snapshot(&sub).await?.iter().any(|s| s.tail_seq > s.acked_seq))
    }

    async fn on_notice(self: &Arc<Self>, notice: Notice) -> SubResult<()> {
        let (path, removed) = match notice {
            Notice::Changed(p) => (p, false),
            Notice::Removed(p) => (p, true),
            Notice::Rewake(key) => return self.maybe_wake(&key).await,
        };
        let keys: Vec<(String, LinkType)> = {
            let cache = self.subscriptions.cache.read();
            cache.values().filter_map(|s| s.matches(&path).map(|l| (s.key(), l))).collect()
        };
        for (key, link_type) in keys {
            match self.link_and_wake(&key, &path, link_type, removed).await {
                // Deleted meanwhile: nothing left to wake.
                Ok(()) | Err(StreamError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn link_and_wake(
        self: &Arc<Self>,
        key: &str,
        path: &str,
        link_type: LinkType,
        removed: bool,
    ) -> SubResult<()> {
        if removed {
            // Explicit links outlive the stream (it may be re-created); glob links do not.
            if link_type == LinkType::Glob {
                self.subscriptions
                    .modify(key, |s| {
                        s.links.remove(path);
                        Ok(())
                    })
                    .await?;
            }
            return Ok(());
        }
        self.subscriptions
            .modify(key, |s| {
                s.links.entry(path.to_owned()).or_insert(model::Link { link_type, acked_seq: 0 });
                Ok(())
            })
            .await?;
        self.maybe_wake(key).await
    }
}

/// Keeps the subscription cache in sync, delivers wakes for queued notices, and re-opens wakes
/// whose lease lapsed.
pub async fn run_delivery(streams: Arc<Streams>, shutdown: CancellationToken) {
    let engine = &streams.subscriptions;
    let Some(mut notices) = engine.receiver.lock().take() else { return };
    let mut watch = match engine.kv.watch_with_history("sub.>").await {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!("failed to watch subscriptions, this edge only sees its own: {e:#}");
            None
        }
    };
    let mut sweep = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(notice) = notices.recv() => {
                if let Err(e) = streams.on_notice(notice).await {
                    tracing::warn!(error = %folio_runtime::error_chain(&e), "failed to process a subscription notice");
                }
            }
            Some(entry) = async { match watch.as_mut() { Some(w) => w.next().await, None => std::future::pending().await } } => {
                let Ok(entry) = entry else { continue };
                let key = entry.key.trim_start_matches("sub.").to_owned();
                let mut cache = engine.cache.write();
                match entry.operation {
                    kv::Operation::Put => {
                        if let Ok(sub) = serde_json::from_slice::<Subscription>(&entry.value) {
                            cache.insert(key, sub);
                        }
                    }
                    _ => {
                        cache.remove(&key);
                    }
                }
            }
            _ = sweep.tick() => {
                let lapsed: Vec<String> = {
                    let cache = engine.cache.read();
                    let now = now_ms();
                    cache.values().filter(|s| s.wake.as_ref().is_some_and(|w| w.lease_expires_ms.is_some_and(|at| at <= now))).map(|s| s.key()).collect()
                };
                for key in lapsed {
                    if let Err(e) = streams.maybe_wake(&key).await {
                        tracing::warn!(subscription = %key, error = %folio_runtime::error_chain(&e), "failed to re-open a lapsed wake");
                    }
                }
            }
        }
    }
}

fn random_token() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}
